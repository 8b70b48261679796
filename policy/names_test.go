package policy

import (
	"regexp"
	"testing"
	"time"
)

// TestPolicy_OwnsKeyName: every name KeyName makes is owned, and the test
// is exactly the documented regexp ^<quoted prefix>-\d{8}T\d{6}$.
func TestPolicy_OwnsKeyName(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		prefix, name string
	}{
		{"gpu-team", Policy{NamePrefix: "gpu-team"}.KeyName(now)},
		{"gpu", Policy{NamePrefix: "gpu-team"}.KeyName(now)},
		{"gpu-team", "gpu-team-20260101T000000"},
		{"gpu-team", "gpu-team-20260101T00000"},
		{"gpu-team", "gpu-team-20260101T0000000"},
		{"gpu-team", "gpu-team-20260101X000000"},
		{"gpu-team", "gpu-team_20260101T000000"},
		{"gpu-team", "gpu-team-2026010aT000000"},
		{"gpu.team", "gpuxteam-20260101T000000"},
		{"gpu.team", "gpu.team-20260101T000000"},
		{"a", "alice-laptop"},
		{"", "-20260101T000000"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+"/"+tt.name, func(t *testing.T) {
			re := regexp.MustCompile(`^` + regexp.QuoteMeta(tt.prefix) + `-\d{8}T\d{6}$`)
			if got, want := (Policy{NamePrefix: tt.prefix}).OwnsKeyName(tt.name), re.MatchString(tt.name); got != want {
				t.Errorf("OwnsKeyName(%q, %q) = %v, regexp says %v", tt.prefix, tt.name, got, want)
			}
		})
	}
	if !(Policy{NamePrefix: "gpu-team"}).OwnsKeyName(Policy{NamePrefix: "gpu-team"}.KeyName(now)) {
		t.Errorf("KeyName output is not owned")
	}
}
