package rotate

import (
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

var t0 = time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)

func testPolicy() policy.Policy {
	return policy.Policy{
		Name: "gpu", Provider: "sesterce-prod", ProviderType: policy.TypeSesterce,
		MaxAge: 30 * 24 * time.Hour, RotateBefore: 7 * 24 * time.Hour, GracePeriod: 24 * time.Hour,
		MaxFailures: 3, NamePrefix: "gpu", VaultPath: "ssh/gpu", MakeDefault: true,
		Key: policy.KeySpec{Type: policy.KeyEd25519, Generate: policy.GenerateLocal},
	}
}

func rec(id, name string, status state.KeyStatus, created time.Time) state.KeyRecord {
	return state.KeyRecord{Policy: "gpu", KeyID: id, Name: name, Fingerprint: "SHA256:" + id, Status: status, CreatedAt: created, ActivatedAt: created}
}

func pkey(id, name string) cloud.Key {
	return cloud.Key{ID: id, Name: name, Fingerprint: "SHA256:" + id}
}

func TestDecide(t *testing.T) {
	fresh := t0.Add(-10 * 24 * time.Hour)
	old := t0.Add(-25 * 24 * time.Hour) // past max_age - rotate_before = 23d
	tests := []struct {
		name        string
		obs         Observation
		wantRotate  bool
		wantReason  string
		wantCurrent string
		check       func(t *testing.T, d Decision)
	}{
		{
			name:       "first run rotates",
			obs:        Observation{},
			wantRotate: true, wantReason: "no managed key yet",
		},
		{
			name: "fresh key waits until due",
			obs: Observation{
				Records:      []state.KeyRecord{rec("k1", "gpu-20261112T030000", state.KeyActive, fresh)},
				ProviderKeys: []cloud.Key{pkey("k1", "gpu-20261112T030000")},
			},
			wantRotate: false, wantReason: "key is fresh, due at 2026-12-05T03:00:00Z", wantCurrent: "k1",
			check: func(t *testing.T, d Decision) {
				if want := fresh.Add(23 * 24 * time.Hour); !d.DueAt.Equal(want) {
					t.Errorf("DueAt = %v, want %v", d.DueAt, want)
				}
			},
		},
		{
			name: "key past max_age minus rotate_before is due",
			obs: Observation{
				Records:      []state.KeyRecord{rec("k1", "gpu-20261028T030000", state.KeyActive, old)},
				ProviderKeys: []cloud.Key{pkey("k1", "gpu-20261028T030000")},
			},
			wantRotate: true, wantReason: "key is 25d old, due at 2026-11-20T03:00:00Z", wantCurrent: "k1",
		},
		{
			name: "forced rotation of a fresh key",
			obs: Observation{
				Force:        true,
				Records:      []state.KeyRecord{rec("k1", "gpu-20261112T030000", state.KeyActive, fresh)},
				ProviderKeys: []cloud.Key{pkey("k1", "gpu-20261112T030000")},
			},
			wantRotate: true, wantReason: "rotation requested", wantCurrent: "k1",
		},
		{
			name: "backoff holds a due rotation",
			obs: Observation{
				Status:       state.PolicyStatus{ConsecutiveFailures: 2, NextRetry: t0.Add(time.Minute)},
				Records:      []state.KeyRecord{rec("k1", "gpu-20261028T030000", state.KeyActive, old)},
				ProviderKeys: []cloud.Key{pkey("k1", "gpu-20261028T030000")},
			},
			wantRotate: false, wantReason: "backing off after 2 failure(s) until 2026-11-22T03:01:00Z", wantCurrent: "k1",
		},
		{
			name: "current key deleted out of band",
			obs: Observation{
				Records: []state.KeyRecord{rec("k1", "gpu-20261112T030000", state.KeyActive, fresh)},
			},
			wantRotate: true, wantReason: "current key missing on the provider (deleted or changed out of band)",
			check: func(t *testing.T, d Decision) {
				if len(d.Missing) != 1 || d.Missing[0].KeyID != "k1" {
					t.Errorf("Missing = %v, want k1", d.Missing)
				}
			},
		},
		{
			name: "current key changed out of band",
			obs: Observation{
				Records:      []state.KeyRecord{rec("k1", "gpu-20261112T030000", state.KeyActive, fresh)},
				ProviderKeys: []cloud.Key{{ID: "k1", Name: "gpu-20261112T030000", Fingerprint: "SHA256:other"}},
			},
			wantRotate: true, wantReason: "current key missing",
		},
		{
			name: "orphans and unmanaged keys are told apart by the exact name pattern",
			obs: Observation{
				Records: []state.KeyRecord{rec("k1", "gpu-20261112T030000", state.KeyActive, fresh)},
				ProviderKeys: []cloud.Key{
					pkey("k1", "gpu-20261112T030000"),
					pkey("o1", "gpu-20261113T040506"),      // ours, no record: orphan
					pkey("u1", "gpu-team-20261113T040506"), // another policy's prefix
					pkey("u2", "laptop"),                   // a human's key
				},
			},
			wantRotate: false, wantReason: "key is fresh", wantCurrent: "k1",
			check: func(t *testing.T, d Decision) {
				if len(d.Orphans) != 1 || d.Orphans[0].ID != "o1" {
					t.Errorf("Orphans = %v, want [o1]", d.Orphans)
				}
				if len(d.Unmanaged) != 2 {
					t.Errorf("Unmanaged = %v, want u1 and u2", d.Unmanaged)
				}
			},
		},
		{
			name: "retiring keys split by deadline; deleted records are ignored",
			obs: Observation{
				Records: []state.KeyRecord{
					rec("k3", "gpu-20261120T030000", state.KeyActive, t0.Add(-48*time.Hour)),
					func() state.KeyRecord {
						r := rec("k2", "gpu-20261110T030000", state.KeyRetiring, old)
						r.DeleteAfter = t0.Add(-time.Second)
						return r
					}(),
					func() state.KeyRecord {
						r := rec("k1", "gpu-20261101T030000", state.KeyRetiring, old)
						r.DeleteAfter = t0.Add(time.Hour)
						return r
					}(),
					rec("k0", "gpu-20261001T030000", state.KeyDeleted, old),
				},
				ProviderKeys: []cloud.Key{pkey("k3", "gpu-20261120T030000"), pkey("k2", "gpu-20261110T030000"), pkey("k1", "gpu-20261101T030000")},
			},
			wantRotate: false, wantReason: "key is fresh", wantCurrent: "k3",
			check: func(t *testing.T, d Decision) {
				if len(d.Retire) != 1 || d.Retire[0].KeyID != "k2" {
					t.Errorf("Retire = %v, want [k2]", d.Retire)
				}
				if len(d.Waiting) != 1 || d.Waiting[0].KeyID != "k1" {
					t.Errorf("Waiting = %v, want [k1]", d.Waiting)
				}
				if len(d.Missing) != 0 || len(d.Orphans) != 0 {
					t.Errorf("Missing = %v, Orphans = %v; want none (k0 is deleted)", d.Missing, d.Orphans)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.obs.Now = t0
			tt.obs.Policy = testPolicy()
			d := Decide(tt.obs)
			if d.Rotate != tt.wantRotate {
				t.Errorf("Rotate = %v, want %v (reason %q)", d.Rotate, tt.wantRotate, d.Reason)
			}
			if !strings.HasPrefix(d.Reason, tt.wantReason) {
				t.Errorf("Reason = %q, want prefix %q", d.Reason, tt.wantReason)
			}
			cur := ""
			if d.Current != nil {
				cur = d.Current.KeyID
			}
			if cur != tt.wantCurrent {
				t.Errorf("Current = %q, want %q", cur, tt.wantCurrent)
			}
			if tt.check != nil {
				tt.check(t, d)
			}
		})
	}
}

func TestFormatAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		87*24*time.Hour + 5*time.Hour: "87d",
		5 * time.Hour:                 "5h",
		90 * time.Second:              "1m",
		-time.Second:                  "0s",
	} {
		if got := FormatAge(d); got != want {
			t.Errorf("FormatAge(%v) = %q, want %q", d, got, want)
		}
	}
}

