package hosts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/pkg/sftp"
)

// Converge moves one host toward "trusts the current key and, with
// RemoveRetired, no retired key" (DESIGN.md §9.2):
//
//  1. log in offering the current key, then the older ones in order;
//  2. read authorized_keys and, if no line lets the current key in, add one
//     (atomic replace, only if the file did not change meanwhile);
//  3. verify: unless the login of step 1 already used the current key and
//     the file was not changed, log in on a fresh connection offering the
//     current key alone (its key exchange overlaps the write; the key is
//     offered only after the rename);
//  4. with RemoveRetired, and only once step 3 passed, remove every line
//     whose key is retired the same way, then verify again.
//
// Two calls for the same host:port never run at once (the second waits).
// Converge never panics and never returns without a Result; Result.Err says
// which step failed on which host.
func Converge(ctx context.Context, t Target, keys Keys, opts Options) (res Result) {
	res.Target = t
	fail := func(status Status, step string, err error) Result {
		res.Status = status
		res.Err = &StepError{Host: t.Label(), Step: step, Err: err}
		return res
	}
	defer func() {
		// Not expected: x/crypto and pkg/sftp turn bad input into errors.
		// But one bizarre host must not take the daemon and the other hosts
		// down, and the file is safe whatever instant this happens at.
		if p := recover(); p != nil {
			res = fail(StatusStale, "converge", fmt.Errorf("internal error: %v", p))
			if opts.Logger != nil {
				opts.Logger.Error("panic converging host", "host", t.Label(), "err", res.Err, "stack", string(debug.Stack()))
			}
		}
	}()
	if err := ctx.Err(); err != nil {
		return fail(StatusStale, "start", err)
	}
	if opts.beforeRename == nil {
		opts.beforeRename = opts.BeforeRename
	}
	keys, err := keys.normalized()
	if err != nil {
		return fail(StatusStale, "validate keys", err)
	}
	if t.Addr == "" || t.User == "" {
		return fail(StatusStale, "validate target", errors.New("target needs an address and a user"))
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("host", t.Label())
	p := opts.AuthorizedKeysPath
	if p == "" {
		p = DefaultAuthorizedKeysPath
	}

	unlock, err := hostLocks.lock(ctx, t.HostPort())
	if err != nil {
		return fail(StatusStale, "wait for host lock", err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	hk, err := newHostKeyChecker(ctx, t, opts.HostKeys)
	if err != nil {
		status := StatusStale
		if errors.Is(err, ErrHostKeyUnknown) {
			status = StatusHostKeyUnknown
		}
		return fail(status, "check host key", err)
	}
	defer func() { res.HostKeyFingerprint, res.ContactedAt = hk.seen() }()

	// Step 1.
	offer := append([]Key{keys.Current}, keys.Older...)
	client, used, err := login(ctx, t, offer, hk)
	if err != nil {
		r := loginFailure(fail, "login", err)
		if r.Status == StatusHostKeyChanged {
			log.Warn("host key changed; host left untouched", "err", err)
		}
		return r
	}
	defer client.Close()
	res.LoggedInWith = offer[used].Fingerprint
	res.Verified = used == 0

	// Step 2.
	sc, err := sftp.NewClient(client)
	if err != nil {
		return fail(StatusStale, "start sftp", err)
	}
	// Hanging up the connection first ends the SFTP session at once; the
	// other order waits for the server's exit status, which a broken server
	// may never send.
	defer func() { client.Close(); sc.Close() }()
	f, err := readAuthorizedKeys(sc, p)
	if err != nil {
		return fail(StatusStale, "read authorized_keys", err)
	}
	managed := keys.managedSet()
	res.Trusts = presentAmong(scanLines(f.data), managed)
	retired := map[string]bool{}
	for _, fp := range keys.Retired {
		retired[fp] = true
	}
	if opts.DryRun {
		return dryRun(res, f, keys, retired, opts.RemoveRetired)
	}

	add := edit{add: keys.Current.AuthorizedKey, addFP: keys.Current.Fingerprint}
	var pending *pendingVerify
	if content, added, _ := add.apply(f.data); added {
		pending = startVerify(ctx, t, keys.Current, hk)
		if err := replace(sc, f, content, hook(t, opts.beforeRename)); err != nil {
			pending.abort()
			return fail(StatusStale, "add key", err)
		}
		res.Added = []string{keys.Current.Fingerprint}
		res.Trusts = presentAmong(scanLines(f.data), managed)
		log.Info("added current key", "fingerprint", keys.Current.Fingerprint, "path", f.path)
	}

	// Step 3. The login connection already proves the current key when it
	// logged in with it (offered first and accepted, so nothing else was
	// tried) and the file is unchanged since; otherwise a fresh one must.
	if pending != nil || !res.Verified {
		if pending == nil {
			pending = startVerify(ctx, t, keys.Current, hk)
		}
		if err := pending.wait(); err != nil {
			return loginFailure(fail, "verify", err)
		}
		res.Verified = true
	}
	if !opts.RemoveRetired || len(retired) == 0 {
		res.Status = StatusOK
		return res
	}

	// Step 4. f is the file as verified: replace re-reads it before the
	// rename and gives up if anyone changed it since, so the removal can
	// never act on a file the current key was not verified against.
	if !hasKey(scanLines(f.data), keys.Current.Fingerprint) {
		// Not reachable while Validate keeps the current key out of
		// Retired; checked anyway because the cost of being wrong is a
		// lockout.
		return fail(StatusStale, "remove retired keys", errors.New("current key missing before removal"))
	}
	content, _, removed := edit{remove: retired}.apply(f.data)
	if len(removed) == 0 {
		res.Status = StatusOK
		return res
	}
	pending = startVerify(ctx, t, keys.Current, hk)
	if err := replace(sc, f, content, hook(t, opts.beforeRename)); err != nil {
		pending.abort()
		return fail(StatusStale, "remove retired keys", err)
	}
	res.Removed = removed
	res.Trusts = presentAmong(scanLines(f.data), managed)
	log.Info("removed retired keys", "fingerprints", removed, "path", f.path)

	if err := pending.wait(); err != nil {
		res.Verified = false
		return loginFailure(fail, "verify after removal", err)
	}
	res.Status = StatusOK
	return res
}

// loginFailure turns a login error into the host's status. A refusal at the
// verification steps means the key is in the file but does not open the
// host: unverified, not denied.
func loginFailure(fail func(Status, string, error) Result, step string, err error) Result {
	status := StatusUnreachable
	var le *loginError
	if errors.As(err, &le) {
		status = le.status
		err = le.err
	}
	if step != "login" && (status == StatusDenied || status == StatusUnreachable) {
		status = StatusUnverified
	}
	return fail(status, step, err)
}

// dryRun reports what a real run would change, without changing it.
func dryRun(res Result, f *remoteFile, keys Keys, retired map[string]bool, removeRetired bool) Result {
	_, added, _ := edit{add: keys.Current.AuthorizedKey, addFP: keys.Current.Fingerprint}.apply(f.data)
	if added {
		res.Added = []string{keys.Current.Fingerprint}
	}
	if removeRetired {
		_, _, res.Removed = edit{remove: retired}.apply(f.data)
	}
	res.Status = StatusOK
	if added || len(res.Removed) > 0 {
		res.Status = StatusStale
	}
	return res
}

// hostLocks makes Converge single-flight per host:port across the whole
// process, whichever policy or caller asks: one package-level table, so no
// caller can forget to share it.
var hostLocks = &lockTable{locks: map[string]*hostLock{}}

type lockTable struct {
	mu    sync.Mutex
	locks map[string]*hostLock
}

type hostLock struct {
	ch   chan struct{} // holds one token while the host is locked
	refs int           // callers holding or waiting; the entry goes at zero
}

// lock waits until no other call holds key, or until ctx ends.
func (lt *lockTable) lock(ctx context.Context, key string) (unlock func(), err error) {
	lt.mu.Lock()
	l := lt.locks[key]
	if l == nil {
		l = &hostLock{ch: make(chan struct{}, 1)}
		lt.locks[key] = l
	}
	l.refs++
	lt.mu.Unlock()

	release := func() {
		lt.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(lt.locks, key)
		}
		lt.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// hook binds the test hook to the target, or returns nil.
func hook(t Target, h func(Target, string)) func(string) {
	if h == nil {
		return nil
	}
	return func(p string) { h(t, p) }
}
