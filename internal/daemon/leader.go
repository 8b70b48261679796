package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/leader"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/internal/state/etcd"
	"github.com/rotatord/rotatord/policy"
)

// ErrStandby is returned (wrapped, naming the leader) when a standby is
// asked to act: with state on etcd only the leader rotates.
var ErrStandby = errors.New("this rotatord is a standby")

// StandbyError says who leads instead.
type StandbyError struct {
	Leader *control.LeaderInfo // nil while nobody leads
}

func (e *StandbyError) Error() string {
	if e.Leader == nil {
		return ErrStandby.Error() + " and no leader is known right now (an election is under way, or etcd does not answer); try again in a few seconds"
	}
	return fmt.Sprintf("%s: the leader is %s; ask it", ErrStandby, e.Leader)
}

func (e *StandbyError) Unwrap() error { return ErrStandby }

// leadership is the daemon's part in the election when its state is on
// etcd. With bbolt there is none: the one process always acts.
type leadership struct {
	cli  *clientv3.Client
	el   *leader.Elector
	self leader.Info
	// campaigning is set once the daemon campaigns for good (Start); a
	// one-shot command campaigns only for its own run.
	campaigning atomic.Bool
}

// openState opens the state the config names: the bbolt file, or etcd
// with an elector whose leadership fences every write.
func (a *App) openState(cfg *policy.Config) (state.Store, error) {
	if cfg.State.Backend != policy.BackendEtcd {
		return bolt.OpenStore(cfg.State.Path, bolt.Options{ReadOnly: a.opts.ReadOnly, AuditKeys: a.audit})
	}
	ec := cfg.State.Etcd
	if ec == nil {
		return nil, errors.New("state backend etcd without a state.etcd section")
	}
	cc, err := etcdClientConfig(ec)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(ec.Endpoints, ","), err)
	}
	// A new prefix gets its schema version without fencing: every process
	// writes the same value, and the compare-and-swap lets one win.
	initB, err := etcd.New(cli, etcd.Options{Prefix: ec.Prefix, ReadOnly: a.opts.ReadOnly})
	if err == nil {
		_, err = state.Open(initB)
		_ = initB.Close()
	}
	if err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("etcd %s prefix %s: %w", strings.Join(ec.Endpoints, ","), ec.Prefix, err)
	}
	bopts := etcd.Options{Prefix: ec.Prefix, ReadOnly: a.opts.ReadOnly, CloseClient: true}
	if !a.opts.ReadOnly {
		host, _ := os.Hostname()
		self := leader.Info{Name: fmt.Sprintf("%s/%d", host, os.Getpid()), Address: address(cfg)}
		el, err := leader.New(leader.Config{
			Client: cli, Prefix: ec.Prefix + "leader/", Self: self, LeaseTTL: ec.LeaseTTL,
			Logger: a.log.With("component", "leader"),
		})
		if err != nil {
			_ = cli.Close()
			return nil, err
		}
		a.lead = &leadership{cli: cli, el: el, self: self}
		bopts.Guard, bopts.Writer = el, self.Name
	}
	b, err := etcd.New(cli, bopts)
	if err != nil {
		_ = cli.Close()
		return nil, err
	}
	st, err := state.Open(b, state.WithAuditKeys(a.audit))
	if err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("etcd %s prefix %s: %w", strings.Join(ec.Endpoints, ","), ec.Prefix, err)
	}
	return st, nil
}

// address is where operators reach this process: its metrics listener,
// else its control socket.
func address(cfg *policy.Config) string {
	if cfg.Metrics.Listen != "" {
		return "http://" + cfg.Metrics.Listen
	}
	return "unix:" + cfg.Control.Socket
}

// etcdClientConfig turns the state.etcd section into a client config,
// reading the credentials it references.
func etcdClientConfig(ec *policy.EtcdConfig) (clientv3.Config, error) {
	cc := clientv3.Config{
		Endpoints:            ec.Endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    ec.LeaseTTL / 2,
		DialKeepAliveTimeout: ec.LeaseTTL / 2,
		Logger:               zap.NewNop(), // rotatord logs what matters itself, with slog
	}
	if ec.UsernameEnv != "" {
		user, err := resolveSecret("etcd username", ec.UsernameEnv, "")
		if err != nil {
			return cc, err
		}
		pw, err := resolveSecret("etcd password", ec.PasswordEnv, ec.PasswordFile)
		if err != nil {
			return cc, err
		}
		cc.Username, cc.Password = user.Reveal(), pw.Reveal()
	}
	if t := ec.TLS; t != (policy.EtcdTLS{}) {
		info := transport.TLSInfo{CertFile: t.CertFile, KeyFile: t.KeyFile, TrustedCAFile: t.CAFile}
		tc, err := info.ClientConfig()
		if err != nil {
			return cc, fmt.Errorf("etcd tls: %w", err)
		}
		cc.TLS = tc
	}
	return cc, nil
}

