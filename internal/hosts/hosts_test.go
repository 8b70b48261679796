package hosts

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/secret"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		want    Target
		label   string
		wantErr string
	}{
		{in: "10.0.0.5", want: Target{Addr: "10.0.0.5", Port: 22, User: "ubuntu"}, label: "ubuntu@10.0.0.5:22"},
		{in: "root@10.0.0.5", want: Target{Addr: "10.0.0.5", Port: 22, User: "root"}, label: "root@10.0.0.5:22"},
		{in: "10.0.0.6:2222", want: Target{Addr: "10.0.0.6", Port: 2222, User: "ubuntu"}, label: "ubuntu@10.0.0.6:2222"},
		{in: "admin@gpu-1.example.net:2200", want: Target{Addr: "gpu-1.example.net", Port: 2200, User: "admin"}},
		{in: "[fe80::1]:2222", want: Target{Addr: "fe80::1", Port: 2222, User: "ubuntu"}, label: "ubuntu@[fe80::1]:2222"},
		{in: "u@[fe80::1]", want: Target{Addr: "fe80::1", Port: 22, User: "u"}},
		{in: "fe80::1", want: Target{Addr: "fe80::1", Port: 22, User: "ubuntu"}},
		{in: "host:0", wantErr: `parse target "host:0": invalid port "0"`},
		{in: "host:ssh", wantErr: `parse target "host:ssh": invalid port "ssh"`},
		{in: "@host", wantErr: `parse target "@host": empty user`},
		{in: "", wantErr: `parse target "": invalid host`},
		{in: "u@", wantErr: `parse target "u@": invalid host`},
		{in: "a b", wantErr: `parse target "a b": invalid host`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in, "ubuntu", 22)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
			if tc.label != "" && got.Label() != tc.label {
				t.Errorf("label %q, want %q", got.Label(), tc.label)
			}
		})
	}
	if _, err := ParseTarget("host", "", 22); err == nil || !strings.Contains(err.Error(), "no user") {
		t.Errorf("no user anywhere: %v", err)
	}
}

func TestKeys_Validate(t *testing.T) {
	cur := ed25519Key(t, "rotatord:p")
	old := ed25519Key(t, "rotatord:p")
	tests := []struct {
		name    string
		keys    Keys
		wantErr string
	}{
		{name: "valid", keys: Keys{Current: cur.Key, Older: []Key{{Signer: old.Signer}}, Retired: []string{old.Fingerprint}}},
		{name: "fingerprint filled in", keys: Keys{Current: Key{Signer: cur.Signer, AuthorizedKey: cur.line}}},
		{name: "no signer", keys: Keys{Current: Key{AuthorizedKey: cur.line}}, wantErr: "invalid keys: current key: no signer"},
		{name: "older without signer", keys: Keys{Current: cur.Key, Older: []Key{{}}}, wantErr: "invalid keys: older key 1: no signer"},
		{name: "line of another key", keys: Keys{Current: Key{Signer: cur.Signer, AuthorizedKey: old.line}},
			wantErr: "is not the signer's key"},
		{name: "wrong fingerprint", keys: Keys{Current: Key{Signer: cur.Signer, AuthorizedKey: cur.line, Fingerprint: old.Fingerprint}},
			wantErr: "does not match the signer's"},
		{name: "two lines", keys: Keys{Current: Key{Signer: cur.Signer, AuthorizedKey: cur.line + "\n" + old.line}},
			wantErr: "not a single public key line"},
		{name: "private key instead of public line", keys: Keys{Current: Key{Signer: cur.Signer, AuthorizedKey: cur.pem}},
			wantErr: "not a single public key line"},
		{name: "current listed as retired", keys: Keys{Current: cur.Key, Retired: []string{cur.Fingerprint}},
			wantErr: "is listed as retired"},
		{name: "retired not a fingerprint", keys: Keys{Current: cur.Key, Retired: []string{"aa:bb"}},
			wantErr: `retired fingerprint "aa:bb" is not a SHA256 fingerprint`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.keys.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidKeys) {
				t.Fatalf("err %v, want ErrInvalidKeys containing %q", err, tc.wantErr)
			}
			assertNoPrivateKey(t, "error", []byte(err.Error()), cur, old)
		})
	}
}

// TestConvergeAll_InvalidKeys: bad keys are one clear error per host and no
// host is contacted (the targets here do not exist).
func TestConvergeAll_InvalidKeys(t *testing.T) {
	cur := ed25519Key(t, "")
	targets := []Target{{Addr: "192.0.2.1", User: "u"}, {Addr: "192.0.2.2", User: "u"}}
	keys := Keys{Current: cur.Key, Retired: []string{cur.Fingerprint}}
	start := time.Now()
	rs := ConvergeAll(context.Background(), targets, keys, Options{HostKeys: HostKeys{Pins: newMemPins()}})
	for _, r := range rs {
		if r.Status != StatusStale || !errors.Is(r.Err, ErrInvalidKeys) || !r.ContactedAt.IsZero() {
			t.Errorf("%s: %s %v", r.Target.Label(), r.Status, r.Err)
		}
	}
	if time.Since(start) > 5*time.Second {
		t.Error("invalid keys should fail before any connection attempt")
	}
}

func TestLockTable(t *testing.T) {
	lt := &lockTable{locks: map[string]*hostLock{}}
	unlock, err := lt.lock(context.Background(), "a:22")
	if err != nil {
		t.Fatal(err)
	}
	// Another host is independent.
	unlockB, err := lt.lock(context.Background(), "b:22")
	if err != nil {
		t.Fatal(err)
	}
	unlockB()
	// The same host waits, until its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lt.lock(ctx, "a:22"); !errors.Is(err, context.Canceled) {
		t.Fatalf("second lock of a held host: %v", err)
	}
	got := make(chan struct{})
	go func() {
		u, err := lt.lock(context.Background(), "a:22")
		if err == nil {
			u()
		}
		close(got)
	}()
	unlock()
	<-got
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if len(lt.locks) != 0 {
		t.Errorf("lock entries left behind: %d", len(lt.locks))
	}
}

func TestKeyFromPrivate(t *testing.T) {
	cur := ed25519Key(t, "rotatord:p")
	other := ed25519Key(t, "x")
	k, err := KeyFromPrivate(secret.Secret(cur.pem), cur.line)
	if err != nil {
		t.Fatal(err)
	}
	if k.Fingerprint != cur.Fingerprint || k.AuthorizedKey != cur.line || k.Signer == nil {
		t.Errorf("got %+v", k)
	}
	if k, err := KeyFromPrivate(secret.Secret(cur.pem), ""); err != nil || k.Fingerprint != cur.Fingerprint {
		t.Errorf("older key without a line: %v", err)
	}
	corrupt := strings.Replace(cur.pem, privateBodies(cur.pem)[0][:20], "AAAAAAAAAAAAAAAAAAAA", 1)
	for name, tc := range map[string][2]string{
		"other key's line": {cur.pem, other.line},
		"not a key":        {"hello", ""},
		"corrupt":          {corrupt, ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := KeyFromPrivate(secret.Secret(tc[0]), tc[1])
			if !errors.Is(err, ErrInvalidKeys) {
				t.Fatalf("err %v, want ErrInvalidKeys", err)
			}
			// keygen names the PEM block type ("OPENSSH PRIVATE KEY"), a
			// label; no byte of the key itself may appear.
			for _, body := range privateBodies(cur.pem) {
				if strings.Contains(err.Error(), body) || strings.Contains(err.Error(), body[:20]) {
					t.Errorf("error quotes the private key: %v", err)
				}
			}
		})
	}
}
