package notify

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// rig is a dispatcher wired to the fake Slack, an in-memory outbox and a
// settable clock; BaseBackoff is short so that Retry-After: 1 dominates.
type rig struct {
	slack *fakeSlack
	out   *memOutbox
	clock *fakeClock
	logs  *logBuffer
	opts  DispatcherOptions
	s     *Slack
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{slack: newFakeSlack(t), out: &memOutbox{}, clock: &fakeClock{now: t0}, logs: &logBuffer{}}
	r.s = newBot(t, r.slack, newLogger(r.logs))
	r.opts = DispatcherOptions{
		Logger:      newLogger(r.logs),
		BaseBackoff: 100 * time.Millisecond,
		MaxBackoff:  10 * time.Minute,
		Now:         r.clock.Now,
	}
	return r
}

// dispatcher returns a new Dispatcher over the rig's outbox: calling it
// twice is a restart (no memory shared but the outbox).
func (r *rig) dispatcher() *Dispatcher { return NewDispatcher(r.out, r.s, r.opts) }

func drain(t *testing.T, d *Dispatcher) (int, error) {
	t.Helper()
	return d.DrainOnce(context.Background())
}

func eventFor(policy string) Event {
	ev := rotatedEvent()
	ev.Policy = policy
	return ev
}

func TestDispatcher_DrainOnce(t *testing.T) {
	t.Run("429 waits for Retry-After, then delivers once", func(t *testing.T) {
		r := newRig(t)
		d := r.dispatcher()
		id := r.out.Enqueue(rotatedEvent())
		r.slack.answer(replyRateLimited)

		sent, err := drain(t, d)
		if sent != 0 || !errors.Is(err, ErrRetry) {
			t.Fatalf("first pass = %d, %v; want 0 sent and ErrRetry", sent, err)
		}
		it, ok := r.out.Item(id)
		if !ok || it.Attempts != 1 || !it.next.Equal(t0.Add(time.Second)) {
			t.Fatalf("after a 429 the item is %+v (queued %v), want 1 attempt and due at t0+1s", it, ok)
		}

		r.clock.Advance(500 * time.Millisecond)
		if sent, _ := drain(t, d); sent != 0 || r.slack.Requests() != 1 {
			t.Fatalf("before Retry-After elapsed: sent %d, Slack saw %d requests; want nothing new", sent, r.slack.Requests())
		}

		r.clock.Advance(500 * time.Millisecond)
		if sent, err := drain(t, d); sent != 1 || err != nil {
			t.Fatalf("after Retry-After: %d, %v; want 1 delivered", sent, err)
		}
		if sent, _ := drain(t, d); sent != 0 {
			t.Errorf("a further pass sent %d more", sent)
		}
		if n := len(r.slack.Posts()); n != 1 || r.out.Len() != 0 {
			t.Errorf("Slack got %d messages and the outbox holds %d items; want exactly 1 and 0", n, r.out.Len())
		}
	})

	t.Run("500 backs off exponentially, then delivers once", func(t *testing.T) {
		r := newRig(t)
		d := r.dispatcher()
		id := r.out.Enqueue(rotatedEvent())
		r.slack.answer(replyUnavailable, replyUnavailable)

		for i, wantWait := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
			if sent, err := drain(t, d); sent != 0 || !errors.Is(err, ErrRetry) {
				t.Fatalf("pass %d = %d, %v; want ErrRetry", i, sent, err)
			}
			it, _ := r.out.Item(id)
			if got := it.next.Sub(r.clock.Now()); got != wantWait || it.Attempts != i+1 || !strings.Contains(it.lastErr, "500") {
				t.Fatalf("after failure %d: wait %v, attempts %d, last error %q; want %v, %d, a 500", i+1, got, it.Attempts, it.lastErr, wantWait, i+1)
			}
			r.clock.Advance(wantWait)
		}
		if sent, err := drain(t, d); sent != 1 || err != nil {
			t.Fatalf("third pass = %d, %v; want 1 delivered", sent, err)
		}
		if n := len(r.slack.Posts()); n != 1 {
			t.Errorf("Slack got %d messages, want 1", n)
		}
	})

	t.Run("permanent error is kept and logged, the rest goes on", func(t *testing.T) {
		r := newRig(t)
		d := r.dispatcher()
		gone := eventFor("archived")
		gone.Channel = "#archived"
		bad := r.out.Enqueue(gone)
		r.out.Enqueue(eventFor("gpu-team"))
		r.slack.answer(replyAPIError("channel_not_found"))

		sent, err := drain(t, d)
		if sent != 1 || !errors.Is(err, ErrPermanent) {
			t.Fatalf("pass = %d, %v; want the second item delivered and a permanent error", sent, err)
		}
		it, ok := r.out.Item(bad)
		if !ok {
			t.Fatal("the refused notification was dropped")
		}
		if !it.next.Equal(t0.Add(10*time.Minute)) || !strings.Contains(it.lastErr, "channel_not_found") {
			t.Errorf("refused item due %v with last error %q; want t0+MaxBackoff and channel_not_found", it.next, it.lastErr)
		}
		logs := r.logs.String()
		if !strings.Contains(logs, `"level":"ERROR"`) || !strings.Contains(logs, "channel_not_found") || !strings.Contains(logs, `"policy":"archived"`) {
			t.Errorf("no error-level log naming the policy and Slack's answer:\n%s", logs)
		}
	})

	t.Run("MaxAttempts drops after that many failures", func(t *testing.T) {
		r := newRig(t)
		r.opts.MaxAttempts = 2
		d := r.dispatcher()
		id := r.out.Enqueue(rotatedEvent())
		r.slack.answer(replyAPIError("channel_not_found"), replyAPIError("channel_not_found"))

		_, _ = drain(t, d)
		if _, ok := r.out.Item(id); !ok {
			t.Fatal("dropped after the first failure")
		}
		r.clock.Advance(10 * time.Minute)
		_, _ = drain(t, d)
		if _, ok := r.out.Item(id); ok {
			t.Fatal("still queued after MaxAttempts failures")
		}
		if !strings.Contains(r.logs.String(), "dropping notification") {
			t.Errorf("the drop was not logged:\n%s", r.logs)
		}
	})

	t.Run("oldest first, also across a temporary failure", func(t *testing.T) {
		r := newRig(t)
		d := r.dispatcher()
		for _, p := range []string{"first", "second", "third"} {
			r.out.Enqueue(eventFor(p))
		}
		r.slack.answer(replyUnavailable)

		if sent, _ := drain(t, d); sent != 0 || r.slack.Requests() != 1 {
			t.Fatalf("failing pass sent %d with %d requests; want it to stop at the first", sent, r.slack.Requests())
		}
		r.clock.Advance(50 * time.Millisecond) // the younger items are due, the first is not
		if sent, _ := drain(t, d); sent != 0 {
			t.Fatalf("sent %d younger items while the oldest waits", sent)
		}
		r.clock.Advance(50 * time.Millisecond)
		if sent, err := drain(t, d); sent != 3 || err != nil {
			t.Fatalf("pass = %d, %v; want all 3", sent, err)
		}
		var got []string
		for _, p := range r.slack.Posts() {
			got = append(got, strings.SplitN(blockText(t, p.Blocks), "\n", 2)[0])
		}
		want := []string{":key: first rotated", ":key: second rotated", ":key: third rotated"}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("delivered %q, want %q", got, want)
		}
	})
}

