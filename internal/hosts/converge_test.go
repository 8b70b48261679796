package hosts

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/hosts/sshdtest"
	"github.com/rotatord/rotatord/internal/keygen"
)

// fleet is a started sshd with n hosts, each holding unrelatedContent with
// the policy's old key, and the keys of a rotation from old to cur.
type fleet struct {
	srv    *sshdtest.Server
	hosts  []*sshdtest.Host
	before [][]byte
	old    testKey
	cur    testKey
	others []testKey
	pins   *memPins
}

func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	f := &fleet{
		srv:  sshdtest.Start(t, n),
		old:  ed25519Key(t, "rotatord:gpu-team"),
		cur:  ed25519Key(t, "rotatord:gpu-team"),
		pins: newMemPins(),
	}
	for range 3 {
		f.others = append(f.others, ed25519Key(t, "someone"))
	}
	f.hosts = f.srv.Hosts()
	for i, h := range f.hosts {
		data := unrelatedContent(t, i, f.others, f.old)
		h.WriteAuthorizedKeys(t, data, 0o600)
		f.before = append(f.before, data)
	}
	return f
}

func (f *fleet) targets() []Target {
	var ts []Target
	for _, h := range f.hosts {
		ts = append(ts, targetOf(h))
	}
	return ts
}

// keys is what the engine passes after a rotation from old to cur.
func (f *fleet) keys() Keys {
	return Keys{
		Current: f.cur.Key,
		Older:   []Key{{Signer: f.old.Signer}},
		Retired: []string{f.old.Fingerprint},
	}
}

func (f *fleet) opts() Options {
	return Options{HostKeys: HostKeys{Pins: f.pins}, Timeout: 20 * time.Second}
}

func wantStatus(t *testing.T, r Result, want Status) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("%s: status %s, want %s (err: %v)", r.Target.Label(), r.Status, want, r.Err)
	}
}

