package main_test

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/report"
)

// reportJSON runs `rotatord report -format json` with extra flags and
// decodes it.
func (e *env) reportJSON(t *testing.T, extra ...string) (*report.Report, string, int) {
	t.Helper()
	args := append([]string{"report", "-config", e.cfgPath, "-format", "json"}, extra...)
	out, stderr, code := e.rotatord(nil, args...)
	var r report.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("report: exit %d, undecodable JSON: %v\n%s%s", code, err, out, stderr)
	}
	return &r, out + stderr, code
}

// TestInventory_ExposedAfterRotationUntilMachinesGo is the story
// through the real binary: five machines were launched with a policy's
// key; a rotation with grace 0 retires it; the report shows the old key
// exposed with exactly those five machines, -fail-on exposed exits 3 (and
// -fail-on overdue does not); terminating the five clears it on the next
// run. No API key appears in any output.
func TestInventory_ExposedAfterRotationUntilMachinesGo(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	hook := &webhook{}
	slack := httptest.NewServer(hook)
	defer slack.Close()
	t.Setenv("E2E_WEBHOOK", slack.URL+"/services/T000/B000/secretpart")
	ps := []policyYAML{{Name: "train", Gcore: true, Grace: "0s"}, {Name: "gpu"}}
	e.writeConfig(ps, "slack: {webhook_url_env: E2E_WEBHOOK}\n")
	var outputs []string
	run := func(args ...string) (string, int) {
		t.Helper()
		out, stderr, code := e.rotatord(nil, args...)
		outputs = append(outputs, out, stderr)
		return out + stderr, code
	}
	if out, code := run("run", "-config", e.cfgPath, "-once"); code != 0 {
		t.Fatalf("first run: exit %d\n%s", code, out)
	}
	old := e.assertConverged(ps[0], "first key")
	gpuKey := e.assertConverged(ps[1], "gpu's first key")
	var five []string
	for i := range 5 {
		five = append(five, e.fake.LaunchGcoreInstance(e2eProject, int64(1+i%2), fmt.Sprintf("trainer-%d", i), old.Name).ID)
	}
	e.fake.LaunchGcoreInstance(e2eProject, 1, "someone-elses", "bob-laptop")
	for i := range 2 {
		e.fake.LaunchSesterceInstance(fmt.Sprintf("notebook-%d", i), gpuKey.ID)
	}

	if out, code := run("rotate", "-config", e.cfgPath, "-policy", "train"); code != 0 || !strings.Contains(out, "train: rotated") {
		t.Fatalf("rotate train: exit %d\n%s", code, out)
	}
	r, out, code := e.reportJSON(t, "-fail-on", "exposed")
	outputs = append(outputs, out)
	if code != 3 {
		t.Fatalf("report -fail-on exposed after the rotation: exit %d, want 3\n%s", code, out)
	}
	var onOld []string
	for _, in := range r.Instances {
		if in.KeyName == old.Name {
			if in.KeyStatus != "exposed" || in.Policy != "train" || in.Address == "" {
				t.Errorf("machine %s on the retired key: %+v; want key_status exposed, policy train, an address", in.Name, in)
			}
			onOld = append(onOld, in.InstanceID)
		}
	}
	if strings.Join(sorted(onOld), ",") != strings.Join(sorted(five), ",") {
		t.Errorf("machines on the retired key %v; want exactly the five launched with it %v", onOld, five)
	}
	exposedRow := false
	for _, k := range r.Keys {
		if k.KeyID == old.ID {
			exposedRow = k.Status == "exposed"
		}
	}
	if !exposedRow || r.Summary["exposed"] != 1 {
		t.Errorf("the retired key's row is not exposed (summary %v)", r.Summary)
	}
	// The Sesterce account was not part of that run: never listed, its
	// machines are not invented.
	if _, _, code := e.rotatord(nil, "report", "-config", e.cfgPath, "-fail-on", "overdue"); code != 0 {
		t.Errorf("report -fail-on overdue: exit %d; an exposed retired key is not overdue", code)
	}
	if out, code := run("report", "-config", e.cfgPath, "-fail-on", "overdue,exposed"); code != 3 || !strings.Contains(out, "INSTANCES") || !strings.Contains(out, "trainer-0") {
		t.Errorf("table report -fail-on overdue,exposed: exit %d, want 3 with the instances section\n%s", code, out)
	}
	// Slack heard of it once, naming the machines.
	const exposedHeader = "a retired or expired key still opens running machines"
	if n := hook.count(exposedHeader); n != 1 || !strings.Contains(hook.all(), "trainer-0") {
		t.Errorf("Slack got %d exposed message(s), want 1 naming trainer-0:\n%s", n, hook.all())
	}
	// The audit log records the exposure, once.
	if out, code := run("audit", "export", "-config", e.cfgPath); code != 0 || strings.Count(out, `"event":"exposed"`) != 1 || !strings.Contains(out, old.ID) {
		t.Errorf("audit export: exit %d; want one exposed entry naming %s:\n%s", code, old.ID, out)
	}
	if out, code := run("plan", "-config", e.cfgPath); code != 0 || !strings.Contains(out, "trainer-0") {
		t.Errorf("plan does not name the machines left on the retired key: exit %d\n%s", code, out)
	}

	// The machines go; the next run sees it.
	for _, id := range five {
		if !e.fake.TerminateInstance(id) {
			t.Fatalf("terminate %s", id)
		}
	}
	if out, code := run("run", "-config", e.cfgPath, "-once"); code != 0 {
		t.Fatalf("run after terminating: exit %d\n%s", code, out)
	}
	if n := hook.count(exposedHeader); n != 1 {
		t.Errorf("after more runs Slack got %d exposed messages, want still 1 (once per key)", n)
	}
	r, out, code = e.reportJSON(t, "-fail-on", "exposed")
	outputs = append(outputs, out)
	if code != 0 || r.Exposed() {
		t.Errorf("after the five machines were terminated: exit %d, exposed %v\n%s", code, r.Exposed(), out)
	}
	if r.InstanceSummary["current"] != 2 || r.InstanceSummary["unmanaged"] != 1 || len(r.Instances) != 3 {
		t.Errorf("instances after the next run: %v (%d); want gpu's 2 notebooks current and bob's machine unmanaged", r.InstanceSummary, len(r.Instances))
	}
	assertNoAPIKey(t, append(outputs, hook.all())...)
}

