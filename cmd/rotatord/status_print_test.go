package main

import (
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/control"
)

func TestPrintStatus_Windows(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC) // a Friday
	st := control.Status{
		StartedAt: now.Add(-time.Hour), ConfigLoadedAt: now.Add(-time.Hour), LastReloadOK: true,
		Vault: &control.VaultStatus{Up: false, Error: "vault: sealed"},
		Policies: []control.PolicyStatus{
			{Name: "waits", NextWindow: now.Add(94 * time.Hour), WindowCloses: now.Add(100 * time.Hour)},
			{Name: "open", NextWindow: now.Add(-time.Hour), WindowCloses: now.Add(2 * time.Hour)},
			{Name: "none"},
		},
	}
	var b strings.Builder
	printStatus(&b, st, now)
	out := b.String()
	for _, want := range []string{
		"NEXT WINDOW (UTC)",
		"2026-12-08T10:00:00Z",            // the next opening, Tuesday 10:00
		"open until 2026-12-04T14:00:00Z", // the window open now
		"VAULT DOWN (rotations fail until it answers): vault: sealed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}
