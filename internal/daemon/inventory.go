package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/inventory"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// inventoryTimeout bounds one account's listing. It runs after the
// rotations of a run, but a graceful stop waits for it.
const inventoryTimeout = 2 * time.Minute

// newInventory builds the config-scoped inventory collector over the
// provider clients of one config. The listings it shares across runs are
// recorded in a.flights, which lives for the process, so that a reload
// does not make the next run list an account twice.
func (a *App) newInventory(cfg *policy.Config, provs map[string]cloud.Provider) *inventory.Collector {
	listers := make(map[string]inventory.Lister, len(provs))
	for name, p := range provs {
		if l, ok := p.(inventory.Lister); ok {
			listers[name] = l
		}
	}
	sinks := a.sinks()
	return inventory.New(inventory.Config{
		Store: a.db, Config: cfg, Listers: listers, Flights: a.flights,
		Logger: a.log.With("component", "inventory"), Kick: a.kick, Timeout: inventoryTimeout,
		Sinks: func(p policy.Policy, kind string) []string {
			var out []string
			for _, s := range sinks {
				if s.Wants(p, kind) {
					out = append(out, s.Name)
				}
			}
			return out
		},
	})
}

// refreshInventory lists the machines of the accounts of ps after their
// rotations ran (since is when the run began): one listing per account per
// run, whatever the number of its policies. It runs after the rotations,
// never before them or in their way, and a listing that fails is stored as
// stale and logged; only a state error is logged here.
func (a *App) refreshInventory(ctx context.Context, rt *runtime, ps []policy.Policy, since time.Time) {
	if rt.inv == nil || a.opts.ReadOnly {
		return
	}
	if err := rt.inv.Refresh(ctx, inventory.Accounts(ps), since); err != nil && ctx.Err() == nil {
		a.log.Error("inventory", "err", err)
	}
}

// scheduledSince is the oldest listing a scheduled run of p reuses. The
// policies of one account on one schedule start up to their jitter apart
// (and a little more, as runs queue): one tick of the schedule is one run
// of the account, so a listing made since the tick began serves them all.
// Manual runs (rotate, SIGUSR1, run -once) list afresh.
func scheduledSince(start time.Time, p policy.Policy) time.Time {
	return start.Add(-(p.Jitter + time.Minute))
}

// evaluateExposure announces keys that became exposed without a listing
// (the retire sweep deleted a key machines still run with).
func (a *App) evaluateExposure(ctx context.Context, rt *runtime) {
	if rt.inv == nil {
		return
	}
	if err := rt.inv.Evaluate(ctx); err != nil && ctx.Err() == nil {
		a.log.Error("inventory: evaluate exposure", "err", err)
	}
}

// InventoryTargets returns, per policy, the running machines the last
// listings attributed to the policy's keys, with their address and, where
// the provider says, login user and port: what host rotation
// (hosts.discover, DESIGN.md §9.2) dials.
func (a *App) InventoryTargets() (map[string][]inventory.Target, error) {
	return inventory.Targets(a.db, a.runtime().cfg, time.Now())
}

// leftBehind adds to each plan the machines still running with a key of
// the policy that the planned rotation or the next retirement leaves
// behind: on the current key when a rotation is planned, on a retiring
// or orphaned key (deleted next), and on a key already exposed.
func (a *App) leftBehind(rt *runtime, plans []rotate.PolicyPlan) error {
	var res *inventory.Result
	if err := a.db.View(func(tx state.Tx) (err error) { res, err = inventory.Attribute(tx, rt.cfg, time.Now()); return err }); err != nil {
		return fmt.Errorf("read inventory: %w", err)
	}
	stale := map[inventory.Account]string{}
	for _, acc := range res.Accounts {
		if acc.Stale() && !acc.Never {
			stale[acc.Account] = "inventory stale since " + acc.StaleSince.UTC().Format(time.RFC3339)
		}
	}
	for i := range plans {
		pp := &plans[i]
		rotates := false
		for _, act := range pp.Actions {
			if act.Kind == "create" {
				rotates = true
			}
		}
		for _, in := range res.Instances {
			if in.Policy != pp.Policy {
				continue
			}
			why := ""
			switch in.KeyStatus {
			case inventory.KeyCurrent:
				if rotates {
					why = "the planned rotation retires this key"
				}
			case inventory.KeyRetiring, inventory.KeyOrphaned:
				why = "the next retirement deletes this key"
			case inventory.KeyExposed:
				why = "key already exposed"
			}
			if why == "" {
				continue
			}
			if s := stale[inventory.Account{Provider: in.Provider, ProjectID: in.ProjectID}]; s != "" {
				why += " (" + s + ")"
			}
			pp.LeftBehind = append(pp.LeftBehind, rotate.Machine{
				InstanceID: in.ID, Name: in.Name, Address: in.Address, Region: in.Region,
				KeyID: in.KeyID, KeyName: in.KeyName, KeyStatus: in.KeyStatus, Why: why,
			})
		}
	}
	return nil
}

// notCurrent counts, per policy, the machines running with a key that is
// not the policy's current one, from the last listings.
func (a *App) notCurrent(tx state.Tx, cfg *policy.Config) (map[string]int, error) {
	res, err := inventory.Attribute(tx, cfg, time.Now())
	if err != nil {
		return nil, err
	}
	return res.NotCurrent(), nil
}
