package rotate

import (
	"context"
	"sync"
)

// Locks gives each policy one lock shared by every trigger (cron, SIGUSR1,
// the control socket, the retire sweep), so a policy never runs two sagas at
// once. It outlives config reloads: the daemon keeps one Locks for the
// process.
type Locks struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// NewLocks returns an empty lock set.
func NewLocks() *Locks { return &Locks{m: make(map[string]chan struct{})} }

func (l *Locks) ch(policy string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.m[policy]
	if !ok {
		c = make(chan struct{}, 1)
		l.m[policy] = c
	}
	return c
}

// TryLock takes the policy's lock if it is free and returns its release
// function; ok is false when another run holds it.
func (l *Locks) TryLock(policy string) (unlock func(), ok bool) {
	c := l.ch(policy)
	select {
	case c <- struct{}{}:
		return func() { <-c }, true
	default:
		return nil, false
	}
}

// Lock waits for the policy's lock until ctx ends.
func (l *Locks) Lock(ctx context.Context, policy string) (unlock func(), err error) {
	c := l.ch(policy)
	select {
	case c <- struct{}{}:
		return func() { <-c }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Busy reports whether a run of policy is in flight.
func (l *Locks) Busy(policy string) bool {
	return len(l.ch(policy)) > 0
}
