package etcd_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/internal/state/etcd"
	"github.com/rotatord/rotatord/internal/state/etcdtest"
)

// journalRotation writes what the engine journals for one rotation: six
// steps, the key records, the policy status, a notification and an audit
// entry.
func journalRotation(st state.Store, policy string, n int) error {
	id := fmt.Sprintf("r-%s-%d", policy, n)
	for _, step := range []state.Step{state.StepPlanned, state.StepPendingStored, state.StepUploaded, state.StepActivated, state.StepPromoted, state.StepDone} {
		err := st.Update(func(tx state.Tx) error {
			if err := tx.PutRotation(state.Rotation{ID: id, Policy: policy, Step: step, KeyName: id}); err != nil {
				return err
			}
			if step != state.StepDone {
				return nil
			}
			if err := tx.PutKey(state.KeyRecord{Policy: policy, KeyID: id, Status: state.KeyActive, Name: id}); err != nil {
				return err
			}
			if err := tx.PutPolicyStatus(state.PolicyStatus{Name: policy, LastResult: "rotated"}); err != nil {
				return err
			}
			if _, err := tx.Enqueue(state.Event{Kind: "rotated", Policy: policy}, state.SinkSlack); err != nil {
				return err
			}
			return tx.AppendAudit(state.AuditEntry{Event: "rotated", Policy: policy})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// journalRate journals one rotation for each of 1,000 policies, 64 at a
// time (the engine's rotations in flight), and returns rotations/s.
func journalRate(b *testing.B, st state.Store, reads *atomic.Int64) float64 {
	const policies, inFlight = 1000, 64
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, inFlight)
	for p := range policies {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := journalRotation(st, fmt.Sprintf("p%04d", p), 1); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	return policies / time.Since(start).Seconds()
}

// BenchmarkJournal_EtcdVsBolt prints how many rotations per second the
// state alone can journal, on bbolt and on a 3-member etcd cluster, both
// on disk, and their ratio. It measures once; b.N does not apply.
func BenchmarkJournal_EtcdVsBolt(b *testing.B) {
	key, err := audit.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	keys := state.StaticAuditKey(key)
	bs, err := bolt.OpenStore(filepath.Join(b.TempDir(), "state.db"), bolt.Options{AuditKeys: keys})
	if err != nil {
		b.Fatal(err)
	}
	defer bs.Close()
	boltRate := journalRate(b, bs, nil)

	c := etcdtest.StartWith(b, etcdtest.Config{Members: 3, Disk: true})
	be, err := etcd.New(c.Client(b), etcd.Options{Prefix: "/bench/"})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	es, err := state.Open(be, state.WithAuditKeys(keys))
	if err != nil {
		b.Fatal(err)
	}
	etcdRate := journalRate(b, es, nil)
	b.ReportMetric(boltRate, "bbolt-rotations/s")
	b.ReportMetric(etcdRate, "etcd-rotations/s")
	b.ReportMetric(etcdRate/boltRate, "etcd/bbolt")
	b.Logf("journal of 1000 rotations, 64 in flight: bbolt %.0f rotations/s, etcd %.0f rotations/s: etcd/bbolt = %.2f", boltRate, etcdRate, etcdRate/boltRate)
	for range b.N {
	}
}
