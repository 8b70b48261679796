package policy

import (
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	from := time.Date(2025, 6, 2, 10, 0, 0, 0, time.UTC) // a Monday
	tests := []struct {
		spec    string
		next    time.Time
		wantErr string
	}{
		{spec: "CRON_TZ=UTC 0 3 * * *", next: time.Date(2025, 6, 3, 3, 0, 0, 0, time.UTC)},
		{spec: "CRON_TZ=UTC 0 9 * * 1", next: time.Date(2025, 6, 9, 9, 0, 0, 0, time.UTC)},
		{spec: "CRON_TZ=UTC @daily", next: time.Date(2025, 6, 3, 0, 0, 0, 0, time.UTC)},
		{spec: "@every 6h", next: from.Add(6 * time.Hour)},
		{spec: "CRON_TZ=UTC 0 0 29 2 *", next: time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)},
		{spec: "* *", wantErr: `parse cron spec "* *": expected exactly 5 fields, found 2: [* *]`},
		{spec: "0 0 * * * *", wantErr: `parse cron spec "0 0 * * * *": expected exactly 5 fields, found 6: [0 0 * * * *]`},
		{spec: "0 0 30 2 *", wantErr: `parse cron spec "0 0 30 2 *": never fires (no such date)`},
		{spec: "@reboot", wantErr: `parse cron spec "@reboot": unrecognized descriptor: @reboot`},
		{spec: "", wantErr: `parse cron spec "": empty spec string`},
		// cron v3.0.1 itself panics on this one.
		{spec: "CRON_TZ=UTC", wantErr: `parse cron spec "CRON_TZ=UTC": time zone prefix without a schedule after it`},
		{spec: "TZ=Nowhere/Atlantis 0 3 * * *", wantErr: `parse cron spec "TZ=Nowhere/Atlantis 0 3 * * *": provided bad location Nowhere/Atlantis: unknown time zone Nowhere/Atlantis`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			s, err := ParseSchedule(tt.spec)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("ParseSchedule(%q) error = %v, want %q", tt.spec, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSchedule(%q): %v", tt.spec, err)
			}
			if got := s.Next(from).UTC(); !got.Equal(tt.next) {
				t.Errorf("Next(%v) = %v, want %v", from, got, tt.next)
			}
		})
	}
}
