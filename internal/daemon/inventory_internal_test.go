package daemon

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/policy"
)

// TestInventoryHosts_Instances: hosts.discover gets the policy's listed
// machines with the provider's user and port, and an error (keeping the
// hosts found before) while the listing is stale or missing.
func TestInventoryHosts_Instances(t *testing.T) {
	db, err := bolt.OpenStore(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := &policy.Config{
		Providers: []policy.Provider{{Name: "s", Type: policy.TypeSesterce}},
		Policies:  []policy.Policy{{Name: "gpu", Provider: "s", NamePrefix: "gpu", MaxAge: 48 * time.Hour}},
	}
	h := inventoryHosts{db: db, cfg: cfg}
	if _, err := h.Instances(context.Background(), cfg.Policies[0]); err == nil || !strings.Contains(err.Error(), "no instance listing") {
		t.Errorf("before any listing: %v; want an error", err)
	}
	now := time.Now()
	put := func(inv state.Inventory) {
		t.Helper()
		if err := db.Update(func(tx state.Tx) error {
			if err := tx.PutKey(state.KeyRecord{Policy: "gpu", Provider: "s", KeyID: "k1", Name: "gpu-20260101T000000", Status: state.KeyActive, CreatedAt: now, ActivatedAt: now}); err != nil {
				return err
			}
			return tx.PutInventory(inv)
		}); err != nil {
			t.Fatal(err)
		}
	}
	insts := []state.InventoryInstance{
		{ID: "i1", KeyID: "k1", Address: "198.19.0.1", User: "root", Port: 2222},
		{ID: "i2", KeyID: "k1"},                           // no address: not dialable
		{ID: "i3", KeyID: "other", Address: "198.19.0.3"}, // someone else's key
	}
	put(state.Inventory{Provider: "s", Instances: insts, ListedAt: now})
	got, err := h.Instances(context.Background(), cfg.Policies[0])
	if err != nil || len(got) != 1 || got[0].Address != "198.19.0.1" || got[0].User != "root" || got[0].Port != 2222 {
		t.Errorf("Instances = %+v, %v; want i1 with its user and port", got, err)
	}
	put(state.Inventory{Provider: "s", Instances: insts, ListedAt: now, StaleSince: now, Error: "HTTP 503"})
	if _, err := h.Instances(context.Background(), cfg.Policies[0]); err == nil || !strings.Contains(err.Error(), "stale since") {
		t.Errorf("stale inventory: %v; want an error naming it", err)
	}
}
