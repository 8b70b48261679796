// Package statetest is the conformance suite every state backend passes:
// the KV contract of state.Backend, then every method of state.Tx over
// state.Open of that backend. internal/state/bolt and internal/state/etcd
// both run it, so the engine and the report behave the same on either.
// (litestream's replica_client_test.go is the model.)
package statetest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"iter"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/state"
)

// Factory makes a fresh, empty location for one test and returns a
// function that opens a backend on it. open may be called again after the
// previous backend was closed and must then see everything committed
// before: the suite reopens to prove durability.
type Factory func(t *testing.T) (open func(t *testing.T) state.Backend)

// cet is a non-UTC zone: records written with it must come back in UTC.
var cet = time.FixedZone("CET", 3600)

// t0 is a fixed instant with nanoseconds, so round trips prove precision.
var t0 = time.Date(2025, 3, 1, 13, 4, 5, 123456789, cet)

// Run runs the whole suite against the backends f makes.
func Run(t *testing.T, f Factory) {
	t.Run("KV", func(t *testing.T) { runKV(t, f) })
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s *fixture)
	}{
		{"PutRotation", testPutRotation},
		{"OpenRotations", testOpenRotations},
		{"Rotations", testRotations},
		{"PutKey", testPutKey},
		{"PolicyStatus", testPolicyStatus},
		{"Outbox", testOutbox},
		{"AppendAudit", testAppendAudit},
		{"PruneAudit", testPruneAudit},
		{"AuditUpgrade", testAuditUpgrade},
		{"ManyPolicies", testManyPolicies},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"FailingUpdate", testFailingUpdate},
		{"NoPrivateKeyStored", testNoPrivateKey},
		{"NewerSchemaRefused", testNewerSchema},
		{"Inventory", testInventory},
		{"Exposure", testExposure},
		{"MarkInventoryStale", testMarkInventoryStale},
		{"Hosts", testHosts},
		{"HostKeyPins", testHostKeyPins},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newFixture(t, f)) })
	}
}

// fixture is one store under test, reopenable.
type fixture struct {
	t     *testing.T
	key   state.StaticAuditKey
	open  func(t *testing.T) state.Backend
	b     state.Backend
	store state.Store
}

func newFixture(t *testing.T, f Factory) *fixture {
	key, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s := &fixture{t: t, open: f(t), key: state.StaticAuditKey(key)}
	s.reopen()
	t.Cleanup(func() { _ = s.store.Close() })
	return s
}

// reopen closes the store (if open) and opens it again.
func (s *fixture) reopen() {
	s.t.Helper()
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.t.Fatalf("close: %v", err)
		}
	}
	s.b = s.open(s.t)
	st, err := state.Open(s.b, state.WithAuditKeys(s.key))
	if err != nil {
		s.t.Fatalf("state.Open: %v", err)
	}
	s.store = st
}

