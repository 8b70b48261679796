package hosts

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
	opts.beforeRename = func(string) {
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
