// Package rotate is rotatord's rotation engine: the journaled saga of
// DESIGN.md §2 (plan, generate, store pending, upload, activate, promote,
// retire, notify), its resumption after a crash, reconciliation with the
// provider, and the retire sweep.
//
// Every step is committed to the journal before the next side effect, under
// a stable rotation ID, so a process killed at any instant resumes forward
// on restart. The engine talks to the outside world only through the small
// interfaces it declares (KeyStore, Journal) and cloud.Provider.
package rotate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/hosts"
	"github.com/rotatord/rotatord/internal/keygen"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Errors to branch on.
var (
	// ErrBusy: another run of the policy is in flight.
	ErrBusy = errors.New("rotation already in flight")
	// ErrUnknownProvider: the policy names a provider the engine was not given.
	ErrUnknownProvider = errors.New("unknown provider")
	// ErrPendingLost: the private key of an in-flight rotation is no longer
	// in Vault, so the rotation cannot be completed.
	ErrPendingLost = errors.New("pending private key missing from the key store")
)

// Triggers recorded in the journal and the audit log.
const (
	TriggerSchedule = "schedule"
	TriggerSignal   = "signal"
	TriggerSocket   = "socket"
	TriggerCLI      = "cli"
	TriggerResume   = "resume"
)

// Config wires an Engine. Journal, Keys and Providers are required.
type Config struct {
	Journal   Journal
	Keys      KeyStore
	Providers map[string]cloud.Provider // by provider name
	Locks     *Locks                    // shared across reloads; default a fresh set
	Logger    *slog.Logger
	Now       func() time.Time
	// Generate makes a key pair; default keygen.Generate.
	Generate func(spec keygen.Spec, comment string) (*keygen.Key, error)
	// Kick is called after events were queued, to wake the notifiers.
	Kick func()
	// Sinks are where notifications go (Slack, webhooks); an event no
	// sink wants is not queued. The audit log is written either way.
	Sinks []Sink
	// Ready, when set, is checked before a run does anything: the daemon
	// loads the audit key from Vault there, so that no side effect happens
	// that the audit log could then not record.
	Ready func(ctx context.Context) error
	// Concurrency bounds the requests in flight to each provider account
	// (default 8); ProviderConcurrency overrides it per provider name.
	// Rotations in flight per provider are bounded at 8x that, so that
	// Vault and journal work overlaps with provider calls.
	Concurrency         int
	ProviderConcurrency map[string]int
	// BackoffBase and BackoffMax shape the wait after consecutive failures
	// (default 1m doubling up to 1h). Forced runs ignore the backoff.
	BackoffBase, BackoffMax time.Duration
	// Hook, when set, is called at named points of the saga ("before:upload",
	// "after:upload", ...). The crash tests use it to SIGKILL the process at
	// an exact step boundary; it is nil in production.
	Hook func(point string)
	// HostSource finds the running instances of policies with
	// hosts.discover; nil means static targets only.
	HostSource HostSource
	// HostBeforeRename is passed to hosts.Options.BeforeRename (tests).
	HostBeforeRename func(t hosts.Target, path string)
}

// Engine runs rotations. It is safe for concurrent use; runs of one policy
// are serialized by Locks.
type Engine struct {
	cfg  Config
	log  *slog.Logger
	sems map[string]chan struct{}
	mu   sync.Mutex
}

