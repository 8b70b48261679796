package rotate_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/cloud/gcore"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/cloud/sesterce"
	"github.com/rotatord/rotatord/internal/keygen"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
	"github.com/rotatord/rotatord/policy"
)

const gcoreProject = 4242

// testAuditKeys seals the audit entries the engine appends.
var testAuditKeys = func() state.StaticAuditKey {
	k, err := audit.GenerateKey()
	if err != nil {
		panic(err)
	}
	return state.StaticAuditKey(k)
}()

// clock is a settable time source shared by the engine.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// harness is one engine wired to the contract fake of both providers
// through the real clients, bbolt, and the in-memory KV v2 store that
// passes the same suite as a real Vault (vaulttest.Memory), so these tests
// run anywhere; the crash, end-to-end and soak tests use a real Vault.
type harness struct {
	t      *testing.T
	store  *vaulttest.Memory
	fake   *cloudtest.Server
	db     state.Store
	dbPath string
	clock  *clock
	logs   *syncBuffer
	provs  map[string]cloud.Provider
	engine *rotate.Engine
	locks  *rotate.Locks
	hook   func(string)
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{t: time.Now().UTC()}, logs: &syncBuffer{}, locks: rotate.NewLocks()}
	h.store = vaulttest.NewMemory()
	h.fake = cloudtest.NewServer(cloudtest.Options{})
	t.Cleanup(h.fake.Close)
	h.dbPath = filepath.Join(t.TempDir(), "state.db")
	var err error
	h.db, err = bolt.OpenStore(h.dbPath, bolt.Options{AuditKeys: testAuditKeys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.db.Close() })
	h.provs = map[string]cloud.Provider{
		"sesterce-test": h.client(policy.TypeSesterce, cloudtest.DefaultSesterceAPIKey),
		"gcore-test":    h.client(policy.TypeGcore, cloudtest.DefaultGcoreAPIKey),
	}
	h.engine = h.newEngine()
	return h
}

