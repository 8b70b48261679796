// Package scheduler runs rotatord's jobs on cron schedules: one entry per
// policy from its schedule, and the report digest (the daemon runs the retire
// sweep on a ticker of its own). It wraps robfig/cron/v3 with jitter (per
// entry: a policy's jitter key), panic recovery and a Stop that waits for
// jobs in flight up to a deadline.
//
// Specs are parsed by policy.ParseSchedule, the parser `check` uses, so a
// schedule that validates is exactly one that runs.
//
// Single-flight per policy is not the scheduler's business: the rotation
// engine's lock, shared with SIGUSR1 and the control socket, gives it.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/rotatord/rotatord/policy"
)

// Job is the work of one entry. ctx ends when the scheduler stops.
type Job func(ctx context.Context)

// Options tune a Scheduler.
type Options struct {
	Logger *slog.Logger
	// Jitter delays each run by a random duration in [0, Jitter), so that
	// many policies on one schedule do not hit a provider in the same
	// second. It is the default of entries added without their own
	// (WithJitter).
	Jitter   time.Duration
	Location *time.Location // default UTC
}

// EntryOption tunes one entry.
type EntryOption func(*entry)

// WithJitter gives an entry its own jitter, overriding Options.Jitter:
// each run of the entry waits a random duration in [0, d) first. A
// policy's jitter key is passed this way; WithJitter(0) turns jitter off
// for the entry.
func WithJitter(d time.Duration) EntryOption {
	return func(e *entry) { e.jitter = max(d, 0) }
}

// entry is how one named job runs.
type entry struct {
	jitter time.Duration
}

// Scheduler is a set of named cron entries.
type Scheduler struct {
	c       *cron.Cron
	log     *slog.Logger
	jitter  time.Duration
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	entries map[string]cron.EntryID
	running sync.WaitGroup
	// stopping is closed and stopped set (under mu) when Stop begins.
	stopping chan struct{}
	stopped  bool
}

// New returns a stopped scheduler.
func New(opts Options) *Scheduler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Scheduler{
		c:        cron.New(cron.WithLocation(opts.Location)),
		log:      opts.Logger,
		jitter:   opts.Jitter,
		ctx:      ctx,
		cancel:   cancel,
		entries:  make(map[string]cron.EntryID),
		stopping: make(chan struct{}),
	}
}

// Add schedules job under name on spec, with the scheduler's jitter
// unless an option says otherwise.
func (s *Scheduler) Add(name, spec string, job Job, opts ...EntryOption) error {
	sched, err := policy.ParseSchedule(spec)
	if err != nil {
		return fmt.Errorf("entry %q: %w", name, err)
	}
	e := entry{jitter: s.jitter}
	for _, o := range opts {
		o(&e)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.entries[name]; dup {
		return fmt.Errorf("entry %q: already scheduled", name)
	}
	s.entries[name] = s.c.Schedule(sched, cron.FuncJob(func() { s.run(name, e, job) }))
	return nil
}

// delay draws the wait before one run: uniform in [0, jitter).
func delay(jitter time.Duration) time.Duration {
	if jitter <= 0 {
		return 0
	}
	return rand.N(jitter)
}

// run executes one firing: jitter, panic recovery, bookkeeping for Stop.
// The jitter wait comes before the run counts as in flight, so Stop cuts
// it short instead of waiting it out.
func (s *Scheduler) run(name string, e entry, job Job) {
	if d := delay(e.jitter); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.stopping:
			t.Stop()
			return
		}
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.running.Add(1)
	s.mu.Unlock()
	defer s.running.Done()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("scheduled job panicked", "entry", name, "panic", fmt.Sprint(r))
		}
	}()
	job(s.ctx)
}

// Next returns the next run time of name, or zero.
func (s *Scheduler) Next(name string) time.Time {
	s.mu.Lock()
	id, ok := s.entries[name]
	s.mu.Unlock()
	if !ok {
		return time.Time{}
	}
	return s.c.Entry(id).Next
}

// Start begins firing entries.
func (s *Scheduler) Start() { s.c.Start() }

// Halt stops firing new runs at once; runs in flight go on. Reloads call
// it before the next config's scheduler starts, so that no entry of the
// old config fires after the swap.
func (s *Scheduler) Halt() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stopping)
	}
	s.mu.Unlock()
	s.c.Stop()
}

// Wait waits for the runs in flight until ctx ends; then it cancels their
// context, waits for them to return, and returns ctx's error. Call Halt
// first, or new runs may keep it waiting.
func (s *Scheduler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel()
		<-done
		return ctx.Err()
	}
}

// Stop is Halt, then Wait.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.Halt()
	return s.Wait(ctx)
}

// Names returns the scheduled entries' names, sorted.
func (s *Scheduler) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.entries))
}