func TestDispatcher_restart(t *testing.T) {
	r := newRig(t)
	id := r.out.Enqueue(rotatedEvent())
	r.slack.answer(replyUnavailable)
	if _, err := drain(t, r.dispatcher()); !errors.Is(err, ErrRetry) {
		t.Fatalf("first run = %v, want ErrRetry", err)
	}

	// The process restarts: a new Dispatcher, the same outbox.
	d := r.dispatcher()
	if sent, _ := drain(t, d); sent != 0 || r.slack.Requests() != 1 {
		t.Fatalf("after restart, before the backoff elapsed: sent %d, %d requests; want the outbox's schedule kept", sent, r.slack.Requests())
	}
	r.clock.Advance(time.Second)
	if sent, err := drain(t, d); sent != 1 || err != nil {
		t.Fatalf("after restart = %d, %v; want the item delivered", sent, err)
	}
	if _, err := drain(t, d); err != nil {
		t.Fatal(err)
	}
	if n := len(r.slack.Posts()); n != 1 {
		t.Errorf("Slack got %d messages, want exactly 1", n)
	}
	if _, ok := r.out.Item(id); ok {
		t.Errorf("delivered item still queued")
	}
}

// watchedOutbox counts Pending calls, to know Run made its first pass.
type watchedOutbox struct {
	*memOutbox
	passes atomic.Int32
}

func (o *watchedOutbox) Pending(ctx context.Context, now time.Time, limit int) ([]OutboxItem, error) {
	o.passes.Add(1)
	return o.memOutbox.Pending(ctx, now, limit)
}

func TestDispatcher_Run(t *testing.T) {
	f := newFakeSlack(t)
	out := &watchedOutbox{memOutbox: &memOutbox{}}
	// An hour between polls: only Kick can make the message go out in time.
	d := NewDispatcher(out, newBot(t, f, nil), DispatcherOptions{Interval: time.Hour})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()

	waitFor(t, func() bool { return out.passes.Load() >= 1 })
	out.Enqueue(rotatedEvent())
	d.Kick()
	// Delivered means posted and acked; the post lands at Slack a moment
	// before the ack, so wait for both rather than cancel in between (a
	// send cut short by cancel stays queued, as it must).
	waitFor(t, func() bool { return len(f.Posts()) == 1 && out.Len() == 0 })

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if n := len(f.Posts()); n != 1 {
		t.Errorf("Slack got %d posts, want 1", n)
	}
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