func (s *fixture) update(t *testing.T, fn func(tx state.Tx) error) {
	t.Helper()
	if err := s.store.Update(fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func (s *fixture) view(t *testing.T, fn func(tx state.Tx) error) {
	t.Helper()
	if err := s.store.View(fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// runKV checks the byte-level contract of state.KV. It uses the state's
// own bucket names, since a backend may refuse buckets it does not know.
func runKV(t *testing.T, f Factory) {
	open := f(t)
	b := open(t)
	defer func() { _ = b.Close() }()
	put := func(t *testing.T, bucket string, kvs ...string) {
		t.Helper()
		if err := b.Update(func(kv state.KV) error {
			for i := 0; i+1 < len(kvs); i += 2 {
				if err := kv.Put(bucket, []byte(kvs[i]), []byte(kvs[i+1])); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	scan := func(t *testing.T, kv state.KV, bucket, prefix string, reverse bool) []string {
		t.Helper()
		var out []string
		if err := kv.Scan(bucket, []byte(prefix), reverse, func(k, v []byte) error {
			out = append(out, string(k)+"="+string(v))
			return nil
		}); err != nil {
			t.Fatalf("Scan: %v", err)
		}
		return out
	}
	put(t, "keys", "a\x00x", "1", "a\x00y", "2", "ab", "3", "b", "4", "a", "5", "a\xff", "6", "\xff\xff", "7")
	put(t, "policies", "a\x00x", "other bucket")

	t.Run("missing key and bucket read as nil", func(t *testing.T) {
		_ = b.View(func(kv state.KV) error {
			for _, c := range [][2]string{{"keys", "zz"}, {"rotations", "a"}} {
				if v, err := kv.Get(c[0], []byte(c[1])); v != nil || err != nil {
					t.Errorf("Get(%q, %q) = %q, %v; want nil, nil", c[0], c[1], v, err)
				}
			}
			if got := scan(t, kv, "rotations", "", false); len(got) != 0 {
				t.Errorf("Scan of a missing bucket = %v", got)
			}
			if n, err := kv.Count("rotations", nil); n != 0 || err != nil {
				t.Errorf("Count of a missing bucket = %d, %v", n, err)
			}
			return nil
		})
	})
	t.Run("scan orders bytes and honours prefix and direction", func(t *testing.T) {
		_ = b.View(func(kv state.KV) error {
			for _, tc := range []struct {
				prefix  string
				reverse bool
				want    []string
			}{
				{"", false, []string{"a=5", "a\x00x=1", "a\x00y=2", "ab=3", "a\xff=6", "b=4", "\xff\xff=7"}},
				{"a\x00", false, []string{"a\x00x=1", "a\x00y=2"}},
				{"a\x00", true, []string{"a\x00y=2", "a\x00x=1"}},
				{"a", true, []string{"a\xff=6", "ab=3", "a\x00y=2", "a\x00x=1", "a=5"}},
				{"\xff", true, []string{"\xff\xff=7"}},
				{"", true, []string{"\xff\xff=7", "b=4", "a\xff=6", "ab=3", "a\x00y=2", "a\x00x=1", "a=5"}},
				{"c", false, nil},
			} {
				if got := scan(t, kv, "keys", tc.prefix, tc.reverse); !slices.Equal(got, tc.want) {
					t.Errorf("Scan(%q, reverse %v) = %q, want %q", tc.prefix, tc.reverse, got, tc.want)
				}
			}
			for prefix, want := range map[string]int{"": 7, "a": 5, "a\x00": 2, "zz": 0} {
				if n, err := kv.Count("keys", []byte(prefix)); n != want || err != nil {
					t.Errorf("Count(%q) = %d, %v; want %d", prefix, n, err, want)
				}
			}
			return nil
		})
	})
	t.Run("ErrStopScan ends a scan without error, other errors pass through", func(t *testing.T) {
		errBoom := errors.New("boom")
		_ = b.View(func(kv state.KV) error {
			n := 0
			if err := kv.Scan("keys", nil, false, func(k, v []byte) error { n++; return state.ErrStopScan }); err != nil || n != 1 {
				t.Errorf("stopped scan: %v after %d calls, want nil after 1", err, n)
			}
			if err := kv.Scan("keys", nil, false, func(k, v []byte) error { return errBoom }); !errors.Is(err, errBoom) {
				t.Errorf("failing scan returned %v, want the callback's error", err)
			}
			return nil
		})
	})
	t.Run("a transaction reads its own writes, deletes included", func(t *testing.T) {
		if err := b.Update(func(kv state.KV) error {
			if err := kv.Put("keys", []byte("a\x00z"), []byte("8")); err != nil {
				return err
			}
			if err := kv.Delete("keys", []byte("a\x00x")); err != nil {
				return err
			}
			if err := kv.Delete("keys", []byte("never-there")); err != nil {
				return fmt.Errorf("deleting an absent key: %w", err)
			}
			if v, _ := kv.Get("keys", []byte("a\x00z")); string(v) != "8" {
				t.Errorf("own write read back as %q", v)
			}
			if v, _ := kv.Get("keys", []byte("a\x00x")); v != nil {
				t.Errorf("own delete still reads %q", v)
			}
			if got, want := scan(t, kv, "keys", "a\x00", false), []string{"a\x00y=2", "a\x00z=8"}; !slices.Equal(got, want) {
				t.Errorf("scan in the writing transaction = %q, want %q", got, want)
			}
			if n, _ := kv.Count("keys", []byte("a\x00")); n != 2 {
				t.Errorf("count in the writing transaction = %d, want 2", n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a failed update writes nothing", func(t *testing.T) {
		errBoom := errors.New("boom")
		err := b.Update(func(kv state.KV) error {
			if err := kv.Put("keys", []byte("lost"), []byte("x")); err != nil {
				return err
			}
			if _, err := kv.NextSequence("outbox"); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("Update returned %v, want the fn's error", err)
		}
		_ = b.View(func(kv state.KV) error {
			if v, _ := kv.Get("keys", []byte("lost")); v != nil {
				t.Error("a failed update's write is visible")
			}
			return nil
		})
	})
	t.Run("reads in View fail writes", func(t *testing.T) {
		err := b.View(func(kv state.KV) error { return kv.Put("keys", []byte("x"), []byte("y")) })
		if err == nil {
			t.Error("Put inside View succeeded")
		}
	})
	t.Run("sequences increase and survive reopen", func(t *testing.T) {
		var got []uint64
		next := func() {
			t.Helper()
			if err := b.Update(func(kv state.KV) error {
				n, err := kv.NextSequence("outbox")
				if err != nil {
					return err
				}
				m, err := kv.NextSequence("outbox")
				got = append(got, n, m)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		next()
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		b = open(t)
		next()
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("sequence numbers %v do not increase", got)
			}
		}
		if got[0] < 1 {
			t.Errorf("first sequence number %d, want >= 1", got[0])
		}
		_ = b.View(func(kv state.KV) error {
			if v, _ := kv.Get("keys", []byte("b")); string(v) != "4" {
				t.Errorf("after reopen keys/b = %q, want 4", v)
			}
			return nil
		})
	})
}

func testPutRotation(t *testing.T, s *fixture) {
	t.Run("round trip in UTC", func(t *testing.T) {
		in := state.Rotation{
			ID: "rot-1", Policy: "gpu-team", Provider: "sesterce-prod", ProjectID: 42,
			Step: state.StepUploaded, Reason: "due", Trigger: "cron", Emergency: true,
			KeyName: "gpu-team-20250301T120405", PublicKey: "ssh-ed25519 AAAAC3Nza gpu-team",
			Fingerprint: "SHA256:new", KeyID: "65f0c0ffee", OldKeyID: "65f0dead", OldFingerprint: "SHA256:old",
			VaultVersion: 7, StartedAt: t0, UpdatedAt: t0.Add(time.Minute), FinishedAt: t0.Add(time.Hour),
			Attempts: 3, Error: "upload: 503",
		}
		s.update(t, func(tx state.Tx) error { return tx.PutRotation(in) })
		want := in
		want.StartedAt, want.UpdatedAt, want.FinishedAt = in.StartedAt.UTC(), in.UpdatedAt.UTC(), in.FinishedAt.UTC()
		s.view(t, func(tx state.Tx) error {
			got, ok, err := tx.Rotation("rot-1")
			if !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("Rotation() = %+v, %v\nwant %+v", got, ok, want)
			}
			return err
		})
	})
	t.Run("zero times are filled, StartedAt kept across updates", func(t *testing.T) {
		before := time.Now()
		s.update(t, func(tx state.Tx) error {
			return tx.PutRotation(state.Rotation{ID: "rot-2", Policy: "p", Step: state.StepPlanned})
		})
		var first state.Rotation
		s.view(t, func(tx state.Tx) (err error) { first, _, err = tx.Rotation("rot-2"); return err })
		if first.StartedAt.Before(before.Add(-time.Second)) || first.UpdatedAt.IsZero() || first.StartedAt.Location() != time.UTC {
			t.Errorf("new rotation times = %v / %v, want now in UTC", first.StartedAt, first.UpdatedAt)
		}
		s.update(t, func(tx state.Tx) error {
			return tx.PutRotation(state.Rotation{ID: "rot-2", Policy: "p", Step: state.StepDone, UpdatedAt: t0})
		})
		s.view(t, func(tx state.Tx) error {
			got, _, err := tx.Rotation("rot-2")
			if !got.StartedAt.Equal(first.StartedAt) || got.Step != state.StepDone {
				t.Errorf("after update: started %v step %s, want started %v step done", got.StartedAt, got.Step, first.StartedAt)
			}
			return err
		})
	})
	t.Run("missing", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			if _, ok, err := tx.Rotation("nope"); ok || err != nil {
				t.Errorf("Rotation(nope) = %v, %v; want not found, nil", ok, err)
			}
			return nil
		})
	})
	for _, tc := range []struct {
		name string
		r    state.Rotation
	}{
		{"empty ID", state.Rotation{Policy: "p", Step: state.StepPlanned}},
		{"empty policy", state.Rotation{ID: "x", Step: state.StepPlanned}},
		{"empty step", state.Rotation{ID: "x", Policy: "p"}},
		{"unknown step", state.Rotation{ID: "x", Policy: "p", Step: "generated"}},
	} {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			if err := s.store.Update(func(tx state.Tx) error { return tx.PutRotation(tc.r) }); err == nil {
				t.Fatal("PutRotation succeeded")
			}
			s.view(t, func(tx state.Tx) error {
				if _, ok, _ := tx.Rotation("x"); ok {
					t.Error("rejected rotation was stored")
				}
				return nil
			})
		})
	}
}

// putRotations stores rotations of policies a and b started one minute
// apart, written out of order to prove the indexes order them.
func putRotations(t *testing.T, s *fixture) {
	t.Helper()
	rs := []state.Rotation{
		{ID: "r3", Policy: "a", Step: state.StepDone, StartedAt: t0.Add(3 * time.Minute)},
		{ID: "r1", Policy: "a", Step: state.StepPendingStored, StartedAt: t0.Add(1 * time.Minute)},
		{ID: "r5", Policy: "b", Step: state.StepPlanned, StartedAt: t0.Add(5 * time.Minute)},
		{ID: "r2", Policy: "b", Step: state.StepFailed, StartedAt: t0.Add(2 * time.Minute)},
		{ID: "r4", Policy: "a", Step: state.StepActivated, StartedAt: t0.Add(4 * time.Minute)},
		{ID: "r0", Policy: "b", Step: state.StepPromoted, StartedAt: t0.Add(-24 * 365 * 60 * time.Hour)},
		{ID: "r7", Policy: "ab", Step: state.StepPlanned, StartedAt: t0.Add(7 * time.Minute)},
	}
	s.update(t, func(tx state.Tx) error {
		for _, r := range rs {
			if err := tx.PutRotation(r); err != nil {
				return err
			}
		}
		return nil
	})
}

func ids(rs []state.Rotation) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func testOpenRotations(t *testing.T, s *fixture) {
	putRotations(t, s)
	assertOpen := func(t *testing.T, want ...string) {
		t.Helper()
		s.view(t, func(tx state.Tx) error {
			got, err := tx.OpenRotations()
			if !slices.Equal(ids(got), want) {
				t.Errorf("OpenRotations() = %v, want %v", ids(got), want)
			}
			return err
		})
	}
	assertOf := func(t *testing.T, policy string, want ...string) {
		t.Helper()
		s.view(t, func(tx state.Tx) error {
			got, err := tx.OpenRotationsOf(policy)
			if !slices.Equal(ids(got), append([]string{}, want...)) {
				t.Errorf("OpenRotationsOf(%q) = %v, want %v", policy, ids(got), want)
			}
			return err
		})
	}
	t.Run("excludes done and failed, oldest first", func(t *testing.T) {
		assertOpen(t, "r0", "r1", "r4", "r5", "r7")
		assertOf(t, "a", "r1", "r4")
		assertOf(t, "b", "r0", "r5")
		assertOf(t, "ab", "r7") // a name that extends another is its own policy
		assertOf(t, "none")
	})
	t.Run("finishing a rotation closes it", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error {
			r, _, err := tx.Rotation("r4")
			if err != nil {
				return err
			}
			r.Step = state.StepDone
			return tx.PutRotation(r)
		})
		assertOpen(t, "r0", "r1", "r5", "r7")
		assertOf(t, "a", "r1")
	})
	t.Run("steps keep one entry; reopening a finished one opens it", func(t *testing.T) {
		for _, step := range []state.Step{state.StepPendingStored, state.StepUploaded, state.StepFailed, state.StepPlanned} {
			s.update(t, func(tx state.Tx) error {
				r, _, err := tx.Rotation("r1")
				if err != nil {
					return err
				}
				r.Step = step
				return tx.PutRotation(r)
			})
		}
		assertOpen(t, "r0", "r1", "r5", "r7")
		assertOf(t, "a", "r1")
		s.view(t, func(tx state.Tx) error {
			got, err := tx.Rotations("a", 0)
			if n := slices.Index(ids(got), "r1"); n < 0 || slices.Contains(ids(got)[n+1:], "r1") {
				t.Errorf("Rotations(a) = %v, want r1 once", ids(got))
			}
			return err
		})
	})
	t.Run("survives reopen", func(t *testing.T) {
		s.reopen()
		assertOpen(t, "r0", "r1", "r5", "r7")
		assertOf(t, "b", "r0", "r5")
	})
}

func testRotations(t *testing.T, s *fixture) {
	putRotations(t, s)
	// Moving a rotation to another policy must not leave it in the old
	// policy's index.
	s.update(t, func(tx state.Tx) error {
		return tx.PutRotation(state.Rotation{ID: "r6", Policy: "a", Step: state.StepPlanned, StartedAt: t0.Add(6 * time.Minute)})
	})
	s.update(t, func(tx state.Tx) error {
		return tx.PutRotation(state.Rotation{ID: "r6", Policy: "c", Step: state.StepPlanned, StartedAt: t0.Add(6 * time.Minute)})
	})
	for _, tc := range []struct {
		name   string
		policy string
		limit  int
		want   []string
	}{
		{"all policies newest first", "", 0, []string{"r7", "r6", "r5", "r4", "r3", "r2", "r1", "r0"}},
		{"all policies limited", "", 2, []string{"r7", "r6"}},
		{"one policy", "a", 0, []string{"r4", "r3", "r1"}},
		{"one policy limited", "b", 1, []string{"r5"}},
		{"moved rotation", "c", 0, []string{"r6"}},
		{"unknown policy", "zzz", 0, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.view(t, func(tx state.Tx) error {
				got, err := tx.Rotations(tc.policy, tc.limit)
				if !slices.Equal(ids(got), tc.want) {
					t.Errorf("Rotations(%q, %d) = %v, want %v", tc.policy, tc.limit, ids(got), tc.want)
				}
				return err
			})
		})
	}
	t.Run("moved rotation left the old open index", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			got, err := tx.OpenRotationsOf("a")
			if slices.Contains(ids(got), "r6") {
				t.Errorf("OpenRotationsOf(a) = %v still holds the moved rotation", ids(got))
			}
			return err
		})
	})
}

func testPutKey(t *testing.T, s *fixture) {
	full := state.KeyRecord{
		Policy: "inference", Provider: "gcore-prod", ProjectID: 1234,
		KeyID: "0b6f2c1e-uuid", Name: "inference-20250301T120405", Fingerprint: "SHA256:abc",
		PublicKey: "ssh-ed25519 AAAAC3Nza inference", Status: state.KeyRetiring, RotationID: "rot-9",
		CreatedAt: t0, ActivatedAt: t0.Add(time.Second), DeleteAfter: t0.Add(7 * 24 * time.Hour),
		DeletedAt: t0.Add(8 * 24 * time.Hour), VaultVersion: 3,
	}
	keys := []state.KeyRecord{
		full,
		{Policy: "inference", KeyID: "aaa-older", Status: state.KeyDeleted, CreatedAt: t0.Add(-time.Hour)},
		{Policy: "gpu-team", KeyID: "k2", Status: state.KeyActive, CreatedAt: t0},
		{Policy: "gpu-team", KeyID: "k1", Status: state.KeyOrphaned, CreatedAt: t0.Add(time.Hour)},
		{Policy: "gpu", KeyID: "g1", Status: state.KeyActive, CreatedAt: t0},
	}
	s.update(t, func(tx state.Tx) error {
		for _, k := range keys {
			if err := tx.PutKey(k); err != nil {
				return err
			}
		}
		return nil
	})
	t.Run("round trip in UTC", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			got, ok, err := tx.Key("inference", full.KeyID)
			want := full
			want.CreatedAt, want.ActivatedAt = full.CreatedAt.UTC(), full.ActivatedAt.UTC()
			want.DeleteAfter, want.DeletedAt = full.DeleteAfter.UTC(), full.DeletedAt.UTC()
			if !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("Key() = %+v, %v\nwant %+v", got, ok, want)
			}
			return err
		})
	})
	t.Run("missing", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			for _, k := range [][2]string{{"inference", "nope"}, {"nope", "k1"}, {"gpu", "k1"}} {
				if _, ok, err := tx.Key(k[0], k[1]); ok || err != nil {
					t.Errorf("Key(%q, %q) = %v, %v; want not found", k[0], k[1], ok, err)
				}
			}
			return nil
		})
	})
	t.Run("Keys sorts by creation and keeps policies apart", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			for policy, want := range map[string][]string{
				"inference": {"aaa-older", full.KeyID},
				"gpu-team":  {"k2", "k1"},
				"gpu":       {"g1"},
				"none":      {},
			} {
				got, err := tx.Keys(policy)
				if err != nil {
					return err
				}
				gotIDs := []string{}
				for _, k := range got {
					gotIDs = append(gotIDs, k.KeyID)
				}
				if !slices.Equal(gotIDs, want) {
					t.Errorf("Keys(%q) = %v, want %v", policy, gotIDs, want)
				}
			}
			return nil
		})
	})
	t.Run("ForEachKey visits every policy in order", func(t *testing.T) {
		var got []string
		s.view(t, func(tx state.Tx) error {
			return tx.ForEachKey(func(k state.KeyRecord) error {
				got = append(got, k.Policy+"/"+k.KeyID)
				return nil
			})
		})
		want := []string{"gpu/g1", "gpu-team/k1", "gpu-team/k2", "inference/0b6f2c1e-uuid", "inference/aaa-older"}
		if !slices.Equal(got, want) {
			t.Errorf("ForEachKey visited %v, want %v", got, want)
		}
	})
	t.Run("ForEachKey stops at the first error", func(t *testing.T) {
		errStop := errors.New("stop")
		calls := 0
		err := s.store.View(func(tx state.Tx) error {
			return tx.ForEachKey(func(state.KeyRecord) error { calls++; return errStop })
		})
		if !errors.Is(err, errStop) || calls != 1 {
			t.Errorf("ForEachKey returned %v after %d calls, want errStop after 1", err, calls)
		}
	})
	t.Run("update replaces", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error {
			return tx.PutKey(state.KeyRecord{Policy: "gpu-team", KeyID: "k2", Status: state.KeyRetiring, CreatedAt: t0})
		})
		s.view(t, func(tx state.Tx) error {
			k, _, err := tx.Key("gpu-team", "k2")
			if k.Status != state.KeyRetiring {
				t.Errorf("status after update = %q, want retiring", k.Status)
			}
			return err
		})
	})
	t.Run("delete", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error {
			if err := tx.DeleteKeyRecord("gpu-team", "k1"); err != nil {
				return err
			}
			return tx.DeleteKeyRecord("nope", "nope")
		})
		s.view(t, func(tx state.Tx) error {
			if _, ok, _ := tx.Key("gpu-team", "k1"); ok {
				t.Error("deleted key record still present")
			}
			if _, ok, _ := tx.Key("gpu-team", "k2"); !ok {
				t.Error("sibling key record lost")
			}
			return nil
		})
	})
	t.Run("rejects missing identity", func(t *testing.T) {
		for _, k := range []state.KeyRecord{{KeyID: "x"}, {Policy: "p"}} {
			if err := s.store.Update(func(tx state.Tx) error { return tx.PutKey(k) }); err == nil {
				t.Errorf("PutKey(%+v) succeeded", k)
			}
		}
	})
}

