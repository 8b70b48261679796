package rotate_test

import (
	"context"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// clockedHarness is the harness with its clock set to start and the fake
// cloud stamping keys with that clock, so key ages follow the fake time.
func clockedHarness(t *testing.T, start time.Time) *harness {
	t.Helper()
	h := newHarness(t)
	h.clock.t = start
	h.fake = cloudtest.NewServer(cloudtest.Options{Clock: h.clock.Now})
	t.Cleanup(h.fake.Close)
	h.provs = map[string]cloud.Provider{
		"sesterce-test": h.client(policy.TypeSesterce, cloudtest.DefaultSesterceAPIKey),
		"gcore-test":    h.client(policy.TypeGcore, cloudtest.DefaultGcoreAPIKey),
	}
	h.engine = h.newEngine()
	return h
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// windowed is the Sesterce policy with a window Tuesday to Thursday, 10:00
// to 16:00 UTC (2026-11-27 is a Friday, 2026-12-01 a Tuesday).
func windowed() policy.Policy {
	p := sestercePolicy()
	p.Schedule = "0 3 * * *"
	p.Window = &policy.Window{Schedule: "0 10 * * 2-4", Duration: 6 * time.Hour}
	return p
}

// rotatedDetail returns the detail of the policy's last "rotated" audit
// entry and of its last queued "rotated" notification: what the auditor
// and Slack are told about why the key was replaced.
func (h *harness) rotatedDetail(p policy.Policy) (audit, slack string) {
	h.t.Helper()
	if err := h.db.View(func(tx state.Tx) error {
		return tx.ForEachAudit(func(a state.AuditEntry) error {
			if a.Policy == p.Name && a.Event == "rotated" {
				audit = a.Detail
			}
			return nil
		})
	}); err != nil {
		h.t.Fatal(err)
	}
	for _, ev := range h.events() {
		if ev.Policy == p.Name && ev.Kind == "rotated" {
			slack = ev.Detail
		}
	}
	return audit, slack
}

func (h *harness) plan(p policy.Policy) rotate.PolicyPlan {
	h.t.Helper()
	pp, err := h.engine.Plan(context.Background(), p)
	if err != nil {
		h.t.Fatalf("plan %s: %v", p.Name, err)
	}
	return pp
}

func hasAction(pp rotate.PolicyPlan, kind string) bool {
	for _, a := range pp.Actions {
		if a.Kind == kind {
			return true
		}
	}
	return false
}

func TestEngine_maintenanceWindow(t *testing.T) {
	t.Run("a key due on Friday waits for Tuesday 10:00", func(t *testing.T) {
		h := clockedHarness(t, mustTime(t, "2026-11-04T03:00:00Z")) // a Wednesday, outside the window
		p := windowed()
		// The first key has nothing to protect: it is made at once.
		if res := h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule}); !res.Rotated || res.Reason != "no managed key yet" {
			t.Fatalf("first run: rotated %v, reason %q", res.Rotated, res.Reason)
		}
		first := h.assertConverged(p)

		h.clock.t = mustTime(t, "2026-11-27T03:00:00Z") // Friday: due now
		wait := "key is 23d old, due at 2026-11-27T03:00:00Z; waiting for the maintenance window that opens at 2026-12-01T10:00:00Z"
		pp := h.plan(p)
		if pp.Reason != wait || !pp.WaitingForWindow || hasAction(pp, "create") ||
			!pp.NextWindow.Equal(mustTime(t, "2026-12-01T10:00:00Z")) || !pp.WindowCloses.Equal(mustTime(t, "2026-12-01T16:00:00Z")) {
			t.Errorf("plan on Friday: %+v; want to wait for Tuesday 10:00-16:00 with %q and no create", pp, wait)
		}
		for _, day := range []string{"2026-11-27T03:00:00Z", "2026-11-28T03:00:00Z", "2026-11-30T03:00:00Z", "2026-12-01T03:00:00Z"} {
			h.clock.t = mustTime(t, day)
			if res := h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule}); res.Rotated {
				t.Fatalf("%s: rotated outside the window (%s)", day, res.Reason)
			}
		}
		if got := h.assertConverged(p); got.ID != first.ID {
			t.Fatalf("the key changed outside the window: %s -> %s", first.ID, got.ID)
		}

		h.clock.t = mustTime(t, "2026-12-01T10:00:00Z") // the window opens
		res := h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule})
		want := "key is 27d old, due at 2026-11-27T03:00:00Z; maintenance window open until 2026-12-01T16:00:00Z"
		if !res.Rotated || res.Reason != want {
			t.Fatalf("Tuesday 10:00: rotated %v, reason %q; want a rotation with %q", res.Rotated, res.Reason, want)
		}
		if got := h.assertConverged(p); got.ID == first.ID {
			t.Fatal("still the first key after the window opened")
		}
		if audit, slack := h.rotatedDetail(p); audit != want || slack != want {
			t.Errorf("audit detail %q, Slack detail %q; want %q", audit, slack, want)
		}
	})

	t.Run("a key that would pass max_age on Saturday rotates on Friday and says why", func(t *testing.T) {
		h := clockedHarness(t, mustTime(t, "2026-10-29T12:00:00Z")) // max_age 30d: Saturday 2026-11-28 12:00
		p := windowed()
		h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule})
		first := h.assertConverged(p)

		// The daemon was down from then until Friday morning.
		h.clock.t = mustTime(t, "2026-11-27T03:00:00Z")
		want := "key is 28d old, due at 2026-11-21T12:00:00Z; it would pass max_age at 2026-11-28T12:00:00Z before the next maintenance window opens at 2026-12-01T10:00:00Z, so it rotates now"
		if pp := h.plan(p); pp.Reason != want || pp.WaitingForWindow || !hasAction(pp, "create") {
			t.Errorf("plan: %+v; want a create with %q", pp, want)
		}
		res := h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule})
		if !res.Rotated || res.Reason != want {
			t.Fatalf("rotated %v, reason %q; want %q", res.Rotated, res.Reason, want)
		}
		if got := h.assertConverged(p); got.ID == first.ID {
			t.Fatal("the key was not replaced")
		}
		if audit, slack := h.rotatedDetail(p); audit != want || slack != want {
			t.Errorf("audit detail %q, Slack detail %q; want %q", audit, slack, want)
		}
	})

	t.Run("manual and emergency rotations ignore the window", func(t *testing.T) {
		h := clockedHarness(t, mustTime(t, "2026-11-26T12:00:00Z"))
		p := windowed()
		h.mustRun(p, rotate.Options{Trigger: rotate.TriggerSchedule})
		h.clock.t = mustTime(t, "2026-11-27T12:00:00Z") // Friday noon, a fresh key, window closed
		for _, opts := range []rotate.Options{{Trigger: rotate.TriggerCLI, Force: true}, {Trigger: rotate.TriggerCLI, Emergency: true}} {
			before := h.assertConverged(p)
			if res := h.mustRun(p, opts); !res.Rotated || res.Reason != "rotation requested" {
				t.Errorf("%+v: rotated %v, reason %q", opts, res.Rotated, res.Reason)
			}
			if h.assertConverged(p).ID == before.ID {
				t.Errorf("%+v: the key was not replaced", opts)
			}
			h.clock.Advance(time.Minute)
		}
	})
}
