package rotate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/hosts"
	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// HostSource finds the running machines of a policy beyond its static
// targets (hosts.discover, DESIGN.md §9.1): the instance inventory
// implements it. Instances returns the policy's running instances; an
// error leaves the discovered hosts as they were recorded (none is
// forgotten because a listing failed).
type HostSource interface {
	Instances(ctx context.Context, p policy.Policy) ([]DiscoveredHost, error)
}

// DiscoveredHost is one running instance a HostSource found.
type DiscoveredHost struct {
	Address    string // IP address or DNS name
	Port       int    // 0: the policy's hosts.port
	User       string // "": the policy's hosts.user
	InstanceID string // for logs
}

// Sources of a host record.
const (
	HostSourceStatic     = "static"
	HostSourceDiscovered = "discovered"
)

// maxOlderKeys bounds the older keys offered at login: sshd refuses a
// connection after MaxAuthTries (6 by default) keys.
const maxOlderKeys = 4

// HostsRun says what one convergence pass over a policy's hosts did.
type HostsRun struct {
	// Targets is how many hosts the policy has; Attempted how many were
	// worked on in this pass (the others are backing off, or converged
	// and not due).
	Targets, Attempted int
	// ByStatus counts the attempted hosts by the status they ended in.
	ByStatus map[state.HostStatus]int
	// Updated names the hosts whose authorized_keys changed.
	Updated []string
	// Err is why the pass could not start (no key in Vault, state error).
	Err error
}

// hostMode says which hosts a pass works on.
type hostMode int

const (
	// hostsAll: every host, except those backing off after failures
	// (unless forced). A run of the policy does this.
	hostsAll hostMode = iota
	// hostsForced: every host, backoff or not (after a rotation, or a
	// forced run).
	hostsForced
	// hostsDue: only the hosts not known to be converged: never
	// contacted, not ok and past their backoff, behind the current key,
	// or holding a retired key whose grace is over. The retire sweep
	// does this every few minutes, so an idle fleet costs no login.
	hostsDue
)

// hostsModeFor is the pass a run ends with: every host, backoff or not,
// after a rotation or a forced run; else every host not backing off.
func hostsModeFor(opts Options, res Result) hostMode {
	if opts.Force || res.Rotated {
		return hostsForced
	}
	return hostsAll
}

// hostTarget is one host of a policy and where it came from.
type hostTarget struct {
	t      hosts.Target
	source string
}

// hostKeySet is what a pass knows about the policy's keys.
type hostKeySet struct {
	keys    hosts.Keys
	current state.KeyRecord
	retired map[string]bool
}

