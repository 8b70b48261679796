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