func testPolicyStatus(t *testing.T, s *fixture) {
	t.Run("absent is healthy with its name", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			got, err := tx.PolicyStatus("gpu-team")
			if !reflect.DeepEqual(got, state.PolicyStatus{Name: "gpu-team"}) {
				t.Errorf("PolicyStatus() = %+v, want zero with name", got)
			}
			return err
		})
	})
	in := state.PolicyStatus{
		Name: "gpu-team", LastAttempt: t0, LastSuccess: t0.Add(-time.Hour), ConsecutiveFailures: 5,
		NextRetry: t0.Add(30 * time.Minute), Failing: true, LastError: "upload: 403 API key invalid",
		LastResult: "failed", CurrentKeyID: "65f0", OverdueAlerted: true,
	}
	t.Run("round trip in UTC", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error { return tx.PutPolicyStatus(in) })
		want := in
		want.LastAttempt, want.LastSuccess, want.NextRetry = in.LastAttempt.UTC(), in.LastSuccess.UTC(), in.NextRetry.UTC()
		s.view(t, func(tx state.Tx) error {
			got, err := tx.PolicyStatus("gpu-team")
			if !reflect.DeepEqual(got, want) {
				t.Errorf("PolicyStatus() = %+v\nwant %+v", got, want)
			}
			return err
		})
	})
	t.Run("ForEachPolicyStatus in name order", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error {
			for _, n := range []string{"zeta", "alpha"} {
				if err := tx.PutPolicyStatus(state.PolicyStatus{Name: n}); err != nil {
					return err
				}
			}
			return nil
		})
		var got []string
		s.view(t, func(tx state.Tx) error {
			return tx.ForEachPolicyStatus(func(st state.PolicyStatus) error { got = append(got, st.Name); return nil })
		})
		if want := []string{"alpha", "gpu-team", "zeta"}; !slices.Equal(got, want) {
			t.Errorf("ForEachPolicyStatus visited %v, want %v", got, want)
		}
	})
	t.Run("rejects empty name", func(t *testing.T) {
		if err := s.store.Update(func(tx state.Tx) error { return tx.PutPolicyStatus(state.PolicyStatus{}) }); err == nil {
			t.Error("PutPolicyStatus without a name succeeded")
		}
	})
}

