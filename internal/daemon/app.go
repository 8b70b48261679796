// Package daemon assembles rotatord: it owns the long-lived clients (bbolt
// state, Vault, Slack) for the life of the process and rebuilds the
// config-scoped parts (provider clients, the rotation engine, schedules) on
// every reload, swapping them atomically. It never touches OS signals: the
// command turns those into calls on App, so tests drive it directly.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/notify"
	"github.com/rotatord/rotatord/internal/report"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/scheduler"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/internal/vault"
	"github.com/rotatord/rotatord/policy"
)

// Options configure an App beyond the config file.
type Options struct {
	Version string
	Logger  *slog.Logger
	// Notify receives sd_notify states ("READY=1", "RELOADING=1", ...); nil
	// when not running under systemd.
	Notify func(state string)
	// Hook is the rotation engine's test hook (crash tests); nil in production.
	Hook func(point string)
	// ReadOnly opens state without writing (plan).
	ReadOnly bool
	// NoSlack skips the Slack client (plan, report).
	NoSlack bool
	// NoVault skips the Vault login (plan, report: they never touch keys).
	NoVault bool
	// SweepInterval is how often retired keys are checked for deletion
	// (default 1m).
	SweepInterval time.Duration
	// BackoffBase overrides the engine's failure backoff base (tests, demo).
	BackoffBase time.Duration
}

// App is one rotatord process.
type App struct {
	opts  Options
	log   *slog.Logger
	db    state.Store
	keys  *keyStore
	slack *notify.Slack
	disp  *notify.Dispatcher
	locks *rotate.Locks
	met   *Metrics

	mu  sync.RWMutex
	cur *runtime // config-scoped parts; swapped on reload

	reloadMu  sync.Mutex
	reloadErr string // last reload error, "" after a good one

	// manual counts the rotations asked for by signal or socket; Stop waits
	// for them and refuses new ones once stopping is set.
	manualMu sync.Mutex
	manual   sync.WaitGroup
	stopping bool

	started time.Time
	ctl     *control.Server
	metSrv  *http.Server

	bg     sync.WaitGroup
	cancel context.CancelFunc
}

// runtime is everything rebuilt from a config.
type runtime struct {
	cfg       *policy.Config
	providers map[string]cloud.Provider
	engine    *rotate.Engine
	sched     *scheduler.Scheduler
	loaded    time.Time
}