// New returns an engine.
func New(cfg Config) *Engine {
	if cfg.Locks == nil {
		cfg.Locks = NewLocks()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Generate == nil {
		cfg.Generate = keygen.Generate
	}
	if cfg.Kick == nil {
		cfg.Kick = func() {}
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Hook == nil {
		cfg.Hook = func(string) {}
	}
	if cfg.Ready == nil {
		cfg.Ready = func(context.Context) error { return nil }
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, sems: make(map[string]chan struct{})}
	provs := make(map[string]cloud.Provider, len(cfg.Providers))
	for name, p := range cfg.Providers {
		n := e.concurrency(name)
		provs[name] = limit(p, n)
		e.sems[name] = make(chan struct{}, 8*n)
	}
	e.cfg.Providers = provs
	return e
}

func (e *Engine) concurrency(provider string) int {
	if n := e.cfg.ProviderConcurrency[provider]; n > 0 {
		return n
	}
	return e.cfg.Concurrency
}

// Options say how a run was asked for.
type Options struct {
	// Force rotates even when the key is fresh (SIGUSR1, socket, CLI).
	Force bool
	// Emergency deletes the replaced key as soon as the new one is active and
	// stored (grace period zero). Implies Force.
	Emergency bool
	// Wait blocks until the policy's lock is free instead of returning ErrBusy.
	Wait bool
	// Trigger names who asked (TriggerSchedule, TriggerSignal, ...).
	Trigger string

	// snap is the account's listing taken by RunAll, if any.
	snap *snapshot
	// hostsLater leaves the hosts to the caller (RunAll), which converges
	// them after it gave back the provider slot the run held.
	hostsLater bool
}

// Result says what one run of a policy did.
type Result struct {
	Policy      string
	Rotated     bool
	Resumed     int // unfinished rotations completed first
	RotationID  string
	KeyID       string
	KeyName     string
	Fingerprint string
	Deleted     []string // key IDs deleted by the retire sweep
	Reason      string
	Err         error
	// Hosts is the pass over the policy's hosts that ended the run; nil
	// for a policy without hosts.
	Hosts *HostsRun
}

func (e *Engine) provider(p policy.Policy) (cloud.Provider, error) {
	prov, ok := e.cfg.Providers[p.Provider]
	if !ok {
		return nil, fmt.Errorf("policy %q: %w %q", p.Name, ErrUnknownProvider, p.Provider)
	}
	return prov, nil
}

// sem bounds concurrent rotations per provider.
func (e *Engine) sem(provider string) chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.sems[provider]
	if !ok {
		s = make(chan struct{}, 8*e.concurrency(provider))
		e.sems[provider] = s
	}
	return s
}

// account is one provider account: a provider, and a project on Gcore.
type account struct {
	provider string
	project  int64
}

// snapshot is one listing of an account, shared by the policies of a
// RunAll so that N policies on one account cost one listing, not N.
type snapshot struct {
	keys []cloud.Key
	at   time.Time // taken before the request went out
}

// listAccounts lists every account of policies once, concurrently. An
// account whose listing fails gets no snapshot: its policies list on
// their own and report the error.
func (e *Engine) listAccounts(ctx context.Context, policies []policy.Policy) map[account]*snapshot {
	accts := map[account]bool{}
	for _, p := range policies {
		accts[account{p.Provider, p.ProjectID}] = true
	}
	out := make(map[account]*snapshot, len(accts))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for a := range accts {
		prov, ok := e.cfg.Providers[a.provider]
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := e.cfg.Now()
			keys, err := prov.List(ctx, a.project)
			if err != nil {
				return
			}
			mu.Lock()
			out[a] = &snapshot{keys: keys, at: at}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// RunAll evaluates every policy concurrently (bounded per provider) and
// returns one result per policy, in the order given. Each account is listed
// once up front; a policy uses that listing unless it changed since.
func (e *Engine) RunAll(ctx context.Context, policies []policy.Policy, opts Options) []Result {
	results := make([]Result, len(policies))
	snaps := e.listAccounts(ctx, policies)
	var wg sync.WaitGroup
	for i, p := range policies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := opts
			opts.snap = snaps[account{p.Provider, p.ProjectID}]
			sem := e.sem(p.Provider)
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = Result{Policy: p.Name, Err: ctx.Err()}
				return
			}
			opts.hostsLater = p.Hosts != nil
			res, err := e.Run(ctx, p, opts)
			<-sem
			res.Err = err
			if opts.hostsLater && !errors.Is(err, ErrBusy) && !errors.Is(err, ErrUnknownProvider) && ctx.Err() == nil {
				// Host convergence takes seconds of SSH per policy: it
				// must not hold one of the provider's slots meanwhile.
				if unlock, lerr := e.cfg.Locks.Lock(ctx, p.Name); lerr == nil {
					res.Hosts = e.convergeHosts(ctx, p, hostsModeFor(opts, res))
					unlock()
				}
			}
			results[i] = res
		}()
	}
	wg.Wait()
	return results
}

