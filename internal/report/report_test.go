package report

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
)

func byKeyID(r *Report) map[string]Row {
	m := make(map[string]Row, len(r.Keys))
	for _, k := range r.Keys {
		m[k.KeyID] = k
	}
	return m
}

func TestGenerate(t *testing.T) {
	t.Run("every status", func(t *testing.T) {
		f := newFixture(t)
		r := f.generate(t)
		want := map[string]struct{ policy, status string }{
			idOK:        {"gpu-team", StatusOK},
			idRetiring:  {"gpu-team", StatusRetiring},
			idOrphanNew: {"gpu-team", StatusOrphaned},
			idUnmanaged: {"", StatusUnmanaged},
			idLegacy:    {"legacy", StatusOrphaned},
			idDue:       {"inference", StatusDue},
			idOrphanRec: {"inference", StatusOrphaned},
			idPending:   {"inference", StatusOK},
			idOverdue:   {"batch", StatusOverdue},
			idCIRunner:  {"", StatusUnmanaged},
			idFailing:   {"training", StatusFailing},
		}
		got := byKeyID(r)
		if len(r.Keys) != len(want) {
			t.Errorf("got %d rows, want %d (deleted key skipped, shared account listed once)", len(r.Keys), len(want))
		}
		for id, w := range want {
			k, ok := got[id]
			if !ok {
				t.Errorf("key %s missing from the report", id)
				continue
			}
			if k.Policy != w.policy || k.Status != w.status {
				t.Errorf("key %s (%s): policy %q status %q, want %q %q", id, k.KeyName, k.Policy, k.Status, w.policy, w.status)
			}
		}
		if _, ok := got[idDeleted]; ok {
			t.Errorf("deleted key %s is in the report", idDeleted)
		}
		wantSummary := map[string]int{"ok": 2, "due": 1, "overdue": 1, "failing": 1, "retiring": 1, "orphaned": 3, "unmanaged": 2}
		for s, n := range wantSummary {
			if r.Summary[s] != n {
				t.Errorf("Summary[%s] = %d, want %d", s, r.Summary[s], n)
			}
		}
	})

	t.Run("row fields", func(t *testing.T) {
		r := newFixture(t).generate(t)
		got := byKeyID(r)
		ok := got[idOK]
		if ok.AgeSeconds != int64((10*day+9*time.Hour)/time.Second) {
			t.Errorf("age_seconds = %d, want 10d9h", ok.AgeSeconds)
		}
		if ok.MaxAgeSeconds != int64(30*day/time.Second) {
			t.Errorf("max_age_seconds = %d, want 30d", ok.MaxAgeSeconds)
		}
		if want := time.Date(2026, 5, 14, 3, 0, 0, 0, time.UTC); !ok.NextRotation.Equal(want) {
			t.Errorf("next_rotation = %v, want created + 30d - 7d = %v", ok.NextRotation, want)
		}
		if want := time.Date(2026, 4, 21, 3, 1, 5, 0, time.UTC); !ok.LastRotation.Equal(want) {
			t.Errorf("last_rotation = %v, want the policy's last success %v", ok.LastRotation, want)
		}
		if !ok.Default || got[idRetiring].Default {
			t.Errorf("default flags: active %v retiring %v, want true false (from the listing)", ok.Default, got[idRetiring].Default)
		}
		if ok.Fingerprint != fingerprint(idOK) || ok.Provider != "sesterce-prod" {
			t.Errorf("fingerprint %q provider %q, want the record's", ok.Fingerprint, ok.Provider)
		}
		if rt := got[idRetiring]; !rt.NextRotation.IsZero() {
			t.Errorf("retiring key has next_rotation %v, want none", rt.NextRotation)
		}
		if u := got[idCIRunner]; u.ProjectID != 1234 || u.MaxAgeSeconds != 0 || !u.LastRotation.IsZero() {
			t.Errorf("unmanaged row = %+v, want project 1234, no max age, no last rotation", u)
		}
		if l := got[idLegacy]; l.MaxAgeSeconds != 0 {
			t.Errorf("key of a removed policy has max_age_seconds %d, want 0", l.MaxAgeSeconds)
		}
		if !slices.ContainsFunc(r.Warnings, func(w string) bool {
			return strings.Contains(w, "policy legacy is no longer configured")
		}) {
			t.Errorf("no warning about the removed policy in %q", r.Warnings)
		}
	})

	t.Run("sorted by policy then provider then age, unmanaged last", func(t *testing.T) {
		r := newFixture(t).generate(t)
		var got []string
		for _, k := range r.Keys {
			got = append(got, k.KeyID)
		}
		want := []string{
			idOverdue,                     // batch
			idRetiring, idOK, idOrphanNew, // gpu-team, oldest first
			idDue, idOrphanRec, idPending, // inference
			idLegacy,                // legacy
			idFailing,               // training
			idCIRunner, idUnmanaged, // unmanaged: gcore-prod, sesterce-prod
		}
		if !slices.Equal(got, want) {
			t.Errorf("order\n got %q\nwant %q", got, want)
		}
	})

	t.Run("provider listing fails", func(t *testing.T) {
		f := newFixture(t)
		f.providers["gcore-prod"].(*fakeProvider).err = &cloud.Error{Provider: "gcore-prod", Op: "list", Status: 503, Message: "Service Unavailable", Class: cloud.ErrTransient}
		r := f.generate(t)
		got := byKeyID(r)
		for _, id := range []string{idDue, idOrphanRec, idOverdue} {
			if _, ok := got[id]; !ok {
				t.Errorf("recorded key %s of the failing account is missing", id)
			}
		}
		if _, ok := got[idPending]; ok {
			t.Errorf("pending key %s shown although no listing confirms it was uploaded", idPending)
		}
		if _, ok := got[idCIRunner]; ok {
			t.Errorf("unmanaged key %s shown although its account could not be listed", idCIRunner)
		}
		if _, ok := got[idUnmanaged]; !ok {
			t.Errorf("other accounts lost their unmanaged keys")
		}
		if !slices.ContainsFunc(r.Warnings, func(w string) bool {
			return strings.Contains(w, "provider gcore-prod") && strings.Contains(w, "project 1234") && strings.Contains(w, "503")
		}) {
			t.Errorf("no warning naming the provider and its error in %q", r.Warnings)
		}
		if n := f.providers["gcore-prod"].(*fakeProvider).calls.Load(); n != 1 {
			t.Errorf("gcore-prod listed %d times, want once for the account two policies share", n)
		}
	})

	t.Run("provider without a client", func(t *testing.T) {
		f := newFixture(t)
		delete(f.providers, "sesterce-lab")
		r := f.generate(t)
		if got := byKeyID(r)[idFailing]; got.Status != StatusFailing || got.Default {
			t.Errorf("row = %+v, want the recorded key, failing, default unknown", got)
		}
		if !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.HasPrefix(w, "provider sesterce-lab:") }) {
			t.Errorf("no warning for the provider without a client in %q", r.Warnings)
		}
	})

	t.Run("state only", func(t *testing.T) {
		f := newFixture(t)
		f.providers = nil
		r := f.generate(t)
		got := byKeyID(r)
		for _, id := range []string{idOrphanNew, idUnmanaged, idCIRunner, idPending} {
			if _, ok := got[id]; ok {
				t.Errorf("key %s needs a listing but is in a state-only report", id)
			}
		}
		if got[idOK].Status != StatusOK || got[idOverdue].Status != StatusOverdue {
			t.Errorf("state-only statuses: %q %q, want ok overdue", got[idOK].Status, got[idOverdue].Status)
		}
		if len(r.Warnings) != 1 {
			t.Errorf("warnings = %q, want only the removed policy", r.Warnings)
		}
	})

	t.Run("active key gone from the provider", func(t *testing.T) {
		f := newFixture(t)
		p := f.providers["sesterce-prod"].(*fakeProvider)
		p.keys[0] = slices.DeleteFunc(p.keys[0], func(k cloud.Key) bool { return k.ID == idOK })
		r := f.generate(t)
		if _, ok := byKeyID(r)[idOK]; !ok {
			t.Errorf("the recorded active key disappeared from the report")
		}
		if !slices.ContainsFunc(r.Warnings, func(w string) bool {
			return strings.Contains(w, idOK) && strings.Contains(w, "not on provider sesterce-prod")
		}) {
			t.Errorf("no warning about the missing active key in %q", r.Warnings)
		}
	})

	t.Run("policy without a key", func(t *testing.T) {
		f := newFixture(t)
		if err := f.db.Update(func(tx state.Tx) error {
			if err := tx.DeleteKeyRecord("batch", idOverdue); err != nil {
				return err
			}
			return tx.PutPolicyStatus(state.PolicyStatus{Name: "batch", Failing: true, ConsecutiveFailures: 5})
		}); err != nil {
			t.Fatal(err)
		}
		p := f.providers["gcore-prod"].(*fakeProvider)
		p.keys[1234] = slices.DeleteFunc(p.keys[1234], func(k cloud.Key) bool { return k.ID == idOverdue })
		r := f.generate(t)
		if !slices.Contains(r.Warnings, "policy batch is failing (5 consecutive failures) and has no active key") {
			t.Errorf("warnings = %q, want one about batch", r.Warnings)
		}
		if r.Summary[StatusOverdue] != 0 || r.Summary[StatusFailing] != 1 {
			t.Errorf("summary = %v, want no overdue key and training's failing one", r.Summary)
		}
		if !r.Failing() {
			t.Errorf("Failing() = false with a failing policy that has no key")
		}
	})

	t.Run("state error fails the report", func(t *testing.T) {
		f := newFixture(t)
		src := f.source()
		src.State = failingState{}
		if _, err := Generate(context.Background(), src); err == nil || !strings.Contains(err.Error(), "read state") {
			t.Errorf("err = %v, want a read state error", err)
		}
	})

	t.Run("cancelled context", func(t *testing.T) {
		f := newFixture(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Generate(ctx, f.source()); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

type failingState struct{}

func (failingState) View(func(tx state.Tx) error) error {
	return errors.New("bbolt: database not open")
}

func TestClassify(t *testing.T) {
	const maxAge, before = 30 * day, 7 * day
	tests := []struct {
		name    string
		age     time.Duration
		failing bool
		want    string
	}{
		{"new key", 0, false, StatusOK},
		{"just before the window", maxAge - before - time.Second, false, StatusOK},
		{"window opens", maxAge - before, false, StatusDue},
		{"last second of the window", maxAge - time.Second, false, StatusDue},
		{"max age reached", maxAge, false, StatusOverdue},
		{"long past max age", 3 * maxAge, false, StatusOverdue},
		{"failing beats ok", day, true, StatusFailing},
		{"failing beats due", maxAge - before, true, StatusFailing},
		{"overdue beats failing", maxAge, true, StatusOverdue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.age, maxAge, before, tt.failing); got != tt.want {
				t.Errorf("classify(%v, failing=%v) = %q, want %q", tt.age, tt.failing, got, tt.want)
			}
		})
	}
}

func TestReport_Failing(t *testing.T) {
	rows := func(statuses ...string) []Row {
		var out []Row
		for _, s := range statuses {
			out = append(out, Row{Policy: "p", Status: s})
		}
		return out
	}
	tests := []struct {
		name string
		r    Report
		want bool
	}{
		{"empty", Report{}, false},
		{"healthy", Report{Keys: rows(StatusOK, StatusDue, StatusRetiring, StatusOrphaned, StatusUnmanaged)}, false},
		{"overdue key", Report{Keys: rows(StatusOK, StatusOverdue)}, true},
		{"failing key", Report{Keys: rows(StatusFailing, StatusOK)}, true},
		{"failing policy without key", Report{Policies: []PolicyInfo{{Name: "p", Failing: true}}}, true},
		{"healthy policy", Report{Keys: rows(StatusOK), Policies: []PolicyInfo{{Name: "p"}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Failing(); got != tt.want {
				t.Errorf("Failing() = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("fixture", func(t *testing.T) {
		if !newFixture(t).generate(t).Failing() {
			t.Errorf("Failing() = false for a report with an overdue and a failing key")
		}
	})
}