// New opens state, logs in to Vault, prepares Slack, and builds the
// config-scoped parts. Nothing is scheduled until Start.
func New(ctx context.Context, cfg *policy.Config, opts Options) (*App, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = time.Minute
	}
	a := &App{opts: opts, log: opts.Logger, locks: rotate.NewLocks(), met: NewMetrics()}
	db, err := bolt.OpenStore(cfg.State.Path, bolt.Options{ReadOnly: opts.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	a.db = db
	if !opts.NoVault {
		if err := a.openVault(ctx, cfg); err != nil {
			db.Close()
			return nil, err
		}
	}
	if cfg.Slack != nil && !opts.NoSlack {
		if err := a.openSlack(cfg); err != nil {
			a.Close()
			return nil, err
		}
	}
	rt, err := a.build(cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	a.cur = rt
	a.met.ConfigLoaded(true)
	return a, nil
}

func (a *App) openVault(ctx context.Context, cfg *policy.Config) error {
	vc := vault.Config{Address: cfg.Vault.Address, Mount: cfg.Vault.Mount, Logger: a.log.With("component", "vault")}
	auth := cfg.Vault.Auth
	switch auth.Method {
	case "approle":
		roleID, err := resolveSecret("vault approle role_id", "", auth.RoleIDFile)
		if err != nil {
			return err
		}
		secretID, err := resolveSecret("vault approle secret_id", "", auth.SecretIDFile)
		if err != nil {
			return err
		}
		vc.Auth.AppRole = &vault.AppRole{RoleID: roleID, SecretID: secretID, MountPath: auth.AppRoleMount}
	default:
		tok, err := resolveSecret("vault token", auth.TokenEnv, auth.TokenFile)
		if err != nil {
			return err
		}
		vc.Auth.Token = tok
	}
	a.keys = &keyStore{cfg: vc, log: a.log.With("component", "vault")}
	if _, err := a.keys.connect(ctx); err != nil {
		if !transient(err) {
			return err
		}
		// Down or sealed now: start anyway and log in at first use.
		a.log.Warn("vault is not reachable; starting anyway, rotations fail until it is", "err", err)
	}
	return nil
}

func (a *App) openSlack(cfg *policy.Config) error {
	sc := notify.Config{DefaultChannel: cfg.Slack.Channel, Logger: a.log.With("component", "slack")}
	var err error
	if cfg.Slack.TokenEnv != "" || cfg.Slack.TokenFile != "" {
		sc.Token, err = resolveSecret("slack token", cfg.Slack.TokenEnv, cfg.Slack.TokenFile)
	} else {
		sc.WebhookURL, err = resolveSecret("slack webhook url", cfg.Slack.WebhookURLEnv, cfg.Slack.WebhookURLFile)
	}
	if err != nil {
		return err
	}
	if a.slack, err = notify.New(sc); err != nil {
		return fmt.Errorf("slack: %w", err)
	}
	a.disp = notify.NewDispatcher(outbox{a.db, state.SinkSlack}, a.slack, notify.DispatcherOptions{Logger: a.log.With("component", "notify")})
	return nil
}

// build makes the config-scoped parts. It changes nothing in a.
func (a *App) build(cfg *policy.Config) (*runtime, error) {
	provs, err := buildProviders(cfg, a.opts.Version, a.log)
	if err != nil {
		return nil, err
	}
	kick := func() {}
	if a.disp != nil {
		kick = a.disp.Kick
	}
	var keys rotate.KeyStore = a.keys
	if a.keys == nil {
		keys = nil // plan and report: no Vault; the engine only reads
	}
	conc := make(map[string]int, len(cfg.Providers))
	for _, p := range cfg.Providers {
		conc[p.Name] = p.Concurrency
	}
	eng := rotate.New(rotate.Config{
		Journal: a.db, Keys: keys, Providers: provs, Locks: a.locks, ProviderConcurrency: conc,
		Logger: a.log.With("component", "rotate"), Kick: kick, Hook: a.opts.Hook,
		BackoffBase: a.opts.BackoffBase, Sinks: a.sinks(),
	})
	return &runtime{cfg: cfg, providers: provs, engine: eng, loaded: time.Now()}, nil
}

// sinks are the notification destinations the engine queues for.
func (a *App) sinks() []rotate.Sink {
	if a.disp == nil {
		return nil // no Slack: the outbox would only grow
	}
	return []rotate.Sink{rotate.NotifySink(state.SinkSlack)}
}

func (a *App) runtime() *runtime {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.cur
}

// Start resumes every unfinished rotation, then builds the schedules and
// starts the background loops. It returns once the daemon is ready.
func (a *App) Start(ctx context.Context) error {
	rt := a.runtime()
	for _, p := range rt.cfg.Policies {
		if res, err := rt.engine.Resume(ctx, p); err != nil {
			a.log.Error("resume unfinished rotation", "policy", p.Name, "err", err)
		} else if res.Resumed > 0 {
			a.log.Info("resumed unfinished rotation", "policy", p.Name, "rotation_id", res.RotationID)
		}
	}
	bgctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if err := a.schedule(rt); err != nil {
		cancel()
		return err
	}
	rt.sched.Start()
	if a.disp != nil {
		a.bg.Add(1)
		go func() { defer a.bg.Done(); a.disp.Run(bgctx) }()
	}
	a.bg.Add(1)
	go func() { defer a.bg.Done(); a.sweepLoop(bgctx) }()
	if err := a.listen(rt.cfg); err != nil {
		cancel()
		_ = rt.sched.Stop(context.Background())
		a.bg.Wait()
		return err
	}
	a.started = time.Now()
	a.sdNotify("READY=1")
	a.log.Info("rotatord ready", "policies", len(rt.cfg.Policies), "version", a.opts.Version)
	return nil
}

// schedule builds rt's scheduler: one entry per policy and the digest.
func (a *App) schedule(rt *runtime) error {
	s := scheduler.New(scheduler.Options{Logger: a.log.With("component", "scheduler")})
	for _, p := range rt.cfg.Policies {
		if err := s.Add(p.Name, p.Schedule, func(ctx context.Context) {
			a.runPolicy(ctx, rt, p, rotate.Options{Trigger: rotate.TriggerSchedule})
		}); err != nil {
			return err
		}
	}
	if r := rt.cfg.Report; r != nil && r.Schedule != "" {
		if err := s.Add(digestEntry, r.Schedule, func(ctx context.Context) { a.postDigest(ctx, rt) }); err != nil {
			return err
		}
	}
	rt.sched = s
	return nil
}

// digestEntry names the report digest's schedule entry; policy names
// cannot start with "@".
const digestEntry = "@report-digest"

// postDigest queues the compliance digest for Slack. The outbox carries it,
// so a Slack outage delays it instead of losing it.
func (a *App) postDigest(ctx context.Context, rt *runtime) {
	if a.disp == nil {
		a.log.Warn("report digest skipped: Slack is not configured (it takes effect at the next restart)")
		return
	}
	rep, err := report.Generate(ctx, report.Source{Now: time.Now(), Config: rt.cfg, State: a.db, Providers: rt.providers})
	if err != nil {
		a.log.Error("report digest", "err", err)
		return
	}
	ev := state.Event{Kind: policy.EventReport, Channel: rt.cfg.Report.Channel, Detail: rep.Digest(), Time: time.Now()}
	if err := a.db.Update(func(tx state.Tx) error { _, err := tx.Enqueue(ev, state.SinkSlack); return err }); err != nil {
		a.log.Error("queue report digest", "err", err)
		return
	}
	a.log.Info("report digest queued", "channel", ev.Channel)
	a.disp.Kick()
}

func (a *App) runPolicy(ctx context.Context, rt *runtime, p policy.Policy, opts rotate.Options) rotate.Result {
	res, err := rt.engine.Run(ctx, p, opts)
	res.Err = err
	a.met.Observe(p, res)
	if errors.Is(err, rotate.ErrBusy) {
		a.log.Info("run skipped: policy already in flight", "policy", p.Name, "trigger", opts.Trigger)
	}
	return res
}

func (a *App) sweepLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rt := a.runtime()
		for _, p := range rt.cfg.Policies {
			if _, err := rt.engine.Sweep(ctx, p); err != nil && ctx.Err() == nil {
				a.log.Error("retire sweep", "policy", p.Name, "err", err)
			}
		}
	}
}