func testOutbox(t *testing.T, s *fixture) {
	full := state.Event{
		Kind: "rotated", Policy: "gpu-team", Provider: "sesterce-prod", ProjectID: 1, Channel: "#gpu-ops",
		KeyName: "gpu-team-20250301T120405", KeyID: "new", OldKeyID: "old", OldFingerprint: "SHA256:old",
		NewFingerprint: "SHA256:new", VaultPath: "ssh/sesterce/gpu-team", GraceDeadline: t0.Add(7 * 24 * time.Hour),
		Detail: "scheduled", Time: t0,
	}
	var evID string
	s.update(t, func(tx state.Tx) (err error) {
		if evID, err = tx.Enqueue(full, state.SinkSlack, "hook"); err != nil {
			return err
		}
		if _, err = tx.Enqueue(state.Event{Kind: "deleted", Time: t0.Add(time.Minute)}, state.SinkSlack); err != nil {
			return err
		}
		if _, err = tx.Enqueue(state.Event{Kind: "failed", Time: t0.Add(2 * time.Minute)}, state.SinkSlack, "hook"); err != nil {
			return err
		}
		if _, err = tx.Enqueue(state.Event{Kind: "x"}); err == nil {
			return errors.New("enqueue with no sink succeeded")
		}
		return nil
	})
	pending := func(t *testing.T, sink string, now time.Time, limit int) []state.OutboxEntry {
		t.Helper()
		var out []state.OutboxEntry
		s.view(t, func(tx state.Tx) (err error) { out, err = tx.PendingOutbox(sink, now, limit); return err })
		return out
	}
	kinds := func(es []state.OutboxEntry) []string {
		out := []string{}
		for _, e := range es {
			out = append(out, e.Event.Kind)
		}
		return out
	}
	slack := pending(t, state.SinkSlack, t0.Add(time.Hour), 0)
	hook := pending(t, "hook", t0.Add(time.Hour), 0)

	t.Run("one entry per sink, sharing the event ID", func(t *testing.T) {
		if got := kinds(slack); !slices.Equal(got, []string{"rotated", "deleted", "failed"}) {
			t.Fatalf("slack entries = %v", got)
		}
		if got := kinds(hook); !slices.Equal(got, []string{"rotated", "failed"}) {
			t.Fatalf("hook entries = %v", got)
		}
		if evID == "" || slack[0].Event.ID != evID || hook[0].Event.ID != evID || slack[2].Event.ID != hook[1].Event.ID {
			t.Errorf("event IDs: returned %q, slack %q, hook %q", evID, slack[0].Event.ID, hook[0].Event.ID)
		}
		if slack[0].Event.ID == slack[1].Event.ID || slack[0].ID == hook[0].ID {
			t.Errorf("distinct events or entries share an ID: %+v / %+v", slack[0], slack[1])
		}
		if slack[0].Sink != state.SinkSlack || hook[0].Sink != "hook" {
			t.Errorf("sinks = %q, %q", slack[0].Sink, hook[0].Sink)
		}
	})
	t.Run("entry IDs increase in enqueue order", func(t *testing.T) {
		if !(slack[0].ID < slack[1].ID && slack[1].ID < slack[2].ID && hook[0].ID < hook[1].ID) {
			t.Errorf("IDs do not increase: %d %d %d / %d %d", slack[0].ID, slack[1].ID, slack[2].ID, hook[0].ID, hook[1].ID)
		}
	})
	t.Run("round trip", func(t *testing.T) {
		es := pending(t, state.SinkSlack, t0, 0)
		if len(es) != 1 {
			t.Fatalf("PendingOutbox(t0) = %d entries, want 1", len(es))
		}
		want := full
		want.ID = evID
		want.GraceDeadline, want.Time = full.GraceDeadline.UTC(), full.Time.UTC()
		if e := es[0]; !reflect.DeepEqual(e.Event, want) || e.Attempts != 0 || !e.NextAttempt.Equal(t0) || e.CreatedAt.IsZero() {
			t.Errorf("entry = %+v\nwant event %+v due at %v", e, want, t0)
		}
	})
	t.Run("pending respects NextAttempt and limit, oldest first", func(t *testing.T) {
		for _, tc := range []struct {
			now   time.Time
			limit int
			want  []string
		}{
			{t0.Add(-time.Second), 0, []string{}},
			{t0.Add(time.Minute), 0, []string{"rotated", "deleted"}},
			{t0.Add(time.Hour), 2, []string{"rotated", "deleted"}},
		} {
			if got := kinds(pending(t, state.SinkSlack, tc.now, tc.limit)); !slices.Equal(got, tc.want) {
				t.Errorf("PendingOutbox(%v, %d) = %v, want %v", tc.now, tc.limit, got, tc.want)
			}
		}
	})
	t.Run("retry counts and postpones only that entry", func(t *testing.T) {
		id := slack[0].ID
		s.update(t, func(tx state.Tx) error { return tx.RetryOutbox(id, t0.Add(time.Hour), "slack: 503") })
		s.update(t, func(tx state.Tx) error { return tx.RetryOutbox(id, t0.Add(2*time.Hour), "slack: timeout") })
		if got := kinds(pending(t, state.SinkSlack, t0.Add(time.Hour), 0)); !slices.Equal(got, []string{"deleted", "failed"}) {
			t.Errorf("pending after retry = %v", got)
		}
		if got := kinds(pending(t, "hook", t0.Add(time.Hour), 0)); len(got) != 2 {
			t.Errorf("another sink's entries moved: %v", got)
		}
		es := pending(t, state.SinkSlack, t0.Add(2*time.Hour), 1)
		if len(es) != 1 || es[0].ID != id || es[0].Attempts != 2 || es[0].LastError != "slack: timeout" || !es[0].NextAttempt.Equal(t0.Add(2*time.Hour)) {
			t.Errorf("retried entry = %+v, want 2 attempts, last error and new due time", es)
		}
	})
	t.Run("retry of a missing entry", func(t *testing.T) {
		err := s.store.Update(func(tx state.Tx) error { return tx.RetryOutbox(99999, t0, "x") })
		if !errors.Is(err, state.ErrNotFound) {
			t.Errorf("RetryOutbox(99999) = %v, want ErrNotFound", err)
		}
	})
	t.Run("ack removes, twice is harmless", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error {
			if err := tx.AckOutbox(slack[1].ID); err != nil {
				return err
			}
			return tx.AckOutbox(slack[1].ID)
		})
		if got := kinds(pending(t, state.SinkSlack, t0.Add(3*time.Hour), 0)); !slices.Equal(got, []string{"rotated", "failed"}) {
			t.Errorf("pending after ack = %v", got)
		}
	})
	t.Run("survives reopen, IDs keep increasing", func(t *testing.T) {
		s.reopen()
		if got := kinds(pending(t, state.SinkSlack, t0.Add(3*time.Hour), 0)); !slices.Equal(got, []string{"rotated", "failed"}) {
			t.Errorf("pending after reopen = %v", got)
		}
		s.update(t, func(tx state.Tx) error {
			_, err := tx.Enqueue(state.Event{Kind: "report"}, state.SinkSlack)
			return err
		})
		var n int
		s.view(t, func(tx state.Tx) (err error) { n, err = tx.OutboxLen(); return err })
		if n != 5 {
			t.Errorf("OutboxLen = %d, want 5 (3 slack + 2 hook)", n)
		}
		now := pending(t, state.SinkSlack, time.Now().Add(time.Second), 0)
		if last := now[len(now)-1]; last.Event.Kind != "report" || last.ID <= slack[2].ID || last.ID <= hook[1].ID {
			t.Errorf("new entry %+v: want the undated report, due now, with the highest ID", last)
		}
	})
}