// convergeHosts moves every host of p toward "trusts the current key and
// no retired key". It never fails the policy's run: a host's trouble is
// that host's status, and a pass that cannot start says why in Err.
func (e *Engine) convergeHosts(ctx context.Context, p policy.Policy, mode hostMode) *HostsRun {
	run := &HostsRun{ByStatus: map[state.HostStatus]int{}}
	if p.Hosts == nil {
		return run
	}
	log := e.log.With("policy", p.Name)
	if err := e.cfg.Ready(ctx); err != nil {
		run.Err = err
		return run
	}
	now := e.cfg.Now()
	recs, records, err := e.hostState(p.Name)
	if err != nil {
		run.Err = fmt.Errorf("read state: %w", err)
		log.Error("host convergence", "err", run.Err)
		return run
	}
	if _, ok := state.Current(recs); !ok {
		return run // no key yet: nothing to put on hosts
	}
	targets, discovered := e.hostTargets(ctx, p, records)
	run.Targets = len(targets)
	byHost := map[string]state.HostRecord{}
	for _, r := range records {
		byHost[r.Host] = r
	}
	ks := hostRetired(p, recs, now)
	var todo []hostTarget
	for _, ht := range targets {
		if hostNeedsWork(byHost[ht.t.Label()], ks, mode, now) {
			todo = append(todo, ht)
		}
	}
	e.forgetHosts(p, records, targets, discovered)
	if len(todo) == 0 {
		return run
	}
	if ks.keys, err = e.loadHostKeys(ctx, p, recs); err != nil {
		run.Err = err
		log.Error("host convergence: keys", "err", err)
		return run
	}
	run.Attempted = len(todo)

	opts := hosts.Options{
		RemoveRetired:      len(ks.retired) > 0,
		AuthorizedKeysPath: p.Hosts.AuthorizedKeys,
		Timeout:            p.Hosts.Timeout,
		Concurrency:        p.Hosts.Concurrency,
		HostKeys:           hosts.HostKeys{KnownHostsFile: p.Hosts.KnownHosts},
		Logger:             log,
		BeforeRename:       e.cfg.HostBeforeRename,
	}
	if p.Hosts.TrustOnFirstUse {
		opts.HostKeys.Pins = pinStore{e: e}
	}
	source := map[string]string{}
	ts := make([]hosts.Target, len(todo))
	for i, ht := range todo {
		ts[i] = ht.t
		source[ht.t.Label()] = ht.source
	}
	opts.OnResult = func(r hosts.Result) {
		if err := e.recordHost(p, r, source[r.Target.Label()], ks); err != nil {
			log.Error("record host", "host", r.Target.Label(), "err", err)
		}
	}
	e.cfg.Hook("before:hosts")
	results := hosts.ConvergeAll(ctx, ts, ks.keys, opts)
	var added, removed []string
	for _, r := range results {
		st := hostStatus(r.Status)
		run.ByStatus[st]++
		if len(r.Added) > 0 {
			added = append(added, r.Target.Label())
		}
		if len(r.Removed) > 0 {
			removed = append(removed, r.Target.Label())
		}
		if len(r.Added) > 0 || len(r.Removed) > 0 {
			run.Updated = append(run.Updated, r.Target.Label())
		}
		if r.Err != nil {
			log.Warn("host not converged", "host", r.Target.Label(), "status", r.Status, "err", r.Err)
		}
	}
	if len(run.Updated) > 0 {
		if err := e.notifyHostsUpdated(p, ks, added, removed); err != nil {
			log.Error("queue host_updated", "err", err)
		}
	}
	log.Info("hosts converged", "targets", run.Targets, "attempted", run.Attempted, "updated", len(run.Updated),
		"ok", run.ByStatus[state.HostOK])
	return run
}

// hostTargets lists the policy's static targets and, with discover, the
// instances its HostSource finds. discovered is false when discovery is
// on but failed, so that no recorded host is forgotten for it.
func (e *Engine) hostTargets(ctx context.Context, p policy.Policy, records []state.HostRecord) (out []hostTarget, discovered bool) {
	h := p.Hosts
	seen := map[string]bool{}
	add := func(t hosts.Target, source string) {
		if !seen[t.Label()] {
			seen[t.Label()] = true
			out = append(out, hostTarget{t: t, source: source})
		}
	}
	for _, t := range h.Targets {
		add(hosts.Target{Addr: t.Addr, Port: t.Port, User: t.User}, HostSourceStatic)
	}
	if !h.Discover {
		return out, true
	}
	if e.cfg.HostSource == nil {
		e.log.Debug("hosts.discover is on but no instance inventory is wired in; static targets only", "policy", p.Name)
		return out, true
	}
	found, err := e.cfg.HostSource.Instances(ctx, p)
	if err != nil {
		e.log.Warn("discover hosts", "policy", p.Name, "err", err)
		// Keep converging the hosts discovered before.
		for _, r := range records {
			if r.Source == HostSourceDiscovered {
				add(hosts.Target{Addr: r.Address, Port: r.Port, User: r.User}, HostSourceDiscovered)
			}
		}
		return out, false
	}
	for _, d := range found {
		t := hosts.Target{Addr: d.Address, Port: d.Port, User: d.User}
		if t.Port == 0 {
			t.Port = h.Port
		}
		if t.User == "" {
			t.User = h.User
		}
		if t.Addr == "" || t.User == "" {
			e.log.Warn("discovered instance skipped: no address or no login user (set hosts.user)", "policy", p.Name, "instance_id", d.InstanceID)
			continue
		}
		add(t, HostSourceDiscovered)
	}
	return out, true
}

