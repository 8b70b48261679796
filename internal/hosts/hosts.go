// Package hosts puts a policy's current SSH key onto running machines and
// takes its retired keys off (DESIGN.md §9.2): it logs in over SSH with a key
// rotatord holds, edits authorized_keys over SFTP, and proves every change
// with a fresh login.
//
// The package is built so that it cannot lock anyone out:
//   - a retired key is removed only after a fresh connection that offered the
//     current key alone logged in, in the same call;
//   - a file is replaced only by an atomic rename (posix-rename@openssh.com)
//     of a complete temporary file written beside it, and only if the file
//     still holds exactly the bytes the edit was computed from, so a
//     concurrent edit is never overwritten and a crash at any instant leaves
//     either the old or the new file;
//   - lines that are not the policy's keys stay byte for byte, and the new
//     file never has a wider mode or another owner than the old one;
//   - host keys are always verified (known_hosts or trust on first use) and a
//     changed host key stops everything before a key is offered;
//   - private keys stay in memory as ssh.Signer values: nothing this package
//     writes or returns contains private key bytes.
//
// Converge is idempotent: calling it again after any failure, timeout or
// SIGKILL moves the host on from wherever it is.
package hosts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Status is a host's state after a Converge call, as the report and the
// rotatord_hosts metric show it.
type Status string

// Statuses. DESIGN.md §9.2 names ok, stale, unreachable and unverified; the
// last three say why rotatord could not act and need a human.
const (
	// StatusOK: the host trusts the current key, proven by a login with it
	// alone in this call, and (with RemoveRetired) no retired key.
	StatusOK Status = "ok"
	// StatusStale: the host answered but is not converged yet (a concurrent
	// edit, an SFTP error, a timeout mid-edit); the next run retries. A dry
	// run reports it for a host that has changes pending.
	StatusStale Status = "stale"
	// StatusUnreachable: no SSH session could be set up (connection refused,
	// timeout, broken handshake). The host's file was not touched.
	StatusUnreachable Status = "unreachable"
	// StatusUnverified: the current key is in the file but a fresh login
	// with it alone failed (sshd reads another file, a from= option excludes
	// rotatord, the host went away), or the server lets anyone in without a
	// key so no login proves anything. No key was removed.
	StatusUnverified Status = "unverified"
	// StatusDenied: the host answered but none of the keys rotatord holds
	// opens it. Nothing was changed; a human must put a key back.
	StatusDenied Status = "denied"
	// StatusHostKeyChanged: the host presented a host key other than the one
	// known or pinned for it. Nothing was sent past the key exchange.
	StatusHostKeyChanged Status = "host_key_changed"
	// StatusHostKeyUnknown: the host is not in known_hosts and trust on
	// first use is off. Nothing was sent past the key exchange.
	StatusHostKeyUnknown Status = "host_key_unknown"
)

// Errors to branch on with errors.Is. Every error Converge returns is a
// *StepError naming the host and the step, wrapping one of these or the
// underlying SSH/SFTP error.
var (
	// ErrHostKeyChanged is matched by *HostKeyChangedError.
	ErrHostKeyChanged = errors.New("host key changed")
	// ErrHostKeyUnknown: the host is in no known_hosts file and no PinStore
	// was given.
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrNoHostKeyPolicy: Options.HostKeys names neither a known_hosts file
	// nor a PinStore; rotatord never connects without checking host keys.
	ErrNoHostKeyPolicy = errors.New("no host key verification configured")
	// ErrDenied: none of the offered keys was accepted.
	ErrDenied = errors.New("no key rotatord holds was accepted")
	// ErrConcurrentEdit: the file changed between the read that an edit was
	// computed from and the rename; nothing was overwritten. Retry.
	ErrConcurrentEdit = errors.New("authorized_keys changed while rotatord was editing it")
	// ErrNoAtomicRename: the SFTP server lacks posix-rename@openssh.com, so
	// the file cannot be replaced atomically and is not replaced at all.
	ErrNoAtomicRename = errors.New("sftp server lacks posix-rename@openssh.com")
	// ErrInvalidKeys: the Keys given to Converge are inconsistent (see
	// Keys.Validate). No host is contacted.
	ErrInvalidKeys = errors.New("invalid keys")
	// ErrUnsafeFile: authorized_keys is not something rotatord will edit (not
	// a regular file, too large, a dangling link).
	ErrUnsafeFile = errors.New("unsafe authorized_keys")
	// ErrNoKeyAuth: the server let rotatord in without checking a key, so no
	// login can prove which keys the host trusts; nothing is changed.
	ErrNoKeyAuth = errors.New("server accepted a login without a key")
)

