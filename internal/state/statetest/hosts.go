package statetest

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/state"
)

// testHosts: host records round trip in UTC, list per policy in host
// order, survive a reopen, and are removed one at a time.
func testHosts(t *testing.T, s *fixture) {
	full := state.HostRecord{
		Policy: "gpu-team", Host: "ubuntu@10.0.0.5:22", Address: "10.0.0.5", Port: 22, User: "ubuntu", Source: "static",
		HostKeyFingerprint: "SHA256:host", Trusts: []string{"SHA256:new", "SHA256:old"}, CurrentFingerprint: "SHA256:new",
		Status: state.HostOK, Verified: true, LastContact: t0, LastAttempt: t0, LastSuccess: t0,
		LastError: "", ConsecutiveFailures: 0, NextRetry: t0.Add(time.Minute),
		UnreachableSince: t0.Add(-time.Hour), UnreachableAlerted: true, HostKeyAlerted: "SHA256:evil",
	}
	recs := []state.HostRecord{
		full,
		{Policy: "gpu-team", Host: "root@10.0.0.6:2222", Address: "10.0.0.6", Port: 2222, User: "root", Status: state.HostUnreachable, LastError: "dial tcp: refused"},
		{Policy: "gpu", Host: "a@h:22", Address: "h", Port: 22, User: "a"},
		{Policy: "inference", Host: "b@[::1]:22", Address: "::1", Port: 22, User: "b", Status: state.HostStale},
	}
	s.update(t, func(tx state.Tx) error {
		for _, h := range recs {
			if err := tx.PutHost(h); err != nil {
				return err
			}
		}
		return nil
	})
	s.reopen()
	t.Run("round trip in UTC", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			got, ok, err := tx.Host("gpu-team", full.Host)
			want := full
			want.LastContact, want.LastAttempt, want.LastSuccess = t0.UTC(), t0.UTC(), t0.UTC()
			want.NextRetry, want.UnreachableSince = full.NextRetry.UTC(), full.UnreachableSince.UTC()
			if !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("Host() = %+v, %v\nwant %+v", got, ok, want)
			}
			return err
		})
	})
	t.Run("missing", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			if _, ok, err := tx.Host("gpu", full.Host); ok || err != nil {
				t.Errorf("Host(gpu, %s) = %v, %v; want not found (another policy's host)", full.Host, ok, err)
			}
			return nil
		})
	})
	t.Run("Hosts keeps policies apart, in host order; empty policy lists all", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			hs, err := tx.Hosts("gpu-team")
			if got := hostNames(hs); !reflect.DeepEqual(got, []string{"gpu-team/root@10.0.0.6:2222", "gpu-team/ubuntu@10.0.0.5:22"}) {
				t.Errorf("Hosts(gpu-team) = %v", got)
			}
			all, err2 := tx.Hosts("")
			if got := hostNames(all); !reflect.DeepEqual(got, []string{"gpu/a@h:22", "gpu-team/root@10.0.0.6:2222", "gpu-team/ubuntu@10.0.0.5:22", "inference/b@[::1]:22"}) {
				t.Errorf("Hosts(\"\") = %v", got)
			}
			return errors.Join(err, err2)
		})
	})
	t.Run("update replaces, delete removes one", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error {
			h := recs[1]
			h.Status, h.LastError = state.HostOK, ""
			if err := tx.PutHost(h); err != nil {
				return err
			}
			if err := tx.DeleteHost("gpu-team", full.Host); err != nil {
				return err
			}
			return tx.DeleteHost("gpu-team", "never@there:22")
		})
		s.view(t, func(tx state.Tx) error {
			hs, err := tx.Hosts("gpu-team")
			if len(hs) != 1 || hs[0].Host != recs[1].Host || hs[0].Status != state.HostOK || hs[0].LastError != "" {
				t.Errorf("after update and delete: %+v", hs)
			}
			return err
		})
	})
	t.Run("rejects missing identity", func(t *testing.T) {
		err := s.store.Update(func(tx state.Tx) error { return tx.PutHost(state.HostRecord{Policy: "gpu"}) })
		if err == nil {
			t.Error("PutHost without a host succeeded")
		}
	})
}

func hostNames(hs []state.HostRecord) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.Policy+"/"+h.Host)
	}
	return out
}

// testHostKeyPins: a pin is set once, kept across reopen, never silently
// replaced by another key, and forgotten only on purpose.
func testHostKeyPins(t *testing.T, s *fixture) {
	s.update(t, func(tx state.Tx) error { return tx.PinHostKey("10.0.0.5:22", "SHA256:first", t0) })
	s.reopen()
	s.view(t, func(tx state.Tx) error {
		p, ok, err := tx.HostKeyPin("10.0.0.5:22")
		if want := (state.HostPin{HostPort: "10.0.0.5:22", Fingerprint: "SHA256:first", PinnedAt: t0.UTC()}); !ok || p != want {
			t.Errorf("HostKeyPin = %+v, %v; want %+v", p, ok, want)
		}
		if _, ok, _ := tx.HostKeyPin("10.0.0.5:2222"); ok {
			t.Error("another port of the same address is pinned too")
		}
		return err
	})
	if err := s.store.Update(func(tx state.Tx) error { return tx.PinHostKey("10.0.0.5:22", "SHA256:first", t0.Add(time.Hour)) }); err != nil {
		t.Errorf("pinning the same key again: %v", err)
	}
	err := s.store.Update(func(tx state.Tx) error { return tx.PinHostKey("10.0.0.5:22", "SHA256:other", t0) })
	if !errors.Is(err, state.ErrPinConflict) || !strings.Contains(err.Error(), "SHA256:first") {
		t.Errorf("re-pin to another key: err = %v, want ErrPinConflict naming the pinned key", err)
	}
	s.view(t, func(tx state.Tx) error {
		if p, _, _ := tx.HostKeyPin("10.0.0.5:22"); p.Fingerprint != "SHA256:first" || !p.PinnedAt.Equal(t0) {
			t.Errorf("pin changed to %+v", p)
		}
		return nil
	})
	s.update(t, func(tx state.Tx) error { return tx.UnpinHostKey("10.0.0.5:22") })
	s.update(t, func(tx state.Tx) error { return tx.PinHostKey("10.0.0.5:22", "SHA256:other", t0) })
	s.view(t, func(tx state.Tx) error {
		if p, _, _ := tx.HostKeyPin("10.0.0.5:22"); p.Fingerprint != "SHA256:other" {
			t.Errorf("after unpin, pin = %+v", p)
		}
		return nil
	})
}
