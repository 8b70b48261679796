// Package leader elects one rotatord among several that share state on
// etcd, with etcd's concurrency package: each process holds a session
// whose lease lives lease_ttl past its last keep-alive, and campaigns on
// one election prefix; the oldest key leads.
//
// Leadership is handed out as terms. A term's context is cancelled the
// moment leadership may be lost: the session ends, the election key
// disappears, or no keep-alive was answered for lease_ttl (so a leader
// cut off from etcd, or stopped and continued, steps down on its own
// clock, before etcd even expires its lease). Fence, which the etcd state
// backend conditions every write on, refuses as soon as that deadline has
// passed, without waiting for the term's goroutines to notice.
//
// After a term ends the elector campaigns again.
package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/rotatord/rotatord/internal/state"
)

// Info is what a leader publishes as the value of its election key: who
// it is and where to reach it.
type Info struct {
	Name    string `json:"name"`              // host name and PID, unless configured
	Address string `json:"address,omitempty"` // metrics listener or socket, for operators
}

func (i Info) String() string {
	if i.Address == "" {
		return i.Name
	}
	return i.Name + " (" + i.Address + ")"
}

// Config configures an Elector.
type Config struct {
	Client *clientv3.Client
	// Prefix is the election's key prefix, such as /rotatord/leader/.
	Prefix string
	// Self is this process's name and address, published while it leads.
	Self Info
	// LeaseTTL is how long a silent leader keeps leading.
	LeaseTTL time.Duration
	Logger   *slog.Logger
	// OnChange, when set, is called from the elector's goroutine after
	// this process wins or loses a term.
	OnChange func(Change)
}

// Change is one win or loss of leadership by this process.
type Change struct {
	Leading bool
	Term    Term   // the term won or lost
	Reason  string // why a term ended; empty on a win
	// Previous is the leader seen before this process won, if any.
	Previous Info
}

// Term is one uninterrupted leadership of this process.
type Term struct {
	Key string // the election key
	Rev int64  // its create revision, which fences every write
	// Ctx is cancelled when the term ends; context.Cause names why.
	Ctx context.Context
}

// ErrNotLeader wraps state.ErrFenced: this process does not lead.
var ErrNotLeader = fmt.Errorf("%w: this rotatord does not lead", state.ErrFenced)

// Elector runs the campaign and hands out terms.
type Elector struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	term     *Term
	cancel   context.CancelCauseFunc
	deadline time.Time // local: last keep-alive answer + lease TTL - margin
	terms    chan Term
	lastSeen Info
}

