package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// OutboxItem is one queued notification.
type OutboxItem struct {
	ID       uint64 // increasing in enqueue order
	Event    Event
	Attempts int // failed delivery attempts so far
}

// Outbox is the durable queue of notifications, written in the same
// transaction as the outcome it reports so that a crash cannot lose one.
// The daemon adapts rotatord's state store to it.
type Outbox interface {
	// Pending returns up to limit items whose next attempt is due at now,
	// oldest (lowest ID) first.
	Pending(ctx context.Context, now time.Time, limit int) ([]OutboxItem, error)
	// Ack removes a delivered item.
	Ack(ctx context.Context, id uint64) error
	// Retry records a failed attempt: Attempts goes up by one, the item is
	// not due again before next, and errMsg is kept as its last error.
	Retry(ctx context.Context, id uint64, next time.Time, errMsg string) error
}

// Sender delivers one event; *Slack is the production one. Errors that
// match ErrRetry mean "try again later"; RetryAfter may say when.
type Sender interface {
	Send(ctx context.Context, ev Event) error
}

var _ Sender = (*Slack)(nil)

// DispatcherOptions tunes a Dispatcher; the zero value is usable.
type DispatcherOptions struct {
	// Logger receives delivery failures; nil discards them.
	Logger *slog.Logger
	// Interval is how often Run looks at the outbox when nobody calls
	// Kick; 0 means 5s.
	Interval time.Duration
	// BaseBackoff is the wait after a first temporary failure, doubled on
	// each further one; 0 means 2s.
	BaseBackoff time.Duration
	// MaxBackoff caps the backoff and is the wait after a permanent
	// failure; 0 means 10m.
	MaxBackoff time.Duration
	// MaxAttempts drops an item (logged at error level) after that many
	// failed attempts; 0, the default, never drops anything.
	MaxAttempts int
	// BatchSize is how many items one pass reads; 0 means 100.
	BatchSize int
	// Now is the clock, for tests; nil means time.Now.
	Now func() time.Time
}

// Dispatcher drains an Outbox into a Sender: oldest first, each item acked
// only after it was delivered, failures rescheduled in the outbox so that
// they survive a restart. Delivery is at least once. Run one Dispatcher per
// outbox.
type Dispatcher struct {
	out         Outbox
	sender      Sender
	log         *slog.Logger
	interval    time.Duration
	baseBackoff time.Duration
	maxBackoff  time.Duration
	maxAttempts int
	batch       int
	now         func() time.Time
	kick        chan struct{}

	mu sync.Mutex // one pass at a time, so no item is sent by two passes
	// holdUntil pauses every delivery after a temporary failure: Slack is
	// down or rate limiting, and sending younger items meanwhile would
	// deliver them before the one that failed.
	holdUntil time.Time
}

