package bolt

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/statetest"
)

func TestConformance(t *testing.T) {
	statetest.Run(t, func(t *testing.T) func(t *testing.T) state.Backend {
		path := filepath.Join(t.TempDir(), "state.db")
		return func(t *testing.T) state.Backend {
			b, err := Open(path, Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	})
}

// testKeys seals the audit entries the tests append.
var testKeys = func() state.StaticAuditKey {
	k, err := audit.GenerateKey()
	if err != nil {
		panic(err)
	}
	return state.StaticAuditKey(k)
}()

func openStore(t testing.TB, path string, opts Options) state.Store {
	t.Helper()
	if opts.AuditKeys == nil {
		opts.AuditKeys = testKeys
	}
	s, err := OpenStore(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestOpen_FileMode(t *testing.T) {
	t.Run("new file and directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sub", "state.db")
		s := openStore(t, path, Options{NoSync: true})
		_ = s.Close()
		assertMode(t, path, 0o600)
		assertMode(t, filepath.Dir(path), 0o700)
	})
	t.Run("existing file with a wider mode is tightened", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		s := openStore(t, path, Options{NoSync: true})
		_ = s.Close()
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		s = openStore(t, path, Options{NoSync: true})
		_ = s.Close()
		assertMode(t, path, 0o600)
	})
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode = %o, want %o", path, got, want)
	}
}

func TestOpen_Locked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	first, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
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
				b, err := Open(path, tc.opts)
				if err == nil {
					_ = b.Close()
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
		b, err := Open(path, Options{Timeout: 150 * time.Millisecond, NoSync: true})
		if err != nil {
			t.Fatalf("Open after Close: %v", err)
		}
		_ = b.Close()
	})
}

// writeRaw builds a bbolt file by hand, as another program or an older
// rotatord would have left it.
func writeRaw(t *testing.T, fn func(tx *bolt.Tx) error) string {
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

func putSchema(v string) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte(v))
	}
}

func TestOpenStore_Schema(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fill    func(tx *bolt.Tx) error
		wantErr string // substring; "" means the open succeeds
	}{
		{"current version", putSchema(fmt.Sprint(state.SchemaVersion)), ""},
		{"version 1", putSchema("1"), ""},
		{"newer version", putSchema("99"), "version 99, this rotatord reads version 2"},
		{"garbage version", putSchema("one"), `version "one" is not a number`},
		{"foreign bbolt file", func(tx *bolt.Tx) error {
			_, err := tx.CreateBucket([]byte("etcd_members"))
			return err
		}, `unknown bucket "etcd_members"`},
		{"empty bbolt file", func(*bolt.Tx) error { return nil }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeRaw(t, tc.fill)
			s, err := OpenStore(path, Options{NoSync: true, AuditKeys: testKeys})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("OpenStore: %v", err)
				}
				defer s.Close()
				if err := s.Update(func(tx state.Tx) error { return tx.AppendAudit(state.AuditEntry{Event: "test"}) }); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, state.ErrSchema) {
				t.Fatalf("OpenStore: err = %v, want ErrSchema", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should mention %q and the path", err, tc.wantErr)
			}
		})
	}
	t.Run("new file records the version", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		_ = openStore(t, path, Options{NoSync: true}).Close()
		bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer bdb.Close()
		_ = bdb.View(func(tx *bolt.Tx) error {
			if got := string(tx.Bucket(bucketMeta).Get(keySchema)); got != fmt.Sprint(state.SchemaVersion) {
				t.Errorf("schema = %q, want %d", got, state.SchemaVersion)
			}
			return nil
		})
	})
}