// New returns an elector; Run campaigns.
func New(cfg Config) (*Elector, error) {
	if cfg.Client == nil {
		return nil, errors.New("leader: nil etcd client")
	}
	if cfg.Prefix == "" {
		return nil, errors.New("leader: empty election prefix")
	}
	if cfg.LeaseTTL < time.Second {
		return nil, fmt.Errorf("leader: lease TTL %s is under a second", cfg.LeaseTTL)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Elector{cfg: cfg, log: cfg.Logger, terms: make(chan Term, 1)}, nil
}

// Terms delivers each term this process wins. The channel holds only the
// newest; a reader that missed one sees the next.
func (e *Elector) Terms() <-chan Term { return e.terms }

// Current returns the term this process leads in, if any and if its lease
// is still surely alive by the local clock.
func (e *Elector) Current() (Term, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term == nil || e.term.Ctx.Err() != nil || !time.Now().Before(e.deadline) {
		return Term{}, false
	}
	return *e.term, true
}

// IsLeader reports whether this process leads now.
func (e *Elector) IsLeader() bool {
	_, ok := e.Current()
	return ok
}

// Fence returns the election key and revision every write of this leader
// is conditioned on, or ErrNotLeader. It implements the etcd backend's
// Guard.
func (e *Elector) Fence() (string, int64, error) {
	t, ok := e.Current()
	if !ok {
		return "", 0, ErrNotLeader
	}
	return t.Key, t.Rev, nil
}

// Leader returns the current leader as etcd knows it: the value of the
// oldest election key. ok is false when nobody leads.
func (e *Elector) Leader(ctx context.Context) (info Info, ok bool, err error) {
	resp, err := e.cfg.Client.Get(ctx, e.keyPrefix(), clientv3.WithFirstCreate()...)
	if err != nil {
		return Info{}, false, fmt.Errorf("read leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Info{}, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
		// Another build's value: show it raw rather than fail status.
		return Info{Name: string(resp.Kvs[0].Value)}, true, nil
	}
	return info, true, nil
}

// keyPrefix is what every election key starts with.
func (e *Elector) keyPrefix() string { return strings.TrimSuffix(e.cfg.Prefix, "/") + "/" }

// margin is taken off the lease TTL for the local deadline: the lease was
// renewed when etcd received the keep-alive, a little before its answer
// arrived here.
func margin(ttl time.Duration) time.Duration {
	return min(ttl/10, 500*time.Millisecond)
}

// Run campaigns until ctx is done, leading whenever it wins. On return it
// has resigned, so a standby takes over at once instead of after the
// lease TTL.
func (e *Elector) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := e.campaign(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			e.log.Warn("leader election: campaign failed; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, e.cfg.LeaseTTL/2)
			continue
		}
		backoff = 100 * time.Millisecond
	}
	return nil
}

// campaign runs one session: it waits to lead, leads until the term ends,
// and returns. An error means the session could not be set up or the
// campaign failed.
func (e *Elector) campaign(ctx context.Context) error {
	cli := e.cfg.Client
	ttl := int64(math.Ceil(e.cfg.LeaseTTL.Seconds()))
	gctx, gcancel := context.WithTimeout(ctx, e.cfg.LeaseTTL)
	grant, err := cli.Grant(gctx, ttl)
	gcancel()
	if err != nil {
		return fmt.Errorf("grant lease: %w", err)
	}
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(grant.ID), concurrency.WithContext(kctx))
	if err != nil {
		return fmt.Errorf("new session: %w", err)
	}
	defer func() {
		// Revoke the lease: our key goes at once, not lease_ttl later.
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer rcancel()
		_, _ = cli.Revoke(rctx, grant.ID)
		_ = sess.Close()
	}()
	if info, ok, err := e.Leader(ctx); err == nil && ok {
		e.mu.Lock()
		e.lastSeen = info
		e.mu.Unlock()
	}
	el := concurrency.NewElection(sess, strings.TrimSuffix(e.cfg.Prefix, "/")) // it adds the "/"
	value, _ := json.Marshal(e.cfg.Self)
	// The campaign ends with the session: a standby whose lease expired
	// while waiting must not think it won.
	cctx, ccancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-cctx.Done():
		}
		ccancel()
	}()
	err = el.Campaign(cctx, string(value))
	ccancel()
	if err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	return e.lead(ctx, cli, sess, el, grant.ID)
}

// lead holds one term: it verifies the win, then watches the lease, the
// session and the key until one of them ends the term.
func (e *Elector) lead(ctx context.Context, cli *clientv3.Client, sess *concurrency.Session, el *concurrency.Election, lease clientv3.LeaseID) error {
	key, rev := el.Key(), el.Rev()
	// Campaign returns once older keys are gone; make sure ours is still
	// there, and learn how long the lease has left.
	vctx, vcancel := context.WithTimeout(ctx, e.cfg.LeaseTTL)
	asked := time.Now() // etcd measured the TTL left no earlier than this
	resp, err := cli.Get(vctx, key)
	var ttl *clientv3.LeaseTimeToLiveResponse
	if err == nil {
		ttl, err = cli.TimeToLive(vctx, lease)
	}
	vcancel()
	switch {
	case err != nil:
		return fmt.Errorf("verify leadership: %w", err)
	case len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != rev || ttl.TTL <= 0:
		return errors.New("verify leadership: the election key expired while campaigning")
	}

	tctx, cancel := context.WithCancelCause(ctx)
	term := Term{Key: key, Rev: rev, Ctx: tctx}
	e.mu.Lock()
	e.term, e.cancel = &term, cancel
	e.deadline = asked.Add(time.Duration(ttl.TTL)*time.Second - margin(e.cfg.LeaseTTL))
	prev := e.lastSeen
	e.mu.Unlock()
	e.log.Info("leader election: this rotatord leads", "key", key, "revision", rev, "previous", prev.String())
	select {
	case <-e.terms:
	default:
	}
	e.terms <- term
	if e.cfg.OnChange != nil {
		e.cfg.OnChange(Change{Leading: true, Term: term, Previous: prev})
	}

	reason := e.watch(tctx, cli, sess, key, rev, lease)
	cancel(errors.New(reason))
	e.mu.Lock()
	e.term, e.cancel = nil, nil
	e.lastSeen = e.cfg.Self
	e.mu.Unlock()
	if ctx.Err() != nil {
		// Shutting down: hand over now rather than after the lease TTL.
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = el.Resign(rctx)
		rcancel()
	}
	e.log.Warn("leader election: leadership lost", "reason", reason, "key", key, "revision", rev)
	if e.cfg.OnChange != nil {
		e.cfg.OnChange(Change{Leading: false, Term: term, Reason: reason})
	}
	return nil
}

