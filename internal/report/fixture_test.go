package report

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/policy"
)

// now is the fixed time every test report is generated at.
var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// fakeProvider is a minimal in-memory cloud.Provider: the report only
// lists, so the other methods refuse.
type fakeProvider struct {
	name, typ string
	keys      map[int64][]cloud.Key
	err       error
	calls     atomic.Int32
}

var _ cloud.Provider = (*fakeProvider)(nil)

func (f *fakeProvider) Name() string                     { return f.name }
func (f *fakeProvider) Type() string                     { return f.typ }
func (f *fakeProvider) Capabilities() cloud.Capabilities { return cloud.Capabilities{} }

func (f *fakeProvider) List(_ context.Context, project int64) ([]cloud.Key, error) {
	f.calls.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	return f.keys[project], nil
}

func (f *fakeProvider) Create(context.Context, int64, cloud.CreateRequest) (cloud.Created, error) {
	return cloud.Created{}, errors.ErrUnsupported
}
func (f *fakeProvider) SetDefault(context.Context, int64, string) error {
	return errors.ErrUnsupported
}
func (f *fakeProvider) Delete(context.Context, int64, string) error { return errors.ErrUnsupported }

// fingerprint makes a realistic, stable SHA256 fingerprint for a key ID.
func fingerprint(id string) string {
	h := sha256.Sum256([]byte(id))
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(h[:])
}

// pubKeyPrefix starts every ed25519 authorized_keys body; no report may
// contain it.
const pubKeyPrefix = "AAAAC3NzaC1lZDI1NTE5AAAAI"

func publicKey(id string) string {
	h := sha256.Sum256([]byte("pub" + id))
	return "ssh-ed25519 " + pubKeyPrefix + base64.StdEncoding.EncodeToString(h[:]) + " rotatord"
}

// privateKeyText is what a provider error quoting a generated key pair
// would carry.
const privateKeyText = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----"

func testConfig() *policy.Config {
	pol := func(name, provider, typ string, project int64, maxAge time.Duration) policy.Policy {
		return policy.Policy{
			Name: name, Provider: provider, ProviderType: typ, ProjectID: project,
			MaxAge: maxAge, RotateBefore: 7 * day, GracePeriod: 7 * day, MaxFailures: 5,
			NamePrefix: name, VaultPath: "ssh/" + name,
		}
	}
	return &policy.Config{
		File: "policies.yaml",
		Providers: []policy.Provider{
			{Name: "sesterce-prod", Type: policy.TypeSesterce},
			{Name: "gcore-prod", Type: policy.TypeGcore},
			{Name: "sesterce-lab", Type: policy.TypeSesterce},
		},
		Policies: []policy.Policy{
			pol("gpu-team", "sesterce-prod", policy.TypeSesterce, 0, 30*day),
			pol("inference", "gcore-prod", policy.TypeGcore, 1234, 90*day),
			pol("batch", "gcore-prod", policy.TypeGcore, 1234, 30*day),
			pol("training", "sesterce-lab", policy.TypeSesterce, 0, 90*day),
		},
	}
}

// fixture is a state file and provider listings covering every status.
type fixture struct {
	cfg       *policy.Config
	db        state.Store
	providers map[string]cloud.Provider
	records   []state.KeyRecord
}

func (f *fixture) source() Source {
	return Source{Now: now, Config: f.cfg, State: f.db, Providers: f.providers}
}

func (f *fixture) generate(t testing.TB) *Report {
	t.Helper()
	r, err := Generate(context.Background(), f.source())
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return r
}