// HostKeyChangedError reports a host whose host key differs from the one
// in known_hosts or pinned on first contact: either the machine was
// reinstalled or someone is in the middle. rotatord refuses to talk to it.
type HostKeyChangedError struct {
	Host string   // host:port as dialled
	Want []string // SHA256 fingerprints known or pinned for the host
	Got  string   // SHA256 fingerprint the host presented
}

func (e *HostKeyChangedError) Error() string {
	return fmt.Sprintf("host key changed for %s: presented %s, expected %s", e.Host, e.Got, strings.Join(e.Want, " or "))
}

// Is makes errors.Is(err, ErrHostKeyChanged) true.
func (e *HostKeyChangedError) Is(target error) bool { return target == ErrHostKeyChanged }

// StepError is the error of one host: which host (its label), which step
// and why. Steps: "validate keys", "validate target", "wait for host lock",
// "check host key", "login", "start sftp", "read authorized_keys",
// "add key", "verify", "remove retired keys", "verify after removal".
type StepError struct {
	Host string
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Host + ": " + e.Step + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *StepError) Unwrap() error { return e.Err }

// Target is one machine to converge.
type Target struct {
	Addr string // host name or IP address, without brackets
	Port int    // default 22
	User string // login user; required
}

// HostPort is the address dialled and the key of host key pins and of the
// per-host lock: "10.0.0.5:22", "[fe80::1]:2222".
func (t Target) HostPort() string {
	return net.JoinHostPort(t.Addr, strconv.Itoa(t.port()))
}

// Label is how reports and errors name the target: "ubuntu@10.0.0.5:22".
func (t Target) Label() string { return t.User + "@" + t.HostPort() }

func (t Target) port() int {
	if t.Port == 0 {
		return 22
	}
	return t.Port
}

// ParseTarget reads a static target as DESIGN.md §9.2 writes it,
// "[user@]host[:port]" (an IPv6 address in brackets when a port follows),
// filling in the defaults.
func ParseTarget(s, defaultUser string, defaultPort int) (Target, error) {
	t := Target{User: defaultUser, Port: defaultPort}
	rest := s
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		t.User, rest = rest[:i], rest[i+1:]
		if t.User == "" {
			return Target{}, fmt.Errorf("parse target %q: empty user", s)
		}
	}
	switch {
	case strings.HasPrefix(rest, "["):
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			if !strings.HasSuffix(rest, "]") {
				return Target{}, fmt.Errorf("parse target %q: %w", s, err)
			}
			host, port = rest[1:len(rest)-1], ""
		}
		t.Addr = host
		if port != "" {
			p, err := parsePort(port)
			if err != nil {
				return Target{}, fmt.Errorf("parse target %q: %w", s, err)
			}
			t.Port = p
		}
	case strings.Count(rest, ":") == 1:
		host, port, _ := strings.Cut(rest, ":")
		p, err := parsePort(port)
		if err != nil {
			return Target{}, fmt.Errorf("parse target %q: %w", s, err)
		}
		t.Addr, t.Port = host, p
	default: // a bare host name, IPv4 address or IPv6 address without port
		t.Addr = rest
	}
	switch {
	case t.Addr == "" || strings.ContainsAny(t.Addr, " \t/@[]"):
		return Target{}, fmt.Errorf("parse target %q: invalid host", s)
	case t.User == "":
		return Target{}, fmt.Errorf("parse target %q: no user and no default user", s)
	case strings.ContainsAny(t.User, " \t:/"):
		return Target{}, fmt.Errorf("parse target %q: invalid user", s)
	}
	if t.Port == 0 {
		t.Port = 22
	}
	return t, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return p, nil
}

// Key is one key pair of the policy as the engine holds it: the private
// half as a signer (in memory only, from Vault), and the public line.
type Key struct {
	// Signer logs in with the key. Required.
	Signer ssh.Signer
	// AuthorizedKey is the line added to authorized_keys for the current
	// key ("ssh-ed25519 AAAA... rotatord:gpu-team"); unused for older keys.
	AuthorizedKey string
	// Fingerprint is the SHA256 fingerprint; computed from Signer when empty,
	// checked against it when set.
	Fingerprint string
}