// watch returns, with the reason, when the term must end.
func (e *Elector) watch(ctx context.Context, cli *clientv3.Client, sess *concurrency.Session, key string, rev int64, lease clientv3.LeaseID) string {
	// Our own keep-alives on the session's lease (the session keeps its
	// own stream): each one timed from when it was sent, since etcd renewed
	// the lease no earlier than that, moves the local deadline.
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	kas := make(chan renewal, 1)
	go e.keepAlive(kctx, cli, lease, kas)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wch := cli.Watch(clientv3.WithRequireLeader(wctx), key, clientv3.WithRev(rev+1))
	e.mu.Lock()
	left := time.Until(e.deadline)
	e.mu.Unlock()
	timer := time.NewTimer(left)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return "shutting down"
		case <-sess.Done():
			return "the etcd session ended: its lease expired or was revoked"
		case ka := <-kas:
			if ka.err != nil {
				return ka.err.Error()
			}
			e.mu.Lock()
			if !time.Now().Before(e.deadline) {
				// Renewed too late: for a moment nobody could be sure
				// we led. Step down rather than resume.
				e.mu.Unlock()
				return "no keep-alive answered within lease_ttl (was this process stopped?)"
			}
			if ka.until.After(e.deadline) {
				e.deadline = ka.until
			}
			d := time.Until(e.deadline)
			e.mu.Unlock()
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(d)
		case <-timer.C:
			return fmt.Sprintf("no keep-alive answered within lease_ttl (%s): etcd unreachable, or this process was paused", e.cfg.LeaseTTL)
		case wr, ok := <-wch:
			if !ok {
				return "the watch on the election key ended"
			}
			if err := wr.Err(); err != nil {
				return fmt.Sprintf("the watch on the election key failed (etcd lost its quorum?): %v", err)
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return "the election key was deleted (lease expired or revoked)"
				}
			}
		}
	}
}

// renewal is one keep-alive's outcome: the lease surely lives until
// until, or err says why it does not.
type renewal struct {
	until time.Time
	err   error
}

// keepAlive renews the lease every third of its TTL, timing each renewal
// from when it was sent, until ctx ends or the lease is gone.
func (e *Elector) keepAlive(ctx context.Context, cli *clientv3.Client, lease clientv3.LeaseID, out chan<- renewal) {
	every := e.cfg.LeaseTTL / 3
	for {
		sent := time.Now()
		rctx, cancel := context.WithTimeout(ctx, e.cfg.LeaseTTL)
		resp, err := cli.KeepAliveOnce(rctx, lease)
		cancel()
		var r renewal
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			r.err = errors.New("the lease expired: etcd did not hear from this process within lease_ttl")
		case err != nil:
			// Not fatal yet: the deadline decides.
		case resp.TTL <= 0:
			r.err = errors.New("the lease expired")
		default:
			r.until = sent.Add(time.Duration(resp.TTL)*time.Second - margin(e.cfg.LeaseTTL))
		}
		if r.err != nil || !r.until.IsZero() {
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
			if r.err != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(sent.Add(every))):
		}
	}
}
