package daemon

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/report"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
)

var _ control.Backend = (*App)(nil)

// Status is the daemon's view for `rotatord status`.
func (a *App) Status(ctx context.Context) (control.Status, error) {
	rt := a.runtime()
	now := time.Now()
	st := control.Status{
		Version: a.opts.Version, PID: os.Getpid(), StartedAt: a.started,
		ConfigFile: rt.cfg.File, ConfigLoadedAt: rt.loaded,
	}
	a.mu.RLock()
	st.LastReloadOK, st.LastReloadErr = a.reloadErr == "", a.reloadErr
	a.mu.RUnlock()
	if a.vault != nil {
		up, why := a.vault.Health()
		st.Vault = &control.VaultStatus{Up: up, Error: why}
	}
	a.fillRole(ctx, &st)
	err := a.db.View(func(tx state.Tx) error {
		n, err := tx.OutboxLen()
		if err != nil {
			return err
		}
		st.OutboxPending = n
		old, err := a.notCurrent(tx, rt.cfg)
		if err != nil {
			return err
		}
		for _, p := range rt.cfg.Policies {
			ps := control.PolicyStatus{Name: p.Name, Provider: p.Provider, MaxAgeSeconds: int64(p.MaxAge / time.Second), InFlight: a.locks.Busy(p.Name)}
			if rt.sched != nil {
				ps.NextRun = rt.sched.Next(p.Name)
			}
			if p.Window != nil {
				ps.NextWindow, ps.WindowCloses = p.Window.Next(now)
			}
			pst, err := tx.PolicyStatus(p.Name)
			if err != nil {
				return err
			}
			ps.LastAttempt, ps.LastSuccess, ps.LastResult, ps.LastError = pst.LastAttempt, pst.LastSuccess, pst.LastResult, pst.LastError
			ps.ConsecutiveFailures, ps.Failing = pst.ConsecutiveFailures, pst.Failing
			recs, err := tx.Keys(p.Name)
			if err != nil {
				return err
			}
			if cur, ok := state.Current(recs); ok {
				ps.CurrentKeyID, ps.CurrentKeyName, ps.Fingerprint, ps.KeyCreatedAt = cur.KeyID, cur.Name, cur.Fingerprint, cur.CreatedAt
				ps.AgeSeconds = int64(now.Sub(cur.CreatedAt) / time.Second)
			}
			for _, r := range recs {
				if r.Status == state.KeyRetiring {
					ps.RetiringKeys++
				}
			}
			ps.InstancesOnOldKeys = old[p.Name]
			if p.Hosts != nil {
				rows, err := report.PolicyHosts(tx, &p, now)
				if err != nil {
					return err
				}
				ps.Hosts = report.CountHosts(rows)
			}
			st.Policies = append(st.Policies, ps)
		}
		return nil
	})
	return st, err
}

// Rotate serves `rotatord rotate` through the socket.
func (a *App) Rotate(ctx context.Context, req control.RotateRequest) ([]control.RotateResult, error) {
	trigger := req.Trigger
	if trigger == "" {
		trigger = rotate.TriggerSocket
	}
	results, err := a.RotatePolicies(ctx, req.Policies, req.Emergency, trigger)
	if err != nil {
		return nil, err
	}
	return Results(results), nil
}

// Results converts engine results to what the socket carries.
func Results(results []rotate.Result) []control.RotateResult {
	out := make([]control.RotateResult, len(results))
	for i, r := range results {
		out[i] = control.RotateResult{Policy: r.Policy, Rotated: r.Rotated, KeyID: r.KeyID, KeyName: r.KeyName,
			Fingerprint: r.Fingerprint, Deleted: r.Deleted, Reason: r.Reason}
		if r.Err != nil {
			out[i].Error = r.Err.Error()
		}
	}
	return out
}

// Report builds the compliance report from state and live provider listings.
func (a *App) Report(ctx context.Context) (json.RawMessage, error) {
	rep, err := a.BuildReport(ctx)
	if err != nil {
		return nil, err
	}
	return json.Marshal(rep)
}

// Plan serves `rotatord plan` through the socket: the dry run, as JSON.
// Policies that could not be planned (a provider down) are named in Error
// next to the plans of the others.
func (a *App) Plan(ctx context.Context) (json.RawMessage, error) {
	plans, err := a.Plans(ctx)
	return json.Marshal(PlanReply{Plans: plans, Error: errString(err)})
}

// PlanReply is the socket's answer to plan.
type PlanReply struct {
	Plans []rotate.PolicyPlan `json:"plans"`
	Error string              `json:"error,omitempty"`
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// BuildReport builds the compliance report.
func (a *App) BuildReport(ctx context.Context) (*report.Report, error) {
	rt := a.runtime()
	return report.Generate(ctx, report.Source{Now: time.Now(), Config: rt.cfg, State: a.db, Providers: rt.providers})
}
