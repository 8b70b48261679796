package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTest opens a state file for a test without fsync (the tests are about
// behaviour, not durability) and closes it when the test ends.
func openTest(t testing.TB, path string) *DB {
	t.Helper()
	db, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func mustUpdate(t testing.TB, db *DB, fn func(tx *Tx) error) {
	t.Helper()
	if err := db.UpdateNow(fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func mustView(t testing.TB, db *DB, fn func(tx *Tx) error) {
	t.Helper()
	if err := db.View(fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

func TestOpen_FileMode(t *testing.T) {
	t.Run("new file and directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "var", "lib", "rotatord", "state.db")
		db := openTest(t, path)
		if got := db.Path(); got != path {
			t.Errorf("Path() = %q, want %q", got, path)
		}
		assertMode(t, path, 0o600)
		assertMode(t, filepath.Dir(path), 0o700|os.ModeDir)
	})
	t.Run("existing 0644 file is tightened", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		db := openTest(t, path)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		openTest(t, path)
		assertMode(t, path, 0o600)
	})
	t.Run("existing directory keeps its mode", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		openTest(t, filepath.Join(dir, "state.db"))
		assertMode(t, dir, 0o755|os.ModeDir)
	})
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode(); got != want {
		t.Errorf("mode of %s = %v, want %v", path, got, want)
	}
}

func TestOpen_Locked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	first := openTest(t, path)

	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"read-write", Options{Timeout: 150 * time.Millisecond}},
		{"read-only", Options{Timeout: 150 * time.Millisecond, ReadOnly: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// bbolt's flock applies per open file description, so a second
			// Open in this same process contends like a second daemon would.
			// The channel guards against a hang if that ever stops holding.
			done := make(chan error, 1)
			go func() {
				db, err := Open(path, tc.opts)
				if err == nil {
					_ = db.Close()
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("second Open did not give up on the lock")
			}
			if !errors.Is(err, ErrLocked) {
				t.Fatalf("second Open: err = %v, want ErrLocked", err)
			}
			for _, want := range []string{path, "another rotatord"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}

	t.Run("released by Close", func(t *testing.T) {
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		db, err := Open(path, Options{Timeout: 150 * time.Millisecond, NoSync: true})
		if err != nil {
			t.Fatalf("Open after Close: %v", err)
		}
		_ = db.Close()
	})
}

func TestOpen_Schema(t *testing.T) {
	// writeRaw builds a bbolt file by hand, as another program or another
	// version of rotatord would have left it.
	writeRaw := func(t *testing.T, fn func(tx *bolt.Tx) error) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "state.db")
		bdb, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := bdb.Update(fn); err != nil {
			t.Fatal(err)
		}
		if err := bdb.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	putSchema := func(v string) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			return b.Put(keySchema, []byte(v))
		}
	}

	for _, tc := range []struct {
		name    string
		fill    func(tx *bolt.Tx) error
		wantErr string // substring; "" means Open succeeds
	}{
		{"current version", putSchema("1"), ""},
		{"newer version", putSchema("2"), "version 2, this rotatord reads version 1"},
		{"garbage version", putSchema("one"), `version "one" is not a number`},
		{"foreign bbolt file", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("etcd_members"))
			return err
		}, `unknown bucket "etcd_members"`},
		{"empty bbolt file", func(*bolt.Tx) error { return nil }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeRaw(t, tc.fill)
			db, err := Open(path, Options{NoSync: true})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer db.Close()
				mustUpdate(t, db, func(tx *Tx) error { return tx.AppendAudit(AuditEntry{Action: "test"}) })
				return
			}
			if !errors.Is(err, ErrSchema) {
				t.Fatalf("Open: err = %v, want ErrSchema", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should mention %q and the path", err, tc.wantErr)
			}
		})
	}

	t.Run("new file records the version", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		db := openTest(t, path)
		_ = db.Close()
		bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer bdb.Close()
		_ = bdb.View(func(tx *bolt.Tx) error {
			if got := string(tx.Bucket(bucketMeta).Get(keySchema)); got != "1" {
				t.Errorf("schema = %q, want %q", got, "1")
			}
			return nil
		})
	})
}

