package state

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkTx_ForEachKey scans 100,000 key records (1,000 policies of 100
// keys), the size a large fleet's compliance report reads in one go.
func BenchmarkTx_ForEachKey(b *testing.B) {
	const policies, perPolicy = 1000, 100
	db := openTest(b, filepath.Join(b.TempDir(), "state.db"))
	for p := range policies {
		mustUpdate(b, db, func(tx *Tx) error {
			for k := range perPolicy {
				rec := KeyRecord{
					Policy: fmt.Sprintf("policy-%04d", p), Provider: "sesterce-prod",
					KeyID: fmt.Sprintf("65f0c0ffee%014d", k), Name: fmt.Sprintf("policy-%04d-20250301T120405", p),
					Fingerprint: "SHA256:2Sq1U1W3a9pN3k6q3b2pY0Jm0ZVZl6rTt7yXo5vZr9Q",
					PublicKey:   "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl rotatord",
					Status:      KeyDeleted, RotationID: "rot-0001", CreatedAt: t0, ActivatedAt: t0, DeleteAfter: t0, DeletedAt: t0,
					VaultVersion: 12,
				}
				if err := tx.PutKey(rec); err != nil {
					return err
				}
			}
			return nil
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		n := 0
		if err := db.View(func(tx *Tx) error {
			return tx.ForEachKey(func(KeyRecord) error { n++; return nil })
		}); err != nil {
			b.Fatal(err)
		}
		if n != policies*perPolicy {
			b.Fatalf("scanned %d keys, want %d", n, policies*perPolicy)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(policies*perPolicy), "ns/key")
}

// BenchmarkDB_Update compares Update (batched: concurrent callers share one
// commit and fsync) with UpdateNow (one commit each) for 8 concurrent
// writers doing what a rotation step does: a journal write and an audit
// record. fsync is on, as in production; the figure that matters is ns/op
// and commits/op.
func BenchmarkDB_Update(b *testing.B) {
	for _, bc := range []struct {
		name   string
		update func(db *DB, fn func(tx *Tx) error) error
	}{
		{"Update", (*DB).Update},
		{"UpdateNow", (*DB).UpdateNow},
	} {
		b.Run(bc.name, func(b *testing.B) {
			db, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			const writers = 8
			var next atomic.Int64
			commits := map[int]bool{} // bbolt transaction IDs
			var mu sync.Mutex
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						err := bc.update(db, func(tx *Tx) error {
							mu.Lock()
							commits[tx.tx.ID()] = true
							mu.Unlock()
							id := fmt.Sprintf("rot-%d-%d", w, i)
							if err := tx.PutRotation(Rotation{ID: id, Policy: fmt.Sprint("p", w), Step: StepUploaded, StartedAt: time.Now()}); err != nil {
								return err
							}
							return tx.AppendAudit(AuditEntry{Action: "uploaded", RotationID: id})
						})
						if err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(len(commits))/float64(b.N), "commits/op")
		})
	}
}
