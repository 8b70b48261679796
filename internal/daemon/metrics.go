package daemon

import (
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/policy"
)

// Metrics are the Prometheus metrics of DESIGN.md §8. Counters are kept in
// memory; key ages are read from state at scrape time so they are never stale.
type Metrics struct {
	reg         *prometheus.Registry
	rotations   *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	reloadOK    prometheus.Gauge
	reloadAt    prometheus.Gauge
	vaultUp     prometheus.Gauge
	leader      prometheus.Gauge
}

// NewMetrics registers the counters and the Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rotatord_rotations_total",
			Help: "Rotation runs by policy and result (rotated, failed).",
		}, []string{"policy", "result"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rotatord_last_rotation_success_timestamp_seconds",
			Help: "Unix time of the policy's last successful rotation.",
		}, []string{"policy"}),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rotatord_config_last_reload_successful",
			Help: "1 if the last config load or reload succeeded, 0 if it failed (the previous config stays in force).",
		}),
		reloadAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rotatord_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last config load or reload that succeeded.",
		}),
		vaultUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rotatord_vault_up",
			Help: "1 if Vault answered the last login or health check (reachable, unsealed, token valid), 0 if not.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rotatord_leader",
			Help: "1 if this process acts (the etcd leader, or the one process on bbolt), 0 on a standby.",
		}),
	}
	m.reg.MustRegister(m.rotations, m.lastSuccess, m.reloadOK, m.reloadAt, m.vaultUp, m.leader,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry /metrics serves. The deploy tests gather it to
// check that the Grafana dashboard and the alert rules name only metrics
// rotatord exports.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ConfigLoaded sets the reload gauges: ok, and when a load succeeded.
func (m *Metrics) ConfigLoaded(ok bool, at time.Time) {
	if ok {
		m.reloadOK.Set(1)
		m.reloadAt.Set(float64(at.Unix()))
	} else {
		m.reloadOK.Set(0)
	}
}

// VaultUp sets the Vault gauge.
func (m *Metrics) VaultUp(up bool) {
	if up {
		m.vaultUp.Set(1)
	} else {
		m.vaultUp.Set(0)
	}
}

// Leader sets the leadership gauge.
func (m *Metrics) Leader(leading bool) {
	if leading {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// Observe counts one run's outcome.
func (m *Metrics) Observe(p policy.Policy, res rotate.Result) {
	switch {
	case res.Err != nil && !errors.Is(res.Err, rotate.ErrBusy):
		m.rotations.WithLabelValues(p.Name, "failed").Inc()
	case res.Rotated:
		m.rotations.WithLabelValues(p.Name, "rotated").Inc()
		m.lastSuccess.WithLabelValues(p.Name).Set(float64(time.Now().Unix()))
	}
}

// Handler serves /metrics and /healthz.
func (m *Metrics) Handler(health func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}