// leading reports whether this process may act now: always with bbolt.
func (a *App) leading() bool { return a.lead == nil || a.lead.el.IsLeader() }

// termContext derives from ctx a context that ends with this process's
// leadership, so that a deposed leader's runs stop at once (the journal
// makes that safe). On a standby it returns a StandbyError.
func (a *App) termContext(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if a.lead == nil {
		ctx, cancel := context.WithCancel(ctx)
		return ctx, cancel, nil
	}
	term, ok := a.lead.el.Current()
	if !ok {
		return nil, nil, a.standbyErr(ctx)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(term.Ctx, func() {
		cancel(fmt.Errorf("leadership lost: %w", context.Cause(term.Ctx)))
	})
	return ctx, func() { stop(); cancel(nil) }, nil
}

func (a *App) standbyErr(ctx context.Context) error {
	l, _ := a.leaderInfo(ctx)
	return &StandbyError{Leader: l}
}

// leaderInfo reads who leads from etcd.
func (a *App) leaderInfo(ctx context.Context) (*control.LeaderInfo, error) {
	if a.lead == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	info, ok, err := a.lead.el.Leader(ctx)
	if err != nil || !ok {
		return nil, err
	}
	return &control.LeaderInfo{Name: info.Name, Address: info.Address}, nil
}

// role is this process's role: empty with bbolt.
func (a *App) role() string {
	switch {
	case a.lead == nil:
		return ""
	case a.lead.el.IsLeader():
		return control.RoleLeader
	default:
		return control.RoleStandby
	}
}

// fillRole adds the role and the leader to a status.
func (a *App) fillRole(ctx context.Context, st *control.Status) {
	if a.lead == nil {
		return
	}
	st.Role = a.role()
	l, err := a.leaderInfo(ctx)
	if err != nil {
		a.log.Warn("status: read the leader from etcd", "err", err)
	}
	st.Leader = l
}

// startLeadership campaigns in the background; each term won runs
// leadTerm. Stop ends the campaign by cancelling ctx, which resigns.
func (a *App) startLeadership(ctx context.Context) {
	a.lead.campaigning.Store(true)
	a.met.Leader(false)
	a.bg.Go(func() {
		if err := a.lead.el.Run(ctx); err != nil {
			a.log.Error("leader election ended", "err", err)
		}
	})
	a.bg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case term := <-a.lead.el.Terms():
				a.leadTerm(term)
			}
		}
	})
}

// leadTerm is one term as leader: resume every open rotation, deliver the
// outbox and sweep until the term ends, then stop them. Scheduled and
// manual runs check the term themselves (termContext).
func (a *App) leadTerm(term leader.Term) {
	ctx := term.Ctx
	if ctx.Err() != nil {
		return
	}
	a.met.Leader(true)
	defer a.met.Leader(false)
	a.log.Info("leading: resuming open rotations, running schedules, sweeps and the outbox", "election_key", term.Key, "revision", term.Rev)
	a.announceLeader(ctx)
	rt := a.runtime()
	for _, p := range rt.cfg.Policies {
		if ctx.Err() != nil {
			break
		}
		if res, err := rt.engine.Resume(ctx, p); err != nil && ctx.Err() == nil {
			a.log.Error("resume unfinished rotation", "policy", p.Name, "err", err)
		} else if res.Resumed > 0 {
			a.log.Info("resumed unfinished rotation", "policy", p.Name, "rotation_id", res.RotationID)
		}
	}
	var wg sync.WaitGroup
	for _, c := range a.channels {
		wg.Go(func() { c.disp.Run(ctx) })
	}
	wg.Go(func() { a.sweepLoop(ctx) })
	<-ctx.Done()
	wg.Wait()
	a.log.Warn("stopped leading: schedules, sweeps and the outbox halted, runs in flight cancelled", "reason", context.Cause(ctx))
}

// announceLeader tells Slack, webhooks and the audit log that this
// process leads now.
func (a *App) announceLeader(ctx context.Context) {
	detail := fmt.Sprintf("rotatord %s now leads", a.lead.self.Name)
	if a.lead.self.Address != "" {
		detail += " (" + a.lead.self.Address + ")"
	}
	a.auditDaemon(audit.Entry{Event: policy.EventLeaderChanged, Trigger: "election", Detail: detail})
	if _, err := a.notifyDaemon(state.Event{Kind: policy.EventLeaderChanged, Detail: detail, Time: time.Now()}); err != nil && ctx.Err() == nil {
		a.log.Error("queue leader_changed notice", "err", err)
	}
}

// closeLeadership is a no-op: the etcd client belongs to the state
// backend, which closes it with the state.