// Key IDs of the fixture, named by the status each key must get.
const (
	idOK        = "65f1a0c0ffee0000000000a1"
	idRetiring  = "65f1a0c0ffee0000000000a2"
	idDeleted   = "65f1a0c0ffee0000000000a3"
	idOrphanNew = "65f1a0c0ffee0000000000a4" // named like gpu-team's keys, no record
	idUnmanaged = "65f1a0c0ffee0000000000a5"
	idLegacy    = "65f1a0c0ffee0000000000a6" // its policy left the config
	idDue       = "3f0b6a52-8f1c-4c9e-9a51-0d2c6f1e7b01"
	idOrphanRec = "3f0b6a52-8f1c-4c9e-9a51-0d2c6f1e7b02" // recorded as orphaned
	idPending   = "3f0b6a52-8f1c-4c9e-9a51-0d2c6f1e7b03"
	idOverdue   = "3f0b6a52-8f1c-4c9e-9a51-0d2c6f1e7b04"
	idCIRunner  = "3f0b6a52-8f1c-4c9e-9a51-0d2c6f1e7b05"
	idFailing   = "65f1a0c0ffee0000000000b1"
)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	// A fixed audit key and fixed entry times make a fixed audit head,
	// which every format publishes.
	key, err := audit.NewKey(bytes.Repeat([]byte{7}, audit.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.OpenStore(filepath.Join(t.TempDir(), "state.db"), bolt.Options{NoSync: true, AuditKeys: state.StaticAuditKey(key)})
	if err != nil {
		t.Fatalf("open state: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })

	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	rec := func(policy, provider string, project int64, id, name string, status state.KeyStatus, created string) state.KeyRecord {
		c := at(created)
		r := state.KeyRecord{
			Policy: policy, Provider: provider, ProjectID: project, KeyID: id, Name: name,
			Fingerprint: fingerprint(id), PublicKey: publicKey(id), Status: status,
			RotationID: "rot-" + id[len(id)-2:], CreatedAt: c,
		}
		if status != state.KeyPending && status != state.KeyOrphaned {
			r.ActivatedAt = c.Add(time.Minute)
		}
		if status == state.KeyRetiring || status == state.KeyOrphaned {
			r.DeleteAfter = now.Add(3 * day)
		}
		if status == state.KeyDeleted {
			r.DeletedAt = c.Add(37 * day)
		}
		return r
	}
	records := []state.KeyRecord{
		rec("gpu-team", "sesterce-prod", 0, idOK, "gpu-team-20260421T030000", state.KeyActive, "2026-04-21T03:00:00Z"),
		rec("gpu-team", "sesterce-prod", 0, idRetiring, "gpu-team-20260322T030000", state.KeyRetiring, "2026-03-22T03:00:00Z"),
		rec("gpu-team", "sesterce-prod", 0, idDeleted, "gpu-team-20260220T030000", state.KeyDeleted, "2026-02-20T03:00:00Z"),
		rec("inference", "gcore-prod", 1234, idDue, "inference-20260205T120000", state.KeyActive, "2026-02-05T12:00:00Z"),
		rec("inference", "gcore-prod", 1234, idOrphanRec, "inference-20260410T030000", state.KeyOrphaned, "2026-04-10T03:00:00Z"),
		rec("inference", "gcore-prod", 1234, idPending, "inference-20260501T115500", state.KeyPending, "2026-05-01T11:55:00Z"),
		rec("batch", "gcore-prod", 1234, idOverdue, "batch-20260317T030000", state.KeyActive, "2026-03-17T03:00:00Z"),
		rec("training", "sesterce-lab", 0, idFailing, "training-20260411T030000", state.KeyActive, "2026-04-11T03:00:00Z"),
		rec("legacy", "sesterce-prod", 0, idLegacy, "legacy-20251201T000000", state.KeyActive, "2025-12-01T00:00:00Z"),
	}
	statuses := []state.PolicyStatus{
		{Name: "gpu-team", LastSuccess: at("2026-04-21T03:01:05Z"), LastResult: "ok"},
		{Name: "inference", LastSuccess: at("2026-02-05T12:01:05Z"), LastResult: "ok"},
		{Name: "batch", LastSuccess: at("2026-03-17T03:01:05Z"), LastResult: "ok"},
		{
			Name: "training", LastSuccess: at("2026-04-11T03:01:05Z"), Failing: true, ConsecutiveFailures: 5,
			LastResult: "failed", LastError: "create key: provider said: " + privateKeyText,
		},
	}
	if err := db.Update(func(tx state.Tx) error {
		for _, r := range records {
			if err := tx.PutKey(r); err != nil {
				return err
			}
		}
		for _, s := range statuses {
			if err := tx.PutPolicyStatus(s); err != nil {
				return err
			}
		}
		for _, r := range records {
			if err := tx.AppendAudit(audit.Entry{Time: r.CreatedAt, Policy: r.Policy, Provider: r.Provider, Event: audit.EventRotated,
				Trigger: "schedule", KeyID: r.KeyID, KeyName: r.Name, Fingerprint: r.Fingerprint, RotationID: r.RotationID}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("seed state: %v", err)
	}

	listed := func(r state.KeyRecord, isDefault bool) cloud.Key {
		return cloud.Key{
			ID: r.KeyID, Name: r.Name, PublicKey: r.PublicKey, Fingerprint: r.Fingerprint,
			Default: isDefault, CreatedAt: r.CreatedAt.Add(2 * time.Second), ProjectID: r.ProjectID,
		}
	}
	foreign := func(id, name, created string, project int64, isDefault bool) cloud.Key {
		return cloud.Key{
			ID: id, Name: name, PublicKey: publicKey(id), Fingerprint: fingerprint(id),
			Default: isDefault, CreatedAt: at(created), ProjectID: project,
		}
	}
	sesterceProd := &fakeProvider{name: "sesterce-prod", typ: policy.TypeSesterce, keys: map[int64][]cloud.Key{0: {
		listed(records[0], true),
		listed(records[1], false),
		foreign(idOrphanNew, "gpu-team-20260425T030000", "2026-04-25T03:00:02Z", 0, false),
		foreign(idUnmanaged, "alice-laptop", "2025-11-02T09:30:00Z", 0, false),
		listed(records[8], false),
	}}}
	gcoreProd := &fakeProvider{name: "gcore-prod", typ: policy.TypeGcore, keys: map[int64][]cloud.Key{1234: {
		listed(records[3], false),
		listed(records[4], false),
		listed(records[5], false),
		listed(records[6], false),
		foreign(idCIRunner, "ci-runner", "2026-01-15T08:00:00Z", 1234, false),
	}}}
	sesterceLab := &fakeProvider{name: "sesterce-lab", typ: policy.TypeSesterce, keys: map[int64][]cloud.Key{0: {
		listed(records[7], true),
	}}}
	return &fixture{
		cfg: testConfig(), db: db, records: records,
		providers: map[string]cloud.Provider{
			"sesterce-prod": sesterceProd, "gcore-prod": gcoreProd, "sesterce-lab": sesterceLab,
		},
	}
}
