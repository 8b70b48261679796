package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// retire (step 7, the sweep) deletes retiring and orphaned keys whose grace
// period has passed. Deletion is the only irreversible step, so it runs only
// while the policy has an active key that is on the provider and stored in
// Vault, and never for the provider's default key.
func (e *Engine) retire(ctx context.Context, p policy.Policy, prov cloud.Provider, keys []cloud.Key, d Decision) ([]string, error) {
	if len(d.Retire) == 0 {
		return nil, nil
	}
	if d.Current == nil {
		e.log.Warn("retire sweep skipped: the policy has no active key", "policy", p.Name)
		return nil, nil
	}
	isDefault := make(map[string]bool)
	for _, k := range keys {
		isDefault[k.ID] = k.Default
	}
	var deleted []string
	var errs []error
	for _, rec := range d.Retire {
		if rec.KeyID == d.Current.KeyID || isDefault[rec.KeyID] {
			e.log.Warn("not deleting the provider's default key", "policy", p.Name, "key_id", rec.KeyID)
			continue
		}
		e.cfg.Hook("before:delete")
		err := prov.Delete(ctx, p.ProjectID, rec.KeyID)
		if err != nil && !errors.Is(err, cloud.ErrNotFound) {
			errs = append(errs, fmt.Errorf("delete key %s: %w", rec.KeyID, err))
			continue
		}
		e.cfg.Hook("after:delete")
		now := e.cfg.Now()
		err = e.commit(p, func(tx *txn) error {
			r := rec
			r.Status = state.KeyDeleted
			r.DeletedAt = now
			if err := tx.PutKey(r); err != nil {
				return err
			}
			detail := "grace period over"
			if rec.Status == state.KeyOrphaned {
				detail = "orphaned key removed after the grace period"
			}
			if err := tx.audit(audit.Entry{Event: audit.EventDeleted, Trigger: TriggerSchedule, KeyID: r.KeyID, KeyName: r.Name,
				Fingerprint: r.Fingerprint, RotationID: r.RotationID, Detail: detail}); err != nil {
				return err
			}
			ev := e.event(p, policy.EventDeleted, now)
			ev.KeyID, ev.KeyName, ev.OldFingerprint, ev.Detail = r.KeyID, r.Name, r.Fingerprint, detail
			return tx.notify(ev)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("record deletion of %s: %w", rec.KeyID, err))
			continue
		}
		e.log.Info("deleted retired key", "policy", p.Name, "key_id", rec.KeyID, "fingerprint", rec.Fingerprint)
		deleted = append(deleted, rec.KeyID)
	}
	return deleted, errors.Join(errs...)
}