// ReloadConfig swaps in cfg: new provider clients, engine and schedules. On error
// the running config stays in force. Vault, state and Slack settings are
// long-lived: changing them needs a restart, which Reload says in the log.
func (a *App) ReloadConfig(ctx context.Context, cfg *policy.Config) error {
	a.sdNotify("RELOADING=1")
	defer a.sdNotify("READY=1")
	old := a.runtime()
	rt, err := a.build(cfg)
	if err == nil {
		err = a.schedule(rt)
	}
	if err != nil {
		a.ReloadFailed(err)
		return err
	}
	if old.cfg.Vault != cfg.Vault || old.cfg.State != cfg.State {
		a.log.Warn("vault and state settings changed; they take effect at the next restart")
	}
	a.mu.Lock()
	a.cur = rt
	a.mu.Unlock()
	rt.sched.Start()
	if old.sched != nil {
		// The old schedules stop firing; their runs in flight finish under
		// the same policy locks, so nothing runs twice.
		go func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			_ = old.sched.Stop(sctx)
		}()
	}
	a.met.ConfigLoaded(true)
	a.reloadMu.Lock()
	a.reloadErr = ""
	a.reloadMu.Unlock()
	a.log.Info("config reloaded", "policies", len(cfg.Policies))
	return nil
}

// ReloadFailed records a reload that did not get past parsing or building:
// the log names every error, the metric goes to 0, Slack is told.
func (a *App) ReloadFailed(err error) {
	a.met.ConfigLoaded(false)
	a.reloadMu.Lock()
	a.reloadErr = err.Error()
	a.reloadMu.Unlock()
	a.log.Error("reload failed; keeping the running config", "err", err)
	if a.disp == nil {
		return // no Slack: the log and the metric say it
	}
	_ = a.db.Update(func(tx state.Tx) error {
		_, err := tx.Enqueue(state.Event{Kind: policy.EventReloadFailed, Error: err.Error(), Time: time.Now()}, state.SinkSlack)
		return err
	})
	a.disp.Kick()
}

