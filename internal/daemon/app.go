// Package daemon assembles rotatord: it owns the long-lived clients (state,
// Vault, Slack) for the life of the process and rebuilds the config-scoped
// parts (provider clients, the rotation engine, schedules) on every reload,
// swapping them atomically. It never touches OS signals: the command turns
// those into calls on App, so tests drive it directly.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/inventory"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/scheduler"
	"github.com/rotatord/rotatord/internal/state"
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
	// NoSlack skips the Slack and webhook clients (plan, report).
	NoSlack bool
	// NoVault skips the Vault login (plan, report: they never touch keys).
	NoVault bool
	// SweepInterval is how often retired keys are checked for deletion
	// (default 1m).
	SweepInterval time.Duration
	// BackoffBase overrides the engine's failure backoff base (tests, demo).
	BackoffBase time.Duration
	// Load reads and validates the config file on reload; nil means
	// policy.Load. Tests count or vary what reloads see through it.
	Load func(path string) (*policy.Config, error)
	// Keys replaces the Vault client (tests: vaulttest.Memory); nil logs in
	// to the Vault the config names.
	Keys rotate.KeyStore
	// HostSource finds the running instances of policies with
	// hosts.discover; nil: the machines of the instance inventory.
	HostSource rotate.HostSource
}

// App is one rotatord process.
type App struct {
	opts  Options
	log   *slog.Logger
	db    state.Store
	vault *keyStore // nil when NoVault or Options.Keys is set
	keys  rotate.KeyStore
	audit *auditKeys
	// channels are the notification destinations, Slack and webhooks,
	// each with its own outbox and dispatcher.
	channels []channel
	locks    *rotate.Locks
	flights  *inventory.Flights // instance listings shared by the runs of every config
	met      *Metrics
	// provHTTP is the connection pool of every provider client, kept
	// across reloads.
	provHTTP *http.Transport
	// lead is this process's part in the election; nil with bbolt.
	lead *leadership

	mu  sync.RWMutex
	cur *runtime // config-scoped parts; swapped on reload

	// reloadMu makes each reload (load, build, swap, start, stop old) and
	// the start and stop of the daemon one step: two reloads never
	// interleave, and none runs while the daemon starts or stops.
	reloadMu  sync.Mutex
	running   bool // Start done, Stop not begun
	stopping  bool // Stop begun
	reloadErr string
	// scheds counts the schedulers ever started whose runs may still be in
	// flight; Stop waits for all of them before it closes the state.
	scheds sync.WaitGroup

	// manual counts the rotations asked for by signal or socket; Stop waits
	// for them and refuses new ones once stopping is set.
	manualMu     sync.Mutex
	manual       sync.WaitGroup
	manualClosed bool
	// halt ends every run's context when a graceful stop runs out of time.
	halt     context.Context
	haltRuns context.CancelFunc

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
	inv       *inventory.Collector
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
	if opts.Load == nil {
		opts.Load = policy.Load
	}
	a := &App{opts: opts, log: opts.Logger, locks: rotate.NewLocks(), flights: inventory.NewFlights(), met: NewMetrics(), audit: &auditKeys{},
		provHTTP: providerTransport()}
	a.halt, a.haltRuns = context.WithCancel(context.Background())
	db, err := a.openState(cfg)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	a.db = db
	switch {
	case opts.Keys != nil:
		a.keys = opts.Keys
	case !opts.NoVault:
		if err := a.openVault(ctx, cfg); err != nil {
			_ = db.Close()
			return nil, err
		}
		a.keys = a.vault
	}
	if a.keys != nil {
		a.audit.ks = a.keys
	}
	if !opts.NoSlack {
		err := a.openWebhooks(cfg)
		if err == nil && cfg.Slack != nil {
			err = a.openSlack(cfg)
		}
		if err != nil {
			_ = a.Close()
			return nil, err
		}
	}
	rt, err := a.build(cfg)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	a.cur = rt
	a.met.ConfigLoaded(true, rt.loaded)
	return a, nil
}

// build makes the config-scoped parts: provider clients, the engine and a
// scheduler that is not started. It changes nothing in a.
func (a *App) build(cfg *policy.Config) (*runtime, error) {
	provs, err := buildProviders(cfg, a.opts.Version, a.log, &http.Client{Transport: a.provHTTP})
	if err != nil {
		return nil, err
	}
	engProvs, err := a.engineProviders(cfg, provs)
	if err != nil {
		return nil, err
	}
	conc := make(map[string]int, len(cfg.Providers))
	for _, p := range cfg.Providers {
		conc[p.Name] = p.Concurrency
	}
	eng := rotate.New(rotate.Config{
		Journal: a.db, Keys: a.fencedKeys(a.keys), Providers: engProvs, Locks: a.locks, ProviderConcurrency: conc,
		Logger: a.log.With("component", "rotate"), Kick: a.kick, Hook: a.opts.Hook,
		BackoffBase: a.opts.BackoffBase, Sinks: a.sinks(), Ready: a.audit.Load,
		HostSource: a.hostSource(cfg),
	})
	rt := &runtime{cfg: cfg, providers: provs, engine: eng, inv: a.newInventory(cfg, engProvs), loaded: time.Now()}
	if rt.sched, err = a.schedule(rt); err != nil {
		return nil, err
	}
	return rt, nil
}

