package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// ErrStopping refuses work that would outlive a stop in progress.
var ErrStopping = errors.New("rotatord is stopping; try again once it runs")

// Reload re-reads the config file the daemon runs and applies it: load,
// validate, build, halt the old schedules, swap, start the new ones, and
// let the old runs in flight finish. SIGHUP and the control socket both
// come here, and one mutex makes each reload a single step, so overlapping
// reloads apply one after the other and the last one read wins.
//
// A bad file, or one whose parts cannot be built, changes nothing: the
// running config stays in force, the error is logged with every file:line,
// the reload gauge goes to 0 and Slack is told. Settings that only a
// restart applies (the long-lived clients) are named in the result and the
// log; until the restart their old values stay in force.
func (a *App) Reload(ctx context.Context) (control.ReloadResult, error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.stopping {
		return control.ReloadResult{}, ErrStopping
	}
	a.sdNotify("RELOADING=1")
	defer a.sdNotify("READY=1")
	old := a.runtime()
	cfg, err := a.opts.Load(old.cfg.File)
	if err != nil {
		a.reloadFailed(err)
		return control.ReloadResult{}, err
	}
	rt, err := a.build(cfg)
	if err != nil {
		a.reloadFailed(err)
		return control.ReloadResult{}, err
	}
	res := control.ReloadResult{Policies: len(cfg.Policies), RestartRequired: restartRequired(old.cfg, cfg), Role: a.role()}
	if res.Role == control.RoleStandby {
		res.Leader, _ = a.leaderInfo(ctx)
	}
	if a.running {
		a.retireScheduler(old)
	}
	a.mu.Lock()
	a.cur = rt
	a.reloadErr = ""
	a.mu.Unlock()
	if a.running {
		a.startScheduler(rt)
	}
	a.met.ConfigLoaded(true, rt.loaded)
	a.auditDaemon(audit.Entry{Event: audit.EventReload, Trigger: "reload",
		Detail: fmt.Sprintf("config %s reloaded: %d polic(ies)", cfg.File, res.Policies)})
	if len(res.RestartRequired) > 0 {
		a.log.Warn("config reloaded; some changed settings take effect only at the next restart",
			"policies", res.Policies, "restart_required", res.RestartRequired)
	} else {
		a.log.Info("config reloaded", "policies", res.Policies)
	}
	return res, nil
}

// reloadFailed records a reload that did not get past loading or
// building: the log names every error, the metric goes to 0, Slack is told.
func (a *App) reloadFailed(err error) {
	a.met.ConfigLoaded(false, time.Time{})
	a.mu.Lock()
	a.reloadErr = err.Error()
	a.mu.Unlock()
	a.log.Error("reload failed; keeping the running config", "err", err)
	a.auditDaemon(audit.Entry{Event: audit.EventReload, Trigger: "reload", Detail: "reload failed; the running config stays in force: " + err.Error()})
	if _, err := a.notifyDaemon(state.Event{Kind: policy.EventReloadFailed, Error: err.Error(), Time: time.Now()}); err != nil {
		a.log.Error("queue reload failure notice", "err", err)
	}
}

// restartRequired names the settings that differ between two configs and
// that only a restart applies: the state store, Vault and Slack clients,
// the control socket and the metrics listener live for the process.
func restartRequired(old, cur *policy.Config) []string {
	var out []string
	if !old.State.Equal(cur.State) {
		out = append(out, "state")
	}
	if old.Vault != cur.Vault {
		out = append(out, "vault")
	}
	switch {
	case (old.Slack == nil) != (cur.Slack == nil):
		out = append(out, "slack")
	case old.Slack != nil && *old.Slack != *cur.Slack:
		out = append(out, "slack")
	}
	if !slices.EqualFunc(old.Webhooks, cur.Webhooks, sameWebhook) {
		out = append(out, "webhooks")
	}
	if old.Control != cur.Control {
		out = append(out, "control.socket")
	}
	if old.Metrics != cur.Metrics {
		out = append(out, "metrics.listen")
	}
	return out
}

// sameWebhook compares two webhook settings, ignoring where in the file
// they are written.
func sameWebhook(a, b policy.Webhook) bool {
	a.Line, b.Line = 0, 0
	return a.Name == b.Name && a.URLEnv == b.URLEnv && a.URLFile == b.URLFile && a.SecretEnv == b.SecretEnv &&
		a.SecretFile == b.SecretFile && a.Insecure == b.Insecure && slices.Equal(a.Events, b.Events)
}