// TestConverge_Fleet is the rotation of DESIGN.md §9.2 on 20 hosts: the
// new key is added to every file without touching another byte, then the
// old key is removed, again without touching another byte, modes kept.
func TestConverge_Fleet(t *testing.T) {
	f := newFleet(t, 20)
	keys := f.keys()
	curLine := []byte(f.cur.line)

	results := ConvergeAll(context.Background(), f.targets(), keys, f.opts())
	for i, r := range results {
		wantStatus(t, r, StatusOK)
		h := f.hosts[i]
		if r.LoggedInWith != f.old.Fingerprint {
			t.Errorf("%s: logged in with %s, want the old key %s", h.Addr(), r.LoggedInWith, f.old.Fingerprint)
		}
		if !r.Verified || !slices.Equal(r.Added, []string{f.cur.Fingerprint}) || len(r.Removed) != 0 {
			t.Errorf("%s: verified %v added %v removed %v", h.Addr(), r.Verified, r.Added, r.Removed)
		}
		if !slices.Equal(r.Trusts, []string{f.old.Fingerprint, f.cur.Fingerprint}) {
			t.Errorf("%s: trusts %v, want old then current", h.Addr(), r.Trusts)
		}
		if r.HostKeyFingerprint == "" || r.ContactedAt.IsZero() {
			t.Errorf("%s: host key %q contacted %v", h.Addr(), r.HostKeyFingerprint, r.ContactedAt)
		}
		// Every byte of the original, then the terminator its last line
		// lacked, then exactly the current key's line.
		want := slices.Concat(f.before[i], []byte("\n"), curLine, []byte("\n"))
		if got := h.ReadAuthorizedKeys(t); !bytes.Equal(got, want) {
			t.Errorf("%s: after adding:\n%q\nwant\n%q", h.Addr(), got, want)
		}
		if m := fileMode(t, h.AuthorizedKeys); m != 0o600 {
			t.Errorf("%s: mode %o, want 0600", h.Addr(), m)
		}
		if err := h.Login(f.cur.Signer); err != nil {
			t.Errorf("%s: fresh login with the current key: %v", h.Addr(), err)
		}
	}

	// The grace period ends.
	opts := f.opts()
	opts.RemoveRetired = true
	results = ConvergeAll(context.Background(), f.targets(), keys, opts)
	for i, r := range results {
		wantStatus(t, r, StatusOK)
		h := f.hosts[i]
		if r.LoggedInWith != f.cur.Fingerprint || !r.Verified {
			t.Errorf("%s: logged in with %s verified %v, want the current key", h.Addr(), r.LoggedInWith, r.Verified)
		}
		if len(r.Added) != 0 || !slices.Equal(r.Removed, []string{f.old.Fingerprint}) {
			t.Errorf("%s: added %v removed %v", h.Addr(), r.Added, r.Removed)
		}
		if !slices.Equal(r.Trusts, []string{f.cur.Fingerprint}) {
			t.Errorf("%s: trusts %v, want only the current key", h.Addr(), r.Trusts)
		}
		oldLine := []byte(f.old.line + "\n")
		want := slices.Concat(bytes.Replace(f.before[i], oldLine, nil, 1), []byte("\n"), curLine, []byte("\n"))
		got := h.ReadAuthorizedKeys(t)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: after removing:\n%q\nwant\n%q", h.Addr(), got, want)
		}
		if m := fileMode(t, h.AuthorizedKeys); m != 0o600 {
			t.Errorf("%s: mode %o, want 0600", h.Addr(), m)
		}
		if err := h.Login(f.old.Signer); err == nil {
			t.Errorf("%s: the retired key still logs in", h.Addr())
		}
		if err := h.Login(f.cur.Signer); err != nil {
			t.Errorf("%s: fresh login with the current key: %v", h.Addr(), err)
		}
		assertNoPrivateKey(t, h.AuthorizedKeys, got, f.old, f.cur)
		assertNoDebris(t, h)
	}

	// Converged: a third run changes nothing and needs no second login.
	for _, r := range ConvergeAll(context.Background(), f.targets(), keys, opts) {
		wantStatus(t, r, StatusOK)
		if len(r.Added)+len(r.Removed) != 0 {
			t.Errorf("%s: converged host changed again: added %v removed %v", r.Target.Label(), r.Added, r.Removed)
		}
	}
}

// assertNoDebris fails when a temporary file is left beside the host's file.
func assertNoDebris(t *testing.T, h *sshdtest.Host) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Dir(h.AuthorizedKeys))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "authorized_keys" {
			t.Errorf("%s: left %s beside authorized_keys", h.Addr(), e.Name())
		}
	}
}