// windowPolicy opens a maintenance window Tuesday to Thursday, 10:00 to
// 16:00 UTC (2026-11-27 is a Friday, 2026-12-01 a Tuesday).
func windowPolicy() policy.Policy {
	p := testPolicy()
	p.Window = &policy.Window{Schedule: "0 10 * * 2-4", Duration: 6 * time.Hour}
	return p
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// A key that falls due on Friday waits through the weekend and rotates
// when the window opens on Tuesday at 10:00: the clock steps an hour at a
// time, as scheduled runs and window openings would.
func TestDecide_dueKeyWaitsForTheWindow(t *testing.T) {
	p := windowPolicy()
	// Due (max_age 30d - rotate_before 7d) on Friday 2026-11-27 03:00;
	// past max_age only on Friday 2026-12-04.
	created := at("2026-11-04T03:00:00Z")
	obs := Observation{
		Policy:       p,
		Records:      []state.KeyRecord{rec("k1", "gpu-20261104T030000", state.KeyActive, created)},
		ProviderKeys: []cloud.Key{pkey("k1", "gpu-20261104T030000")},
	}
	opens := at("2026-12-01T10:00:00Z")
	for now := at("2026-11-27T03:00:00Z"); !now.After(opens); now = now.Add(time.Hour) {
		obs.Now = now
		d := Decide(obs)
		if !d.NextWindow.Equal(opens) {
			t.Fatalf("at %s: NextWindow = %s, want %s", now, d.NextWindow, opens)
		}
		if now.Before(opens) {
			want := "key is " + FormatAge(now.Sub(created)) + " old, due at 2026-11-27T03:00:00Z; waiting for the maintenance window that opens at 2026-12-01T10:00:00Z"
			if d.Rotate || !d.WaitingForWindow || d.Reason != want {
				t.Fatalf("at %s: Rotate %v, WaitingForWindow %v, Reason %q; want to wait with %q", now, d.Rotate, d.WaitingForWindow, d.Reason, want)
			}
			continue
		}
		want := "key is 27d old, due at 2026-11-27T03:00:00Z; maintenance window open until 2026-12-01T16:00:00Z"
		if !d.Rotate || d.WaitingForWindow || d.Reason != want {
			t.Fatalf("at %s (window open): Rotate %v, WaitingForWindow %v, Reason %q; want to rotate with %q", now, d.Rotate, d.WaitingForWindow, d.Reason, want)
		}
	}
}

func TestDecide_window(t *testing.T) {
	fresh := at("2026-11-20T03:00:00Z")
	// Past max_age on Saturday 2026-11-28 12:00, long due (the provider
	// failed through the whole Tuesday-Thursday window, say).
	nearlyOverdue := at("2026-10-29T12:00:00Z")
	keyed := func(created time.Time) Observation {
		name := "gpu-" + created.Format(policy.KeyNameLayout)
		return Observation{
			Records:      []state.KeyRecord{rec("k1", name, state.KeyActive, created)},
			ProviderKeys: []cloud.Key{pkey("k1", name)},
		}
	}
	tests := []struct {
		name       string
		now        string
		obs        Observation
		jitter     time.Duration
		wantRotate bool
		wantReason string
		wantWait   bool
	}{
		{
			name: "a key that would pass max_age on Saturday rotates on Friday", now: "2026-11-27T03:00:00Z", obs: keyed(nearlyOverdue),
			wantRotate: true,
			wantReason: "key is 28d old, due at 2026-11-21T12:00:00Z; it would pass max_age at 2026-11-28T12:00:00Z before the next maintenance window opens at 2026-12-01T10:00:00Z, so it rotates now",
		},
		{
			name: "an overdue key does not wait", now: "2026-11-29T03:00:00Z", obs: keyed(nearlyOverdue),
			wantRotate: true,
			wantReason: "key is 30d old, due at 2026-11-21T12:00:00Z; it passed max_age at 2026-11-28T12:00:00Z, so it does not wait for the next maintenance window (opens at 2026-12-01T10:00:00Z)",
		},
		{
			name: "jitter counts: a run up to 10m late would start after max_age", now: "2026-11-30T03:00:00Z",
			obs: keyed(at("2026-11-01T10:05:00Z")), jitter: 10 * time.Minute, wantRotate: true,
			wantReason: "key is 28d old, due at 2026-11-24T10:05:00Z; it would pass max_age at 2026-12-01T10:05:00Z before the next maintenance window opens at 2026-12-01T10:00:00Z, so it rotates now",
		},
		{
			name: "without jitter the same key can wait for the opening", now: "2026-11-30T03:00:00Z",
			obs: keyed(at("2026-11-01T10:05:00Z")), wantWait: true,
			wantReason: "key is 28d old, due at 2026-11-24T10:05:00Z; waiting for the maintenance window that opens at 2026-12-01T10:00:00Z",
		},
		{
			name: "a manual rotation ignores the window", now: "2026-11-27T03:00:00Z",
			obs: func() Observation { o := keyed(fresh); o.Force = true; return o }(), wantRotate: true,
			wantReason: "rotation requested",
		},
		{
			name: "a first key ignores the window", now: "2026-11-27T03:00:00Z", obs: Observation{},
			wantRotate: true, wantReason: "no managed key yet",
		},
		{
			name: "a key deleted out of band ignores the window", now: "2026-11-27T03:00:00Z",
			obs:        Observation{Records: []state.KeyRecord{rec("k1", "gpu-20261120T030000", state.KeyActive, fresh)}},
			wantRotate: true, wantReason: "current key missing on the provider (deleted or changed out of band)",
		},
		{
			name: "backoff still comes first", now: "2026-11-27T03:00:00Z",
			obs: func() Observation {
				o := keyed(nearlyOverdue)
				o.Status = state.PolicyStatus{ConsecutiveFailures: 4, NextRetry: at("2026-11-27T04:00:00Z")}
				return o
			}(),
			wantReason: "backing off after 4 failure(s) until 2026-11-27T04:00:00Z",
		},
		{
			name: "a fresh key neither rotates nor waits", now: "2026-11-27T03:00:00Z", obs: keyed(fresh),
			wantReason: "key is fresh, due at 2026-12-13T03:00:00Z",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.obs.Now = at(tt.now)
			tt.obs.Policy = windowPolicy()
			tt.obs.Policy.Jitter = tt.jitter
			d := Decide(tt.obs)
			if d.Rotate != tt.wantRotate || d.WaitingForWindow != tt.wantWait || d.Reason != tt.wantReason {
				t.Errorf("Rotate %v, WaitingForWindow %v, Reason\n  %q\nwant Rotate %v, WaitingForWindow %v, Reason\n  %q",
					d.Rotate, d.WaitingForWindow, d.Reason, tt.wantRotate, tt.wantWait, tt.wantReason)
			}
			// The next window is known whatever was decided, for plan and status.
			open, closes := tt.obs.Policy.Window.Next(tt.obs.Now)
			if !d.NextWindow.Equal(open) || !d.WindowCloses.Equal(closes) {
				t.Errorf("NextWindow %v-%v, want %v-%v", d.NextWindow, d.WindowCloses, open, closes)
			}
		})
	}
}

// A policy without a window decides as before and reports no window.
func TestDecide_noWindow(t *testing.T) {
	created := at("2026-11-04T03:00:00Z")
	d := Decide(Observation{
		Now: at("2026-11-27T03:00:00Z"), Policy: testPolicy(),
		Records:      []state.KeyRecord{rec("k1", "gpu-20261104T030000", state.KeyActive, created)},
		ProviderKeys: []cloud.Key{pkey("k1", "gpu-20261104T030000")},
	})
	if !d.Rotate || d.WaitingForWindow || !d.NextWindow.IsZero() || d.Reason != "key is 23d old, due at 2026-11-27T03:00:00Z" {
		t.Errorf("Rotate %v, WaitingForWindow %v, NextWindow %v, Reason %q", d.Rotate, d.WaitingForWindow, d.NextWindow, d.Reason)
	}
	if want := created.Add(30 * 24 * time.Hour); !d.OverdueAt.Equal(want) {
		t.Errorf("OverdueAt = %v, want %v", d.OverdueAt, want)
	}
}
