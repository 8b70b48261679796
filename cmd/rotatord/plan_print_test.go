package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/rotate"
)

// plan names the maintenance window a due key waits for, or the one that
// is open.
func TestPrintPlan_window(t *testing.T) {
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	opens := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	plans := []rotate.PolicyPlan{
		{Policy: "waits", Provider: "sesterce-prod", Reason: "key is 23d old, due at 2026-11-27T03:00:00Z; waiting for the maintenance window that opens at 2026-12-01T10:00:00Z",
			NextWindow: opens, WindowCloses: opens.Add(6 * time.Hour), WaitingForWindow: true},
		{Policy: "open", Provider: "sesterce-prod", Reason: "key is fresh, due at 2026-12-13T03:00:00Z",
			NextWindow: now.Add(-time.Hour), WindowCloses: now.Add(5 * time.Hour)},
		{Policy: "none", Provider: "gcore-prod", Reason: "key is fresh, due at 2026-12-13T03:00:00Z"},
	}
	var b bytes.Buffer
	printPlan(&b, plans, now)
	want := `policy waits (sesterce-prod): key is 23d old, due at 2026-11-27T03:00:00Z; waiting for the maintenance window that opens at 2026-12-01T10:00:00Z
  next maintenance window 2026-12-01T10:00:00Z to 2026-12-01T16:00:00Z
  nothing to do
policy open (sesterce-prod): key is fresh, due at 2026-12-13T03:00:00Z
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