// TestConverge_HostKeyChanged: a host presenting another host key than the
// one pinned on first contact, or the one in known_hosts, is refused before
// any key is offered, and its file is not touched.
func TestConverge_HostKeyChanged(t *testing.T) {
	f := newFleet(t, 2)
	keys := f.keys()
	h := f.hosts[0]

	// First contact pins the host key (trust on first use) and converges.
	r := Converge(context.Background(), targetOf(h), keys, f.opts())
	wantStatus(t, r, StatusOK)
	firstKey := r.HostKeyFingerprint
	if got := f.pins.get(targetOf(h).HostPort()); got != firstKey || got == "" {
		t.Fatalf("pinned %q, want the host key seen %q", got, firstKey)
	}
	known := knownHostsFile(t, f.hosts...)

	f.srv.ChangeHostKey(h)
	h.WriteAuthorizedKeys(t, f.before[0], 0o600) // as if it was reinstalled
	for _, tc := range []struct {
		name string
		hk   HostKeys
	}{
		{"pinned", HostKeys{Pins: f.pins}},
		{"known_hosts", HostKeys{KnownHostsFile: known}},
		{"known_hosts before pins", HostKeys{KnownHostsFile: known, Pins: newMemPins()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := f.opts()
			opts.HostKeys = tc.hk
			opts.RemoveRetired = true
			r := Converge(context.Background(), targetOf(h), keys, opts)
			wantStatus(t, r, StatusHostKeyChanged)
			var changed *HostKeyChangedError
			if !errors.As(r.Err, &changed) || !errors.Is(r.Err, ErrHostKeyChanged) {
				t.Fatalf("err %v, want a *HostKeyChangedError", r.Err)
			}
			if !slices.Equal(changed.Want, []string{firstKey}) || changed.Got == firstKey || changed.Got == "" {
				t.Errorf("changed: want %v got %s; the first key was %s", changed.Want, changed.Got, firstKey)
			}
			if got := h.ReadAuthorizedKeys(t); !bytes.Equal(got, f.before[0]) {
				t.Errorf("file touched:\n%q", got)
			}
			if r.LoggedInWith != "" || r.Trusts != nil {
				t.Errorf("logged in with %q, read %v", r.LoggedInWith, r.Trusts)
			}
		})
	}
	if got := f.pins.get(targetOf(h).HostPort()); got != firstKey {
		t.Errorf("pin replaced by %q", got)
	}

	// The other host, unchanged, still converges against known_hosts.
	opts := f.opts()
	opts.HostKeys = HostKeys{KnownHostsFile: known}
	wantStatus(t, Converge(context.Background(), targetOf(f.hosts[1]), keys, opts), StatusOK)

	t.Run("unknown without trust on first use", func(t *testing.T) {
		opts := f.opts()
		opts.HostKeys = HostKeys{KnownHostsFile: knownHostsFile(t, f.hosts[1])}
		r := Converge(context.Background(), targetOf(h), keys, opts)
		wantStatus(t, r, StatusHostKeyUnknown)
		if !errors.Is(r.Err, ErrHostKeyUnknown) {
			t.Errorf("err %v", r.Err)
		}
	})
	t.Run("no verification configured", func(t *testing.T) {
		opts := f.opts()
		opts.HostKeys = HostKeys{}
		r := Converge(context.Background(), targetOf(h), keys, opts)
		if r.Status == StatusOK || !errors.Is(r.Err, ErrNoHostKeyPolicy) {
			t.Errorf("status %s err %v, want ErrNoHostKeyPolicy", r.Status, r.Err)
		}
	})
}

// TestConverge_Unreachable: a host that is down is reported unreachable
// while the others converge; its file keeps its keys, and it converges once
// it is back.
func TestConverge_Unreachable(t *testing.T) {
	f := newFleet(t, 4)
	down := f.hosts[2]
	f.srv.SetDown(down, true)

	results := ConvergeAll(context.Background(), f.targets(), f.keys(), f.opts())
	for i, r := range results {
		if f.hosts[i] == down {
			wantStatus(t, r, StatusUnreachable)
			if r.Err == nil || !strings.Contains(r.Err.Error(), down.Addr()) || !strings.Contains(r.Err.Error(), "login") {
				t.Errorf("error %v should name the host and the step", r.Err)
			}
			if !r.ContactedAt.IsZero() {
				t.Errorf("contacted at %v", r.ContactedAt)
			}
			continue
		}
		wantStatus(t, r, StatusOK)
	}
	if got := down.ReadAuthorizedKeys(t); !bytes.Equal(got, f.before[2]) {
		t.Errorf("unreachable host's file changed:\n%q", got)
	}

	f.srv.SetDown(down, false)
	r := Converge(context.Background(), targetOf(down), f.keys(), f.opts())
	wantStatus(t, r, StatusOK)
	if err := down.Login(f.cur.Signer); err != nil {
		t.Errorf("current key after coming back: %v", err)
	}
}