// engineProviders are the provider clients the engine and the inventory
// call. With state on etcd they are fenced: every HTTP request, right
// before it is sent (after rate-limit waits and retry backoffs, where a
// paused leader may resume), is refused the moment leadership may be lost
// by the local lease clock, so a leader that was stopped past its lease
// makes no call before it notices it was deposed. The report keeps
// unfenced clients: standbys serve it.
func (a *App) engineProviders(cfg *policy.Config, provs map[string]cloud.Provider) (map[string]cloud.Provider, error) {
	if a.lead == nil {
		return provs, nil
	}
	fenced, err := buildProviders(cfg, a.opts.Version, a.log, &http.Client{Transport: fencedTransport{base: a.provHTTP, el: a.lead.el}})
	if err != nil {
		return nil, err
	}
	return fenced, nil
}

// fencedTransport refuses to send a request once leadership may be lost.
type fencedTransport struct {
	base http.RoundTripper
	el   *leader.Elector
}

func (t fencedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := checkFence(t.el, "provider request"); err != nil {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, err
	}
	return t.base.RoundTrip(r)
}

func (a *App) fencedKeys(ks rotate.KeyStore) rotate.KeyStore {
	if a.lead == nil || ks == nil {
		return ks
	}
	return fencedKeyStore{ks: ks, el: a.lead.el}
}

func checkFence(el *leader.Elector, what string) error {
	if _, _, err := el.Fence(); err != nil {
		return fmt.Errorf("%s refused: %w", what, err)
	}
	return nil
}

type fencedKeyStore struct {
	ks rotate.KeyStore
	el *leader.Elector
}

func (k fencedKeyStore) Put(ctx context.Context, path string, data map[string]string, cas int) (int, error) {
	if err := checkFence(k.el, "vault write"); err != nil {
		return 0, err
	}
	return k.ks.Put(withFence(ctx, k.el, "vault write"), path, data, cas)
}

func (k fencedKeyStore) Get(ctx context.Context, path string) (map[string]string, int, error) {
	if err := checkFence(k.el, "vault read"); err != nil {
		return nil, 0, err
	}
	return k.ks.Get(withFence(ctx, k.el, "vault read"), path)
}

func (k fencedKeyStore) GetVersion(ctx context.Context, path string, version int) (map[string]string, error) {
	if err := checkFence(k.el, "vault read"); err != nil {
		return nil, err
	}
	return k.ks.GetVersion(withFence(ctx, k.el, "vault read"), path, version)
}

func (k fencedKeyStore) Delete(ctx context.Context, path string) error {
	if err := checkFence(k.el, "vault delete"); err != nil {
		return err
	}
	return k.ks.Delete(withFence(ctx, k.el, "vault delete"), path)
}

// fenceKey carries the engine's fence in a context down to the key
// store, which checks it again once a request slot is free: a leader
// paused while waiting for one must not go on to Vault.
type fenceKey struct{}

type ctxFenceValue struct {
	el   *leader.Elector
	what string
}

func withFence(ctx context.Context, el *leader.Elector, what string) context.Context {
	return context.WithValue(ctx, fenceKey{}, ctxFenceValue{el, what})
}

// ctxFence checks the fence ctx carries, if any.
func ctxFence(ctx context.Context) error {
	if f, ok := ctx.Value(fenceKey{}).(ctxFenceValue); ok {
		return checkFence(f.el, f.what)
	}
	return nil
}

// leadOnce wins leadership for a one-shot run (run -once) with state on
// etcd: it campaigns, and gives up when another rotatord keeps leading.
// release resigns. With bbolt it returns ctx as is.
func (a *App) leadOnce(ctx context.Context) (context.Context, func(), error) {
	if a.lead == nil {
		return ctx, func() {}, nil
	}
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.lead.el.Run(cctx) }()
	release := func() { cancel(); <-done }
	wait := time.NewTimer(3 * a.leaseTTL())
	defer wait.Stop()
	select {
	case term := <-a.lead.el.Terms():
		tctx, tcancel := context.WithCancel(ctx)
		stop := context.AfterFunc(term.Ctx, tcancel)
		return tctx, func() { stop(); tcancel(); release() }, nil
	case <-wait.C:
		err := a.standbyErr(ctx)
		release()
		return nil, nil, fmt.Errorf("waited %s to lead: %w", 3*a.leaseTTL(), err)
	case <-ctx.Done():
		release()
		return nil, nil, ctx.Err()
	}
}

func (a *App) leaseTTL() time.Duration {
	if cfg := a.runtime().cfg; cfg.State.Etcd != nil {
		return cfg.State.Etcd.LeaseTTL
	}
	return policy.DefaultEtcdLeaseTTL
}

// manualTerm is termContext for rotations asked for by socket, signal or
// an in-process command: a daemon must lead; a one-shot command (no
// daemon runs with this socket) campaigns for its own run.
func (a *App) manualTerm(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if a.lead == nil || a.lead.campaigning.Load() {
		return a.termContext(ctx)
	}
	ctx, release, err := a.leadOnce(ctx)
	if err != nil {
		return nil, nil, err
	}
	return ctx, release, nil
}