func testAppendAudit(t *testing.T, s *fixture) {
	full := state.AuditEntry{
		Time: t0, Policy: "gpu-team", Provider: "sesterce-prod", Event: "rotated", Trigger: "schedule",
		KeyID: "new", KeyName: "gpu-team-20250301T120405", Fingerprint: "SHA256:new",
		OldKeyID: "old", OldFingerprint: "SHA256:old", RotationID: "rot-1",
		VaultPath: "ssh/sesterce/gpu-team", VaultVersion: 4, Detail: "old key retires at 2025-03-08",
	}
	s.update(t, func(tx state.Tx) error {
		if err := tx.AppendAudit(full); err != nil {
			return err
		}
		return tx.AppendAudit(state.AuditEntry{Event: "deleted", Seq: 999})
	})
	s.reopen()
	s.update(t, func(tx state.Tx) error { return tx.AppendAudit(state.AuditEntry{Event: "planned", Time: t0}) })

	got := auditLog(t, s)
	if len(got) != 3 {
		t.Fatalf("ForEachAudit visited %d entries, want 3", len(got))
	}
	var events []string
	for i, a := range got {
		events = append(events, a.Event)
		if a.Seq != uint64(i+1) {
			t.Errorf("entry %d has Seq %d, want %d (caller's Seq ignored)", i, a.Seq, i+1)
		}
		if a.Time.IsZero() || a.Time.Location() != time.UTC {
			t.Errorf("entry %d time = %v, want a UTC time", i, a.Time)
		}
	}
	if want := []string{"rotated", "deleted", "planned"}; !slices.Equal(events, want) {
		t.Errorf("audit order = %v, want append order %v", events, want)
	}
	want := full
	want.Seq, want.Time, want.PrevHash, want.HMAC = 1, t0.UTC(), audit.ZeroHash, got[0].HMAC
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("first entry = %+v\nwant %+v", got[0], want)
	}
	t.Run("the stored chain verifies and its head is the store's", func(t *testing.T) {
		res := verifyLog(t, s, nil)
		var head audit.Head
		s.view(t, func(tx state.Tx) (err error) { head, err = tx.AuditHead(); return err })
		if res.Head != head || head.Seq != 3 || !res.HMACChecked {
			t.Errorf("verified head %v (hmac checked %v), store's head %v; want the same, seq 3", res.Head, res.HMACChecked, head)
		}
	})
	t.Run("an edited entry breaks the chain at that entry", func(t *testing.T) {
		log := auditLog(t, s)
		log[1].Detail = "edited"
		_, err := audit.Verify(seqOf(log), audit.VerifyOptions{Key: audit.Key(s.key)})
		var broken *audit.BrokenError
		if !errors.As(err, &broken) || broken.Seq != 2 {
			t.Errorf("Verify of an edited log = %v, want entry 2 named", err)
		}
	})
	t.Run("no key, no entry", func(t *testing.T) {
		bare, err := state.Open(s.b)
		if err != nil {
			t.Fatal(err)
		}
		err = bare.Update(func(tx state.Tx) error { return tx.AppendAudit(state.AuditEntry{Event: "x"}) })
		if !errors.Is(err, state.ErrNoAuditKey) {
			t.Errorf("AppendAudit without a key = %v, want ErrNoAuditKey", err)
		}
		if n := len(auditLog(t, s)); n != 3 {
			t.Errorf("%d entries after a refused append, want 3", n)
		}
	})
}