// TestConverge_ConcurrentEdit: someone edits the file between rotatord's
// read and its rename. The edit survives, the call reports stale, and the
// next call converges on top of the edit.
func TestConverge_ConcurrentEdit(t *testing.T) {
	f := newFleet(t, 1)
	h := f.hosts[0]
	edit := []byte("\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP7kBmMeuNZi4Zb5n11tWalNzcaoLqMujHqhtwqjGBxp carol@edited-meanwhile\n")
	var fired atomic.Int32
	opts := f.opts()
	opts.beforeRename = func(Target, string) {
		if fired.Add(1) == 1 {
			b := h.ReadAuthorizedKeys(t)
			h.WriteAuthorizedKeys(t, append(b, edit...), 0o600)
		}
	}
	r := Converge(context.Background(), targetOf(h), f.keys(), opts)
	wantStatus(t, r, StatusStale)
	if !errors.Is(r.Err, ErrConcurrentEdit) {
		t.Fatalf("err %v, want ErrConcurrentEdit", r.Err)
	}
	edited := append(slices.Clone(f.before[0]), edit...)
	if got := h.ReadAuthorizedKeys(t); !bytes.Equal(got, edited) {
		t.Fatalf("concurrent edit overwritten:\n%q", got)
	}
	assertNoDebris(t, h)

	r = Converge(context.Background(), targetOf(h), f.keys(), opts)
	wantStatus(t, r, StatusOK)
	want := slices.Concat(edited, []byte(f.cur.line+"\n"))
	if got := h.ReadAuthorizedKeys(t); !bytes.Equal(got, want) {
		t.Fatalf("after retry:\n%q\nwant\n%q", got, want)
	}
}

// TestConverge_OlderKeyLogin: a host that only trusts an older key (here
// the oldest of three, as on a machine launched long ago) is entered with
// it, given the current key, and verified with the current key alone.
func TestConverge_OlderKeyLogin(t *testing.T) {
	srv := sshdtest.Start(t, 1)
	h := srv.Hosts()[0]
	cur := ed25519Key(t, "rotatord:p")
	prev := newTestKey(t, keygen.Spec{Type: keygen.TypeECDSA, Curve: "p256"}, "rotatord:p")
	oldest := newTestKey(t, keygen.Spec{Type: keygen.TypeRSA, Bits: 3072}, "rotatord:p")
	h.WriteAuthorizedKeys(t, []byte(oldest.line+"\n"), 0o600)
	if err := h.Login(cur.Signer); err == nil {
		t.Fatal("current key logs in before convergence")
	}

	keys := Keys{Current: cur.Key, Older: []Key{{Signer: prev.Signer}, {Signer: oldest.Signer}}}
	r := Converge(context.Background(), targetOf(h), keys, Options{HostKeys: HostKeys{Pins: newMemPins()}})
	wantStatus(t, r, StatusOK)
	if r.LoggedInWith != oldest.Fingerprint || !r.Verified {
		t.Errorf("logged in with %s verified %v, want the oldest key %s", r.LoggedInWith, r.Verified, oldest.Fingerprint)
	}
	if err := h.Login(cur.Signer); err != nil {
		t.Errorf("fresh login with the current key: %v", err)
	}
	if got, want := string(h.ReadAuthorizedKeys(t)), oldest.line+"\n"+cur.line+"\n"; got != want {
		t.Errorf("file %q, want %q", got, want)
	}
}