// Keys is everything Converge needs to know about one policy's keys.
type Keys struct {
	// Current is the key every host must trust.
	Current Key
	// Older are previous versions still in Vault, newest first, to log in
	// with when the current key is not on the host yet.
	Older []Key
	// Retired lists the fingerprints of the policy's keys that must go from
	// hosts once Options.RemoveRetired is set (grace period over, or an
	// emergency rotation).
	Retired []string
	// Managed lists every fingerprint the policy ever had, to tell its lines
	// from other people's in Result.Trusts; Current, Older and Retired are
	// included automatically.
	Managed []string
}

// Validate checks Keys for mistakes that would make Converge do the wrong
// thing: a missing signer, a public line that is not one authorized_keys
// line or not the signer's key, or a current key listed as retired.
func (k Keys) Validate() error {
	_, err := k.normalized()
	return err
}

// normalized returns a copy of k with every fingerprint filled in and the
// current key's line trimmed; the caller's slices are not written to, so one
// Keys value may be shared by concurrent calls.
func (k Keys) normalized() (Keys, error) {
	if err := k.Current.normalize(true); err != nil {
		return Keys{}, fmt.Errorf("%w: current key: %w", ErrInvalidKeys, err)
	}
	// A key offered twice would cost a refused attempt against sshd's
	// MaxAuthTries for nothing.
	seen := map[string]bool{k.Current.Fingerprint: true}
	var older []Key
	for i, o := range k.Older {
		if err := o.normalize(false); err != nil {
			return Keys{}, fmt.Errorf("%w: older key %d: %w", ErrInvalidKeys, i+1, err)
		}
		if !seen[o.Fingerprint] {
			seen[o.Fingerprint] = true
			older = append(older, o)
		}
	}
	k.Older = older
	for _, fp := range k.Retired {
		if fp == k.Current.Fingerprint {
			return Keys{}, fmt.Errorf("%w: current key %s is listed as retired", ErrInvalidKeys, fp)
		}
		if !strings.HasPrefix(fp, "SHA256:") {
			return Keys{}, fmt.Errorf("%w: retired fingerprint %q is not a SHA256 fingerprint", ErrInvalidKeys, fp)
		}
	}
	return k, nil
}