// forgetHosts drops the records of hosts that left the policy's targets.
func (e *Engine) forgetHosts(p policy.Policy, records []state.HostRecord, targets []hostTarget, discovered bool) {
	keep := map[string]bool{}
	for _, t := range targets {
		keep[t.t.Label()] = true
	}
	var gone []string
	for _, r := range records {
		if !keep[r.Host] && (discovered || r.Source != HostSourceDiscovered) {
			gone = append(gone, r.Host)
		}
	}
	if len(gone) == 0 {
		return
	}
	err := e.commit(p, func(tx *txn) error {
		for _, h := range gone {
			if err := tx.DeleteHost(p.Name, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.log.Error("forget hosts", "policy", p.Name, "err", err)
	}
}

// hostRetired finds the current key and the keys hosts must lose now:
// deleted keys, and retiring or orphaned keys whose grace is over (an
// emergency rotation sets that to the rotation's end).
func hostRetired(p policy.Policy, recs []state.KeyRecord, now time.Time) hostKeySet {
	ks := hostKeySet{retired: map[string]bool{}}
	ks.current, _ = state.Current(recs)
	for _, r := range recs {
		if r.Fingerprint == "" {
			continue
		}
		if r.Fingerprint == ks.current.Fingerprint {
			continue
		}
		switch r.Status {
		case state.KeyDeleted:
			ks.retired[r.Fingerprint] = true
		case state.KeyRetiring, state.KeyOrphaned:
			if !r.DeleteAfter.IsZero() && !r.DeleteAfter.After(now) {
				ks.retired[r.Fingerprint] = true
			}
		}
	}
	return ks
}

// hostNeedsWork decides whether a pass in mode works on a host.
func hostNeedsWork(rec state.HostRecord, ks hostKeySet, mode hostMode, now time.Time) bool {
	backingOff := rec.Status != state.HostOK && rec.NextRetry.After(now)
	switch mode {
	case hostsForced:
		return true
	case hostsAll:
		return !backingOff
	}
	if rec.Host == "" || rec.Status == state.HostNeverContacted {
		return true
	}
	if backingOff {
		return false
	}
	if rec.Status != state.HostOK || rec.CurrentFingerprint != ks.current.Fingerprint || !slices.Contains(rec.Trusts, ks.current.Fingerprint) {
		return true
	}
	for _, fp := range rec.Trusts {
		if ks.retired[fp] {
			return true
		}
	}
	return false
}

// loadHostKeys reads the policy's key pairs from Vault: the current one
// (its version at <vault_path>) and the older versions still kept there,
// newest first, to log in to hosts that do not trust the current key yet.
func (e *Engine) loadHostKeys(ctx context.Context, p policy.Policy, recs []state.KeyRecord) (hosts.Keys, error) {
	cur, _ := state.Current(recs)
	data, err := e.vaultKey(ctx, p, cur)
	if err != nil {
		return hosts.Keys{}, fmt.Errorf("current key %s: %w", cur.Fingerprint, err)
	}
	line := data[fieldPublicKey]
	if line == "" {
		line = cur.PublicKey
	}
	current, err := hosts.KeyFromPrivate(secret.Secret(data[fieldPrivateKey]), line)
	if err != nil {
		return hosts.Keys{}, fmt.Errorf("current key %s: %w", cur.Fingerprint, err)
	}
	keys := hosts.Keys{Current: current}
	older := slices.Clone(recs)
	sort.SliceStable(older, func(i, j int) bool { return older[i].VaultVersion > older[j].VaultVersion })
	for _, r := range older {
		if r.Fingerprint == "" {
			continue
		}
		keys.Managed = append(keys.Managed, r.Fingerprint)
		if r.Fingerprint == cur.Fingerprint || r.VaultVersion <= 0 || len(keys.Older) >= maxOlderKeys {
			continue
		}
		d, err := e.cfg.Keys.GetVersion(ctx, p.VaultPath, r.VaultVersion)
		if err != nil || d[fieldFinger] != r.Fingerprint {
			continue // destroyed, or not that key: log in with the others
		}
		k, err := hosts.KeyFromPrivate(secret.Secret(d[fieldPrivateKey]), "")
		if err != nil {
			continue
		}
		keys.Older = append(keys.Older, k)
	}
	ks := hostRetired(p, recs, e.cfg.Now())
	for fp := range ks.retired {
		keys.Retired = append(keys.Retired, fp)
	}
	sort.Strings(keys.Retired)
	return keys, nil
}

// vaultKey reads the Vault version holding rec, checking it is that key.
func (e *Engine) vaultKey(ctx context.Context, p policy.Policy, rec state.KeyRecord) (map[string]string, error) {
	if rec.VaultVersion > 0 {
		d, err := e.cfg.Keys.GetVersion(ctx, p.VaultPath, rec.VaultVersion)
		if err == nil && d[fieldFinger] == rec.Fingerprint {
			return d, nil
		}
	}
	d, _, err := e.cfg.Keys.Get(ctx, p.VaultPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p.VaultPath, err)
	}
	if d[fieldFinger] != rec.Fingerprint {
		return nil, fmt.Errorf("%s holds %s, not the current key", p.VaultPath, d[fieldFinger])
	}
	return d, nil
}

// hostStatus maps a Converge status to the recorded one.
func hostStatus(s hosts.Status) state.HostStatus {
	switch s {
	case hosts.StatusOK:
		return state.HostOK
	case hosts.StatusUnreachable:
		return state.HostUnreachable
	case hosts.StatusUnverified:
		return state.HostUnverified
	case hosts.StatusDenied:
		return state.HostDenied
	case hosts.StatusHostKeyChanged:
		return state.HostKeyChanged
	case hosts.StatusHostKeyUnknown:
		return state.HostKeyUnknown
	}
	return state.HostStale
}

// recordHost persists one host's result as soon as it is known, with the
// alerts it calls for: host_unreachable once per streak, host_key_changed
// once per new host key.
func (e *Engine) recordHost(p policy.Policy, r hosts.Result, source string, ks hostKeySet) error {
	now := e.cfg.Now()
	label := r.Target.Label()
	var changed *hosts.HostKeyChangedError
	errors.As(r.Err, &changed)
	return e.commit(p, func(tx *txn) error {
		rec, _, err := tx.Host(p.Name, label)
		if err != nil {
			return err
		}
		rec.Policy, rec.Host, rec.Address, rec.Port, rec.User = p.Name, label, r.Target.Addr, r.Target.Port, r.Target.User
		if source != "" {
			rec.Source = source
		}
		rec.LastAttempt = now
		rec.CurrentFingerprint = ks.current.Fingerprint
		if !r.ContactedAt.IsZero() {
			rec.LastContact = r.ContactedAt
		}
		if r.HostKeyFingerprint != "" {
			rec.HostKeyFingerprint = r.HostKeyFingerprint
		}
		if r.Trusts != nil {
			rec.Trusts = r.Trusts
		}
		rec.Status = hostStatus(r.Status)
		rec.Verified = r.Verified
		if rec.Status == state.HostOK {
			rec.LastSuccess, rec.LastError = now, ""
			rec.ConsecutiveFailures, rec.NextRetry = 0, time.Time{}
			rec.HostKeyAlerted = ""
		} else {
			rec.ConsecutiveFailures++
			rec.NextRetry = now.Add(e.backoff(rec.ConsecutiveFailures))
			if r.Err != nil {
				rec.LastError = r.Err.Error()
			}
		}
		if rec.Status == state.HostUnreachable {
			if rec.UnreachableSince.IsZero() {
				rec.UnreachableSince = now
			}
			if !rec.UnreachableAlerted {
				rec.UnreachableAlerted = true
				ev := e.event(p, policy.EventHostUnreachable, now)
				ev.Detail = label + " is unreachable; its keys are left as they are and it is retried with backoff"
				ev.Error = rec.LastError
				if err := tx.notify(ev); err != nil {
					return err
				}
			}
		} else if !r.ContactedAt.IsZero() {
			rec.UnreachableSince, rec.UnreachableAlerted = time.Time{}, false
		}
		if changed != nil && rec.HostKeyAlerted != changed.Got {
			rec.HostKeyAlerted = changed.Got
			detail := fmt.Sprintf("%s presented host key %s, expected %s; rotatord refused to log in and left the host untouched",
				label, changed.Got, strings.Join(changed.Want, " or "))
			if err := tx.auditNoKeyOK(audit.Entry{Event: policy.EventHostKeyChanged, Trigger: TriggerSchedule, Detail: detail}); err != nil {
				return err
			}
			ev := e.event(p, policy.EventHostKeyChanged, now)
			ev.Detail = detail
			if err := tx.notify(ev); err != nil {
				return err
			}
		}
		if len(r.Added) > 0 || len(r.Removed) > 0 {
			detail := label
			if len(r.Added) > 0 {
				detail += ": added " + strings.Join(r.Added, ", ")
			}
			if len(r.Removed) > 0 {
				detail += ": removed " + strings.Join(r.Removed, ", ")
			}
			if err := tx.auditNoKeyOK(audit.Entry{Event: audit.EventHostUpdated, Trigger: TriggerSchedule,
				KeyID: ks.current.KeyID, KeyName: ks.current.Name, Fingerprint: ks.current.Fingerprint, Detail: detail}); err != nil {
				return err
			}
		}
		return tx.PutHost(rec)
	})
}

// notifyHostsUpdated queues one host_updated event for a pass: which hosts
// got the current key and which lost retired keys.
func (e *Engine) notifyHostsUpdated(p policy.Policy, ks hostKeySet, added, removed []string) error {
	now := e.cfg.Now()
	var parts []string
	if len(added) > 0 {
		parts = append(parts, fmt.Sprintf("current key added on %d host(s): %s", len(added), listHosts(added)))
	}
	if len(removed) > 0 {
		parts = append(parts, fmt.Sprintf("retired keys removed from %d host(s): %s", len(removed), listHosts(removed)))
	}
	return e.commit(p, func(tx *txn) error {
		ev := e.event(p, policy.EventHostUpdated, now)
		ev.KeyID, ev.KeyName, ev.NewFingerprint = ks.current.KeyID, ks.current.Name, ks.current.Fingerprint
		ev.Detail = strings.Join(parts, "; ")
		return tx.notify(ev)
	})
}

// listHosts names up to 20 hosts, then says how many more.
func listHosts(hs []string) string {
	const max = 20
	if len(hs) <= max {
		return strings.Join(hs, ", ")
	}
	return strings.Join(hs[:max], ", ") + fmt.Sprintf(" and %d more", len(hs)-max)
}

// pinStore keeps trust-on-first-use host key pins in state.
type pinStore struct{ e *Engine }

var _ hosts.PinStore = pinStore{}

func (s pinStore) Pinned(_ context.Context, hostport string) (string, bool, error) {
	var pin state.HostPin
	var ok bool
	err := s.e.cfg.Journal.View(func(tx state.Tx) (err error) {
		pin, ok, err = tx.HostKeyPin(hostport)
		return err
	})
	return pin.Fingerprint, ok, err
}

func (s pinStore) Pin(_ context.Context, hostport, fingerprint string) error {
	now := s.e.cfg.Now()
	err := s.e.cfg.Journal.Update(func(tx state.Tx) error { return tx.PinHostKey(hostport, fingerprint, now) })
	if err == nil {
		s.e.log.Info("host key pinned on first use", "host", hostport, "fingerprint", fingerprint)
	}
	return err
}

// ConvergeHosts runs one pass over p's hosts now, every host, backoff or
// not: for tests, the CLI and the daemon's first run after start. It
// waits for the policy's lock.
func (e *Engine) ConvergeHosts(ctx context.Context, p policy.Policy) (*HostsRun, error) {
	unlock, err := e.cfg.Locks.Lock(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	run := e.convergeHosts(ctx, p, hostsForced)
	return run, run.Err
}

// LogValue is the pass summary for a run's log line.
func (h *HostsRun) LogValue() slog.Value {
	if h == nil {
		return slog.Value{}
	}
	return slog.GroupValue(slog.Int("targets", h.Targets), slog.Int("attempted", h.Attempted), slog.Int("updated", len(h.Updated)))
}

// HostPlan is what a run would do on one host, judged from state alone:
// plan logs in nowhere (and reads no private key).
type HostPlan struct {
	Host   string
	Status string // the host's recorded status; "" when never contacted
	// Add and Remove are fingerprints a run would add to and remove from
	// the host's authorized_keys; NewKey says the key a due rotation makes
	// would be added too.
	Add, Remove []string `json:",omitempty"`
	NewKey      bool     `json:",omitzero"`
	Detail      string   `json:",omitempty"`
}

// planHosts is the hosts part of Plan. d is the run's decision: keys it
// would delete now leave hosts in the same run, and a rotation it would
// make puts the new key on every host.
func (e *Engine) planHosts(p policy.Policy, d Decision) ([]HostPlan, error) {
	if p.Hosts == nil {
		return nil, nil
	}
	now := e.cfg.Now()
	recs, records, err := e.hostState(p.Name)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	ks := hostRetired(p, recs, now)
	for _, r := range d.Retire {
		if r.Fingerprint != "" && r.Fingerprint != ks.current.Fingerprint {
			ks.retired[r.Fingerprint] = true
		}
	}
	byHost := map[string]state.HostRecord{}
	for _, r := range records {
		byHost[r.Host] = r
	}
	var names []string
	for _, t := range p.Hosts.Targets {
		names = append(names, hosts.Target{Addr: t.Addr, Port: t.Port, User: t.User}.Label())
	}
	for _, r := range records {
		if r.Source == HostSourceDiscovered && !slices.Contains(names, r.Host) {
			names = append(names, r.Host)
		}
	}
	out := make([]HostPlan, 0, len(names))
	for _, name := range names {
		rec, known := byHost[name]
		hp := HostPlan{Host: name, Status: string(rec.Status), NewKey: d.Rotate}
		switch {
		case !known || rec.Status == state.HostNeverContacted:
			if ks.current.Fingerprint != "" {
				hp.Add = []string{ks.current.Fingerprint}
			}
			hp.Detail = "never contacted: log in, add the current key if it is missing"
		default:
			if ks.current.Fingerprint != "" && !slices.Contains(rec.Trusts, ks.current.Fingerprint) {
				hp.Add = []string{ks.current.Fingerprint}
			}
			for _, fp := range rec.Trusts {
				if ks.retired[fp] {
					hp.Remove = append(hp.Remove, fp)
				}
			}
			if rec.Status != state.HostOK && rec.NextRetry.After(now) {
				hp.Detail = fmt.Sprintf("%s; retried at %s", rec.Status, rec.NextRetry.UTC().Format(time.RFC3339))
			}
		}
		out = append(out, hp)
	}
	return out, nil
}

// hostState reads, in one view, the policy's keys and its host records.
func (e *Engine) hostState(policy string) (recs []state.KeyRecord, records []state.HostRecord, err error) {
	err = e.cfg.Journal.View(func(tx state.Tx) error {
		if recs, err = tx.Keys(policy); err != nil {
			return err
		}
		records, err = tx.Hosts(policy)
		return err
	})
	return recs, records, err
}