// TestConverge_MissingFile: a missing file and its missing directory are
// created (0700, 0600) holding just the current key. The file here is one
// sshd does not read, so the fresh login with the current key fails and the
// host is reported unverified: the honest answer for a misconfigured path,
// with nothing removed.
func TestConverge_MissingFile(t *testing.T) {
	f := newFleet(t, 1)
	h := f.hosts[0]
	if err := os.Mkdir(filepath.Join(h.Home, "elsewhere"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := f.opts()
	opts.AuthorizedKeysPath = "elsewhere/.ssh/authorized_keys"
	opts.RemoveRetired = true
	r := Converge(context.Background(), targetOf(h), f.keys(), opts)
	wantStatus(t, r, StatusUnverified)
	if !slices.Equal(r.Added, []string{f.cur.Fingerprint}) || r.Verified || len(r.Removed) != 0 {
		t.Errorf("added %v verified %v removed %v", r.Added, r.Verified, r.Removed)
	}
	if !errors.Is(r.Err, ErrDenied) || !strings.Contains(r.Err.Error(), ": verify: ") {
		t.Errorf("err %v, want the verify step refused", r.Err)
	}
	created := filepath.Join(h.Home, "elsewhere", ".ssh", "authorized_keys")
	data, err := os.ReadFile(created)
	if err != nil || string(data) != f.cur.line+"\n" {
		t.Fatalf("created file %q, %v", data, err)
	}
	if m := fileMode(t, created); m != 0o600 {
		t.Errorf("file mode %o", m)
	}
	if m := fileMode(t, filepath.Dir(created)); m != 0o700 {
		t.Errorf(".ssh mode %o", m)
	}
	if got := h.ReadAuthorizedKeys(t); !bytes.Equal(got, f.before[0]) {
		t.Errorf("the file sshd reads changed:\n%q", got)
	}
}

// TestConverge_ModeAndOwner: the new file never has a wider mode than the
// old one, at most 0600, and keeps its owner.
func TestConverge_ModeAndOwner(t *testing.T) {
	f := newFleet(t, 3)
	for i, tc := range []struct {
		from, want os.FileMode
	}{{0o644, 0o600}, {0o400, 0o400}, {0o640, 0o600}} {
		h := f.hosts[i]
		if err := os.Chmod(h.AuthorizedKeys, tc.from); err != nil {
			t.Fatal(err)
		}
		r := Converge(context.Background(), targetOf(h), f.keys(), f.opts())
		wantStatus(t, r, StatusOK)
		if m := fileMode(t, h.AuthorizedKeys); m != tc.want {
			t.Errorf("mode %o became %o, want %o", tc.from, m, tc.want)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	h := f.hosts[0]
	if err := os.Chown(h.AuthorizedKeys, 4321, 4322); err != nil {
		t.Fatal(err)
	}
	opts := f.opts()
	opts.RemoveRetired = true
	wantStatus(t, Converge(context.Background(), targetOf(h), f.keys(), opts), StatusOK)
	fi, err := os.Stat(h.AuthorizedKeys)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4321 || st.Gid != 4322 {
		t.Errorf("owner %d:%d, want 4321:4322", st.Uid, st.Gid)
	}
}

// TestConverge_Symlink: an authorized_keys that is a link has its target
// edited; the link stays a link.
func TestConverge_Symlink(t *testing.T) {
	f := newFleet(t, 1)
	h := f.hosts[0]
	linked := filepath.Join(h.Home, "keys.real")
	if err := os.Rename(h.AuthorizedKeys, linked); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../keys.real", h.AuthorizedKeys); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, Converge(context.Background(), targetOf(h), f.keys(), f.opts()), StatusOK)
	if fi, err := os.Lstat(h.AuthorizedKeys); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link replaced: %v %v", fi.Mode(), err)
	}
	data, _ := os.ReadFile(linked)
	if want := slices.Concat(f.before[0], []byte("\n"+f.cur.line+"\n")); !bytes.Equal(data, want) {
		t.Errorf("target %q", data)
	}
}

// TestConverge_DryRun: plan shows what would change and changes nothing.
func TestConverge_DryRun(t *testing.T) {
	f := newFleet(t, 1)
	h := f.hosts[0]
	opts := f.opts()
	opts.DryRun, opts.RemoveRetired = true, true
	r := Converge(context.Background(), targetOf(h), f.keys(), opts)
	wantStatus(t, r, StatusStale)
	if !slices.Equal(r.Added, []string{f.cur.Fingerprint}) || !slices.Equal(r.Removed, []string{f.old.Fingerprint}) {
		t.Errorf("would add %v remove %v", r.Added, r.Removed)
	}
	if got := h.ReadAuthorizedKeys(t); !bytes.Equal(got, f.before[0]) {
		t.Errorf("dry run changed the file:\n%q", got)
	}
	assertNoDebris(t, h)
}

// TestConverge_Denied: a host that trusts none of the policy's keys is
// reported denied and left alone.
func TestConverge_Denied(t *testing.T) {
	f := newFleet(t, 1)
	h := f.hosts[0]
	h.WriteAuthorizedKeys(t, []byte(f.others[0].line+"\n"), 0o600)
	r := Converge(context.Background(), targetOf(h), f.keys(), f.opts())
	wantStatus(t, r, StatusDenied)
	if !errors.Is(r.Err, ErrDenied) || r.LoggedInWith != "" || r.HostKeyFingerprint == "" {
		t.Errorf("err %v logged in with %q host key %q", r.Err, r.LoggedInWith, r.HostKeyFingerprint)
	}
	if got := h.ReadAuthorizedKeys(t); string(got) != f.others[0].line+"\n" {
		t.Errorf("file changed: %q", got)
	}
}

// TestConverge_ManyOlderKeys: sshd hangs up after MaxAuthTries (6) refused
// keys; the keys not yet offered are offered on a new connection, so a
// machine launched with the ninth key back is still reached.
func TestConverge_ManyOlderKeys(t *testing.T) {
	srv := sshdtest.Start(t, 1)
	h := srv.Hosts()[0]
	cur := ed25519Key(t, "rotatord:p")
	var older []Key
	var last testKey
	for range 9 {
		last = ed25519Key(t, "rotatord:p")
		older = append(older, Key{Signer: last.Signer})
	}
	h.WriteAuthorizedKeys(t, []byte(last.line+"\n"), 0o600)
	r := Converge(context.Background(), targetOf(h), Keys{Current: cur.Key, Older: older}, Options{HostKeys: HostKeys{Pins: newMemPins()}})
	wantStatus(t, r, StatusOK)
	if r.LoggedInWith != last.Fingerprint {
		t.Errorf("logged in with %s, want the tenth key offered %s", r.LoggedInWith, last.Fingerprint)
	}
}

// TestConverge_Unverified: the current key is in the file but restricted
// to another source address, so it cannot open the host from here: the host
// is unverified and, even with RemoveRetired, the old key stays.
func TestConverge_Unverified(t *testing.T) {
	f := newFleet(t, 1)
	h := f.hosts[0]
	content := slices.Concat(f.before[0], []byte("\nfrom=\"192.0.2.1\" "+f.cur.line+"\n"))
	h.WriteAuthorizedKeys(t, content, 0o600)
	opts := f.opts()
	opts.RemoveRetired = true
	r := Converge(context.Background(), targetOf(h), f.keys(), opts)
	wantStatus(t, r, StatusUnverified)
	if r.LoggedInWith != f.old.Fingerprint || r.Verified || len(r.Added)+len(r.Removed) != 0 {
		t.Errorf("logged in with %s verified %v added %v removed %v", r.LoggedInWith, r.Verified, r.Added, r.Removed)
	}
	if got := h.ReadAuthorizedKeys(t); !bytes.Equal(got, content) {
		t.Errorf("file changed:\n%q", got)
	}
}

// TestConverge_BrokenServers: whatever answers on the port, Converge ends
// within its timeout with unreachable, never a panic.
func TestConverge_BrokenServers(t *testing.T) {
	cur := ed25519Key(t, "")
	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"silent", func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }},
		{"hangs up", func(c net.Conn) { c.Close() }},
		{"not ssh", func(c net.Conn) { _, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")); c.Close() }},
		{"garbage after banner", func(c net.Conn) {
			_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.9\r\n"))
			_, _ = c.Write(bytes.Repeat([]byte{0xff}, 4096))
			_, _ = io.Copy(io.Discard, c)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { defer c.Close(); tc.serve(c) }()
				}
			}()
			port := ln.Addr().(*net.TCPAddr).Port
			start := time.Now()
			r := Converge(context.Background(), Target{Addr: "127.0.0.1", Port: port, User: "u"},
				Keys{Current: cur.Key}, Options{HostKeys: HostKeys{Pins: newMemPins()}, Timeout: 700 * time.Millisecond})
			wantStatus(t, r, StatusUnreachable)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v with a 700ms timeout", d)
			}
		})
	}
	t.Run("lets anyone in", func(t *testing.T) {
		// An SSH server that asks for no key: no login can prove anything
		// about authorized_keys, so rotatord changes nothing.
		port := fakeSSHServer(t, &ssh.ServerConfig{NoClientAuth: true}, func(ch ssh.NewChannel) {
			_ = ch.Reject(ssh.Prohibited, "no")
		})
		r := Converge(context.Background(), Target{Addr: "127.0.0.1", Port: port, User: "u"},
			Keys{Current: cur.Key}, Options{HostKeys: HostKeys{Pins: newMemPins()}})
		wantStatus(t, r, StatusUnverified)
		if !errors.Is(r.Err, ErrNoKeyAuth) || r.LoggedInWith != "" {
			t.Errorf("err %v logged in with %q", r.Err, r.LoggedInWith)
		}
	})
	t.Run("garbage sftp", func(t *testing.T) {
		cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
			return nil, nil
		}}
		port := fakeSSHServer(t, cfg, func(nc ssh.NewChannel) {
			ch, reqs, err := nc.Accept()
			if err != nil {
				return
			}
			defer ch.Close()
			for req := range reqs {
				_ = req.Reply(true, nil)
				if req.Type == "subsystem" {
					_, _ = ch.Write(bytes.Repeat([]byte{0xff, 0, 0x7f}, 3000))
				}
			}
		})
		r := Converge(context.Background(), Target{Addr: "127.0.0.1", Port: port, User: "u"},
			Keys{Current: cur.Key}, Options{HostKeys: HostKeys{Pins: newMemPins()}, Timeout: 2 * time.Second})
		wantStatus(t, r, StatusStale)
		if r.LoggedInWith != cur.Fingerprint || r.Err == nil || !strings.Contains(r.Err.Error(), "start sftp") {
			t.Errorf("logged in with %q, err %v", r.LoggedInWith, r.Err)
		}
	})
	t.Run("sftp lies about the size", func(t *testing.T) {
		cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
			return nil, nil
		}}
		port := fakeSSHServer(t, cfg, func(nc ssh.NewChannel) {
			ch, reqs, err := nc.Accept()
			if err != nil {
				return
			}
			defer ch.Close()
			for req := range reqs {
				_ = req.Reply(req.Type == "subsystem", nil)
				if req.Type == "subsystem" {
					go func() {
						_ = sftp.NewRequestServer(ch, sftp.Handlers{
							FileGet: lyingFS{}, FilePut: lyingFS{}, FileCmd: lyingFS{}, FileList: lyingFS{},
						}).Serve()
					}()
				}
			}
		})
		r := Converge(context.Background(), Target{Addr: "127.0.0.1", Port: port, User: "u"},
			Keys{Current: cur.Key}, Options{HostKeys: HostKeys{Pins: newMemPins()}, Timeout: 5 * time.Second})
		wantStatus(t, r, StatusStale)
		if !errors.Is(r.Err, ErrUnsafeFile) {
			t.Errorf("err %v, want ErrUnsafeFile", r.Err)
		}
	})
	t.Run("closed port", func(t *testing.T) {
		r := Converge(context.Background(), Target{Addr: "127.0.0.1", Port: sshdtest.FreePort(t), User: "u"},
			Keys{Current: cur.Key}, Options{HostKeys: HostKeys{Pins: newMemPins()}})
		wantStatus(t, r, StatusUnreachable)
	})
}