func TestOpen_ReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := openTest(t, path)
	mustUpdate(t, db, func(tx *Tx) error {
		return tx.PutPolicyStatus(PolicyStatus{Name: "gpu-team", ConsecutiveFailures: 2})
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("Open read-only: %v", err)
	}
	defer ro.Close()
	mustView(t, ro, func(tx *Tx) error {
		s, err := tx.PolicyStatus("gpu-team")
		if s.ConsecutiveFailures != 2 {
			t.Errorf("read-only view: failures = %d, want 2", s.ConsecutiveFailures)
		}
		return err
	})
	if err := ro.UpdateNow(func(tx *Tx) error { return tx.AppendAudit(AuditEntry{Action: "x"}) }); err == nil {
		t.Error("UpdateNow on a read-only state file succeeded")
	}

	t.Run("missing file is not created", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nodir", "state.db")
		if _, err := Open(missing, Options{ReadOnly: true}); err == nil {
			t.Fatal("Open read-only of a missing file succeeded")
		}
		if _, err := os.Stat(filepath.Dir(missing)); !os.IsNotExist(err) {
			t.Errorf("read-only Open created %s", filepath.Dir(missing))
		}
	})
}

func TestOpen_NotAStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not bbolt\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Options{})
	if err == nil {
		t.Fatal("Open of a text file succeeded")
	}
	if errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want a non-lock error naming the path", err)
	}
}

func TestDB_Update(t *testing.T) {
	t.Run("50 concurrent writers all persist", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		db := openTest(t, path)
		const n = 50
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				errs <- db.Update(func(tx *Tx) error {
					policy := fmt.Sprintf("p%02d", i)
					if err := tx.PutRotation(Rotation{ID: "r" + policy, Policy: policy, Step: StepPlanned}); err != nil {
						return err
					}
					if _, err := tx.Enqueue(Event{Kind: EventRotated, Policy: policy}); err != nil {
						return err
					}
					return tx.AppendAudit(AuditEntry{Action: "plan", Policy: policy})
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
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}

		db = openTest(t, path)
		mustView(t, db, func(tx *Tx) error {
			open, err := tx.OpenRotations()
			if err != nil {
				return err
			}
			if len(open) != n {
				t.Errorf("rotations after reopen = %d, want %d", len(open), n)
			}
			pending, err := tx.PendingOutbox(time.Now().Add(time.Hour), 0)
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
			if err := tx.ForEachAudit(func(a AuditEntry) error {
				seqs[a.Seq] = true
				return nil
			}); err != nil {
				return err
			}
			if len(seqs) != n {
				t.Errorf("distinct audit seqs = %d, want %d", len(seqs), n)
			}
			return nil
		})
	})

	t.Run("a failing fn does not discard its batch", func(t *testing.T) {
		db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
		errBoom := errors.New("boom")
		const n = 20
		var wg sync.WaitGroup
		results := make([]error, n)
		for i := range n {
			wg.Go(func() {
				results[i] = db.Update(func(tx *Tx) error {
					s := PolicyStatus{Name: fmt.Sprintf("p%02d", i), ConsecutiveFailures: 1}
					if err := tx.PutPolicyStatus(s); err != nil {
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
		mustView(t, db, func(tx *Tx) error {
			return tx.ForEachPolicyStatus(func(s PolicyStatus) error {
				names = append(names, s.Name)
				return nil
			})
		})
		if len(names) != n-1 || strings.Contains(strings.Join(names, ","), "p07") {
			t.Errorf("stored statuses = %v, want all but p07", names)
		}
	})
}

func TestDB_Stats(t *testing.T) {
	db := openTest(t, filepath.Join(t.TempDir(), "state.db"))
	mustUpdate(t, db, func(tx *Tx) error {
		for i := range 3 {
			for j := range 2 {
				if err := tx.PutKey(KeyRecord{Policy: fmt.Sprint("p", i), KeyID: fmt.Sprint("k", j), Status: KeyActive}); err != nil {
					return err
				}
			}
		}
		if err := tx.PutRotation(Rotation{ID: "a", Policy: "p0", Step: StepUploaded}); err != nil {
			return err
		}
		if err := tx.PutRotation(Rotation{ID: "b", Policy: "p0", Step: StepDone}); err != nil {
			return err
		}
		if err := tx.PutPolicyStatus(PolicyStatus{Name: "p0"}); err != nil {
			return err
		}
		if _, err := tx.Enqueue(Event{Kind: EventRotated}); err != nil {
			return err
		}
		for range 4 {
			if err := tx.AppendAudit(AuditEntry{Action: "x"}); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := db.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Size: got.Size, Keys: 6, Rotations: 2, OpenRotations: 1, PolicyStatuses: 1, Outbox: 1, Audit: 4}
	if got != want || got.Size <= 0 {
		t.Errorf("Stats() = %+v, want %+v with a positive size", got, want)
	}
}