// testPruneAudit: retention deletes the oldest entries and leaves a
// checkpoint; what remains verifies, against the head published before
// the pruning too (nothing was cut from the end).
func testPruneAudit(t *testing.T, s *fixture) {
	s.update(t, func(tx state.Tx) error {
		for i := range 10 {
			if err := tx.AppendAudit(state.AuditEntry{Event: "rotated", Time: t0.Add(time.Duration(i) * time.Hour)}); err != nil {
				return err
			}
		}
		return nil
	})
	var before audit.Head
	s.view(t, func(tx state.Tx) (err error) { before, err = tx.AuditHead(); return err })
	var pruned int
	s.update(t, func(tx state.Tx) (err error) {
		pruned, err = tx.PruneAudit(t0.Add(6*time.Hour+time.Minute), 4)
		return err
	})
	if pruned != 4 {
		t.Fatalf("PruneAudit pruned %d, want 4 (its limit)", pruned)
	}
	s.update(t, func(tx state.Tx) (err error) {
		pruned, err = tx.PruneAudit(t0.Add(6*time.Hour+time.Minute), 4)
		return err
	})
	if pruned != 3 {
		t.Fatalf("second PruneAudit pruned %d, want the other 3 older entries", pruned)
	}
	log := auditLog(t, s)
	if log[0].Seq != 8 || log[len(log)-1].Event != audit.EventCheckpoint {
		t.Errorf("after pruning the log starts at %d and ends with %q, want 8 and a checkpoint", log[0].Seq, log[len(log)-1].Event)
	}
	res := verifyLog(t, s, nil)
	if res.Checkpoints != 2 {
		t.Errorf("verify saw %d checkpoints, want 2", res.Checkpoints)
	}
	// The head published before the pruning is still an entry of the log.
	if _, err := audit.Verify(seqOf(log[:len(log)-2]), audit.VerifyOptions{Key: audit.Key(s.key), ExpectHead: &before, Partial: true}); err != nil {
		t.Errorf("the pre-pruning head no longer verifies: %v", err)
	}
	s.update(t, func(tx state.Tx) (err error) { pruned, err = tx.PruneAudit(time.Now().Add(time.Hour), 0); return err })
	// The newest entry stays whatever its age: the head never goes.
	if log = auditLog(t, s); len(log) != 2 || log[1].Event != audit.EventCheckpoint || log[0].Seq != before.Seq+2 {
		t.Errorf("pruning everything left %+v; want the last entry and the new checkpoint", log)
	}
	verifyLog(t, s, nil)
}

