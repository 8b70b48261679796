package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/etcd"
	"github.com/rotatord/rotatord/internal/state/etcdtest"
	"github.com/rotatord/rotatord/internal/state/statetest"
)

// conformanceOps is the --max-txn-ops of the conformance cluster: the
// suite writes 900 keys in one Update (rotatord's own Updates stay under
// etcd's default of 128, which the other tests keep).
const conformanceOps = 1024

func TestConformance(t *testing.T) {
	c := etcdtest.StartWith(t, etcdtest.Config{Members: 3, MaxTxnOps: conformanceOps})
	cli := c.Client(t)
	n := 0
	statetest.Run(t, func(t *testing.T) func(t *testing.T) state.Backend {
		n++
		prefix := fmt.Sprintf("/conformance/%d/", n) // a fresh, empty location per test
		return func(t *testing.T) state.Backend {
			b, err := etcd.New(cli, etcd.Options{Prefix: prefix, MaxTxnOps: conformanceOps})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	})
}

// staticGuard fences with a fixed election key, as a leader does between
// elections.
type staticGuard struct {
	key string
	rev int64
}

func (g staticGuard) Fence() (string, int64, error) { return g.key, g.rev, nil }

// TestUpdate_Fenced: a leader whose election key is gone (its session
// expired, another process leads) cannot write, and its failed write
// leaves etcd untouched.
func TestUpdate_Fenced(t *testing.T) {
	c := etcdtest.Start(t, 3)
	cli := c.Client(t)
	ctx := context.Background()

	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	el := concurrency.NewElection(sess, "/fence/election/")
	if err := el.Campaign(ctx, "host-a"); err != nil {
		t.Fatal(err)
	}
	g := staticGuard{key: el.Key(), rev: el.Rev()}
	b, err := etcd.New(cli, etcd.Options{Prefix: "/fence/", Guard: g})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := state.Open(b)
	if err != nil {
		t.Fatalf("open while leading: %v", err)
	}
	put := func(id string) error {
		return st.Update(func(tx state.Tx) error {
			return tx.PutRotation(state.Rotation{ID: id, Policy: "gpu-team", Step: state.StepPlanned})
		})
	}
	if err := put("r1"); err != nil {
		t.Fatalf("write while leading: %v", err)
	}

	// The session ends (as when its lease expires): the key is deleted.
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	before := revision(t, cli)
	err = put("r2")
	if !errors.Is(err, state.ErrFenced) {
		t.Fatalf("write after losing leadership = %v, want ErrFenced", err)
	}
	if !strings.Contains(err.Error(), el.Key()) {
		t.Errorf("error %q does not name the election key %s", err, el.Key())
	}
	if after := revision(t, cli); after != before {
		t.Errorf("etcd revision moved from %d to %d: the fenced write wrote something", before, after)
	}

	// Another process now leads with a new key: the old fence still fails,
	// even though an election key exists again.
	sess2, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer sess2.Close()
	el2 := concurrency.NewElection(sess2, "/fence/election/")
	if err := el2.Campaign(ctx, "host-b"); err != nil {
		t.Fatal(err)
	}
	if err := put("r3"); !errors.Is(err, state.ErrFenced) {
		t.Fatalf("write of the deposed leader while another leads = %v, want ErrFenced", err)
	}
	var found []string
	_ = st.View(func(tx state.Tx) error {
		rs, err := tx.Rotations("", 0)
		for _, r := range rs {
			found = append(found, r.ID)
		}
		return err
	})
	if strings.Join(found, ",") != "r1" {
		t.Errorf("journal holds %v, want only r1", found)
	}

	// The new leader writes through its own fence.
	b2, err := etcd.New(cli, etcd.Options{Prefix: "/fence/", Guard: staticGuard{key: el2.Key(), rev: el2.Rev()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	st2, err := state.Open(b2)
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Update(func(tx state.Tx) error {
		return tx.PutRotation(state.Rotation{ID: "r4", Policy: "gpu-team", Step: state.StepPlanned})
	}); err != nil {
		t.Fatalf("new leader's write: %v", err)
	}
}

// TestUpdate_GuardRefusesBeforeWriting: a guard that says "not leading"
// stops the Update before fn runs.
func TestUpdate_GuardRefusesBeforeWriting(t *testing.T) {
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	b, err := etcd.New(cli, etcd.Options{Prefix: "/standby/", Guard: notLeading{}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ran := false
	err = b.Update(func(state.KV) error { ran = true; return nil })
	if !errors.Is(err, state.ErrFenced) || ran {
		t.Errorf("Update on a standby = %v (fn ran: %v), want ErrFenced without running fn", err, ran)
	}
}

type notLeading struct{}

func (notLeading) Fence() (string, int64, error) {
	return "", 0, fmt.Errorf("%w: standby", state.ErrFenced)
}

func revision(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// TestUpdate_TwoProcesses: two backends (two rotatord processes, two
// clients) incrementing one counter never lose an increment: the
// compare-and-swap retries the loser.
func TestUpdate_TwoProcesses(t *testing.T) {
	c := etcdtest.Start(t, 3)
	const perWriter, writers = 25, 4
	var wg sync.WaitGroup
	for w := range writers {
		b, err := etcd.New(c.Client(t), etcd.Options{Prefix: "/counter/"})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		wg.Go(func() {
			for range perWriter {
				err := b.Update(func(kv state.KV) error {
					v, err := kv.Get("meta", []byte("n"))
					if err != nil {
						return err
					}
					n := 0
					if v != nil {
						n, _ = strconv.Atoi(string(v))
					}
					return kv.Put("meta", []byte("n"), []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	b, _ := etcd.New(c.Client(t), etcd.Options{Prefix: "/counter/"})
	defer b.Close()
	_ = b.View(func(kv state.KV) error {
		v, err := kv.Get("meta", []byte("n"))
		if string(v) != strconv.Itoa(perWriter*writers) || err != nil {
			t.Errorf("counter = %s, %v; want %d", v, err, perWriter*writers)
		}
		return nil
	})
}

// TestUpdate_TooLarge: an Update with more writes than one etcd
// transaction carries fails whole and says what to change; Updates
// batched with it are not harmed.
func TestUpdate_TooLarge(t *testing.T) {
	c := etcdtest.Start(t, 1)
	b, err := etcd.New(c.Client(t), etcd.Options{Prefix: "/large/"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	err = b.Update(func(kv state.KV) error {
		for i := range 200 {
			if err := kv.Put("keys", []byte(strconv.Itoa(i)), []byte("x")); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, etcd.ErrTooLarge) || !strings.Contains(err.Error(), "--max-txn-ops") {
		t.Fatalf("oversized Update = %v, want ErrTooLarge naming --max-txn-ops", err)
	}
	_ = b.View(func(kv state.KV) error {
		if n, _ := kv.Count("keys", nil); n != 0 {
			t.Errorf("an oversized Update left %d keys", n)
		}
		return nil
	})
	// Many small Updates at once are split over several transactions.
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			if err := b.Update(func(kv state.KV) error {
				for j := range 5 {
					if err := kv.Put("keys", fmt.Appendf(nil, "%03d-%d", i, j), []byte("x")); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	_ = b.View(func(kv state.KV) error {
		if n, _ := kv.Count("keys", nil); n != 500 {
			t.Errorf("100 concurrent Updates of 5 keys stored %d keys, want 500", n)
		}
		return nil
	})
}

// TestUpdate_TwoProcessesShareTheAuditChain: two processes (two backends,
// two clients, each with its own cache of what it read and wrote) append
// to one audit log, interleaved and at once. Each sees the other's
// entries: the chain verifies, with every sequence number once.
func TestUpdate_TwoProcessesShareTheAuditChain(t *testing.T) {
	c := etcdtest.Start(t, 3)
	key, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var stores []state.Store
	for range 2 {
		b, err := etcd.New(c.Client(t), etcd.Options{Prefix: "/chain/"})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		st, err := state.Open(b, state.WithAuditKeys(state.StaticAuditKey(key)))
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, st)
	}
	appendOne := func(st state.Store, what string) error {
		return st.Update(func(tx state.Tx) error { return tx.AppendAudit(state.AuditEntry{Event: "rotated", Policy: what}) })
	}
	// Strictly interleaved first: each append follows the other process's.
	for i := range 10 {
		if err := appendOne(stores[i%2], fmt.Sprintf("turn-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Then both at once, several appends in flight in each.
	var wg sync.WaitGroup
	for p, st := range stores {
		for i := range 20 {
			wg.Go(func() {
				if err := appendOne(st, fmt.Sprintf("p%d-%d", p, i)); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	var entries []state.AuditEntry
	if err := stores[0].View(func(tx state.Tx) error {
		return tx.ForEachAudit(func(e state.AuditEntry) error { entries = append(entries, e); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 50 {
		t.Fatalf("%d audit entries, want 50", len(entries))
	}
	seq := func(yield func(audit.Entry, error) bool) {
		for _, e := range entries {
			if !yield(e, nil) {
				return
			}
		}
	}
	if _, err := audit.Verify(seq, audit.VerifyOptions{Key: key}); err != nil {
		t.Fatalf("the shared chain does not verify: %v", err)
	}
}

// TestViewsDuringUpdates: Views run beside the committer and its cache,
// and the appends they race with all land in one chain.
func TestViewsDuringUpdates(t *testing.T) {
	c := etcdtest.Start(t, 1)
	key, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := etcd.New(c.Client(t), etcd.Options{Prefix: "/views/"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := state.Open(b, state.WithAuditKeys(state.StaticAuditKey(key)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	const n = 100
	for i := range n {
		wg.Go(func() {
			if err := st.Update(func(tx state.Tx) error {
				return tx.AppendAudit(state.AuditEntry{Event: "rotated", Policy: fmt.Sprint(i)})
			}); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			if err := st.View(func(tx state.Tx) error {
				if _, err := tx.AuditHead(); err != nil {
					return err
				}
				_, err := tx.Rotations("", 1)
				return err
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	_ = st.View(func(tx state.Tx) error {
		h, err := tx.AuditHead()
		if err != nil || h.Seq != n {
			t.Errorf("audit head %v, %v; want sequence %d", h, err, n)
		}
		return nil
	})
}

// TestUpdate_AfterClose: an Update racing Close, or after it, returns an
// error instead of waiting forever.
func TestUpdate_AfterClose(t *testing.T) {
	c := etcdtest.Start(t, 1)
	b, err := etcd.New(c.Client(t), etcd.Options{Prefix: "/closed/"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_ = b.Update(func(kv state.KV) error { return kv.Put("keys", []byte(fmt.Sprint(i)), []byte("x")) })
		})
	}
	_ = b.Close()
	wg.Wait() // every Update returned
	if err := b.Update(func(state.KV) error { return nil }); err == nil {
		t.Error("Update after Close succeeded")
	}
}