func (a *App) runtime() *runtime {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.cur
}

// Start resumes every unfinished rotation, then starts the schedules and
// the background loops, and opens the control socket and the metrics
// listener. It returns once the daemon is ready.
func (a *App) Start(ctx context.Context) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	rt := a.runtime()
	for _, p := range rt.cfg.Policies {
		if a.lead != nil {
			break // the leader resumes, once elected
		}
		if res, err := rt.engine.Resume(ctx, p); err != nil {
			a.log.Error("resume unfinished rotation", "policy", p.Name, "err", err)
		} else if res.Resumed > 0 {
			a.log.Info("resumed unfinished rotation", "policy", p.Name, "rotation_id", res.RotationID)
		}
	}
	bgctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if a.lead != nil {
		a.lead.campaigning.Store(true) // before the socket takes a rotate
	}
	if err := a.listen(rt.cfg); err != nil {
		cancel()
		return err
	}
	a.startScheduler(rt)
	if a.lead != nil {
		a.startLeadership(bgctx) // dispatchers and sweeps run per term
	} else {
		a.met.Leader(true)
		a.runDispatchers(bgctx)
		a.bg.Go(func() { a.sweepLoop(bgctx) })
	}
	if a.vault != nil {
		a.bg.Go(func() {
			a.vault.watch(bgctx, func(up bool) {
				a.met.VaultUp(up)
				if up {
					if err := a.audit.Load(bgctx); err != nil {
						a.log.Error("load the audit key", "err", err)
					}
				}
			})
		})
	}
	a.started = time.Now()
	a.running = true
	a.sdNotify("READY=1")
	a.log.Info("rotatord ready", "policies", len(rt.cfg.Policies), "version", a.opts.Version)
	return nil
}

// startScheduler starts rt's scheduler and counts it until its runs end.
func (a *App) startScheduler(rt *runtime) {
	a.scheds.Add(1)
	rt.sched.Start()
}

// retireScheduler halts rt's scheduler now (no entry fires after this
// returns) and lets its runs in flight finish in the background; Stop
// waits for them. The runs hold the policies' locks, so the next config's
// runs of the same policies wait instead of running twice.
func (a *App) retireScheduler(rt *runtime) {
	rt.sched.Halt()
	go func() {
		defer a.scheds.Done()
		_ = rt.sched.Wait(a.halt)
	}()
}

// Stop stops the schedules (waiting up to ctx for the steps in flight),
// the manual rotations, the background loops, and closes the long-lived
// clients. When ctx ends first, every run's context is cancelled (the
// journal stays consistent: a restart resumes) and Stop still waits for
// the runs to return before it closes the state.
func (a *App) Stop(ctx context.Context) error {
	a.sdNotify("STOPPING=1")
	a.reloadMu.Lock()
	a.stopping = true
	if a.running {
		a.retireScheduler(a.runtime())
		a.running = false
	}
	a.reloadMu.Unlock()
	a.manualMu.Lock()
	a.manualClosed = true
	a.manualMu.Unlock()

	var err error
	done := make(chan struct{})
	go func() { a.scheds.Wait(); a.manual.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("runs still in flight at the stop deadline were cancelled: %w", ctx.Err())
		a.haltRuns()
		<-done
	}
	if a.ctl != nil {
		_ = a.ctl.Close(context.Background())
	}
	if a.metSrv != nil {
		_ = a.metSrv.Close()
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.bg.Wait()
	a.haltRuns()
	return errors.Join(err, a.Close())
}

// Close releases the long-lived clients.
func (a *App) Close() error {
	a.provHTTP.CloseIdleConnections()
	if a.vault != nil {
		a.vault.Close()
	}
	if a.db != nil {
		return a.db.Close()
	}
	return nil
}

func (a *App) sdNotify(s string) {
	if a.opts.Notify != nil {
		a.opts.Notify(s)
	}
}

// Scheduled names the policies the running config schedules, sorted.
func (a *App) Scheduled() []string {
	var out []string
	for _, n := range a.runtime().sched.Names() {
		if !strings.HasPrefix(n, "@") && !strings.HasSuffix(n, windowEntry) { // the digest's, a window's
			out = append(out, n)
		}
	}
	return out
}

// Store is the state the app holds, to read; the app closes it.
func (a *App) Store() state.Store { return a.db }
