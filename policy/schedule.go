package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser accepts standard five-field specs and descriptors (@daily,
// @every 6h), the same as cron.ParseStandard.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses a cron spec the way the config check does, so the
// scheduler never accepts a spec that `rotatord check` rejected or the
// reverse. It takes five fields (minute hour day-of-month month
// day-of-week), a descriptor such as @daily or @every 6h, and an optional
// CRON_TZ=Zone prefix. A spec that can never fire (0 0 30 2 *) is an error.
func ParseSchedule(spec string) (cron.Schedule, error) {
	s, err := parseCron(spec)
	if err != nil {
		return nil, fmt.Errorf("parse cron spec %q: %w", spec, err)
	}
	return s, nil
}

// neverFiresFrom is a fixed start for the never-fires check: cron gives up
// after five years, so a spec that fires on a date at all fires within
// five years of any start, including this one, and the check is
// deterministic.
var neverFiresFrom = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// parseCron returns the cron parser's own message, for the config errors.
func parseCron(spec string) (s cron.Schedule, err error) {
	// cron v3.0.1 slices out of range on a time zone prefix with nothing
	// after it ("CRON_TZ=UTC"), so that case is answered here; the recover
	// keeps any other such bug from crashing a daemon on reload.
	if (strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")) && !strings.Contains(spec, " ") {
		return nil, errors.New("time zone prefix without a schedule after it")
	}
	defer func() {
		if v := recover(); v != nil {
			s, err = nil, fmt.Errorf("unreadable spec: %v", v)
		}
	}()
	s, err = cronParser.Parse(spec)
	if err != nil {
		return nil, err
	}
	if s.Next(neverFiresFrom).IsZero() {
		return nil, errors.New("never fires (no such date)")
	}
	return s, nil
}
