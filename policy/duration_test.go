package policy

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "90d", want: 90 * 24 * time.Hour},
		{in: "36h", want: 36 * time.Hour},
		{in: "1w", want: 7 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "2w3d", want: 17 * 24 * time.Hour},
		{in: "45m", want: 45 * time.Minute},
		{in: "1h30m15s", want: time.Hour + 30*time.Minute + 15*time.Second},
		{in: "0", want: 0},
		{in: "0d", want: 0},
		{in: "", wantErr: "empty; write a number and a unit, such as 90d"},
		{in: "90", wantErr: "missing unit after 90 (use s, m, h, d or w)"},
		{in: "d", wantErr: `expected a whole number at "d"`},
		{in: "1y", wantErr: `unknown unit "y" (use s, m, h, d or w)`},
		{in: "1.5h", wantErr: `unknown unit "." (use s, m, h, d or w)`},
		{in: "-1d", wantErr: `expected a whole number at "-1d"`},
		{in: "90 d", wantErr: `unknown unit " d" (use s, m, h, d or w)`},
		{in: "1ms", wantErr: `unknown unit "ms" (use s, m, h, d or w)`},
		{in: "106752d", wantErr: "too long"},
		{in: "99999999999999999999s", wantErr: "too long"},
		{in: "106751d106751d", wantErr: "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseDuration(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("parseDuration(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// Messages show durations the way the config writes them.
func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                   "0",
		90 * 24 * time.Hour: "90d",
		36 * time.Hour:      "1d12h",
		90 * time.Minute:    "1h30m",
		time.Second:         "1s",
		time.Millisecond:    "1ms",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := parseDuration(want); err == nil && back != d {
			t.Errorf("parseDuration(formatDuration(%v)) = %v", d, back)
		}
	}
}