// Backoff after consecutive failures: 1m, 2m, 4m, ... capped at 1h, unless
// the engine was configured otherwise.
func (e *Engine) backoff(failures int) time.Duration {
	base, max := e.cfg.BackoffBase, e.cfg.BackoffMax
	if base <= 0 {
		base = time.Minute
	}
	if max <= 0 {
		max = time.Hour
	}
	d := base
	for i := 1; i < failures && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// recordOutcome updates the policy's status after a run and queues the
// alerts that change with it: failed on the first failure, failing once
// max_failures is reached, recovered on the first success after failures.
// A completed rotation recorded its success in its final commit already.
func (e *Engine) recordOutcome(p policy.Policy, opts Options, res *Result, runErr error) error {
	if errors.Is(runErr, ErrBusy) || errors.Is(runErr, context.Canceled) || (runErr == nil && res.Rotated) {
		return nil
	}
	err := e.commit(p, func(tx *txn) error {
		return tx.applyOutcome(e.cfg.Now(), false, runErr, res.RotationID, res.KeyID, res.KeyName, res.Fingerprint, opts.Trigger)
	})
	if runErr != nil {
		e.log.Error("rotation failed", "policy", p.Name, "rotation_id", res.RotationID, "err", runErr)
	}
	return err
}

// applyOutcome writes one run's outcome into the policy's status and
// queues the alert the change calls for.
func (tx *txn) applyOutcome(now time.Time, rotated bool, runErr error, rotationID, keyID, keyName, fp, trigger string) error {
	e, p := tx.e, tx.p
	st, err := tx.PolicyStatus(p.Name)
	if err != nil {
		return err
	}
	st.Name = p.Name
	st.LastAttempt = now
	var ev *state.Event
	if runErr == nil {
		if rotated {
			st.LastSuccess = now
			st.LastResult = "rotated"
			st.OverdueAlerted = false
			st.CurrentKeyID = keyID
		} else {
			st.LastResult = "ok"
		}
		if st.ConsecutiveFailures > 0 {
			x := e.event(p, policy.EventRecovered, now)
			x.Detail = fmt.Sprintf("recovered after %d failed attempt(s)", st.ConsecutiveFailures)
			ev = &x
		}
		st.ConsecutiveFailures, st.NextRetry, st.Failing, st.LastError = 0, time.Time{}, false, ""
	} else {
		st.ConsecutiveFailures++
		st.NextRetry = now.Add(e.backoff(st.ConsecutiveFailures))
		st.LastError = runErr.Error()
		st.LastResult = "failed"
		switch {
		case st.ConsecutiveFailures >= p.MaxFailures && !st.Failing:
			st.Failing = true
			x := e.event(p, policy.EventFailing, now)
			x.Error = runErr.Error()
			x.Detail = fmt.Sprintf("%d consecutive failures; next attempt at %s", st.ConsecutiveFailures, st.NextRetry.UTC().Format(time.RFC3339))
			ev = &x
		case st.ConsecutiveFailures == 1:
			x := e.event(p, policy.EventFailed, now)
			x.Error = runErr.Error()
			x.Detail = "next attempt at " + st.NextRetry.UTC().Format(time.RFC3339)
			ev = &x
		}
	}
	if err := tx.PutPolicyStatus(st); err != nil {
		return err
	}
	if runErr != nil {
		if err := tx.auditNoKeyOK(audit.Entry{Event: audit.EventRotationFailed, Trigger: trigger, KeyID: keyID, KeyName: keyName,
			Fingerprint: fp, RotationID: rotationID, Detail: runErr.Error()}); err != nil {
			return err
		}
	}
	if ev == nil {
		return nil
	}
	return tx.notify(*ev)
}

// checkOverdue alerts once when the policy's active key is older than
// max_age. It only reads unless there is something to alert.
func (e *Engine) checkOverdue(p policy.Policy) error {
	now := e.cfg.Now()
	overdue := func(tx state.Tx) (*state.KeyRecord, bool, error) {
		recs, err := tx.Keys(p.Name)
		if err != nil {
			return nil, false, err
		}
		cur, ok := state.Current(recs)
		if !ok || now.Sub(cur.CreatedAt) <= p.MaxAge {
			return nil, false, nil
		}
		st, err := tx.PolicyStatus(p.Name)
		return &cur, err == nil && !st.OverdueAlerted, err
	}
	var due bool
	if err := e.cfg.Journal.View(func(tx state.Tx) (err error) { _, due, err = overdue(tx); return err }); err != nil || !due {
		return err
	}
	return e.commit(p, func(tx *txn) error {
		cur, due, err := overdue(tx)
		if err != nil || !due {
			return err
		}
		st, err := tx.PolicyStatus(p.Name)
		if err != nil {
			return err
		}
		st.Name = p.Name
		st.OverdueAlerted = true
		if err := tx.PutPolicyStatus(st); err != nil {
			return err
		}
		ev := e.event(p, policy.EventOverdue, now)
		ev.KeyID, ev.KeyName, ev.OldFingerprint = cur.KeyID, cur.Name, cur.Fingerprint
		ev.Detail = fmt.Sprintf("key is %s old; max_age is %s", FormatAge(now.Sub(cur.CreatedAt)), FormatAge(p.MaxAge))
		if err := tx.auditNoKeyOK(audit.Entry{Event: audit.EventOverdue, KeyID: cur.KeyID, KeyName: cur.Name,
			Fingerprint: cur.Fingerprint, Detail: ev.Detail}); err != nil {
			return err
		}
		return tx.notify(ev)
	})
}