func (h *harness) client(typ string, key secret.Secret) cloud.Provider {
	cfg := httpapi.Config{
		Name: typ + "-test", BaseURL: h.fake.URL(), APIKey: key, RateLimit: -1, Timeout: 2 * time.Second,
		Retry:  httpapi.RetryConfig{MaxAttempts: 4, BaseDelay: 5 * time.Millisecond, MaxDelay: 50 * time.Millisecond},
		Logger: slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	var (
		p   cloud.Provider
		err error
	)
	if typ == policy.TypeSesterce {
		p, err = sesterce.New(cfg)
	} else {
		p, err = gcore.New(cfg)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) newEngine() *rotate.Engine {
	return rotate.New(rotate.Config{
		Journal: h.db, Keys: h.store, Providers: h.provs, Locks: h.locks, Now: h.clock.Now,
		Logger:      slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		BackoffBase: time.Millisecond, BackoffMax: time.Millisecond,
		Sinks: []rotate.Sink{rotate.NotifySink(state.SinkSlack)},
		Hook: func(p string) {
			if h.hook != nil {
				h.hook(p)
			}
		},
	})
}

func sestercePolicy() policy.Policy {
	return policy.Policy{
		Name: "gpu-team", Provider: "sesterce-test", ProviderType: policy.TypeSesterce,
		Schedule: "@daily", MaxAge: 30 * 24 * time.Hour, RotateBefore: 7 * 24 * time.Hour,
		GracePeriod: 24 * time.Hour, MaxFailures: 3, MakeDefault: true, NamePrefix: "gpu-team",
		VaultPath: "ssh/sesterce/gpu-team",
		Key:       policy.KeySpec{Type: policy.KeyEd25519, Generate: policy.GenerateLocal},
		Notify:    policy.Notify{On: []string{"rotated", "deleted", "failed", "overdue", "failing", "recovered"}},
	}
}

func gcorePolicy() policy.Policy {
	return policy.Policy{
		Name: "inference", Provider: "gcore-test", ProviderType: policy.TypeGcore, ProjectID: gcoreProject,
		SharedInProject: true, Schedule: "@daily", MaxAge: 30 * 24 * time.Hour, RotateBefore: 7 * 24 * time.Hour,
		GracePeriod: 24 * time.Hour, MaxFailures: 3, NamePrefix: "inference", VaultPath: "ssh/gcore/inference",
		Key:    policy.KeySpec{Type: policy.KeyEd25519, Generate: policy.GenerateLocal},
		Notify: policy.Notify{On: []string{"rotated", "deleted", "failed", "overdue", "failing", "recovered"}},
	}
}

func (h *harness) run(p policy.Policy, opts rotate.Options) rotate.Result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := h.engine.Run(ctx, p, opts)
	res.Err = err
	return res
}

func (h *harness) mustRun(p policy.Policy, opts rotate.Options) rotate.Result {
	h.t.Helper()
	res := h.run(p, opts)
	if res.Err != nil {
		h.t.Fatalf("run %s: %v", p.Name, res.Err)
	}
	return res
}

// providerKeys lists the policy's account through the real client.
func (h *harness) providerKeys(p policy.Policy) []cloud.Key {
	h.t.Helper()
	keys, err := h.provs[p.Provider].List(context.Background(), p.ProjectID)
	if err != nil {
		h.t.Fatal(err)
	}
	return keys
}

// vaultKey reads <path> and checks that its private key derives the public
// key and fingerprint stored next to it.
func (h *harness) vaultKey(path string) (data map[string]string, version int, fp string) {
	h.t.Helper()
	data, version, err := h.store.Get(context.Background(), path)
	if err != nil {
		h.t.Fatalf("read %s: %v", path, err)
	}
	k, err := keygen.ParsePrivateKey(secret.Secret(data["private_key"]))
	if err != nil {
		h.t.Fatalf("%s holds no usable private key: %v", path, err)
	}
	if k.SHA256 != data["fingerprint"] {
		h.t.Fatalf("%s: private key fingerprint %s, stored fingerprint %s", path, k.SHA256, data["fingerprint"])
	}
	return data, version, k.SHA256
}

// assertConverged checks DESIGN.md §3 for one policy: exactly one active
// rotatord key on the provider (the default where there is one), its
// private half at <vault_path>, nothing pending.
func (h *harness) assertConverged(p policy.Policy) cloud.Key {
	h.t.Helper()
	var current []state.KeyRecord
	if err := h.db.View(func(tx state.Tx) error {
		recs, err := tx.Keys(p.Name)
		for _, r := range recs {
			if r.Status == state.KeyActive {
				current = append(current, r)
			}
		}
		return err
	}); err != nil {
		h.t.Fatal(err)
	}
	if len(current) != 1 {
		h.t.Fatalf("policy %s: %d active key records, want 1: %+v", p.Name, len(current), current)
	}
	data, _, fp := h.vaultKey(p.VaultPath)
	var found *cloud.Key
	for _, k := range h.providerKeys(p) {
		if k.ID == current[0].KeyID {
			found = &k
		}
	}
	if found == nil {
		h.t.Fatalf("policy %s: active key %s is not on the provider", p.Name, current[0].KeyID)
	}
	if found.Fingerprint != fp || data["key_id"] != found.ID {
		h.t.Fatalf("policy %s: vault holds %s (key_id %s), provider's active key is %s (%s)", p.Name, fp, data["key_id"], found.Fingerprint, found.ID)
	}
	if p.ProviderType == policy.TypeSesterce && !found.Default {
		h.t.Fatalf("policy %s: active key %s is not the default", p.Name, found.ID)
	}
	if _, _, err := h.store.Get(context.Background(), rotate.PendingPath(p.VaultPath)); err == nil {
		h.t.Fatalf("policy %s: %s still holds a key after the rotation", p.Name, rotate.PendingPath(p.VaultPath))
	}
	return *found
}

// managedKeys counts the provider keys named like the policy's.
func (h *harness) managedKeys(p policy.Policy) []cloud.Key {
	var out []cloud.Key
	for _, k := range h.providerKeys(p) {
		if len(k.Name) > len(p.NamePrefix) && k.Name[:len(p.NamePrefix)+1] == p.NamePrefix+"-" {
			out = append(out, k)
		}
	}
	return out
}

func (h *harness) events() []state.Event {
	var evs []state.Event
	_ = h.db.View(func(tx state.Tx) error {
		es, err := tx.PendingOutbox(state.SinkSlack, time.Now().AddDate(100, 0, 0), 100000)
		for _, e := range es {
			evs = append(evs, e.Event)
		}
		return err
	})
	return evs
}

func countKind(evs []state.Event, kind string) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}