// Stop stops the schedules (waiting up to ctx for the steps in flight),
// the background loops, and closes the long-lived clients.
func (a *App) Stop(ctx context.Context) error {
	a.sdNotify("STOPPING=1")
	// Rotations asked for by signal or socket finish too; no new ones start.
	a.manualMu.Lock()
	a.stopping = true
	a.manualMu.Unlock()
	rt := a.runtime()
	var err error
	if rt.sched != nil {
		err = rt.sched.Stop(ctx)
	}
	done := make(chan struct{})
	go func() { a.manual.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.Join(err, ctx.Err())
	}
	if a.ctl != nil {
		_ = a.ctl.Close(ctx)
	}
	if a.metSrv != nil {
		_ = a.metSrv.Close()
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.bg.Wait()
	return errors.Join(err, a.Close())
}

// Close releases the long-lived clients.
func (a *App) Close() error {
	if a.keys != nil {
		a.keys.Close()
	}
	if a.db != nil {
		return a.db.Close()
	}
	return nil
}

// RunOnce evaluates every policy once (run -once): resume, reconcile,
// rotate what is due, sweep, and deliver notifications.
func (a *App) RunOnce(ctx context.Context) []rotate.Result {
	rt := a.runtime()
	results := a.runAll(ctx, rt, rt.cfg.Policies, rotate.Options{Trigger: rotate.TriggerCLI})
	a.FlushNotifications(ctx)
	return results
}

// RotatePolicies rotates the named policies now (all when names is empty). It
// waits for a run of the same policy in flight instead of skipping, so
// every trigger yields exactly one new key per policy.
func (a *App) RotatePolicies(ctx context.Context, names []string, emergency bool, trigger string) ([]rotate.Result, error) {
	a.manualMu.Lock()
	if a.stopping {
		a.manualMu.Unlock()
		return nil, errors.New("rotatord is stopping; rotate again once it runs")
	}
	a.manual.Add(1)
	a.manualMu.Unlock()
	defer a.manual.Done()
	rt := a.runtime()
	ps := rt.cfg.Policies
	if len(names) > 0 {
		ps = nil
		for _, n := range names {
			p, ok := rt.cfg.PolicyByName(n)
			if !ok {
				return nil, fmt.Errorf("unknown policy %q", n)
			}
			ps = append(ps, p)
		}
	}
	return a.runAll(ctx, rt, ps, rotate.Options{Force: true, Emergency: emergency, Wait: true, Trigger: trigger}), nil
}

func (a *App) runAll(ctx context.Context, rt *runtime, ps []policy.Policy, opts rotate.Options) []rotate.Result {
	results := rt.engine.RunAll(ctx, ps, opts)
	for i, res := range results {
		a.met.Observe(ps[i], res)
	}
	return results
}

// Plans is the dry run of every policy.
func (a *App) Plans(ctx context.Context) ([]rotate.PolicyPlan, error) {
	rt := a.runtime()
	var plans []rotate.PolicyPlan
	var errs []error
	for _, p := range rt.cfg.Policies {
		pp, err := rt.engine.Plan(ctx, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy %q: %w", p.Name, err))
		}
		plans = append(plans, pp)
	}
	return plans, errors.Join(errs...)
}

// FlushNotifications gives Slack one chance to take the queued events
// before a one-shot command exits; what it does not take stays queued.
func (a *App) FlushNotifications(ctx context.Context) {
	if a.disp == nil {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := a.disp.DrainOnce(fctx); err != nil {
		a.log.Warn("notifications left queued for the next run", "err", err)
	}
}

func (a *App) sdNotify(s string) {
	if a.opts.Notify != nil {
		a.opts.Notify(s)
	}
}

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

// health is /healthz: the state file answers and the last reload was good.
func (a *App) health() error {
	if err := a.db.View(func(state.Tx) error { return nil }); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}