// NewDispatcher returns a Dispatcher of out's items to s.
func NewDispatcher(out Outbox, s Sender, opts DispatcherOptions) *Dispatcher {
	d := &Dispatcher{
		out:         out,
		sender:      s,
		log:         opts.Logger,
		interval:    opts.Interval,
		baseBackoff: opts.BaseBackoff,
		maxBackoff:  opts.MaxBackoff,
		maxAttempts: opts.MaxAttempts,
		batch:       opts.BatchSize,
		now:         opts.Now,
		kick:        make(chan struct{}, 1),
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.interval <= 0 {
		d.interval = 5 * time.Second
	}
	if d.baseBackoff <= 0 {
		d.baseBackoff = 2 * time.Second
	}
	if d.maxBackoff <= 0 {
		d.maxBackoff = 10 * time.Minute
	}
	if d.batch <= 0 {
		d.batch = 100
	}
	if d.now == nil {
		d.now = time.Now
	}
	return d
}

// Kick makes Run look at the outbox now instead of at its next tick; call
// it after enqueueing. It never blocks.
func (d *Dispatcher) Kick() {
	select {
	case d.kick <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Run drains the outbox on every Kick and every Interval until ctx is done.
// Failures are logged and rescheduled; Run never gives up.
func (d *Dispatcher) Run(ctx context.Context) {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		_, _ = d.DrainOnce(ctx) // DrainOnce logs what went wrong
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
		}
	}
}

// DrainOnce makes one pass over the due items, oldest first, and returns how
// many it delivered. A temporary failure reschedules the item for
// max(Retry-After, backoff) and ends the pass; a permanent one is logged at
// error level, rescheduled after MaxBackoff, and the pass goes on. err joins
// the delivery failures and any outbox error; items stay queued either way.
func (d *Dispatcher) DrainOnce(ctx context.Context) (sent int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()

	if d.now().Before(d.holdUntil) {
		return 0, nil
	}
	items, err := d.out.Pending(ctx, d.now(), d.batch)
	if err != nil {
		d.log.ErrorContext(ctx, "read notification outbox", "err", err)
		return 0, fmt.Errorf("read outbox: %w", err)
	}

	var errs []error
	for _, it := range items {
		if ctx.Err() != nil {
			break
		}
		sendErr := d.sender.Send(ctx, it.Event)
		if sendErr == nil {
			if err := d.out.Ack(ctx, it.ID); err != nil {
				// Delivered but still queued: it will be sent again,
				// which beats losing it.
				d.log.ErrorContext(ctx, "ack notification", "notification_id", it.ID, "err", err)
				return sent, errors.Join(append(errs, fmt.Errorf("ack notification %d: %w", it.ID, err))...)
			}
			sent++
			continue
		}
		if ctx.Err() != nil {
			// Stopping mid-send: the item stays as it was, to be sent
			// after the restart.
			break
		}

		now := d.now()
		attempts := it.Attempts + 1
		temporary := errors.Is(sendErr, ErrRetry)
		log := d.log.With("notification_id", it.ID, "kind", it.Event.Kind, "policy", it.Event.Policy, "attempts", attempts)
		errs = append(errs, fmt.Errorf("deliver notification %d: %w", it.ID, sendErr))

		var next time.Time
		switch {
		case d.maxAttempts > 0 && attempts >= d.maxAttempts:
			log.ErrorContext(ctx, "dropping notification after too many attempts", "err", sendErr)
			if err := d.out.Ack(ctx, it.ID); err != nil {
				d.log.ErrorContext(ctx, "ack notification", "notification_id", it.ID, "err", err)
				return sent, errors.Join(append(errs, fmt.Errorf("drop notification %d: %w", it.ID, err))...)
			}
			if !temporary {
				continue
			}
			next = now.Add(max(RetryAfter(sendErr), d.backoff(it.Attempts)))
		case temporary:
			next = now.Add(max(RetryAfter(sendErr), d.backoff(it.Attempts)))
			log.WarnContext(ctx, "receiver unavailable, holding notifications", "err", sendErr, "retry_at", next)
			if err := d.out.Retry(ctx, it.ID, next, sendErr.Error()); err != nil {
				d.log.ErrorContext(ctx, "reschedule notification", "notification_id", it.ID, "err", err)
				errs = append(errs, fmt.Errorf("reschedule notification %d: %w", it.ID, err))
			}
		default:
			next = now.Add(d.maxBackoff)
			log.ErrorContext(ctx, "receiver refused notification", "err", sendErr, "retry_at", next)
			if err := d.out.Retry(ctx, it.ID, next, sendErr.Error()); err != nil {
				d.log.ErrorContext(ctx, "reschedule notification", "notification_id", it.ID, "err", err)
				return sent, errors.Join(append(errs, fmt.Errorf("reschedule notification %d: %w", it.ID, err))...)
			}
			continue
		}
		// Temporary: Slack is down or rate limiting; the rest of the
		// queue waits behind this item.
		d.holdUntil = next
		break
	}
	return sent, errors.Join(errs...)
}

// backoff is BaseBackoff doubled per earlier failure, capped at MaxBackoff.
// No jitter: there is one sender per process, nothing to de-synchronise.
func (d *Dispatcher) backoff(failures int) time.Duration {
	b := d.baseBackoff
	for range failures {
		if b >= d.maxBackoff/2 {
			return d.maxBackoff
		}
		b *= 2
	}
	return min(b, d.maxBackoff)
}
