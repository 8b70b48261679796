package audit_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/vault"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
)

// syncBuffer is a log sink safe for the Vault store's background logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLoadKey_Vault runs the key's life cycle against a real Vault dev
// server: two rotatord processes (two stores) start at once on a Vault
// without the key; both get the same key, Vault holds exactly one version
// of it at <mount>/rotatord/audit-key, and it shows in no log line.
func TestLoadKey_Vault(t *testing.T) {
	srv := vaulttest.Start(t)
	ctx := context.Background()
	var logs syncBuffer
	newStore := func() *vault.Store {
		s, err := vault.New(ctx, vault.Config{
			Address: srv.Addr, Mount: vaulttest.Mount, Auth: vault.Auth{Token: srv.RootToken},
			Timeout: 5 * time.Second, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	stores := []*vault.Store{newStore(), newStore()}
	keys := make([]audit.Key, len(stores))
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { keys[i], errs[i] = audit.LoadKey(ctx, s) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("LoadKey %d: %v", i, err)
		}
	}
	if !keys[0].Equal(keys[1]) {
		t.Fatal("two processes starting at once got different keys")
	}

	kvs, err := srv.Client(t).KVv2(vaulttest.Mount).Get(ctx, audit.KeyPath)
	if err != nil {
		t.Fatalf("read %s/%s: %v", vaulttest.Mount, audit.KeyPath, err)
	}
	if kvs.Data["key"] != keys[0].Hex() || kvs.VersionMetadata.Version != 1 {
		t.Errorf("Vault holds version %d with another key; want version 1 with the key", kvs.VersionMetadata.Version)
	}

	// A restarted process reads the same key.
	again, err := audit.LoadKey(ctx, newStore())
	if err != nil || !again.Equal(keys[0]) {
		t.Errorf("after a restart: equal %v, %v", again.Equal(keys[0]), err)
	}
	if strings.Contains(logs.String(), keys[0].Hex()) || strings.Contains(srv.Output(), keys[0].Hex()) {
		t.Error("the key shows in a log")
	}
}

// racingStore lets another process create the key between LoadKey's read
// and its check-and-set write: the real Vault must refuse the write, and
// LoadKey must return the other process's key.
type racingStore struct {
	*vault.Store
	other func()
}

func (r racingStore) Put(ctx context.Context, path string, data map[string]string, cas int) (int, error) {
	r.other()
	return r.Store.Put(ctx, path, data, cas)
}

func TestLoadKey_VaultLostRace(t *testing.T) {
	srv := vaulttest.Start(t)
	ctx := context.Background()
	s, err := vault.New(ctx, vault.Config{Address: srv.Addr, Mount: vaulttest.Mount, Auth: vault.Auth{Token: srv.RootToken}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	winner, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kv := srv.Client(t).KVv2(vaulttest.Mount)
	k, err := audit.LoadKey(ctx, racingStore{Store: s, other: func() {
		if _, err := kv.Put(ctx, audit.KeyPath, map[string]any{"key": winner.Hex()}); err != nil {
			t.Error(err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Equal(winner) {
		t.Error("LoadKey kept its own key after Vault refused its check-and-set write")
	}
	kvs, err := kv.Get(ctx, audit.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	if kvs.VersionMetadata.Version != 1 {
		t.Errorf("Vault holds %d versions, want only the winner's", kvs.VersionMetadata.Version)
	}
}
