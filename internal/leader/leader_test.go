package leader_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rotatord/rotatord/internal/leader"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/etcdtest"
)

const ttl = 2 * time.Second

// node is one rotatord process's elector with its own etcd client.
type node struct {
	name    string
	cli     *clientv3.Client
	el      *leader.Elector
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	changes []leader.Change
	logs    *strings.Builder
}

func (n *node) lost() []leader.Change {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []leader.Change
	for _, c := range n.changes {
		if !c.Leading {
			out = append(out, c)
		}
	}
	return out
}

type syncWriter struct {
	mu sync.Mutex
	sb *strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sb.Write(p)
}

func startNode(t *testing.T, c *etcdtest.Cluster, name string) *node {
	t.Helper()
	return startNodeAt(t, c.Endpoints(), name)
}

func startNodeAt(t *testing.T, endpoints []string, name string) *node {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, cli: cli, done: make(chan struct{}), logs: &strings.Builder{}}
	log := slog.New(slog.NewTextHandler(&syncWriter{sb: n.logs}, nil)).With("node", name)
	n.el, err = leader.New(leader.Config{
		Client: cli, Prefix: "/test/leader/", LeaseTTL: ttl, Logger: log,
		Self: leader.Info{Name: name, Address: name + ".example:9464"},
		OnChange: func(ch leader.Change) {
			n.mu.Lock()
			n.changes = append(n.changes, ch)
			n.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { defer close(n.done); _ = n.el.Run(ctx) }()
	t.Cleanup(n.stop)
	return n
}

// stop ends the node gracefully: it resigns.
func (n *node) stop() {
	n.cancel()
	<-n.done
	_ = n.cli.Close()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	t.Fatalf("%s: not within %s", what, within)
	return 0
}

func leaders(nodes []*node) []*node {
	var out []*node
	for _, n := range nodes {
		if n.el.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

func TestElector_OneLeader(t *testing.T) {
	c := etcdtest.Start(t, 3)
	nodes := []*node{startNode(t, c, "a"), startNode(t, c, "b"), startNode(t, c, "c")}
	waitFor(t, 10*time.Second, "a leader", func() bool { return len(leaders(nodes)) == 1 })
	// Hold for a few lease renewals: never two.
	deadline := time.Now().Add(2 * ttl)
	for time.Now().Before(deadline) {
		if l := leaders(nodes); len(l) != 1 {
			t.Fatalf("%d leaders", len(l))
		}
		time.Sleep(50 * time.Millisecond)
	}
	l := leaders(nodes)[0]
	for _, n := range nodes {
		info, ok, err := n.el.Leader(context.Background())
		if err != nil || !ok || info.Name != l.name || info.Address != l.name+".example:9464" {
			t.Errorf("%s sees leader %+v, %v, %v; want %s", n.name, info, ok, err, l.name)
		}
		_, _, ferr := n.el.Fence()
		if (n == l) != (ferr == nil) {
			t.Errorf("%s: Fence() = %v while leading = %v", n.name, ferr, n == l)
		}
		if n != l && !errors.Is(ferr, state.ErrFenced) {
			t.Errorf("standby %s: Fence() = %v, want ErrFenced", n.name, ferr)
		}
	}
}

// TestElector_LeaderCutOff: the leader is cut off from etcd (a
// partition: no resign, no revoke, the lease must expire): it steps down
// on its own clock within lease_ttl, within lease_ttl plus a margin
// another leads, and the old one's term was cancelled with a reason.
func TestElector_LeaderCutOff(t *testing.T) {
	c := etcdtest.Start(t, 3)
	proxy := c.Proxy(t)
	first := startNodeAt(t, proxy.Endpoints(), "a")
	waitFor(t, 10*time.Second, "a leads", first.el.IsLeader)
	nodes := []*node{first, startNode(t, c, "b"), startNode(t, c, "c")}
	old := first
	term, ok := old.el.Current()
	if !ok {
		t.Fatal("leader has no term")
	}
	killed := time.Now()
	proxy.Cut()
	var rest []*node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	stepped := waitFor(t, ttl+time.Second, "the old leader's term cancelled", func() bool { return term.Ctx.Err() != nil })
	t.Logf("the cut-off leader stepped down after %s: %v", stepped.Round(time.Millisecond), context.Cause(term.Ctx))
	if cause := context.Cause(term.Ctx); cause == nil || cause.Error() == "" {
		t.Errorf("term ended without a cause")
	}
	if old.el.IsLeader() {
		t.Error("the cut-off leader still thinks it leads")
	}
	waitFor(t, ttl+3*time.Second, "a standby leads", func() bool { return len(leaders(rest)) == 1 })
	took := time.Since(killed)
	t.Logf("failover after %s (lease_ttl %s)", took.Round(time.Millisecond), ttl)
	if stepped >= took {
		t.Errorf("the old leader stepped down after %s, not before the new one led (%s): two leaders at once", stepped, took)
	}
	if took > ttl+2*time.Second {
		t.Errorf("failover took %s, want within lease_ttl + 2s", took)
	}
	if lost := old.lost(); len(lost) == 0 || lost[0].Reason == "" {
		t.Errorf("the old leader reported no loss with a reason: %+v", lost)
	}
	if !strings.Contains(old.logs.String(), "leadership lost") {
		t.Errorf("the log does not say leadership was lost:\n%s", old.logs.String())
	}
}

// TestElector_LeaseRevoked: the leader's lease is revoked behind its back
// (an operator, or etcd expiring it during a pause): it steps down, says
// why, and campaigns again, leading again once the others are gone.
func TestElector_LeaseRevoked(t *testing.T) {
	c := etcdtest.Start(t, 3)
	a := startNode(t, c, "a")
	waitFor(t, 10*time.Second, "a leads", a.el.IsLeader)
	b := startNode(t, c, "b")
	term, _ := a.el.Current()
	admin := c.Client(t)
	resp, err := admin.Get(context.Background(), term.Key)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("read election key: %v", err)
	}
	if _, err := admin.Revoke(context.Background(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ttl+2*time.Second, "b leads", b.el.IsLeader)
	waitFor(t, ttl, "a's term ended", func() bool { return term.Ctx.Err() != nil })
	if _, _, err := a.el.Fence(); !errors.Is(err, state.ErrFenced) {
		t.Errorf("deposed leader's Fence() = %v, want ErrFenced", err)
	}
	lost := a.lost()
	if len(lost) == 0 || !strings.Contains(lost[0].Reason, "lease") && !strings.Contains(lost[0].Reason, "deleted") {
		t.Errorf("loss reason %+v does not say the lease or key went", lost)
	}
	// a campaigns again: when b resigns, a leads.
	b.stop()
	waitFor(t, ttl+2*time.Second, "a leads again", a.el.IsLeader)
	var got []string
	a.mu.Lock()
	for _, ch := range a.changes {
		got = append(got, fmt.Sprint(ch.Leading))
	}
	a.mu.Unlock()
	if strings.Join(got, ",") != "true,false,true" {
		t.Errorf("a's changes = %v, want win, loss, win", got)
	}
}

// TestElector_GracefulStopHandsOver: a leader that stops resigns, so a
// standby leads at once rather than after lease_ttl.
func TestElector_GracefulStopHandsOver(t *testing.T) {
	c := etcdtest.Start(t, 3)
	a := startNode(t, c, "a")
	waitFor(t, 10*time.Second, "a leads", a.el.IsLeader)
	b := startNode(t, c, "b")
	a.stop()
	took := waitFor(t, ttl, "b leads", b.el.IsLeader)
	t.Logf("hand-over after %s", took)
}
