package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rotatord/rotatord/internal/report"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/scheduler"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// digestEntry names the report digest's schedule entry; policy names
// cannot start with "@".
const digestEntry = "@report-digest"

// windowEntry ends the name of a policy's window-opening entry.
const windowEntry = "/window"

// schedule builds rt's scheduler, not started: one entry per policy, one
// more at each opening of a policy's maintenance window (so that a key
// waiting for the window rotates as it opens, whatever the policy's own
// schedule), and the digest. Policy names hold no "/", so the window's
// entry name cannot clash.
func (a *App) schedule(rt *runtime) (*scheduler.Scheduler, error) {
	s := scheduler.New(scheduler.Options{Logger: a.log.With("component", "scheduler")})
	for _, p := range rt.cfg.Policies {
		job := func(ctx context.Context) {
			a.runPolicy(ctx, rt, p, rotate.Options{Trigger: rotate.TriggerSchedule})
		}
		if err := s.Add(p.Name, p.Schedule, job, scheduler.WithJitter(p.Jitter)); err != nil {
			return nil, err
		}
		if p.Window != nil {
			if err := s.Add(p.Name+windowEntry, p.Window.Schedule, job, scheduler.WithJitter(p.Jitter)); err != nil {
				return nil, err
			}
		}
	}
	if r := rt.cfg.Report; r != nil && r.Schedule != "" {
		if err := s.Add(digestEntry, r.Schedule, func(ctx context.Context) {
			if a.leading() {
				a.postDigest(ctx, rt)
			}
		}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// postDigest queues the compliance digest for Slack. The outbox carries it,
// so a Slack outage delays it instead of losing it.
func (a *App) postDigest(ctx context.Context, rt *runtime) {
	rep, err := report.Generate(ctx, report.Source{Now: time.Now(), Config: rt.cfg, State: a.db, Providers: rt.providers})
	if err != nil {
		a.log.Error("report digest", "err", err)
		return
	}
	ev := state.Event{Kind: policy.EventReport, Channel: rt.cfg.Report.Channel, Detail: rep.Digest(), Time: time.Now()}
	switch queued, err := a.notifyDaemon(ev); {
	case err != nil:
		a.log.Error("queue report digest", "err", err)
	case !queued:
		a.log.Warn("report digest skipped: Slack is not running (a slack section takes effect at the next restart)")
	default:
		a.log.Info("report digest queued", "channel", ev.Channel)
	}
}

func (a *App) runPolicy(ctx context.Context, rt *runtime, p policy.Policy, opts rotate.Options) rotate.Result {
	ctx, done, err := a.termContext(ctx)
	if err != nil {
		return rotate.Result{Policy: p.Name} // a standby: the leader runs the schedules
	}
	defer done()
	start := time.Now()
	res, err := rt.engine.Run(ctx, p, opts)
	res.Err = err
	a.met.Observe(p, res)
	if errors.Is(err, rotate.ErrBusy) {
		a.log.Info("run skipped: policy already in flight", "policy", p.Name, "trigger", opts.Trigger)
		return res
	}
	a.refreshInventory(ctx, rt, []policy.Policy{p}, scheduledSince(start, p))
	return res
}

// sweepLoop deletes retired keys when their grace ends and, once a day,
// prunes the audit log past its retention.
func (a *App) sweepLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.SweepInterval)
	defer t.Stop()
	var pruned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(pruned) >= auditPruneEvery {
			a.pruneAudit(ctx)
			pruned = time.Now()
		}
		rt := a.runtime()
		deleted := false
		for _, p := range rt.cfg.Policies {
			ids, err := rt.engine.Sweep(ctx, p)
			if err != nil && ctx.Err() == nil {
				a.log.Error("retire sweep", "policy", p.Name, "err", err)
			}
			deleted = deleted || len(ids) > 0
		}
		if deleted {
			a.evaluateExposure(ctx, rt)
		}
	}
}

// RunOnce evaluates every policy once (run -once): resume, reconcile,
// rotate what is due, sweep, and deliver notifications.
func (a *App) RunOnce(ctx context.Context) []rotate.Result {
	rt := a.runtime()
	ctx, release, err := a.leadOnce(ctx)
	if err != nil {
		a.log.Error("run -once", "err", err)
		return nil
	}
	defer release()
	results := a.runAll(ctx, rt, rt.cfg.Policies, rotate.Options{Trigger: rotate.TriggerCLI})
	a.FlushNotifications(ctx)
	return results
}

// RotatePolicies rotates the named policies now (all when names is empty).
// It waits for a run of the same policy in flight instead of skipping, so
// every trigger yields exactly one new key per policy. Once a stop has
// begun it refuses with ErrStopping; the ones it accepted finish before
// the state closes.
func (a *App) RotatePolicies(ctx context.Context, names []string, emergency bool, trigger string) ([]rotate.Result, error) {
	a.manualMu.Lock()
	if a.manualClosed {
		a.manualMu.Unlock()
		return nil, ErrStopping
	}
	a.manual.Add(1)
	a.manualMu.Unlock()
	defer a.manual.Done()
	// A graceful stop that runs out of time cancels the run too.
	ctx, cancel := context.WithCancel(ctx)
	defer context.AfterFunc(a.halt, cancel)()
	defer cancel()
	ctx, done, err := a.manualTerm(ctx)
	if err != nil {
		return nil, err
	}
	defer done()

	rt := a.runtime()
	ps := rt.cfg.Policies
	if len(names) > 0 {
		ps = nil
		for _, n := range names {
			p, ok := rt.cfg.PolicyByName(n)
			if !ok {
				return nil, fmt.Errorf("unknown policy %q", n)
			}
			ps = append(ps, p)
		}
	}
	return a.runAll(ctx, rt, ps, rotate.Options{Force: true, Emergency: emergency, Wait: true, Trigger: trigger}), nil
}

func (a *App) runAll(ctx context.Context, rt *runtime, ps []policy.Policy, opts rotate.Options) []rotate.Result {
	start := time.Now()
	results := rt.engine.RunAll(ctx, ps, opts)
	for i, res := range results {
		a.met.Observe(ps[i], res)
	}
	a.refreshInventory(ctx, rt, ps, start)
	return results
}

// Plans is the dry run of every policy.
func (a *App) Plans(ctx context.Context) ([]rotate.PolicyPlan, error) {
	rt := a.runtime()
	var plans []rotate.PolicyPlan
	var errs []error
	for _, p := range rt.cfg.Policies {
		pp, err := rt.engine.Plan(ctx, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy %q: %w", p.Name, err))
		}
		plans = append(plans, pp)
	}
	if err := a.leftBehind(rt, plans); err != nil {
		errs = append(errs, err)
	}
	return plans, errors.Join(errs...)
}
