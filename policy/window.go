package policy

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Window is a policy's recurring maintenance window: it opens at every
// firing of Schedule and stays open for Duration. A key that is merely due
// waits for a window; one that would pass max_age first does not.
//
// Schedule is a five-field cron spec read in UTC, like the policy schedules
// the daemon runs, unless it starts with CRON_TZ=Zone. Duration is never
// longer than the shortest time between two openings, so at most one
// window is open at a time.
type Window struct {
	Schedule string
	Duration time.Duration
}

// Next returns the window open at t, or else the next one to open:
// open <= t < close when t is inside a window, t < open otherwise. It
// reads no clock, so callers decide with the time they were given. Both
// are zero when Schedule does not parse (a Window that did not come from
// Parse) or never fires again.
func (w Window) Next(t time.Time) (open, close time.Time) {
	s, err := ParseSchedule(w.Schedule)
	if err != nil || w.Duration <= 0 {
		return time.Time{}, time.Time{}
	}
	// The first opening after t - Duration is either the window t is in
	// (it opened at most Duration ago) or the next one.
	open = s.Next(t.UTC().Add(-w.Duration))
	if open.IsZero() {
		return time.Time{}, time.Time{}
	}
	return open.UTC(), open.Add(w.Duration).UTC()
}

// IsOpen reports whether a window is open at t.
func (w Window) IsOpen(t time.Time) bool {
	open, _ := w.Next(t)
	return !open.IsZero() && !open.After(t)
}

// spacing is how far apart a schedule fires: the shortest and the longest
// time between two consecutive firings, and one example of each.
type spacing struct {
	min, max             time.Duration
	minFrom, minTo       time.Time
	maxFrom, maxTo       time.Time
	constant, measurable bool
}

// Bounds of the scan in spacingOf. Five years is as far as cron itself
// looks for a next firing (0 0 29 2 * fires every four years). The cap on
// firings bounds the cost of a minutely spec at about 30 ms on a slow
// core (cron's Next takes microseconds); it covers a week of any spec and
// five years of anything coarser than every four hours. A spec dense
// enough to fire 10,000 times before its longest gap (every minute of
// February) is judged on its first 10,000 firings: the config check is
// then lenient, while Decide, which looks at the real next opening, still
// never lets a key pass max_age to wait for a window.
const (
	spacingHorizon  = 5 * 366 * 24 * time.Hour
	spacingMaxFires = 10000
)

// spacingOf measures the gaps between the firings of s, scanning from a
// fixed start so that the answer, and every message built on it, is the
// same on every run. An @every schedule fires at a constant delay. A spec
// that fires fewer than twice in the horizon is not measurable.
func spacingOf(s cron.Schedule) spacing {
	if every, ok := s.(cron.ConstantDelaySchedule); ok {
		return spacing{min: every.Delay, max: every.Delay, constant: true, measurable: true}
	}
	var sp spacing
	end := neverFiresFrom.Add(spacingHorizon)
	prev := s.Next(neverFiresFrom)
	for i := 0; i < spacingMaxFires && !prev.IsZero() && prev.Before(end); i++ {
		next := s.Next(prev)
		if next.IsZero() {
			break
		}
		gap := next.Sub(prev)
		if !sp.measurable || gap < sp.min {
			sp.min, sp.minFrom, sp.minTo = gap, prev, next
		}
		if !sp.measurable || gap > sp.max {
			sp.max, sp.maxFrom, sp.maxTo = gap, prev, next
		}
		sp.measurable = true
		prev = next
	}
	return sp
}

// between says which two firings a gap lies between, for messages:
// "from Thu 2024-01-04 10:00 UTC to Tue 2024-01-09 10:00 UTC".
func between(from, to time.Time) string {
	const layout = "Mon 2006-01-02 15:04 MST"
	return "from " + from.Format(layout) + " to " + to.Format(layout)
}

var windowKeys = []string{"schedule", "duration"}

// windowSpec is a window as written, with its measured spacing and where
// its duration came from, for the checks that need the merged policy.
type windowSpec struct {
	Window
	sp  spacing
	dur src
}

// spacing returns spacingOf(spec), measured once per parse.
func (p *parser) spacing(spec string) spacing {
	if sp, ok := p.spacings[spec]; ok {
		return sp
	}
	var sp spacing
	if s, err := parseCron(spec); err == nil {
		sp = spacingOf(s)
	}
	if p.spacings == nil {
		p.spacings = map[string]spacing{}
	}
	p.spacings[spec] = sp
	return sp
}

