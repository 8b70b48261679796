package rotate

import (
	"context"
	"fmt"
	"time"

	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// Action is one thing a run would do now.
type Action struct {
	Kind    string    // resume, create, make_default, promote, retire, delete, orphan, unmanaged, alert
	KeyID   string    // provider key ID, when the key exists
	KeyName string    // provider key name
	At      time.Time // when (deletions scheduled for later)
	Detail  string
}

// PolicyPlan is the dry run of one policy.
type PolicyPlan struct {
	Policy   string
	Provider string
	Reason   string
	Actions  []Action
	// NextWindow is when the policy's maintenance window opens next, or
	// opened when one is open now, and WindowCloses when that window
	// closes; both zero for a policy without a window. WaitingForWindow
	// says a due key is held back until NextWindow.
	NextWindow       time.Time `json:",omitzero"`
	WindowCloses     time.Time `json:",omitzero"`
	WaitingForWindow bool      `json:",omitzero"`
	// Jitter is the most a scheduled evaluation is delayed (policy jitter).
	Jitter time.Duration `json:",omitzero"`
	// Hosts is what a run would change on each host (policies with hosts).
	Hosts []HostPlan `json:",omitempty"`
	// LeftBehind are the running machines still on a key of the policy
	// that the planned rotation or the next retirement leaves behind (from
	// the last inventory; the daemon fills it in).
	LeftBehind []Machine `json:",omitempty"`
}

// Machine is one running machine a plan names, and why.
type Machine struct {
	InstanceID, Name, Address, Region string
	KeyID, KeyName, KeyStatus         string
	Why                               string
}

// Plan reports what Run would do now without changing anything anywhere:
// it only lists the provider and reads state.
func (e *Engine) Plan(ctx context.Context, p policy.Policy) (PolicyPlan, error) {
	pp := PolicyPlan{Policy: p.Name, Provider: p.Provider, Jitter: p.Jitter}
	if p.Window != nil {
		// Known before anything is read, so even a plan that fails says it.
		pp.NextWindow, pp.WindowCloses = p.Window.Next(e.cfg.Now())
	}
	prov, err := e.provider(p)
	if err != nil {
		return pp, err
	}
	var open []state.Rotation
	err = e.cfg.Journal.View(func(tx state.Tx) error {
		var err error
		open, err = tx.OpenRotationsOf(p.Name)
		return err
	})
	if err != nil {
		return pp, fmt.Errorf("read journal: %w", err)
	}
	for _, r := range open {
		pp.Actions = append(pp.Actions, Action{Kind: "resume", KeyID: r.KeyID, KeyName: r.KeyName,
			Detail: fmt.Sprintf("finish rotation %s from step %s", r.ID, r.Step)})
	}
	obs, err := e.observe(ctx, p, prov, false, nil)
	if err != nil {
		return pp, err
	}
	now := obs.Now
	d := Decide(obs)
	pp.Reason = d.Reason
	pp.NextWindow, pp.WindowCloses, pp.WaitingForWindow = d.NextWindow, d.WindowCloses, d.WaitingForWindow
	for _, r := range d.Missing {
		pp.Actions = append(pp.Actions, Action{Kind: "alert", KeyID: r.KeyID, KeyName: r.Name,
			Detail: "recorded key is gone from the provider (deleted out of band)"})
	}
	for _, k := range d.Unmanaged {
		pp.Actions = append(pp.Actions, Action{Kind: "unmanaged", KeyID: k.ID, KeyName: k.Name,
			Detail: "not made by rotatord; left alone"})
	}
	for _, k := range d.Orphans {
		pp.Actions = append(pp.Actions, Action{Kind: "orphan", KeyID: k.ID, KeyName: k.Name, At: now.Add(p.GracePeriod),
			Detail: "rotatord-named key with no record; delete after the grace period"})
	}
	if d.Rotate && len(open) == 0 {
		name := uniqueName(p, now, d)
		pp.Actions = append(pp.Actions, Action{Kind: "create", KeyName: name,
			Detail: fmt.Sprintf("generate %s key, store it at %s, upload it", keyDesc(p.Key), PendingPath(p.VaultPath))})
		if prov.Capabilities().DefaultKey && p.MakeDefault {
			pp.Actions = append(pp.Actions, Action{Kind: "make_default", KeyName: name})
		}
		pp.Actions = append(pp.Actions, Action{Kind: "promote", KeyName: name, Detail: "write to " + p.VaultPath})
		if d.Current != nil {
			pp.Actions = append(pp.Actions, Action{Kind: "retire", KeyID: d.Current.KeyID, KeyName: d.Current.Name,
				At: now.Add(p.GracePeriod), Detail: "delete after the grace period"})
		}
	}
	for _, r := range d.Retire {
		pp.Actions = append(pp.Actions, Action{Kind: "delete", KeyID: r.KeyID, KeyName: r.Name, At: now, Detail: "grace period over"})
	}
	for _, r := range d.Waiting {
		pp.Actions = append(pp.Actions, Action{Kind: "delete", KeyID: r.KeyID, KeyName: r.Name, At: r.DeleteAfter, Detail: "scheduled"})
	}
	if pp.Hosts, err = e.planHosts(p, d); err != nil {
		return pp, err
	}
	return pp, nil
}

func keyDesc(k policy.KeySpec) string {
	switch k.Type {
	case policy.KeyRSA:
		return fmt.Sprintf("rsa-%d", k.Bits)
	case policy.KeyECDSA:
		return "ecdsa-" + k.Curve
	}
	if k.Generate == policy.GenerateProvider {
		return "provider-generated ed25519"
	}
	return k.Type
}