// TestConverge_SameHostTwoPolicies: two policies converging the same host
// at once take turns (single-flight per host), so neither sees the other's
// edit as a conflict and both keys end up in the file.
func TestConverge_SameHostTwoPolicies(t *testing.T) {
	f := newFleet(t, 1)
	h := f.hosts[0]
	second := ed25519Key(t, "rotatord:other-team")
	var inside, overlap atomic.Int32
	opts := f.opts()
	opts.beforeRename = func(Target, string) {
		if inside.Add(1) > 1 {
			overlap.Add(1)
		}
		time.Sleep(50 * time.Millisecond) // widen the window another call would hit
		inside.Add(-1)
	}
	keysB := Keys{Current: second.Key, Older: []Key{{Signer: f.old.Signer}}}
	results := make(chan Result, 2)
	for _, k := range []Keys{f.keys(), keysB} {
		go func() { results <- Converge(context.Background(), targetOf(h), k, opts) }()
	}
	for range 2 {
		wantStatus(t, <-results, StatusOK)
	}
	if overlap.Load() != 0 {
		t.Error("two calls edited the same host at once")
	}
	data := h.ReadAuthorizedKeys(t)
	if !bytes.Contains(data, []byte(f.cur.line)) || !bytes.Contains(data, []byte(second.line)) {
		t.Errorf("a policy's key is missing:\n%q", data)
	}
}

