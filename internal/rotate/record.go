package rotate

import (
	"errors"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Sink is one destination of notifications: Slack, a webhook. Each has an
// outbox of its own (state.Enqueue with its Name), drained by its own
// dispatcher, so one failing receiver never holds up another.
type Sink struct {
	// Name is the outbox sink: state.SinkSlack, or a webhook's name.
	Name string
	// Wants reports whether the sink takes events of kind from policy p.
	Wants func(p policy.Policy, kind string) bool
}

// txn is one journal transaction of the engine for one policy: the state
// transaction plus the audit entries and notifications recorded with it.
type txn struct {
	state.Tx
	e      *Engine
	p      policy.Policy
	queued bool
}

// notify queues ev for every sink that wants it.
func (r *txn) notify(ev state.Event) error {
	var sinks []string
	for _, s := range r.e.cfg.Sinks {
		if s.Wants(r.p, ev.Kind) {
			sinks = append(sinks, s.Name)
		}
	}
	if len(sinks) == 0 {
		return nil
	}
	if _, err := r.Enqueue(ev, sinks...); err != nil {
		return err
	}
	r.queued = true
	return nil
}

// audit appends an audit entry about the policy (its name, provider and
// the time are filled in).
func (r *txn) audit(e audit.Entry) error {
	e.Time, e.Policy, e.Provider = r.e.cfg.Now(), r.p.Name, r.p.Provider
	return r.AppendAudit(e)
}

// auditNoKeyOK is audit for entries about something that did not happen
// (a failed run, an overdue key): without the audit key (Vault has not
// answered since start) the rest of the transaction still commits, so
// failures still count towards failing and alerts still go out.
func (r *txn) auditNoKeyOK(e audit.Entry) error {
	if err := r.audit(e); err != nil && !errors.Is(err, state.ErrNoAuditKey) {
		return err
	}
	return nil
}

// commit runs fn in one journal transaction about p and, once it has
// committed, wakes the notifier if fn queued anything. fn may run more
// than once (see Journal), so it only records.
func (e *Engine) commit(p policy.Policy, fn func(r *txn) error) error {
	var queued bool
	err := e.cfg.Journal.Update(func(tx state.Tx) error {
		r := &txn{Tx: tx, e: e, p: p}
		err := fn(r)
		queued = r.queued
		return err
	})
	if err == nil && queued {
		e.cfg.Kick()
	}
	return err
}

// event starts a notification about p.
func (e *Engine) event(p policy.Policy, kind string, now time.Time) state.Event {
	return state.Event{
		Kind: kind, Policy: p.Name, Provider: p.Provider, ProjectID: p.ProjectID,
		Channel: p.Notify.Channel, VaultPath: p.VaultPath, Time: now,
	}
}

// NotifySink is a sink that takes the events each policy lists in
// notify.on: Slack's.
func NotifySink(name string) Sink {
	return Sink{Name: name, Wants: func(p policy.Policy, kind string) bool { return p.Notify.Wants(kind) }}
}
