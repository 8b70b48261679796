package daemon_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/inventory"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/policy"
)

// TestApp_InventoryOncePerAccountPerRun: three policies on one account
// cost one instance listing per run, before and after a reload; the
// machines on a retiring key show in status, in plan and in the targets
// host rotation reads.
func TestApp_InventoryOncePerAccountPerRun(t *testing.T) {
	e := newEnv(t)
	ps := []policySpec{
		{"a", "@daily", "30d", "1d", "1h"},
		{"b", "@daily", "30d", "1d", "1h"},
		{"c", "@daily", "30d", "1d", "1h"},
	}
	cfg := e.parse(e.config("", ps...))
	app := e.newApp(cfg, func(string) (*policy.Config, error) { return cfg, nil })
	t.Cleanup(func() { _ = app.Close() })
	ctx := context.Background()
	listings := func() int { return e.fake.Requests(cloudtest.RouteSesterceInstances) }

	for _, r := range app.RunOnce(ctx) {
		if r.Err != nil || !r.Rotated {
			t.Fatalf("first run of %s: %+v", r.Policy, r)
		}
	}
	if n := listings(); n != 1 {
		t.Fatalf("a run of 3 policies on one account listed its instances %d times, want 1", n)
	}
	var first string
	for _, k := range e.fake.SesterceKeys() {
		if strings.HasPrefix(k.Name, "a-") {
			first = k.ID
		}
	}
	for i := range 4 {
		e.fake.LaunchSesterceInstance(fmt.Sprintf("box-%d", i), first)
	}
	if _, err := app.RotatePolicies(ctx, []string{"a"}, false, rotate.TriggerSocket); err != nil {
		t.Fatal(err)
	}
	if n := listings(); n != 2 {
		t.Fatalf("after a second run, %d listings, want 2", n)
	}
	if _, err := app.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	app.RunOnce(ctx)
	if n := listings(); n != 3 {
		t.Fatalf("after a reload and a third run, %d listings, want 3", n)
	}

	st, err := app.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Policies {
		want := 0
		if p.Name == "a" {
			want = 4 // on a's retiring first key
		}
		if p.InstancesOnOldKeys != want {
			t.Errorf("status of %s: %d machines on a non-current key, want %d", p.Name, p.InstancesOnOldKeys, want)
		}
	}
	plans, err := app.Plans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, pp := range plans {
		if pp.Policy == "a" && (len(pp.LeftBehind) != 4 || pp.LeftBehind[0].KeyStatus != inventory.KeyRetiring) {
			t.Errorf("plan of a leaves behind %+v; want the 4 machines on its retiring key", pp.LeftBehind)
		}
	}
	targets, err := app.InventoryTargets()
	if err != nil {
		t.Fatal(err)
	}
	if got := targets["a"]; len(got) != 4 || got[0].User != "ubuntu" || got[0].Port != 22 || got[0].Address == "" {
		t.Errorf("targets of a: %+v; want 4 machines with address, user and port", got)
	}
}
