package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

// cet is a non-UTC zone: records written with it must come back in UTC.
var cet = time.FixedZone("CET", 3600)

// t0 is a fixed instant with nanoseconds, so round trips prove precision.
var t0 = time.Date(2025, 3, 1, 13, 4, 5, 123456789, cet)

func TestTx_PutRotation(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))

	t.Run("round trip in UTC", func(t *testing.T) {
		in := Rotation{
			ID: "rot-1", Policy: "gpu-team", Provider: "sesterce-prod", ProjectID: 42,
			Step: StepUploaded, Reason: "due", Trigger: "cron", Emergency: true,
			KeyName: "gpu-team-20250301T120405", PublicKey: "ssh-ed25519 AAAAC3Nza gpu-team",
			Fingerprint: "SHA256:new", KeyID: "65f0c0ffee", OldKeyID: "65f0dead", OldFingerprint: "SHA256:old",
			VaultVersion: 7, StartedAt: t0, UpdatedAt: t0.Add(time.Minute), FinishedAt: t0.Add(time.Hour),
			Attempts: 3, Error: "upload: 503",
		}
		mustUpdate(t, db, func(tx *Tx) error { return tx.PutRotation(in) })
		want := in
		want.StartedAt, want.UpdatedAt, want.FinishedAt = in.StartedAt.UTC(), in.UpdatedAt.UTC(), in.FinishedAt.UTC()
		mustView(t, db, func(tx *Tx) error {
			got, ok, err := tx.Rotation("rot-1")
			if !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("Rotation() = %+v, %v\nwant %+v", got, ok, want)
			}
			return err
		})
	})

	t.Run("zero times are filled, StartedAt kept across updates", func(t *testing.T) {
		before := time.Now()
		mustUpdate(t, db, func(tx *Tx) error { return tx.PutRotation(Rotation{ID: "rot-2", Policy: "p", Step: StepPlanned}) })
		var first Rotation
		mustView(t, db, func(tx *Tx) (err error) { first, _, err = tx.Rotation("rot-2"); return err })
		if first.StartedAt.Before(before.Add(-time.Second)) || first.UpdatedAt.IsZero() || first.StartedAt.Location() != time.UTC {
			t.Errorf("new rotation times = %v / %v, want now in UTC", first.StartedAt, first.UpdatedAt)
		}
		mustUpdate(t, db, func(tx *Tx) error {
			return tx.PutRotation(Rotation{ID: "rot-2", Policy: "p", Step: StepDone, UpdatedAt: t0})
		})
		mustView(t, db, func(tx *Tx) error {
			got, _, err := tx.Rotation("rot-2")
			if !got.StartedAt.Equal(first.StartedAt) || got.Step != StepDone {
				t.Errorf("after update: started %v step %s, want started %v step done", got.StartedAt, got.Step, first.StartedAt)
			}
			return err
		})
	})

	t.Run("missing", func(t *testing.T) {
		mustView(t, db, func(tx *Tx) error {
			if _, ok, err := tx.Rotation("nope"); ok || err != nil {
				t.Errorf("Rotation(nope) = %v, %v; want not found, nil", ok, err)
			}
			return nil
		})
	})

	for _, tc := range []struct {
		name string
		r    Rotation
	}{
		{"empty ID", Rotation{Policy: "p", Step: StepPlanned}},
		{"empty policy", Rotation{ID: "x", Step: StepPlanned}},
		{"empty step", Rotation{ID: "x", Policy: "p"}},
		{"unknown step", Rotation{ID: "x", Policy: "p", Step: "generated"}},
	} {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			err := db.UpdateNow(func(tx *Tx) error { return tx.PutRotation(tc.r) })
			if err == nil {
				t.Fatal("PutRotation succeeded")
			}
			mustView(t, db, func(tx *Tx) error {
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
func putRotations(t *testing.T, db *DB) {
	t.Helper()
	rs := []Rotation{
		{ID: "r3", Policy: "a", Step: StepDone, StartedAt: t0.Add(3 * time.Minute)},
		{ID: "r1", Policy: "a", Step: StepPendingStored, StartedAt: t0.Add(1 * time.Minute)},
		{ID: "r5", Policy: "b", Step: StepPlanned, StartedAt: t0.Add(5 * time.Minute)},
		{ID: "r2", Policy: "b", Step: StepFailed, StartedAt: t0.Add(2 * time.Minute)},
		{ID: "r4", Policy: "a", Step: StepActivated, StartedAt: t0.Add(4 * time.Minute)},
		{ID: "r0", Policy: "b", Step: StepPromoted, StartedAt: t0.Add(-24 * 365 * 60 * time.Hour)},
	}
	mustUpdate(t, db, func(tx *Tx) error {
		for _, r := range rs {
			if err := tx.PutRotation(r); err != nil {
				return err
			}
		}
		return nil
	})
}

func ids(rs []Rotation) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func TestTx_OpenRotationsOf(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	putRotations(t, db)
	for policy, want := range map[string][]string{"a": {"r1", "r4"}, "b": {"r0", "r5"}, "none": {}} {
		mustView(t, db, func(tx *Tx) error {
			got, err := tx.OpenRotationsOf(policy)
			if !slices.Equal(ids(got), want) {
				t.Errorf("OpenRotationsOf(%q) = %v, want %v", policy, ids(got), want)
			}
			return err
		})
	}
}

func TestTx_OpenRotations(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	putRotations(t, db)
	assertOpen := func(t *testing.T, want ...string) {
		t.Helper()
		mustView(t, db, func(tx *Tx) error {
			got, err := tx.OpenRotations()
			if !slices.Equal(ids(got), want) {
				t.Errorf("OpenRotations() = %v, want %v", ids(got), want)
			}
			return err
		})
	}
	t.Run("excludes done and failed, oldest first", func(t *testing.T) {
		assertOpen(t, "r0", "r1", "r4", "r5")
	})
	t.Run("finishing a rotation closes it", func(t *testing.T) {
		mustUpdate(t, db, func(tx *Tx) error {
			r, _, err := tx.Rotation("r4")
			if err != nil {
				return err
			}
			r.Step = StepDone
			return tx.PutRotation(r)
		})
		assertOpen(t, "r0", "r1", "r5")
	})
	t.Run("survives reopen", func(t *testing.T) {
		path := db.Path()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = openTest(t, path)
		assertOpen(t, "r0", "r1", "r5")
	})
}

func TestTx_Rotations(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	putRotations(t, db)
	// Moving a rotation to another policy must not leave it in the old
	// policy's index.
	mustUpdate(t, db, func(tx *Tx) error {
		return tx.PutRotation(Rotation{ID: "r6", Policy: "a", Step: StepPlanned, StartedAt: t0.Add(6 * time.Minute)})
	})
	mustUpdate(t, db, func(tx *Tx) error {
		return tx.PutRotation(Rotation{ID: "r6", Policy: "c", Step: StepPlanned, StartedAt: t0.Add(6 * time.Minute)})
	})
	for _, tc := range []struct {
		name   string
		policy string
		limit  int
		want   []string
	}{
		{"all policies newest first", "", 0, []string{"r6", "r5", "r4", "r3", "r2", "r1", "r0"}},
		{"all policies limited", "", 2, []string{"r6", "r5"}},
		{"one policy", "a", 0, []string{"r4", "r3", "r1"}},
		{"one policy limited", "b", 1, []string{"r5"}},
		{"moved rotation", "c", 0, []string{"r6"}},
		{"unknown policy", "zzz", 0, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustView(t, db, func(tx *Tx) error {
				got, err := tx.Rotations(tc.policy, tc.limit)
				if !slices.Equal(ids(got), tc.want) {
					t.Errorf("Rotations(%q, %d) = %v, want %v", tc.policy, tc.limit, ids(got), tc.want)
				}
				return err
			})
		})
	}
}

func TestTx_PutKey(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	full := KeyRecord{
		Policy: "inference", Provider: "gcore-prod", ProjectID: 1234,
		KeyID: "0b6f2c1e-uuid", Name: "inference-20250301T120405", Fingerprint: "SHA256:abc",
		PublicKey: "ssh-ed25519 AAAAC3Nza inference", Status: KeyRetiring, RotationID: "rot-9",
		CreatedAt: t0, ActivatedAt: t0.Add(time.Second), DeleteAfter: t0.Add(7 * 24 * time.Hour),
		DeletedAt: t0.Add(8 * 24 * time.Hour), VaultVersion: 3,
	}
	keys := []KeyRecord{
		full,
		{Policy: "inference", KeyID: "aaa-older", Status: KeyDeleted, CreatedAt: t0.Add(-time.Hour)},
		{Policy: "gpu-team", KeyID: "k2", Status: KeyActive, CreatedAt: t0},
		{Policy: "gpu-team", KeyID: "k1", Status: KeyOrphaned, CreatedAt: t0.Add(time.Hour)},
	}
	mustUpdate(t, db, func(tx *Tx) error {
		for _, k := range keys {
			if err := tx.PutKey(k); err != nil {
				return err
			}
		}
		return nil
	})

	t.Run("round trip in UTC", func(t *testing.T) {
		want := full
		want.normalize()
		mustView(t, db, func(tx *Tx) error {
			got, ok, err := tx.Key("inference", full.KeyID)
			if !ok || !reflect.DeepEqual(got, want) {
				t.Errorf("Key() = %+v, %v\nwant %+v", got, ok, want)
			}
			if got.CreatedAt.Location() != time.UTC {
				t.Errorf("CreatedAt zone = %v, want UTC", got.CreatedAt.Location())
			}
			return err
		})
	})
	t.Run("missing", func(t *testing.T) {
		mustView(t, db, func(tx *Tx) error {
			for _, k := range [][2]string{{"inference", "nope"}, {"nope", "k1"}} {
				if _, ok, err := tx.Key(k[0], k[1]); ok || err != nil {
					t.Errorf("Key(%q, %q) = %v, %v; want not found", k[0], k[1], ok, err)
				}
			}
			return nil
		})
	})
	t.Run("Keys sorts by creation", func(t *testing.T) {
		mustView(t, db, func(tx *Tx) error {
			for policy, want := range map[string][]string{
				"inference": {"aaa-older", full.KeyID},
				"gpu-team":  {"k2", "k1"},
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
	t.Run("ForEachKey visits every policy", func(t *testing.T) {
		var got []string
		mustView(t, db, func(tx *Tx) error {
			return tx.ForEachKey(func(k KeyRecord) error {
				got = append(got, k.Policy+"/"+k.KeyID)
				return nil
			})
		})
		want := []string{"gpu-team/k1", "gpu-team/k2", "inference/0b6f2c1e-uuid", "inference/aaa-older"}
		if !slices.Equal(got, want) {
			t.Errorf("ForEachKey visited %v, want %v", got, want)
		}
	})
	t.Run("ForEachKey stops at the first error", func(t *testing.T) {
		errStop := errors.New("stop")
		calls := 0
		err := db.View(func(tx *Tx) error {
			return tx.ForEachKey(func(KeyRecord) error { calls++; return errStop })
		})
		if !errors.Is(err, errStop) || calls != 1 {
			t.Errorf("ForEachKey returned %v after %d calls, want errStop after 1", err, calls)
		}
	})
	t.Run("update replaces", func(t *testing.T) {
		mustUpdate(t, db, func(tx *Tx) error {
			return tx.PutKey(KeyRecord{Policy: "gpu-team", KeyID: "k2", Status: KeyRetiring, CreatedAt: t0})
		})
		mustView(t, db, func(tx *Tx) error {
			k, _, err := tx.Key("gpu-team", "k2")
			if k.Status != KeyRetiring {
				t.Errorf("status after update = %q, want retiring", k.Status)
			}
			return err
		})
	})
	t.Run("delete", func(t *testing.T) {
		mustUpdate(t, db, func(tx *Tx) error {
			if err := tx.DeleteKeyRecord("gpu-team", "k1"); err != nil {
				return err
			}
			return tx.DeleteKeyRecord("nope", "nope")
		})
		mustView(t, db, func(tx *Tx) error {
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
		for _, k := range []KeyRecord{{KeyID: "x"}, {Policy: "p"}} {
			if err := db.UpdateNow(func(tx *Tx) error { return tx.PutKey(k) }); err == nil {
				t.Errorf("PutKey(%+v) succeeded", k)
			}
		}
	})
}

func TestTx_PolicyStatus(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	t.Run("absent is healthy with its name", func(t *testing.T) {
		mustView(t, db, func(tx *Tx) error {
			got, err := tx.PolicyStatus("gpu-team")
			if !reflect.DeepEqual(got, PolicyStatus{Name: "gpu-team"}) {
				t.Errorf("PolicyStatus() = %+v, want zero with name", got)
			}
			return err
		})
	})
	in := PolicyStatus{
		Name: "gpu-team", LastAttempt: t0, LastSuccess: t0.Add(-time.Hour), ConsecutiveFailures: 5,
		NextRetry: t0.Add(30 * time.Minute), Failing: true, LastError: "upload: 403 API key invalid",
		LastResult: "failed", CurrentKeyID: "65f0", OverdueAlerted: true,
	}
	t.Run("round trip in UTC", func(t *testing.T) {
		mustUpdate(t, db, func(tx *Tx) error { return tx.PutPolicyStatus(in) })
		want := in
		want.normalize()
		mustView(t, db, func(tx *Tx) error {
			got, err := tx.PolicyStatus("gpu-team")
			if !reflect.DeepEqual(got, want) {
				t.Errorf("PolicyStatus() = %+v\nwant %+v", got, want)
			}
			return err
		})
	})
	t.Run("ForEachPolicyStatus in name order", func(t *testing.T) {
		mustUpdate(t, db, func(tx *Tx) error {
			for _, n := range []string{"zeta", "alpha"} {
				if err := tx.PutPolicyStatus(PolicyStatus{Name: n}); err != nil {
					return err
				}
			}
			return nil
		})
		var got []string
		mustView(t, db, func(tx *Tx) error {
			return tx.ForEachPolicyStatus(func(s PolicyStatus) error { got = append(got, s.Name); return nil })
		})
		if want := []string{"alpha", "gpu-team", "zeta"}; !slices.Equal(got, want) {
			t.Errorf("ForEachPolicyStatus visited %v, want %v", got, want)
		}
	})
	t.Run("rejects empty name", func(t *testing.T) {
		if err := db.UpdateNow(func(tx *Tx) error { return tx.PutPolicyStatus(PolicyStatus{}) }); err == nil {
			t.Error("PutPolicyStatus without a name succeeded")
		}
	})
}

func TestTx_Outbox(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openTest(t, path)
	outer := t // a reopened DB must outlive the subtest that reopens it
	full := Event{
		Kind: EventRotated, Policy: "gpu-team", Provider: "sesterce-prod", ProjectID: 1, Channel: "#gpu-ops",
		KeyName: "gpu-team-20250301T120405", KeyID: "new", OldKeyID: "old", OldFingerprint: "SHA256:old",
		NewFingerprint: "SHA256:new", VaultPath: "ssh/sesterce/gpu-team", GraceDeadline: t0.Add(7 * 24 * time.Hour),
		Error: "", Detail: "scheduled", Time: t0,
	}
	var id1, id2, id3 uint64
	mustUpdate(t, db, func(tx *Tx) (err error) {
		if id1, err = tx.Enqueue(full); err != nil {
			return err
		}
		if id2, err = tx.Enqueue(Event{Kind: EventDeleted, Time: t0.Add(time.Minute)}); err != nil {
			return err
		}
		id3, err = tx.Enqueue(Event{Kind: EventFailed, Time: t0.Add(2 * time.Minute)})
		return err
	})
	pendingIDs := func(t *testing.T, now time.Time, limit int) []uint64 {
		t.Helper()
		var out []uint64
		mustView(t, db, func(tx *Tx) error {
			es, err := tx.PendingOutbox(now, limit)
			for _, e := range es {
				out = append(out, e.ID)
			}
			return err
		})
		return out
	}

	t.Run("IDs increase", func(t *testing.T) {
		if !(id1 < id2 && id2 < id3) {
			t.Errorf("IDs %d, %d, %d do not increase", id1, id2, id3)
		}
	})
	t.Run("round trip", func(t *testing.T) {
		mustView(t, db, func(tx *Tx) error {
			es, err := tx.PendingOutbox(t0, 0)
			if err != nil || len(es) != 1 {
				t.Fatalf("PendingOutbox(t0) = %d entries, %v; want 1", len(es), err)
			}
			want := full
			want.normalize()
			e := es[0]
			if !reflect.DeepEqual(e.Event, want) || e.ID != id1 || e.Attempts != 0 || !e.NextAttempt.Equal(t0) || e.CreatedAt.IsZero() {
				t.Errorf("entry = %+v\nwant event %+v due at %v", e, want, t0)
			}
			return nil
		})
	})
	t.Run("pending respects NextAttempt and limit, oldest first", func(t *testing.T) {
		for _, tc := range []struct {
			now   time.Time
			limit int
			want  []uint64
		}{
			{t0.Add(-time.Second), 0, nil},
			{t0.Add(time.Minute), 0, []uint64{id1, id2}},
			{t0.Add(time.Hour), 0, []uint64{id1, id2, id3}},
			{t0.Add(time.Hour), 2, []uint64{id1, id2}},
		} {
			if got := pendingIDs(t, tc.now, tc.limit); !slices.Equal(got, tc.want) {
				t.Errorf("PendingOutbox(%v, %d) = %v, want %v", tc.now, tc.limit, got, tc.want)
			}
		}
	})
	t.Run("retry counts and postpones", func(t *testing.T) {
		mustUpdate(t, db, func(tx *Tx) error { return tx.RetryOutbox(id1, t0.Add(time.Hour), "slack: 503") })
		mustUpdate(t, db, func(tx *Tx) error { return tx.RetryOutbox(id1, t0.Add(2*time.Hour), "slack: timeout") })
		if got, want := pendingIDs(t, t0.Add(time.Hour), 0), []uint64{id2, id3}; !slices.Equal(got, want) {
			t.Errorf("pending after retry = %v, want %v", got, want)
		}
		mustView(t, db, func(tx *Tx) error {
			es, err := tx.PendingOutbox(t0.Add(2*time.Hour), 1)
			if err != nil || len(es) != 1 {
				t.Fatalf("PendingOutbox = %v, %v", es, err)
			}
			if e := es[0]; e.ID != id1 || e.Attempts != 2 || e.LastError != "slack: timeout" || !e.NextAttempt.Equal(t0.Add(2*time.Hour)) {
				t.Errorf("retried entry = %+v, want 2 attempts, last error and new due time", e)
			}
			return nil
		})
	})
	t.Run("retry of a missing entry", func(t *testing.T) {
		err := db.UpdateNow(func(tx *Tx) error { return tx.RetryOutbox(999, t0, "x") })
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("RetryOutbox(999) = %v, want ErrNotFound", err)
		}
	})
	t.Run("ack removes, twice is harmless", func(t *testing.T) {
		mustUpdate(t, db, func(tx *Tx) error {
			if err := tx.AckOutbox(id2); err != nil {
				return err
			}
			return tx.AckOutbox(id2)
		})
		if got, want := pendingIDs(t, t0.Add(3*time.Hour), 0), []uint64{id1, id3}; !slices.Equal(got, want) {
			t.Errorf("pending after ack = %v, want %v", got, want)
		}
	})
	t.Run("survives reopen", func(t *testing.T) {
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = openTest(outer, path)
		if got, want := pendingIDs(t, t0.Add(3*time.Hour), 0), []uint64{id1, id3}; !slices.Equal(got, want) {
			t.Errorf("pending after reopen = %v, want %v", got, want)
		}
		var n int
		var id4 uint64
		mustUpdate(t, db, func(tx *Tx) (err error) {
			id4, err = tx.Enqueue(Event{Kind: EventReport})
			return err
		})
		mustView(t, db, func(tx *Tx) (err error) { n, err = tx.OutboxLen(); return err })
		if n != 3 || id4 <= id3 {
			t.Errorf("after reopen: OutboxLen = %d (want 3), new ID %d (want > %d)", n, id4, id3)
		}
	})
	t.Run("zero event time means due now", func(t *testing.T) {
		if got := pendingIDs(t, time.Now().Add(time.Second), 0); len(got) != 3 {
			t.Errorf("pending now = %v, want 3 entries including the undated one", got)
		}
	})
}

func TestTx_AppendAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openTest(t, path)
	full := AuditEntry{
		Time: t0, Policy: "gpu-team", Provider: "sesterce-prod", Action: "rotated", KeyID: "new",
		KeyName: "gpu-team-20250301T120405", Fingerprint: "SHA256:new", RotationID: "rot-1",
		Actor: "cron", Detail: "old key retires at 2025-03-08",
	}
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.AppendAudit(full); err != nil {
			return err
		}
		return tx.AppendAudit(AuditEntry{Action: "deleted", Seq: 999})
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openTest(t, path)
	mustUpdate(t, db, func(tx *Tx) error { return tx.AppendAudit(AuditEntry{Action: "planned", Time: t0}) })

	var got []AuditEntry
	mustView(t, db, func(tx *Tx) error {
		return tx.ForEachAudit(func(a AuditEntry) error { got = append(got, a); return nil })
	})
	if len(got) != 3 {
		t.Fatalf("ForEachAudit visited %d entries, want 3", len(got))
	}
	var actions []string
	for i, a := range got {
		actions = append(actions, a.Action)
		if a.Seq != uint64(i+1) {
			t.Errorf("entry %d has Seq %d, want %d (caller's Seq ignored)", i, a.Seq, i+1)
		}
		if a.Time.IsZero() || a.Time.Location() != time.UTC {
			t.Errorf("entry %d time = %v, want a UTC time", i, a.Time)
		}
	}
	if want := []string{"rotated", "deleted", "planned"}; !slices.Equal(actions, want) {
		t.Errorf("audit order = %v, want append order %v", actions, want)
	}
	want := full
	want.Seq, want.Time = 1, t0.UTC()
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("first entry = %+v\nwant %+v", got[0], want)
	}
}

// TestTx_ManyPolicies makes sure the nested per-policy buckets hold up when
// there are many policies (each a small inline bucket).
func TestTx_ManyPolicies(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	const policies, perPolicy = 300, 3
	mustUpdate(t, db, func(tx *Tx) error {
		for p := range policies {
			for k := range perPolicy {
				if err := tx.PutKey(KeyRecord{Policy: fmt.Sprintf("policy-%04d", p), KeyID: fmt.Sprint(k), Status: KeyActive}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	count := 0
	mustView(t, db, func(tx *Tx) error {
		return tx.ForEachKey(func(KeyRecord) error { count++; return nil })
	})
	if count != policies*perPolicy {
		t.Errorf("ForEachKey visited %d keys, want %d", count, policies*perPolicy)
	}
}