// window reads a window: {schedule, duration} mapping and checks what it
// says on its own. A window written but wrong is bad, so that the defaults'
// window does not silently stand in for it.
func (p *parser) window(f fields, w where) val[windowSpec] {
	e, present := f.m["window"]
	wf, ok := p.mapping(e.val, w, "window", windowKeys)
	if !ok {
		if present && !isNull(deref(e.val)) {
			return val[windowSpec]{src: src{line: e.key.Line, bad: true}}
		}
		return val[windowSpec]{}
	}
	ww := w.in("window")
	out := val[windowSpec]{src: src{line: wf.line}}
	sched := p.schedule(wf, ww, "schedule")
	dur := p.duration(wf, ww, "duration")
	bad := sched.bad || dur.bad
	switch {
	case sched.set:
		switch sp := p.spacing(sched.v); {
		case sp.constant:
			p.reject(&sched.src, ww, "schedule", "@every counts from whenever the daemon started, so windows would open at no fixed time; use a cron spec such as \"0 10 * * 2-4\"")
			bad = true
		case !sp.measurable:
			p.reject(&sched.src, ww, "schedule", "opens less than twice in five years; a window must open regularly")
			bad = true
		default:
			out.v.Schedule, out.v.sp = sched.v, sp
		}
	case !sched.bad:
		p.errorf(wf.line, ww, "schedule", "required: when each window opens, as a cron spec such as \"0 10 * * 2-4\" (Tuesday to Thursday at 10:00)")
		bad = true
	}
	switch {
	case dur.set && dur.v <= 0:
		p.reject(&dur.src, ww, "duration", "must be longer than 0")
		bad = true
	case dur.set:
		out.v.Duration, out.v.dur = dur.v, dur.src
	case !dur.bad:
		p.errorf(wf.line, ww, "duration", "required: how long each window stays open, such as 6h")
		bad = true
	}
	if sp := out.v.sp; !bad && out.v.Duration > sp.min {
		p.reject(&dur.src, ww, "duration", "longer than the shortest time between two openings (%s, %s), so one window would still be open when the next opens; at most %s",
			formatDuration(sp.min), between(sp.minFrom, sp.minTo), formatDuration(sp.min))
		bad = true
	}
	out.set, out.bad = !bad, bad
	return out
}

// mine reports whether a message about s goes to s's line: it was written
// in the policy, or in the defaults block when that is what is checked.
func mine(s src, forDefaults bool) bool { return s.own() || forDefaults && s.set }

// inherited says where a value came from when it is not the policy's own.
func inherited(s src) string {
	if s.inherited {
		return fmt.Sprintf(" (from defaults at line %d)", s.line)
	}
	return ""
}

// windowFits checks that a key can always wait for a window without
// passing max_age. A key is evaluated in a window when the window opens
// (the daemon runs the policy at every opening, up to jitter late); one
// that falls due just after an opening waits for the next opening. It
// falls due rotate_before ahead of max_age, so the longest time between
// two openings plus the jitter must not be longer than rotate_before.
// Past that bound a key would still never pass max_age (it rotates outside
// the window instead), but the window would not be the rule it claims to be.
func (p *parser) windowFits(w where, win val[windowSpec], rotateBefore, jitter val[time.Duration], forDefaults bool) {
	if !win.set || rotateBefore.bad || jitter.bad {
		return
	}
	sp, rb, j := win.v.sp, rotateBefore.or(DefaultRotateBefore), jitter.or(0)
	wait := sp.max + j
	if wait <= rb {
		return
	}
	apart := fmt.Sprintf("opens as much as %s apart (%s)", formatDuration(sp.max), between(sp.maxFrom, sp.maxTo))
	if j > 0 {
		apart += fmt.Sprintf(" plus up to %s of jitter", formatDuration(j))
	}
	const why = "a key falling due just after a window opens would pass max_age before the next one opens"
	switch {
	case mine(win.src, forDefaults):
		p.errorf(win.line, w, "window", "%s, longer than rotate_before (%s): %s; make rotate_before at least %s or open windows more often",
			apart, describe(rotateBefore, DefaultRotateBefore), why, formatDuration(wait))
	case mine(rotateBefore.src, forDefaults):
		p.gotf(rotateBefore.line, w, "rotate_before", rotateBefore.raw, "must be at least %s: the window%s %s, so %s",
			formatDuration(wait), inherited(win.src), apart, why)
	case mine(jitter.src, forDefaults):
		p.gotf(jitter.line, w, "jitter", jitter.raw, "must be at most %s: the window%s opens as much as %s apart (%s) and rotate_before is %s, so with a longer jitter %s",
			formatDuration(max(rb-sp.max, 0)), inherited(win.src), formatDuration(sp.max), between(sp.maxFrom, sp.maxTo), describe(rotateBefore, DefaultRotateBefore), why)
	}
}

// jitterFits checks jitter against the schedule it delays and the window a
// delayed run must still fall in.
func (p *parser) jitterFits(w where, jitter val[time.Duration], schedule val[string], win val[windowSpec], forDefaults bool) {
	j := jitter.or(0)
	if j == 0 || jitter.bad {
		return
	}
	if !schedule.bad {
		spec := schedule.or(DefaultSchedule)
		sp := p.spacing(spec)
		if sp.measurable && j >= sp.min {
			gap := formatDuration(sp.min)
			if !sp.constant {
				gap += ", " + between(sp.minFrom, sp.minTo)
			}
			switch {
			case mine(jitter.src, forDefaults):
				p.gotf(jitter.line, w, "jitter", jitter.raw, "must be shorter than the shortest time between two runs of schedule %q (%s), or a delayed run could start after the next one is due", spec, gap)
			case mine(schedule.src, forDefaults):
				p.gotf(schedule.line, w, "schedule", schedule.raw, "runs as often as every %s, which must be longer than jitter (%s)", gap, describe(jitter, 0))
			}
		}
	}
	if win.set && j >= win.v.Duration {
		switch {
		case mine(jitter.src, forDefaults):
			p.gotf(jitter.line, w, "jitter", jitter.raw, "must be shorter than window.duration (%s%s): a run delayed longer would find the window closed",
				formatDuration(win.v.Duration), inheritedOr(win.src))
		case mine(win.src, forDefaults):
			p.gotf(win.v.dur.line, w, "window.duration", win.v.dur.raw, "must be longer than jitter (%s): a run delayed longer would find the window closed", describe(jitter, 0))
		}
	}
}

// inheritedOr is inherited without the parentheses, for use inside them.
func inheritedOr(s src) string {
	if s.inherited {
		return fmt.Sprintf(" from defaults at line %d", s.line)
	}
	return ""
}
