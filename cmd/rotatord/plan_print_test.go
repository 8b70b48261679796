package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/rotate"
)

// plan names the maintenance window a due key waits for, or the one that
// is open, and the policy's jitter.
func TestPrintPlan_window(t *testing.T) {
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	opens := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	plans := []rotate.PolicyPlan{
		{Policy: "waits", Provider: "sesterce-prod", Reason: "key is 23d old, due at 2026-11-27T03:00:00Z; waiting for the maintenance window that opens at 2026-12-01T10:00:00Z",
			NextWindow: opens, WindowCloses: opens.Add(6 * time.Hour), WaitingForWindow: true},
		{Policy: "open", Provider: "sesterce-prod", Reason: "key is fresh, due at 2026-12-13T03:00:00Z",
			NextWindow: now.Add(-time.Hour), WindowCloses: now.Add(5 * time.Hour), Jitter: 90 * time.Minute},
		{Policy: "none", Provider: "gcore-prod", Reason: "key is fresh, due at 2026-12-13T03:00:00Z"},
	}
	var b bytes.Buffer
	printPlan(&b, plans, now)
	want := `policy waits (sesterce-prod): key is 23d old, due at 2026-11-27T03:00:00Z; waiting for the maintenance window that opens at 2026-12-01T10:00:00Z
  next maintenance window 2026-12-01T10:00:00Z to 2026-12-01T16:00:00Z
  nothing to do
policy open (sesterce-prod): key is fresh, due at 2026-12-13T03:00:00Z
  scheduled runs start up to 1h30m late (jitter)
  maintenance window open until 2026-11-27T08:00:00Z
  nothing to do
policy none (gcore-prod): key is fresh, due at 2026-12-13T03:00:00Z
  nothing to do
`
	if got := b.String(); got != want {
		t.Errorf("printPlan:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(b.String(), "0001-01-01") {
		t.Error("a policy without a window printed a zero time")
	}
}

// check shows each policy's jitter and window as the config writes them.
func TestPrintSummary_jitterAndWindow(t *testing.T) {
	cfg, err := loadConfig("../../policies.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printSummary(&b, cfg, time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))
	lines := strings.Split(b.String(), "\n")
	if len(lines) < 4 || !strings.Contains(lines[1], "JITTER") || !strings.Contains(lines[1], "WINDOW") {
		t.Fatalf("no JITTER and WINDOW columns:\n%s", b.String())
	}
	fields := func(prefix string) []string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return strings.Fields(l)
			}
		}
		t.Fatalf("no row for %s:\n%s", prefix, b.String())
		return nil
	}
	// sesterce-prod (sesterce) gpu-team 0 3 * * * 10m NEXT 30d 0 10 * * 2-4 for 6h ssh/...
	gpu := strings.Join(fields("sesterce-prod"), " ")
	if want := "gpu-team 0 3 * * * 10m 2026-11-28T03:00:00Z 30d 0 10 * * 2-4 for 6h ssh/sesterce/gpu-team"; !strings.Contains(gpu, want) {
		t.Errorf("gpu-team row %q, want it to contain %q", gpu, want)
	}
	inf := strings.Join(fields("gcore-prod"), " ")
	if want := "inference 0 3 * * * - 2026-11-28T03:00:00Z 90d - ssh/gcore/inference"; !strings.Contains(inf, want) {
		t.Errorf("inference row %q, want it to contain %q", inf, want)
	}
}

// check lists each policy's hosts and how their host keys are checked.
func TestPrintHostsSummary(t *testing.T) {
	cfg, err := loadConfig("../../policies.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	printHostsSummary(&b, cfg)
	want := "gpu-team  ubuntu@10.0.0.5:22 ubuntu@10.0.0.6:2222  known_hosts /etc/rotatord/known_hosts  .ssh/authorized_keys  16           30s"
	if !strings.Contains(b.String(), want) || strings.Contains(b.String(), "inference") {
		t.Errorf("hosts summary:\n%s\nwant a row %q and no row for inference", b.String(), want)
	}
}

// status counts each policy's hosts by status.
func TestPrintHostsStatus(t *testing.T) {
	var b bytes.Buffer
	printHostsStatus(&b, control.Status{Policies: []control.PolicyStatus{
		{Name: "gpu-team", Hosts: map[string]int{"ok": 18, "stale": 1, "unreachable": 1}},
		{Name: "inference"},
	}})
	if got, want := b.String(), "\ngpu-team: hosts 18 ok, 1 stale, 1 unreachable, 0 unverified"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