// TestOpenStore_UpgradesVersion1 opens a file laid out the way rotatord
// wrote it before the Store interface: nested per-policy buckets, an
// outbox without sinks. Everything must read back, and new writes work.
func TestOpenStore_UpgradesVersion1(t *testing.T) {
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	jsonOf := func(v any) []byte { b, _ := json.Marshal(v); return b }
	path := writeRaw(t, func(tx *bolt.Tx) error {
		if err := putSchema("1")(tx); err != nil {
			return err
		}
		put := func(bucket string, k, v []byte) error {
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			return b.Put(k, v)
		}
		nestedPut := func(bucket, sub string, k, v []byte) error {
			b, err := tx.CreateBucketIfNotExists([]byte(bucket))
			if err != nil {
				return err
			}
			sb, err := b.CreateBucketIfNotExists([]byte(sub))
			if err != nil {
				return err
			}
			return sb.Put(k, v)
		}
		for _, r := range []state.Rotation{
			{ID: "r-open", Policy: "gpu", Step: state.StepUploaded, StartedAt: started},
			{ID: "r-done", Policy: "gpu", Step: state.StepDone, StartedAt: started.Add(-time.Hour)},
		} {
			k := append(binary.BigEndian.AppendUint64(nil, uint64(r.StartedAt.UnixNano())^(1<<63)), r.ID...)
			if err := put("rotations", []byte(r.ID), jsonOf(r)); err != nil {
				return err
			}
			if err := put("rotations_time", k, nil); err != nil {
				return err
			}
			if err := nestedPut("rotations_policy", r.Policy, k, nil); err != nil {
				return err
			}
			if !r.Step.Terminal() {
				if err := put("rotations_open", k, nil); err != nil {
					return err
				}
			}
		}
		for _, k := range []state.KeyRecord{
			{Policy: "gpu", KeyID: "k1", Status: state.KeyActive, CreatedAt: started},
			{Policy: "gpu-team", KeyID: "k2", Status: state.KeyRetiring, CreatedAt: started},
		} {
			if err := nestedPut("keys", k.Policy, []byte(k.KeyID), jsonOf(k)); err != nil {
				return err
			}
		}
		ob, err := tx.CreateBucketIfNotExists([]byte("outbox"))
		if err != nil {
			return err
		}
		id, _ := ob.NextSequence()
		e := state.OutboxEntry{ID: id, Event: state.Event{Kind: "rotated", Policy: "gpu"}, NextAttempt: started}
		if err := ob.Put(binary.BigEndian.AppendUint64(nil, id), jsonOf(e)); err != nil {
			return err
		}
		ab, err := tx.CreateBucketIfNotExists([]byte("audit"))
		if err != nil {
			return err
		}
		seq, _ := ab.NextSequence()
		return ab.Put(binary.BigEndian.AppendUint64(nil, seq), []byte(fmt.Sprintf(`{"seq":%d,"time":%q,"action":"rotated"}`, seq, started.Format(time.RFC3339Nano))))
	})

	t.Run("read-only open asks for one run first", func(t *testing.T) {
		_, err := OpenStore(path, Options{ReadOnly: true})
		if !errors.Is(err, state.ErrSchema) || !strings.Contains(err.Error(), "run rotatord once") {
			t.Fatalf("read-only open of a version 1 file: %v", err)
		}
	})
	s := openStore(t, path, Options{NoSync: true})
	err := s.View(func(tx state.Tx) error {
		keys, err := tx.Keys("gpu")
		if err != nil || len(keys) != 1 || keys[0].KeyID != "k1" {
			t.Errorf("Keys(gpu) = %+v, %v", keys, err)
		}
		keys, err = tx.Keys("gpu-team")
		if err != nil || len(keys) != 1 || keys[0].KeyID != "k2" {
			t.Errorf("Keys(gpu-team) = %+v, %v", keys, err)
		}
		open, err := tx.OpenRotationsOf("gpu")
		if err != nil || len(open) != 1 || open[0].ID != "r-open" {
			t.Errorf("OpenRotationsOf(gpu) = %+v, %v", open, err)
		}
		all, err := tx.Rotations("gpu", 0)
		if err != nil || len(all) != 2 {
			t.Errorf("Rotations(gpu) = %d, %v; want 2", len(all), err)
		}
		pending, err := tx.PendingOutbox(state.SinkSlack, started, 0)
		if err != nil || len(pending) != 1 || pending[0].Sink != state.SinkSlack {
			t.Errorf("PendingOutbox(slack) = %+v, %v; the old entry belongs to Slack", pending, err)
		}
		n := 0
		if err := tx.ForEachAudit(func(state.AuditEntry) error { n++; return nil }); err != nil || n != 1 {
			t.Errorf("audit entries = %d, %v", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx state.Tx) error {
		if _, err := tx.Enqueue(state.Event{Kind: "deleted"}, state.SinkSlack); err != nil {
			return err
		}
		return tx.AppendAudit(state.AuditEntry{Event: "deleted"})
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.View(func(tx state.Tx) error {
		var seqs []uint64
		_ = tx.ForEachAudit(func(a state.AuditEntry) error { seqs = append(seqs, a.Seq); return nil })
		if !slices.Equal(seqs, []uint64{1, 2, 3}) {
			t.Errorf("audit seqs after upgrade = %v, want the old entry, the upgraded marker, the new one", seqs)
		}
		es, _ := tx.PendingOutbox(state.SinkSlack, time.Now().Add(time.Minute), 0)
		if len(es) != 2 || es[1].ID <= es[0].ID {
			t.Errorf("outbox after upgrade = %+v, want the new entry after the old one", es)
		}
		return nil
	})
}

func TestOpen_ReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openStore(t, path, Options{NoSync: true})
	if err := s.Update(func(tx state.Tx) error {
		return tx.PutPolicyStatus(state.PolicyStatus{Name: "gpu-team", ConsecutiveFailures: 2})
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ro := openStore(t, path, Options{ReadOnly: true})
	if err := ro.View(func(tx state.Tx) error {
		st, err := tx.PolicyStatus("gpu-team")
		if st.ConsecutiveFailures != 2 {
			t.Errorf("read-only view: failures = %d, want 2", st.ConsecutiveFailures)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := ro.Update(func(tx state.Tx) error { return tx.AppendAudit(state.AuditEntry{Event: "x"}) })
	if !errors.Is(err, state.ErrReadOnly) {
		t.Errorf("Update on a read-only state file = %v, want ErrReadOnly", err)
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

// TestNoPrivateKeyInFile greps the raw file, beyond what the conformance
// suite reads through the backend: free pages and old versions included.
func TestNoPrivateKeyInFile(t *testing.T) {
	pkcs8, openssh := statetest.TestPEMs(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s := openStore(t, path, Options{NoSync: true})
	for i := range 3 { // rewrite so older page versions exist
		if err := s.Update(func(tx state.Tx) error {
			if err := tx.PutPolicyStatus(state.PolicyStatus{Name: "inference", LastError: fmt.Sprint(i) + pkcs8}); err != nil {
				return err
			}
			return tx.AppendAudit(state.AuditEntry{Event: "failed", Detail: openssh})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"PRIVATE KEY", statetest.PEMBody(pkcs8), statetest.PEMBody(openssh)} {
		if strings.Contains(string(raw), leak) {
			t.Errorf("state file contains %q", leak)
		}
	}
}

// BenchmarkStore_ForEachKey scans 100,000 key records (1,000 policies of
// 100 keys), the size a large fleet's compliance report reads in one go.
func BenchmarkStore_ForEachKey(b *testing.B) {
	const policies, perPolicy = 1000, 100
	s := openStore(b, filepath.Join(b.TempDir(), "state.db"), Options{NoSync: true})
	t0 := time.Date(2025, 3, 1, 13, 4, 5, 0, time.UTC)
	for p := range policies {
		if err := s.Update(func(tx state.Tx) error {
			for k := range perPolicy {
				if err := tx.PutKey(state.KeyRecord{
					Policy: fmt.Sprintf("policy-%04d", p), Provider: "sesterce-prod",
					KeyID: fmt.Sprintf("65f0c0ffee%014d", k), Name: fmt.Sprintf("policy-%04d-20250301T120405", p),
					Fingerprint: "SHA256:2Sq1U1W3a9pN3k6q3b2pY0Jm0ZVZl6rTt7yXo5vZr9Q",
					PublicKey:   "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl rotatord",
					Status:      state.KeyDeleted, RotationID: "rot-0001", CreatedAt: t0, ActivatedAt: t0, DeleteAfter: t0, DeletedAt: t0,
					VaultVersion: 12,
				}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		n := 0
		if err := s.View(func(tx state.Tx) error {
			return tx.ForEachKey(func(state.KeyRecord) error { n++; return nil })
		}); err != nil {
			b.Fatal(err)
		}
		if n != policies*perPolicy {
			b.Fatalf("scanned %d keys, want %d", n, policies*perPolicy)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(policies*perPolicy), "ns/key")
}

// BenchmarkStore_Update measures 8 concurrent writers doing what a
// rotation step does (a journal write and an audit record) with fsync on,
// as in production. Batched commits share fsyncs, so ns/op is well under
// one fsync's time once writers overlap.
func BenchmarkStore_Update(b *testing.B) {
	s := openStore(b, filepath.Join(b.TempDir(), "state.db"), Options{})
	const writers = 8
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				err := s.Update(func(tx state.Tx) error {
					id := fmt.Sprintf("rot-%d-%d", w, i)
					if err := tx.PutRotation(state.Rotation{ID: id, Policy: fmt.Sprint("p", w), Step: state.StepUploaded, StartedAt: time.Now()}); err != nil {
						return err
					}
					return tx.AppendAudit(state.AuditEntry{Event: "uploaded", RotationID: id})
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