// Run evaluates one policy: it resumes any unfinished rotation, reconciles
// state with the provider, rotates when due (or forced), and deletes retired
// keys whose grace period has passed.
func (e *Engine) Run(ctx context.Context, p policy.Policy, opts Options) (res Result, err error) {
	res.Policy = p.Name
	if opts.Emergency {
		opts.Force = true
	}
	var unlock func()
	if opts.Wait {
		if unlock, err = e.cfg.Locks.Lock(ctx, p.Name); err != nil {
			return res, err
		}
	} else {
		var ok bool
		if unlock, ok = e.cfg.Locks.TryLock(p.Name); !ok {
			return res, fmt.Errorf("policy %q: %w", p.Name, ErrBusy)
		}
	}
	defer unlock()
	if p.Hosts != nil {
		// Registered before the outcome is recorded, so it runs after it:
		// hosts converge toward whatever key the run left current, on
		// every run, failed or not. A host's trouble never fails the run.
		defer func() {
			if opts.hostsLater || ctx.Err() != nil || errors.Is(err, ErrUnknownProvider) {
				return
			}
			res.Hosts = e.convergeHosts(ctx, p, hostsModeFor(opts, res))
		}()
	}

	prov, err := e.provider(p)
	if err != nil {
		return res, err
	}
	defer func() {
		if recErr := e.recordOutcome(p, opts, &res, err); recErr != nil {
			err = errors.Join(err, recErr)
		}
		// However the run ended short of a new key (provider down, Vault
		// sealed, a failed step), an overdue key is alerted, once.
		if !res.Rotated && !errors.Is(err, ErrBusy) {
			if oErr := e.checkOverdue(p); oErr != nil {
				err = errors.Join(err, oErr)
			}
		}
	}()

	if err := e.cfg.Ready(ctx); err != nil {
		return res, err
	}
	resumed, err := e.resume(ctx, p, prov, opts)
	res.Resumed = resumed.count
	if resumed.last != nil {
		res.fill(resumed.last)
	}
	if err != nil {
		return res, err
	}

	snap := opts.snap
	if resumed.count > 0 {
		snap = nil // the listing predates what the resumed rotation did
	}
	obs, err := e.observe(ctx, p, prov, opts.Force && resumed.count == 0, snap)
	if err != nil {
		return res, err
	}
	d := Decide(obs)
	if len(d.Orphans) > 0 {
		// Keys named like ours with no record: a lost journal or state
		// file. Those whose private half is in Vault are taken back.
		adopted, err := e.adopt(ctx, p, prov, d)
		if err != nil {
			return res, err
		}
		if adopted > 0 {
			if obs, err = e.observe(ctx, p, prov, obs.Force, nil); err != nil {
				return res, err
			}
			d = Decide(obs)
		}
	}
	res.Reason = d.Reason
	if err := e.reconcile(p, d); err != nil {
		return res, err
	}
	if d.Rotate {
		r, err := e.rotate(ctx, p, prov, d, opts)
		if r != nil {
			res.fill(r)
		}
		if err != nil {
			return res, err
		}
		if opts.Emergency {
			// The replaced key is due right now: look again. Otherwise the
			// keys found due before the rotation are still exactly those.
			if obs, err = e.observe(ctx, p, prov, false, nil); err != nil {
				return res, err
			}
			d = Decide(obs)
		}
	}
	deleted, err := e.retire(ctx, p, prov, obs.ProviderKeys, d)
	res.Deleted = deleted
	if err != nil {
		return res, err
	}
	return res, nil
}

func (res *Result) fill(r *state.Rotation) {
	res.Rotated = r.Step == state.StepDone
	res.RotationID = r.ID
	res.KeyID = r.KeyID
	res.KeyName = r.KeyName
	res.Fingerprint = r.Fingerprint
}

// observe reads the policy's records and lists the provider. A snapshot
// taken before the policy's last run ended is stale and is not used: the
// run may have added a key the snapshot lacks.
func (e *Engine) observe(ctx context.Context, p policy.Policy, prov cloud.Provider, force bool, snap *snapshot) (Observation, error) {
	obs := Observation{Policy: p, Force: force}
	err := e.cfg.Journal.View(func(tx state.Tx) error {
		var err error
		if obs.Records, err = tx.Keys(p.Name); err != nil {
			return err
		}
		obs.Status, err = tx.PolicyStatus(p.Name)
		return err
	})
	if err != nil {
		return Observation{}, fmt.Errorf("read state: %w", err)
	}
	if snap != nil && obs.Status.LastAttempt.Before(snap.at) {
		obs.ProviderKeys = snap.keys
	} else if obs.ProviderKeys, err = prov.List(ctx, p.ProjectID); err != nil {
		return Observation{}, fmt.Errorf("list keys: %w", err)
	}
	obs.Now = e.cfg.Now()
	return obs, nil
}

