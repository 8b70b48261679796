package rotate

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/cloud/sesterce"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
)

// TestObserve_StaleSnapshotIsNotUsed: a RunAll listing taken before the
// policy's last run ended may lack the key that run made; observe must
// list again instead of calling that key missing.
func TestObserve_StaleSnapshotIsNotUsed(t *testing.T) {
	fake := cloudtest.NewServer(cloudtest.Options{})
	defer fake.Close()
	prov, err := sesterce.New(httpapi.Config{Name: "s", BaseURL: fake.URL(), APIKey: cloudtest.DefaultSesterceAPIKey, RateLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.OpenStore(filepath.Join(t.TempDir(), "s.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := t0
	e := New(Config{Journal: db, Providers: map[string]cloud.Provider{"sesterce-prod": prov}, Now: func() time.Time { return now }})
	p := testPolicy()

	snap := &snapshot{keys: []cloud.Key{{ID: "from-snapshot"}}, at: t0.Add(-time.Minute)}
	lists := func() int { return fake.Requests(cloudtest.RouteSesterceList) }

	// The policy last ran before the snapshot: the snapshot is used.
	_ = db.Update(func(tx state.Tx) error {
		return tx.PutPolicyStatus(state.PolicyStatus{Name: p.Name, LastAttempt: t0.Add(-time.Hour)})
	})
	obs, err := e.observe(context.Background(), p, e.cfg.Providers[p.Provider], false, snap)
	if err != nil {
		t.Fatal(err)
	}
	if lists() != 0 || len(obs.ProviderKeys) != 1 || obs.ProviderKeys[0].ID != "from-snapshot" {
		t.Fatalf("fresh snapshot: %d list requests, keys %+v; want the snapshot and no request", lists(), obs.ProviderKeys)
	}

	// The policy ran after the snapshot was taken: list again.
	_ = db.Update(func(tx state.Tx) error {
		return tx.PutPolicyStatus(state.PolicyStatus{Name: p.Name, LastAttempt: t0})
	})
	if obs, err = e.observe(context.Background(), p, e.cfg.Providers[p.Provider], false, snap); err != nil {
		t.Fatal(err)
	}
	if lists() != 1 || len(obs.ProviderKeys) != 0 {
		t.Fatalf("stale snapshot: %d list requests, keys %+v; want a fresh (empty) listing", lists(), obs.ProviderKeys)
	}
}
