package policy

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// durationUnits are the units a config duration may use. Days and weeks
// are what key lifetimes are written in; time.ParseDuration stops at hours.
var durationUnits = map[string]time.Duration{
	"s": time.Second,
	"m": time.Minute,
	"h": time.Hour,
	"d": 24 * time.Hour,
	"w": 7 * 24 * time.Hour,
}

// parseDuration reads a duration such as 90d, 36h, 1w or 1d12h: whole
// numbers, each followed by one of s, m, h, d or w. A bare 0 is zero.
// A day is 24 hours: key ages are measured in elapsed time, not calendar
// days.
func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return 0, errors.New("empty; write a number and a unit, such as 90d")
	}
	var total time.Duration
	for rest := s; rest != ""; {
		i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if i == 0 {
			return 0, fmt.Errorf("expected a whole number at %q", rest)
		}
		if i < 0 {
			return 0, fmt.Errorf("missing unit after %s (use s, m, h, d or w)", rest)
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil {
			return 0, errors.New("too long")
		}
		rest = rest[i:]
		j := strings.IndexFunc(rest, func(r rune) bool { return r >= '0' && r <= '9' })
		if j < 0 {
			j = len(rest)
		}
		unit, ok := durationUnits[rest[:j]]
		if !ok {
			return 0, fmt.Errorf("unknown unit %q (use s, m, h, d or w)", rest[:j])
		}
		rest = rest[j:]
		if n > int64(math.MaxInt64/unit) || total > math.MaxInt64-time.Duration(n)*unit {
			return 0, errors.New("too long")
		}
		total += time.Duration(n) * unit
	}
	return total, nil
}

// FormatDuration writes d the way the config does, in days, hours,
// minutes and seconds: 90d, 36h -> 1d12h, 10m. `check` and `plan` print
// jitter and window durations with it, so they read as they were written.
func FormatDuration(d time.Duration) string { return formatDuration(d) }

// formatDuration writes d the way the config does, in days, hours,
// minutes and seconds: 90d, 36h -> 1d12h.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	var b strings.Builder
	for _, u := range []struct {
		name string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.d
		}
	}
	if b.Len() == 0 {
		return d.String()
	}
	return b.String()
}