// reconcile records what happened out of band: keys deleted behind our
// back, and orphans left by a crash (scheduled for deletion after grace).
func (e *Engine) reconcile(p policy.Policy, d Decision) error {
	if len(d.Missing) == 0 && len(d.Orphans) == 0 {
		return nil
	}
	now := e.cfg.Now()
	err := e.commit(p, func(tx *txn) error {
		for _, r := range d.Missing {
			wasActive := r.Status == state.KeyActive
			r.Status = state.KeyDeleted
			r.DeletedAt = now
			if err := tx.PutKey(r); err != nil {
				return err
			}
			detail := "key no longer on the provider (deleted or changed out of band)"
			if err := tx.audit(audit.Entry{Event: audit.EventKeyMissing, Trigger: TriggerSchedule, KeyID: r.KeyID, KeyName: r.Name,
				Fingerprint: r.Fingerprint, RotationID: r.RotationID, Detail: detail}); err != nil {
				return err
			}
			if wasActive {
				ev := e.event(p, policy.EventFailed, now)
				ev.KeyID, ev.KeyName, ev.OldFingerprint = r.KeyID, r.Name, r.Fingerprint
				ev.Error = "current key " + r.Name + " was deleted or changed on the provider out of band; rotating"
				if err := tx.notify(ev); err != nil {
					return err
				}
			}
		}
		for _, k := range d.Orphans {
			rec := state.KeyRecord{
				Policy: p.Name, Provider: p.Provider, ProjectID: p.ProjectID,
				KeyID: k.ID, Name: k.Name, Fingerprint: k.Fingerprint, PublicKey: k.PublicKey,
				Status: state.KeyOrphaned, CreatedAt: k.CreatedAt, DeleteAfter: now.Add(p.GracePeriod),
			}
			if err := tx.PutKey(rec); err != nil {
				return err
			}
			detail := "rotatord-named key with no record; deleting after the grace period"
			if err := tx.audit(audit.Entry{Event: audit.EventKeyOrphaned, Trigger: TriggerSchedule, KeyID: k.ID, KeyName: k.Name,
				Fingerprint: k.Fingerprint, Detail: detail}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record reconciliation: %w", err)
	}
	for _, r := range d.Missing {
		e.log.Warn("key missing on provider", "policy", p.Name, "key_id", r.KeyID, "fingerprint", r.Fingerprint)
	}
	for _, k := range d.Orphans {
		e.log.Warn("orphaned key found; deleting after grace period", "policy", p.Name, "key_id", k.ID, "fingerprint", k.Fingerprint)
	}
	return nil
}

// newRotationID returns a sortable, unique rotation ID.
func newRotationID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "r-" + now.UTC().Format(policy.KeyNameLayout) + "-" + hex.EncodeToString(b[:])
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// Resume finishes the policy's unfinished rotations and nothing else. The
// daemon calls it for every policy at start, before any schedule fires.
func (e *Engine) Resume(ctx context.Context, p policy.Policy) (Result, error) {
	res := Result{Policy: p.Name}
	unlock, err := e.cfg.Locks.Lock(ctx, p.Name)
	if err != nil {
		return res, err
	}
	defer unlock()
	prov, err := e.provider(p)
	if err != nil {
		return res, err
	}
	if err := e.cfg.Ready(ctx); err != nil {
		return res, err
	}
	resumed, err := e.resume(ctx, p, prov, Options{Trigger: TriggerResume})
	res.Resumed = resumed.count
	if resumed.last != nil {
		res.fill(resumed.last)
	}
	return res, err
}

// Sweep deletes the policy's retired keys whose grace period has passed,
// without rotating. It skips a policy whose run is in flight: that run
// sweeps at its end.
func (e *Engine) Sweep(ctx context.Context, p policy.Policy) ([]string, error) {
	unlock, ok := e.cfg.Locks.TryLock(p.Name)
	if !ok {
		return nil, nil
	}
	defer unlock()
	deleted, err := e.sweepKeys(ctx, p)
	if p.Hosts != nil && ctx.Err() == nil {
		// Only the hosts not known to be converged: an idle fleet costs
		// no login, and a retired key leaves hosts as its grace ends.
		e.convergeHosts(ctx, p, hostsDue)
	}
	return deleted, err
}

// sweepKeys is Sweep's part on the provider, under the policy's lock.
func (e *Engine) sweepKeys(ctx context.Context, p policy.Policy) ([]string, error) {
	prov, err := e.provider(p)
	if err != nil {
		return nil, err
	}
	var due bool
	now := e.cfg.Now()
	err = e.cfg.Journal.View(func(tx state.Tx) error {
		recs, err := tx.Keys(p.Name)
		for _, r := range recs {
			if (r.Status == state.KeyRetiring || r.Status == state.KeyOrphaned) && !r.DeleteAfter.After(now) {
				due = true
			}
		}
		return err
	})
	if err != nil || !due {
		// Nothing due: no provider call at all, so an idle daemon stays idle.
		return nil, err
	}
	if err := e.cfg.Ready(ctx); err != nil {
		return nil, err
	}
	obs, err := e.observe(ctx, p, prov, false, nil)
	if err != nil {
		return nil, err
	}
	return e.retire(ctx, p, prov, obs.ProviderKeys, Decide(obs))
}
