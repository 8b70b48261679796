package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"testing"
)

// RunKeyStore is the conformance suite of the engine's KeyStore: KV v2
// versions, check-and-set, not-found, delete. open returns the store and a
// path prefix of the test's own (a real server is shared across tests).
// internal/vault runs it against a real `vault server -dev`; this package
// runs it against Memory.
func RunKeyStore(t *testing.T, open func(t *testing.T) (KeyStore, string)) {
	ctx := context.Background()
	data := func(n int) map[string]string {
		return map[string]string{"private_key": fmt.Sprintf("key-%d", n), "fingerprint": fmt.Sprintf("SHA256:fp%d", n)}
	}
	t.Run("versions count up and every one reads back", func(t *testing.T) {
		s, prefix := open(t)
		p := prefix + "/key"
		if _, _, err := s.Get(ctx, p); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Get before any write: %v, want fs.ErrNotExist", err)
		}
		for i := 1; i <= 3; i++ {
			v, err := s.Put(ctx, p, data(i), -1)
			if err != nil || v != i {
				t.Fatalf("Put #%d = version %d, %v", i, v, err)
			}
		}
		got, v, err := s.Get(ctx, p)
		if err != nil || v != 3 || !maps.Equal(got, data(3)) {
			t.Fatalf("Get = %v (version %d), %v; want version 3", got, v, err)
		}
		for i := 1; i <= 3; i++ {
			if got, err := s.GetVersion(ctx, p, i); err != nil || !maps.Equal(got, data(i)) {
				t.Errorf("GetVersion(%d) = %v, %v", i, got, err)
			}
		}
		if _, err := s.GetVersion(ctx, p, 9); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("GetVersion of a version never written: %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("returned data is a copy", func(t *testing.T) {
		s, prefix := open(t)
		p := prefix + "/key"
		in := data(1)
		if _, err := s.Put(ctx, p, in, -1); err != nil {
			t.Fatal(err)
		}
		in["private_key"] = "changed by the caller"
		got, _, _ := s.Get(ctx, p)
		got["fingerprint"] = "changed too"
		again, _, _ := s.Get(ctx, p)
		if !maps.Equal(again, data(1)) {
			t.Errorf("stored data changed through the caller's maps: %v", again)
		}
	})
	t.Run("check-and-set", func(t *testing.T) {
		s, prefix := open(t)
		p := prefix + "/key"
		for _, st := range []struct {
			name    string
			cas     int
			want    int
			refused bool
		}{
			{"cas 0 on a new path writes", 0, 1, false},
			{"cas 0 on an existing path is refused", 0, 0, true},
			{"current version writes", 1, 2, false},
			{"stale version is refused", 1, 0, true},
			{"no cas writes", -1, 3, false},
		} {
			v, err := s.Put(ctx, p, data(st.want), st.cas)
			if st.refused {
				if err == nil {
					t.Errorf("%s: Put(cas=%d) wrote version %d", st.name, st.cas, v)
				}
				continue
			}
			if err != nil || v != st.want {
				t.Errorf("%s: Put(cas=%d) = %d, %v; want %d", st.name, st.cas, v, err, st.want)
			}
		}
		if _, v, err := s.Get(ctx, p); err != nil || v != 3 {
			t.Errorf("after the refused writes Get = version %d, %v; want 3", v, err)
		}
	})
	t.Run("delete removes every version and starts over", func(t *testing.T) {
		s, prefix := open(t)
		p := prefix + "/key/pending"
		for i := 1; i <= 2; i++ {
			if _, err := s.Put(ctx, p, data(i), -1); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Get(ctx, p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Get after Delete: %v, want fs.ErrNotExist", err)
		}
		if _, err := s.GetVersion(ctx, p, 1); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("GetVersion after Delete: %v, want fs.ErrNotExist", err)
		}
		if v, err := s.Put(ctx, p, data(3), 0); err != nil || v != 1 {
			t.Errorf("Put(cas=0) after Delete = %d, %v; want version 1", v, err)
		}
		if err := s.Delete(ctx, prefix+"/never-written"); err != nil {
			t.Errorf("Delete of an absent path: %v", err)
		}
	})
	t.Run("paths are independent", func(t *testing.T) {
		s, prefix := open(t)
		if _, err := s.Put(ctx, prefix+"/a", data(1), -1); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Get(ctx, prefix+"/a/pending"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a child path reads %v, want fs.ErrNotExist", err)
		}
		if v, err := s.Put(ctx, prefix+"/a/pending", data(2), 0); err != nil || v != 1 {
			t.Errorf("a child path's first write = %d, %v; want version 1", v, err)
		}
	})
	t.Run("oldest versions beyond the tenth are dropped", func(t *testing.T) {
		s, prefix := open(t)
		p := prefix + "/key"
		for i := 1; i <= MaxVersions+2; i++ {
			if _, err := s.Put(ctx, p, data(i), -1); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.GetVersion(ctx, p, 2); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("version 2 of %d: %v, want dropped", MaxVersions+2, err)
		}
		if got, err := s.GetVersion(ctx, p, 3); err != nil || !maps.Equal(got, data(3)) {
			t.Errorf("version 3 of %d = %v, %v; want kept", MaxVersions+2, got, err)
		}
	})
	t.Run("a cancelled context fails", func(t *testing.T) {
		s, prefix := open(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Put(cctx, prefix+"/key", data(1), -1); !errors.Is(err, context.Canceled) {
			t.Errorf("Put with a cancelled context: %v", err)
		}
	})
}
