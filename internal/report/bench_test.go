package report

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/policy"
)

// BenchmarkGenerate reports the cost of a fleet-sized report: 100,000 key
// records over 1,000 policies, generated and written as JSON. It prints
// ns/op, B/op, peak-MiB and live-MiB (see samplePeakHeap); the targets are
// under 1 s and under 200 MiB per report. Decoding the records in
// state.Tx.ForEachKey is most of the time of the history case: that is
// state's cost, paid for deleted records the report then skips.
//
//   - history: the usual shape, 2 live keys per policy and 98 deleted ones
//     kept for the audit trail (2,000 rows).
//   - all-live: the worst case, every record a row (100,000 rows).
//   - all-live+listing: the same plus provider listings of every key
//     (10 Gcore projects of 10,000 keys) to join against.
func BenchmarkGenerate(b *testing.B) {
	const policies, perPolicy, projects = 1000, 100, 10
	cfg := &policy.Config{}
	for p := range policies {
		cfg.Policies = append(cfg.Policies, policy.Policy{
			Name: fmt.Sprintf("policy-%04d", p), Provider: "gcore-prod", ProviderType: policy.TypeGcore,
			ProjectID: int64(1000 + p%projects), MaxAge: 90 * day, RotateBefore: 7 * day,
			NamePrefix: fmt.Sprintf("policy-%04d", p),
		})
	}
	build := func(b *testing.B, deleted int) state.Store {
		db, err := bolt.OpenStore(filepath.Join(b.TempDir(), "state.db"), bolt.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = db.Close() })
		for p0 := 0; p0 < policies; p0 += 50 {
			err := db.Update(func(tx state.Tx) error {
				for p := p0; p < p0+50; p++ {
					pol := cfg.Policies[p]
					for k := range perPolicy {
						created := now.Add(-time.Duration(k) * 24 * time.Hour)
						rec := state.KeyRecord{
							Policy: pol.Name, Provider: pol.Provider, ProjectID: pol.ProjectID,
							KeyID:       fmt.Sprintf("3f0b6a52-8f1c-4c9e-%04d-%012d", p, k),
							Name:        pol.NamePrefix + "-" + created.Format("20060102T150405"),
							Fingerprint: "SHA256:2Sq1U1W3a9pN3k6q3b2pY0Jm0ZVZl6rTt7yXo5vZr9Q",
							PublicKey:   "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl rotatord",
							RotationID:  "rot-0001", CreatedAt: created, ActivatedAt: created, VaultVersion: 3,
						}
						switch {
						case k == 0:
							rec.Status = state.KeyActive
						case k < perPolicy-deleted:
							rec.Status, rec.DeleteAfter = state.KeyRetiring, now.Add(day)
						default:
							rec.Status, rec.DeletedAt = state.KeyDeleted, now
						}
						if err := tx.PutKey(rec); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		return db
	}
	run := func(b *testing.B, src Source, wantRows int) {
		ctx := context.Background()
		runtime.GC()
		stop := samplePeakHeap()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			r, err := Generate(ctx, src)
			if err != nil {
				b.Fatal(err)
			}
			if len(r.Keys) != wantRows {
				b.Fatalf("%d rows, want %d", len(r.Keys), wantRows)
			}
			if err := r.Write(io.Discard, FormatJSON); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		peak, live := stop()
		b.ReportMetric(peak, "peak-MiB")
		b.ReportMetric(live, "live-MiB")
	}

	b.Run("history", func(b *testing.B) {
		db := build(b, perPolicy-2)
		run(b, Source{Now: now, Config: cfg, State: db}, 2*policies)
	})
	db := build(b, 0)
	b.Run("all-live", func(b *testing.B) {
		run(b, Source{Now: now, Config: cfg, State: db}, policies*perPolicy)
	})
	b.Run("all-live+listing", func(b *testing.B) {
		// The provider lists every recorded key; built here, not kept from
		// the build, so that it is not live during the other cases.
		byProject := make(map[int64][]cloud.Key)
		if err := db.View(func(tx state.Tx) error {
			return tx.ForEachKey(func(r state.KeyRecord) error {
				byProject[r.ProjectID] = append(byProject[r.ProjectID], cloud.Key{ID: r.KeyID, Name: r.Name,
					Fingerprint: r.Fingerprint, PublicKey: r.PublicKey, CreatedAt: r.CreatedAt, ProjectID: r.ProjectID})
				return nil
			})
		}); err != nil {
			b.Fatal(err)
		}
		p := &fakeProvider{name: "gcore-prod", typ: policy.TypeGcore, keys: byProject}
		run(b, Source{Now: now, Config: cfg, State: db, Providers: map[string]cloud.Provider{"gcore-prod": p}}, policies*perPolicy)
	})
}

// samplePeakHeap polls the heap until the returned function is called,
// which reports the highest values seen in MiB: peak counts every heap
// object, garbage not yet swept included (what the process holds), live
// only what the last GC found reachable (what the report needs; the gap is
// the GC's GOGC headroom). runtime/metrics is read instead of
// ReadMemStats because it does not stop the world at every sample.
func samplePeakHeap() func() (peak, live float64) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	var maxima [2]atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(500 * time.Microsecond)
		defer t.Stop()
		for {
			metrics.Read(samples)
			for i, s := range samples {
				if v := s.Value.Uint64(); v > maxima[i].Load() {
					maxima[i].Store(v)
				}
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() (float64, float64) {
		close(done)
		wg.Wait()
		return float64(maxima[0].Load()) / (1 << 20), float64(maxima[1].Load()) / (1 << 20)
	}
}
