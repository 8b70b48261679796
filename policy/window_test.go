package policy

import (
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04:05", s)
	if err != nil {
		panic(err)
	}
	return t
}

// Tuesday to Thursday, 10:00 to 16:00 UTC. 2026-11-27 is a Friday.
var tueThu = Window{Schedule: "0 10 * * 2-4", Duration: 6 * time.Hour}

func TestWindow_Next(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	tests := []struct {
		name        string
		w           Window
		at          time.Time
		open, close time.Time
		isOpen      bool
	}{
		{"friday waits for tuesday", tueThu, utc("2026-11-27 12:00:00"), utc("2026-12-01 10:00:00"), utc("2026-12-01 16:00:00"), false},
		{"the opening instant is inside", tueThu, utc("2026-12-01 10:00:00"), utc("2026-12-01 10:00:00"), utc("2026-12-01 16:00:00"), true},
		{"a second before closing is inside", tueThu, utc("2026-12-01 15:59:59"), utc("2026-12-01 10:00:00"), utc("2026-12-01 16:00:00"), true},
		{"the closing instant is outside", tueThu, utc("2026-12-01 16:00:00"), utc("2026-12-02 10:00:00"), utc("2026-12-02 16:00:00"), false},
		{"before the first window of the day", tueThu, utc("2026-12-02 09:59:59"), utc("2026-12-02 10:00:00"), utc("2026-12-02 16:00:00"), false},
		{"thursday evening waits for next tuesday", tueThu, utc("2026-12-03 16:00:01"), utc("2026-12-08 10:00:00"), utc("2026-12-08 16:00:00"), false},
		{"sub-second times are inside", tueThu, utc("2026-12-01 10:00:00").Add(time.Millisecond), utc("2026-12-01 10:00:00"), utc("2026-12-01 16:00:00"), true},
		{"a time zone other than UTC is read as the same instant", tueThu, utc("2026-12-01 11:00:00").In(berlin), utc("2026-12-01 10:00:00"), utc("2026-12-01 16:00:00"), true},
		{"CRON_TZ: 10:00 in Berlin is 09:00 UTC in winter", Window{Schedule: "CRON_TZ=Europe/Berlin 0 10 * * 2-4", Duration: 6 * time.Hour},
			utc("2026-12-01 09:30:00"), utc("2026-12-01 09:00:00"), utc("2026-12-01 15:00:00"), true},
		{"a window open across midnight", Window{Schedule: "0 22 * * 5", Duration: 60 * time.Hour},
			utc("2026-11-29 03:00:00"), utc("2026-11-27 22:00:00"), utc("2026-11-30 10:00:00"), true},
		{"an unparsable schedule has no window", Window{Schedule: "* *", Duration: time.Hour}, utc("2026-11-27 12:00:00"), time.Time{}, time.Time{}, false},
		{"a zero duration has no window", Window{Schedule: "0 10 * * *"}, utc("2026-11-27 12:00:00"), time.Time{}, time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			open, close := tt.w.Next(tt.at)
			if !open.Equal(tt.open) || !close.Equal(tt.close) {
				t.Errorf("Next(%v) = %v, %v; want %v, %v", tt.at, open, close, tt.open, tt.close)
			}
			if got := tt.w.IsOpen(tt.at); got != tt.isOpen {
				t.Errorf("IsOpen(%v) = %v, want %v", tt.at, got, tt.isOpen)
			}
			if !open.IsZero() && (open.Location() != time.UTC || close.Location() != time.UTC) {
				t.Errorf("Next returned %v, %v; want UTC", open.Location(), close.Location())
			}
		})
	}
}

// Next reads no clock: the same question always has the same answer.
func TestWindow_NextIsPure(t *testing.T) {
	at := utc("2026-11-27 12:00:00")
	o1, c1 := tueThu.Next(at)
	time.Sleep(time.Millisecond)
	o2, c2 := tueThu.Next(at)
	if !o1.Equal(o2) || !c1.Equal(c2) {
		t.Errorf("Next(%v) changed between calls: %v-%v, then %v-%v", at, o1, c1, o2, o2)
	}
}

func TestSpacingOf(t *testing.T) {
	tests := []struct {
		spec     string
		min, max time.Duration
		constant bool
	}{
		{"0 10 * * 2-4", 24 * time.Hour, 5 * 24 * time.Hour, false},
		{"0 3 * * *", 24 * time.Hour, 24 * time.Hour, false},
		{"0 3,4 * * *", time.Hour, 23 * time.Hour, false},
		{"* * * * *", time.Minute, time.Minute, false},
		{"0 10 1 * *", 28 * 24 * time.Hour, 31 * 24 * time.Hour, false},
		{"0 0 29 2 *", (4*365 + 1) * 24 * time.Hour, (4*365 + 1) * 24 * time.Hour, false},
		{"@every 6h", 6 * time.Hour, 6 * time.Hour, true},
		{"@weekly", 7 * 24 * time.Hour, 7 * 24 * time.Hour, false},
		// Summer time: 22:00 in Berlin moves by an hour in UTC twice a year.
		{"CRON_TZ=Europe/Berlin 0 22 * * 1", 7*24*time.Hour - time.Hour, 7*24*time.Hour + time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			s, err := ParseSchedule(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			sp := spacingOf(s)
			if !sp.measurable || sp.min != tt.min || sp.max != tt.max || sp.constant != tt.constant {
				t.Errorf("spacingOf(%q) = min %v max %v constant %v measurable %v; want min %v max %v constant %v",
					tt.spec, sp.min, sp.max, sp.constant, sp.measurable, tt.min, tt.max, tt.constant)
			}
			if !sp.constant && (sp.minTo.Sub(sp.minFrom) != sp.min || sp.maxTo.Sub(sp.maxFrom) != sp.max) {
				t.Errorf("examples %v..%v and %v..%v do not match the gaps", sp.minFrom, sp.minTo, sp.maxFrom, sp.maxTo)
			}
		})
	}
}

// onceSchedule fires once, at a fixed time.
type onceSchedule time.Time

func (o onceSchedule) Next(t time.Time) time.Time {
	if t.Before(time.Time(o)) {
		return time.Time(o)
	}
	return time.Time{}
}

func TestSpacingOf_notMeasurable(t *testing.T) {
	var s cron.Schedule = onceSchedule(neverFiresFrom.Add(time.Hour))
	if sp := spacingOf(s); sp.measurable {
		t.Errorf("a schedule that fires once is measurable: %+v", sp)
	}
}

// Measuring a minutely schedule, the costliest case, stays within the
// 30 ms the spacingMaxFires comment promises (once per distinct spec and
// config load); run with go test -run '^$' -bench SpacingOf ./policy.
func BenchmarkSpacingOf_minutely(b *testing.B) {
	const bound = 30 * time.Millisecond
	s, err := ParseSchedule("* * * * *")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		spacingOf(s)
	}
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(bound), "ratio-to-30ms")
}