// TestInventory_FailedListingLeavesRotationsAlone: a listing that fails (a
// 5xx storm, malformed JSON, a 50 MiB body) neither fails nor stops the
// rotation of the run; the report says the inventory is stale and since
// when; the daemon never panics.
func TestInventory_FailedListingLeavesRotationsAlone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults []cloudtest.Fault
	}{
		{"5xx storm", []cloudtest.Fault{
			{Route: cloudtest.RouteGcoreRegions, Kind: cloudtest.FaultStatus, Status: 503},
			{Route: cloudtest.RouteSesterceInstances, Kind: cloudtest.FaultStatus, Status: 502},
		}},
		{"malformed JSON", []cloudtest.Fault{
			{Route: cloudtest.RouteGcoreInstances, Kind: cloudtest.FaultReply, Status: 200, Body: `{"count": 9, "results": [{"id": "x",`},
			{Route: cloudtest.RouteSesterceInstances, Kind: cloudtest.FaultReply, Status: 200, Body: `[{"_id": `},
		}},
		{"credential echoed", []cloudtest.Fault{
			{Route: cloudtest.RouteGcoreRegions, Kind: cloudtest.FaultEcho, Status: 401},
			{Route: cloudtest.RouteSesterceInstances, Kind: cloudtest.FaultEcho, Status: 403},
		}},
		{"50 MiB body", []cloudtest.Fault{
			{Route: cloudtest.RouteGcoreRegions, Kind: cloudtest.FaultHuge, Size: 50 << 20},
			{Route: cloudtest.RouteSesterceInstances, Kind: cloudtest.FaultHuge, Size: 50 << 20},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, cloudtest.Options{})
			ps := []policyYAML{{Name: "train", Gcore: true}, {Name: "gpu"}}
			e.writeConfig(ps, "")
			out, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once")
			if code != 0 {
				t.Fatalf("first run: exit %d\n%s%s", code, out, stderr)
			}
			first := e.assertConverged(ps[0], "first run")
			e.fake.LaunchGcoreInstance(e2eProject, 1, "trainer", first.Name)
			if err := e.fake.SetFaults(tc.faults); err != nil {
				t.Fatal(err)
			}
			// The rotation goes through although every listing fails.
			out, stderr, code = e.rotatord(nil, "rotate", "-config", e.cfgPath, "-all")
			if code != 0 || !strings.Contains(out, "train: rotated") || !strings.Contains(out, "gpu: rotated") {
				t.Fatalf("rotate -all while listings fail: exit %d\n%s%s", code, out, stderr)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("rotatord panicked:\n%s", stderr)
			}
			if !strings.Contains(stderr, "instance listing failed; the inventory is stale") {
				t.Errorf("the failed listing was not logged:\n%s", stderr)
			}
			if cur := e.assertConverged(ps[0], "after rotate"); cur.ID == first.ID {
				t.Errorf("train was not rotated")
			}
			e.fake.ClearFaults()
			table, tstderr, code := e.rotatord(nil, "report", "-config", e.cfgPath)
			if code != 0 || !strings.Contains(table, "inventory STALE since ") {
				t.Errorf("report does not mark the inventory stale: exit %d\n%s%s", code, table, tstderr)
			}
			r, rout, _ := e.reportJSON(t)
			stale := 0
			for _, inv := range r.Inventory {
				if inv.Stale && inv.StaleSince != nil && inv.Error != "" {
					stale++
				}
			}
			if stale != 2 {
				t.Errorf("%d stale accounts with since and error, want 2:\n%s", stale, rout)
			}
			raw, err := os.ReadFile(e.statePath())
			if err != nil {
				t.Fatal(err)
			}
			assertNoAPIKey(t, out, stderr, table, tstderr, rout, string(raw))
		})
	}
}

func assertNoAPIKey(t *testing.T, texts ...string) {
	t.Helper()
	for _, text := range texts {
		for _, secret := range []string{cloudtest.DefaultSesterceAPIKey.Reveal(), cloudtest.DefaultGcoreAPIKey.Reveal(), vaultSrv.RootToken.Reveal(), "PRIVATE KEY"} {
			if strings.Contains(text, secret) {
				t.Errorf("output contains a secret (%.8s...):\n%.400s", secret, text)
			}
		}
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