// normalize fills in Fingerprint and checks the key.
func (k *Key) normalize(current bool) error {
	if k.Signer == nil {
		return errors.New("no signer")
	}
	fp := ssh.FingerprintSHA256(k.Signer.PublicKey())
	if k.Fingerprint != "" && k.Fingerprint != fp {
		return fmt.Errorf("fingerprint %s does not match the signer's %s", k.Fingerprint, fp)
	}
	k.Fingerprint = fp
	if !current {
		return nil
	}
	line := strings.TrimSpace(k.AuthorizedKey)
	// Messages below never quote the line: a caller that put the private
	// key there by mistake must not see it in a log.
	if line == "" || strings.ContainsAny(line, "\r\n\x00") || strings.Contains(line, "PRIVATE KEY") {
		return errors.New("authorized key is not a single public key line")
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || len(rest) != 0 {
		return errors.New("authorized key is not a single public key line")
	}
	if got := ssh.FingerprintSHA256(pub); got != fp {
		return fmt.Errorf("authorized key %s is not the signer's key %s", got, fp)
	}
	k.AuthorizedKey = line
	return nil
}

// PinStore keeps host key fingerprints learnt on first contact
// (trust_on_first_use). The engine backs it with the state Store; hostport
// is Target.HostPort.
type PinStore interface {
	Pinned(ctx context.Context, hostport string) (fingerprint string, ok bool, err error)
	Pin(ctx context.Context, hostport, fingerprint string) error
}

// HostKeys says how host keys are verified. At least one field must be set.
// With both, a host listed in the known_hosts file is checked against it
// (a mismatch is refused, never re-pinned) and any other host is trusted
// on first use.
type HostKeys struct {
	// KnownHostsFile is an OpenSSH known_hosts file, read afresh by each
	// Converge call so that edits apply at once. Hashed names are supported;
	// @cert-authority lines are not.
	KnownHostsFile string
	// Pins enables trust on first use: the first host key seen is pinned and
	// any other key later is refused.
	Pins PinStore
}

// Options tune one Converge or ConvergeAll call.
type Options struct {
	// RemoveRetired removes the lines of Keys.Retired, after the current key
	// was verified on the host in the same call.
	RemoveRetired bool
	// AuthorizedKeysPath is the file to edit; relative paths are relative to
	// the login user's home (the SFTP server's start directory). Default
	// ".ssh/authorized_keys". A missing file, and a missing last directory,
	// are created (0600, 0700). A symbolic link is followed and left in
	// place.
	AuthorizedKeysPath string
	// Timeout bounds all the work on one host, connections included.
	// Default 30s.
	Timeout time.Duration
	// HostKeys is required.
	HostKeys HostKeys
	// DryRun logs in and reads the file but changes nothing: Result.Added
	// and Result.Removed say what a real run would do (plan).
	DryRun bool
	// Logger receives a line per change (key added, keys removed) and a
	// warning per changed host key; results, failures included, are the
	// caller's to log. Default: discard.
	Logger *slog.Logger

	// Concurrency bounds the hosts ConvergeAll works on at once. Default 16.
	Concurrency int
	// OnResult, if set, is called by ConvergeAll with each host's result as
	// it finishes, one call at a time, so the caller can persist progress.
	OnResult func(Result)

	// BeforeRename, when set, runs just before the file is re-read for the
	// final comparison before a rename. It is for tests of callers (an
	// edit at that instant must not be overwritten); nil in production.
	BeforeRename func(t Target, path string)

	// beforeRename, when set by tests, runs just before the file is re-read
	// for the final comparison, so a test can edit the file at that instant.
	beforeRename func(t Target, path string)
}

// Default option values.
const (
	DefaultAuthorizedKeysPath = ".ssh/authorized_keys"
	DefaultTimeout            = 30 * time.Second
	DefaultConcurrency        = 16
)

// Result is what happened on one host.
type Result struct {
	Target Target
	Status Status
	// HostKeyFingerprint is the host key the host presented (verified), ""
	// when the host was not reached.
	HostKeyFingerprint string
	// ContactedAt is when the host's key exchange completed; zero when it
	// did not. The report's last_contact.
	ContactedAt time.Time
	// LoggedInWith is the fingerprint of the key the first login used.
	LoggedInWith string
	// Verified: in this call, after any change to the file, a login
	// authenticated with the current key alone (a fresh connection that
	// offered nothing else, or the first login when the current key, offered
	// first, was accepted and nothing needed adding).
	Verified bool
	// Added and Removed are the fingerprints added to and removed from the
	// file by this call (in a dry run: that would be).
	Added, Removed []string
	// Trusts lists the policy's fingerprints that can log in as the file
	// last read or written in this call, in file order (nil when the file
	// was not read).
	Trusts []string
	// Err says why Status is not ok; a *StepError.
	Err error
}

// ConvergeAll converges every target with at most opts.Concurrency hosts at
// once and returns the results in target order. Keys are validated once;
// when they are invalid every result carries the error and no host is
// contacted.
func ConvergeAll(ctx context.Context, targets []Target, keys Keys, opts Options) []Result {
	results := make([]Result, len(targets))
	if err := keys.Validate(); err != nil {
		// Checked once here so that a bad key shows as one clear error per
		// host instead of a connection attempt per host.
		for i, t := range targets {
			results[i] = Result{Target: t, Status: StatusStale, Err: &StepError{Host: t.Label(), Step: "validate keys", Err: err}}
		}
		return results
	}
	n := opts.Concurrency
	if n <= 0 {
		n = DefaultConcurrency
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		slots = make(chan struct{}, n)
	)
	for i, t := range targets {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			r := Converge(ctx, t, keys, opts)
			results[i] = r
			if opts.OnResult != nil {
				mu.Lock()
				defer mu.Unlock()
				opts.OnResult(r)
			}
		}()
	}
	wg.Wait()
	return results
}

// managedSet is every fingerprint Result.Trusts may list.
func (k *Keys) managedSet() map[string]bool {
	set := map[string]bool{k.Current.Fingerprint: true}
	for _, o := range k.Older {
		set[o.Fingerprint] = true
	}
	for _, fp := range slices.Concat(k.Retired, k.Managed) {
		set[fp] = true
	}
	return set
}
