package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/report"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// listen opens the control socket and, when configured, the metrics
// listener. They live for the process: a reload does not move them.
func (a *App) listen(cfg *policy.Config) error {
	ctl, err := control.Listen(cfg.Control.Socket, a, a.log.With("component", "control"))
	if err != nil {
		return err
	}
	a.ctl = ctl
	if cfg.Metrics.Listen == "" {
		return nil
	}
	a.met.reg.MustRegister(report.NewCollector(func() (*report.Report, error) {
		rt := a.runtime()
		return report.Generate(context.Background(), report.Source{Now: time.Now(), Config: rt.cfg, State: a.db})
	}))
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		_ = ctl.Close(context.Background())
		return fmt.Errorf("metrics listener: %w", err)
	}
	a.metSrv = &http.Server{Handler: a.met.Handler(a.health), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = a.metSrv.Serve(ln) }()
	a.log.Info("metrics listening", "addr", ln.Addr().String())
	return nil
}

// health is /healthz: the state answers.
func (a *App) health() error {
	if err := a.db.View(func(state.Tx) error { return nil }); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}