// testAuditUpgrade: a log written before the chain (legacy names action
// and actor, no hashes) is chained in place by the first append, with an
// "upgraded" marker, and verifies.
func testAuditUpgrade(t *testing.T, s *fixture) {
	if err := s.b.Update(func(kv state.KV) error {
		for i, action := range []string{"rotated", "deleted"} {
			v := fmt.Sprintf(`{"seq":%d,"time":"2025-03-01T12:00:0%dZ","policy":"gpu","action":%q,"actor":"cron","key_id":"k%d"}`, i+1, i, action, i)
			if err := kv.Put("audit", binary.BigEndian.AppendUint64(nil, uint64(i+1)), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var head audit.Head
	s.view(t, func(tx state.Tx) (err error) { head, err = tx.AuditHead(); return err })
	if head != (audit.Head{}) {
		t.Errorf("an unchained log has head %v, want none", head)
	}
	s.update(t, func(tx state.Tx) error { return tx.AppendAudit(state.AuditEntry{Event: "rotated", Policy: "gpu"}) })
	log := auditLog(t, s)
	var events []string
	for _, e := range log {
		events = append(events, e.Event+"/"+e.Trigger)
	}
	if want := []string{"rotated/cron", "deleted/cron", "upgraded/upgrade", "rotated/"}; !slices.Equal(events, want) {
		t.Errorf("after the upgrade the log is %v, want %v", events, want)
	}
	if res := verifyLog(t, s, nil); res.UpgradedThrough != 2 {
		t.Errorf("verify says entries through %d were chained on upgrade, want the 2 old ones", res.UpgradedThrough)
	}
}

// seqOf feeds entries to audit.Verify.
func seqOf(entries []state.AuditEntry) iter.Seq2[audit.Entry, error] {
	return func(yield func(audit.Entry, error) bool) {
		for _, e := range entries {
			if !yield(e, nil) {
				return
			}
		}
	}
}

func auditLog(t *testing.T, s *fixture) []state.AuditEntry {
	t.Helper()
	var out []state.AuditEntry
	s.view(t, func(tx state.Tx) error {
		return tx.ForEachAudit(func(e state.AuditEntry) error { out = append(out, e); return nil })
	})
	return out
}

// verifyLog checks the store's whole log with its key.
func verifyLog(t *testing.T, s *fixture, expect *audit.Head) audit.Result {
	t.Helper()
	res, err := audit.Verify(seqOf(auditLog(t, s)), audit.VerifyOptions{Key: audit.Key(s.key), ExpectHead: expect})
	if err != nil {
		t.Fatalf("the stored audit log does not verify: %v", err)
	}
	return res
}

func testManyPolicies(t *testing.T, s *fixture) {
	const policies, perPolicy = 300, 3
	s.update(t, func(tx state.Tx) error {
		for p := range policies {
			for k := range perPolicy {
				if err := tx.PutKey(state.KeyRecord{Policy: fmt.Sprintf("policy-%04d", p), KeyID: fmt.Sprint(k), Status: state.KeyActive}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	count := 0
	s.view(t, func(tx state.Tx) error {
		return tx.ForEachKey(func(state.KeyRecord) error { count++; return nil })
	})
	if count != policies*perPolicy {
		t.Errorf("ForEachKey visited %d keys, want %d", count, policies*perPolicy)
	}
	s.view(t, func(tx state.Tx) error {
		ks, err := tx.Keys("policy-0150")
		if len(ks) != perPolicy {
			t.Errorf("Keys(policy-0150) = %d records, want %d", len(ks), perPolicy)
		}
		return err
	})
}

func testConcurrentUpdates(t *testing.T, s *fixture) {
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- s.store.Update(func(tx state.Tx) error {
				policy := fmt.Sprintf("p%02d", i)
				if err := tx.PutRotation(state.Rotation{ID: "r" + policy, Policy: policy, Step: state.StepPlanned}); err != nil {
					return err
				}
				if _, err := tx.Enqueue(state.Event{Kind: "rotated", Policy: policy}, state.SinkSlack); err != nil {
					return err
				}
				return tx.AppendAudit(state.AuditEntry{Event: "plan", Policy: policy})
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	s.reopen()
	s.view(t, func(tx state.Tx) error {
		open, err := tx.OpenRotations()
		if err != nil {
			return err
		}
		if len(open) != n {
			t.Errorf("rotations after reopen = %d, want %d", len(open), n)
		}
		pending, err := tx.PendingOutbox(state.SinkSlack, time.Now().Add(time.Hour), 0)
		if err != nil {
			return err
		}
		ids := map[uint64]bool{}
		for _, e := range pending {
			ids[e.ID] = true
		}
		if len(ids) != n {
			t.Errorf("distinct outbox IDs = %d, want %d", len(ids), n)
		}
		seqs := map[uint64]bool{}
		if err := tx.ForEachAudit(func(a state.AuditEntry) error { seqs[a.Seq] = true; return nil }); err != nil {
			return err
		}
		if len(seqs) != n {
			t.Errorf("distinct audit seqs = %d, want %d", len(seqs), n)
		}
		return nil
	})
}

func testFailingUpdate(t *testing.T, s *fixture) {
	errBoom := errors.New("boom")
	const n = 20
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Go(func() {
			results[i] = s.store.Update(func(tx state.Tx) error {
				if err := tx.PutPolicyStatus(state.PolicyStatus{Name: fmt.Sprintf("p%02d", i), ConsecutiveFailures: 1}); err != nil {
					return err
				}
				if i == 7 {
					return errBoom
				}
				return nil
			})
		})
	}
	wg.Wait()
	for i, err := range results {
		if i == 7 && !errors.Is(err, errBoom) {
			t.Errorf("failing writer got %v, want its own error", err)
		}
		if i != 7 && err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	var names []string
	s.view(t, func(tx state.Tx) error {
		return tx.ForEachPolicyStatus(func(st state.PolicyStatus) error { names = append(names, st.Name); return nil })
	})
	if len(names) != n-1 || slices.Contains(names, "p07") {
		t.Errorf("stored statuses = %v, want all but p07", names)
	}
}

// testNoPrivateKey writes every record type the way the engine does,
// including error texts that quote key material, and then reads every
// byte the backend holds.
func testNoPrivateKey(t *testing.T, s *fixture) {
	pkcs8, openssh := TestPEMs(t)
	gcoreBody := `{"id":"k1","private_key":"` + strings.ReplaceAll(openssh, "\n", `\n`) + `"}`
	s.update(t, func(tx state.Tx) error {
		if err := tx.PutRotation(state.Rotation{
			ID: "rot-1", Policy: "inference", Step: state.StepFailed,
			PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake inference",
			Error:     "create key: gcore: unexpected response: " + gcoreBody,
		}); err != nil {
			return err
		}
		if err := tx.PutKey(state.KeyRecord{Policy: "inference", KeyID: "k1", Status: state.KeyActive, Fingerprint: "SHA256:x"}); err != nil {
			return err
		}
		if err := tx.PutPolicyStatus(state.PolicyStatus{Name: "inference", LastError: "store pending: " + pkcs8}); err != nil {
			return err
		}
		// A truncated message: the END line without its BEGIN.
		if _, err := tx.Enqueue(state.Event{Kind: "failed", Policy: "inference", Error: "..." + pkcs8[len(pkcs8)/2:]}, state.SinkSlack); err != nil {
			return err
		}
		return tx.AppendAudit(state.AuditEntry{Event: "failed", Detail: pkcs8[:len(pkcs8)/2]})
	})
	raw := Dump(t, s.b)
	for _, leak := range []string{"PRIVATE KEY", PEMBody(pkcs8), PEMBody(openssh)} {
		if strings.Contains(raw, leak) {
			t.Errorf("the backend holds %q", leak)
		}
	}
	s.view(t, func(tx state.Tx) error {
		r, _, err := tx.Rotation("rot-1")
		want := `create key: gcore: unexpected response: {"id":"k1","private_key":"[redacted key material]\n"}`
		if r.Error != want {
			t.Errorf("stored error = %q\nwant %q (context around the key kept)", r.Error, want)
		}
		return err
	})
}

// testNewerSchema: a store written by a newer rotatord is refused, not
// misread.
func testNewerSchema(t *testing.T, s *fixture) {
	if err := s.b.Update(func(kv state.KV) error {
		return kv.Put("meta", []byte("schema"), []byte("99"))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := state.Open(s.b); !errors.Is(err, state.ErrSchema) || !strings.Contains(err.Error(), "99") {
		t.Errorf("state.Open of a schema 99 store = %v, want ErrSchema naming 99", err)
	}
}

// Dump returns every key and value the backend holds in the state's
// buckets, for leak checks.
func Dump(t testing.TB, b state.Backend) string {
	t.Helper()
	var sb strings.Builder
	err := b.View(func(kv state.KV) error {
		for _, bucket := range state.Buckets() {
			if err := kv.Scan(bucket, nil, false, func(k, v []byte) error {
				fmt.Fprintf(&sb, "%s/%s=%s\n", bucket, k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return sb.String()
}

// TestPEMs returns a real PKCS#8 private key and an OpenSSH-armoured one,
// as a provider response or a careless error message could carry them.
func TestPEMs(t testing.TB) (pkcs8, openssh string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	body := make([]byte, 300)
	_, _ = rand.Read(body)
	openssh = string(pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: body}))
	return pkcs8, openssh
}

// PEMBody is the base64 payload's first line of a PEM block: the part that
// must not survive anywhere, even if the armour lines were stripped.
func PEMBody(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[1]
}

// testInventory: a listing is stored per account, replaced whole (fewer
// instances leave no stale chunk behind), survives reopen, and keeps
// accounts of one provider (Gcore projects) apart.
func testInventory(t *testing.T, s *fixture) {
	mk := func(n int, prefix string) []state.InventoryInstance {
		out := make([]state.InventoryInstance, n)
		for i := range out {
			out[i] = state.InventoryInstance{
				ID: fmt.Sprintf("%s-%04d", prefix, i), Name: fmt.Sprintf("gpu-%d", i), Status: "ACTIVE",
				Region: "Luxembourg", RegionID: 76, ProjectID: 1, KeyName: "gpu-team-20250301T120405",
				Address: "203.0.113.7", CreatedAt: t0.Add(time.Duration(i) * time.Second), Kind: "instance",
			}
		}
		return out
	}
	big := state.Inventory{
		Provider: "gcore-prod", ProjectID: 1, Instances: mk(1234, "a"),
		ListedAt: t0, AttemptedAt: t0,
	}
	t.Run("missing", func(t *testing.T) {
		s.view(t, func(tx state.Tx) error {
			_, ok, err := tx.Inventory("gcore-prod", 1)
			if ok {
				t.Error("Inventory of an empty store found one")
			}
			return err
		})
	})
	t.Run("round trip in UTC, many chunks", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error { return tx.PutInventory(big) })
		s.view(t, func(tx state.Tx) error {
			got, ok, err := tx.Inventory("gcore-prod", 1)
			if err != nil || !ok {
				t.Fatalf("Inventory() = %v, %v", ok, err)
			}
			if len(got.Instances) != 1234 {
				t.Fatalf("read %d instances, want 1234", len(got.Instances))
			}
			for i, inst := range got.Instances {
				want := big.Instances[i]
				want.CreatedAt = want.CreatedAt.UTC()
				if !reflect.DeepEqual(inst, want) {
					t.Fatalf("instance %d = %+v\nwant %+v", i, inst, want)
				}
			}
			if !got.ListedAt.Equal(t0) || got.ListedAt.Location() != time.UTC || got.Stale() {
				t.Errorf("ListedAt %v, stale %v; want %v in UTC, fresh", got.ListedAt, got.Stale(), t0)
			}
			return nil
		})
	})
	t.Run("replaced whole, stale fields kept", func(t *testing.T) {
		small := state.Inventory{
			Provider: "gcore-prod", ProjectID: 1, Instances: mk(3, "b"),
			ListedAt: t0, AttemptedAt: t0.Add(time.Hour), StaleSince: t0.Add(time.Hour), Error: "region 76: 503",
		}
		s.update(t, func(tx state.Tx) error { return tx.PutInventory(small) })
		s.reopen()
		s.view(t, func(tx state.Tx) error {
			got, _, err := tx.Inventory("gcore-prod", 1)
			if len(got.Instances) != 3 || got.Instances[0].ID != "b-0000" {
				t.Errorf("after replacing 1234 with 3 instances, read %d (first %+v)", len(got.Instances), got.Instances[:min(1, len(got.Instances))])
			}
			if !got.Stale() || !got.StaleSince.Equal(t0.Add(time.Hour)) || got.Error != "region 76: 503" {
				t.Errorf("stale since %v (%v), error %q; want since %v", got.StaleSince, got.Stale(), got.Error, t0.Add(time.Hour))
			}
			return err
		})
	})
	t.Run("accounts apart, in provider then project order", func(t *testing.T) {
		s.update(t, func(tx state.Tx) error {
			if err := tx.PutInventory(state.Inventory{Provider: "gcore-prod", ProjectID: 2, Instances: mk(2, "p2")}); err != nil {
				return err
			}
			return tx.PutInventory(state.Inventory{Provider: "sesterce-prod", Instances: mk(1, "s")})
		})
		var got []string
		s.view(t, func(tx state.Tx) error {
			return tx.ForEachInventory(func(inv state.Inventory) error {
				got = append(got, fmt.Sprintf("%s/%d:%d", inv.Provider, inv.ProjectID, len(inv.Instances)))
				return nil
			})
		})
		if want := []string{"gcore-prod/1:3", "gcore-prod/2:2", "sesterce-prod/0:1"}; !slices.Equal(got, want) {
			t.Errorf("ForEachInventory visited %v, want %v", got, want)
		}
		// A listing of no machines is stored, and is not a missing one.
		s.update(t, func(tx state.Tx) error {
			return tx.PutInventory(state.Inventory{Provider: "gcore-prod", ProjectID: 2, ListedAt: t0})
		})
		s.view(t, func(tx state.Tx) error {
			got, ok, err := tx.Inventory("gcore-prod", 2)
			if !ok || len(got.Instances) != 0 {
				t.Errorf("empty listing read back as found=%v with %d instances", ok, len(got.Instances))
			}
			return err
		})
	})
	t.Run("rejects empty provider", func(t *testing.T) {
		if err := s.store.Update(func(tx state.Tx) error { return tx.PutInventory(state.Inventory{}) }); err == nil {
			t.Error("PutInventory without a provider succeeded")
		}
	})
}

// testExposure: exposure marks are per policy and key, survive reopen.
func testExposure(t *testing.T, s *fixture) {
	in := state.Exposure{Policy: "gpu-team", KeyID: "65f0", KeyName: "gpu-team-20250301T120405",
		Fingerprint: "SHA256:old", Since: t0, Instances: 5, EventID: "ev-9"}
	s.update(t, func(tx state.Tx) error {
		if err := tx.PutExposure(in); err != nil {
			return err
		}
		return tx.PutExposure(state.Exposure{Policy: "alpha", KeyID: "k", Since: t0})
	})
	s.reopen()
	s.view(t, func(tx state.Tx) error {
		got, ok, err := tx.Exposure("gpu-team", "65f0")
		want := in
		want.Since = t0.UTC()
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("Exposure() = %+v, %v\nwant %+v", got, ok, want)
		}
		if _, ok, _ := tx.Exposure("gpu-team", "other"); ok {
			t.Error("Exposure of an unmarked key found one")
		}
		var order []string
		if err := tx.ForEachExposure(func(x state.Exposure) error { order = append(order, x.Policy+"/"+x.KeyID); return nil }); err != nil {
			return err
		}
		if want := []string{"alpha/k", "gpu-team/65f0"}; !slices.Equal(order, want) {
			t.Errorf("ForEachExposure visited %v, want %v", order, want)
		}
		return err
	})
	if err := s.store.Update(func(tx state.Tx) error { return tx.PutExposure(state.Exposure{Policy: "p"}) }); err == nil {
		t.Error("PutExposure without a key ID succeeded")
	}
}

// testMarkInventoryStale: marking stale touches the header only: the
// instances stay, the first failure's time is kept, the error replaced.
func testMarkInventoryStale(t *testing.T, s *fixture) {
	insts := []state.InventoryInstance{{ID: "i1", KeyName: "k"}, {ID: "i2"}}
	s.update(t, func(tx state.Tx) error {
		return tx.PutInventory(state.Inventory{Provider: "gcore-prod", ProjectID: 3, Instances: insts, ListedAt: t0, AttemptedAt: t0})
	})
	s.update(t, func(tx state.Tx) error {
		return tx.MarkInventoryStale("gcore-prod", 3, t0.Add(time.Hour), "store the listing: request too large")
	})
	s.update(t, func(tx state.Tx) error {
		return tx.MarkInventoryStale("gcore-prod", 3, t0.Add(2*time.Hour), "store the listing: again")
	})
	s.update(t, func(tx state.Tx) error { return tx.MarkInventoryStale("sesterce-prod", 0, t0, "list: 503") })
	s.reopen()
	s.view(t, func(tx state.Tx) error {
		got, ok, err := tx.Inventory("gcore-prod", 3)
		if err != nil || !ok {
			return fmt.Errorf("inventory: %v, %v", ok, err)
		}
		if len(got.Instances) != 2 || !got.ListedAt.Equal(t0) || !got.StaleSince.Equal(t0.Add(time.Hour)) ||
			!got.AttemptedAt.Equal(t0.Add(2*time.Hour)) || got.Error != "store the listing: again" {
			t.Errorf("after two marks: %+v", got)
		}
		fresh, ok, err := tx.Inventory("sesterce-prod", 0)
		if !ok || !fresh.Stale() || len(fresh.Instances) != 0 || fresh.Error != "list: 503" {
			t.Errorf("marking an account never stored: %+v, %v", fresh, ok)
		}
		return err
	})
	if err := s.store.Update(func(tx state.Tx) error { return tx.MarkInventoryStale("", 0, t0, "x") }); err == nil {
		t.Error("MarkInventoryStale without a provider succeeded")
	}
}