// TestConverge_PinStoreFailure: when the pin cannot be read or written,
// rotatord does not talk to the host: stale, retried next run.
func TestConverge_PinStoreFailure(t *testing.T) {
	f := newFleet(t, 1)
	h := f.hosts[0]
	f.pins.errs = errors.New("state store closed")
	r := Converge(context.Background(), targetOf(h), f.keys(), f.opts())
	wantStatus(t, r, StatusStale)
	if r.Err == nil || !strings.Contains(r.Err.Error(), "state store closed") || r.LoggedInWith != "" {
		t.Errorf("err %v logged in with %q", r.Err, r.LoggedInWith)
	}
	if got := h.ReadAuthorizedKeys(t); !bytes.Equal(got, f.before[0]) {
		t.Errorf("file changed")
	}
}

// fakeSSHServer serves x/crypto's SSH server on a loopback port for the
// broken-server cases a real sshd cannot play, handing every channel to
// handle.
func fakeSSHServer(t *testing.T, cfg *ssh.ServerConfig, handle func(ssh.NewChannel)) int {
	t.Helper()
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				defer sc.Close()
				go ssh.DiscardRequests(reqs)
				for ch := range chans {
					go handle(ch)
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// lyingFS is an SFTP file system whose every file claims 2^62 bytes.
type lyingFS struct{}

type hugeFile struct{}

func (hugeFile) Name() string       { return "authorized_keys" }
func (hugeFile) Size() int64        { return 1 << 62 }
func (hugeFile) Mode() os.FileMode  { return 0o600 }
func (hugeFile) ModTime() time.Time { return time.Time{} }
func (hugeFile) IsDir() bool        { return false }
func (hugeFile) Sys() any           { return nil }

type oneFile struct{}

func (oneFile) ListAt(fs []os.FileInfo, off int64) (int, error) {
	if off > 0 || len(fs) == 0 {
		return 0, io.EOF
	}
	fs[0] = hugeFile{}
	return 1, io.EOF
}

func (lyingFS) Fileread(*sftp.Request) (io.ReaderAt, error) {
	return bytes.NewReader(make([]byte, 1<<20)), nil
}
func (lyingFS) Filewrite(*sftp.Request) (io.WriterAt, error)  { return nil, os.ErrPermission }
func (lyingFS) Filecmd(*sftp.Request) error                   { return os.ErrPermission }
func (lyingFS) Filelist(*sftp.Request) (sftp.ListerAt, error) { return oneFile{}, nil }
