package report

import (
	"fmt"
	"slices"
	"strings"
)

// Gates are the conditions `report -fail-on` can name, each a check of a
// built report. A CI job or cron gate names the ones it cares about as a
// comma list (-fail-on overdue,exposed) and the command exits 3 when any
// of them holds. A capability that adds a status a gate should catch adds
// its check here; nothing else changes.
var gates = map[string]func(*Report) bool{
	// overdue: some key is overdue or failing, or some policy is failing
	// even though it has no key to show it on.
	"overdue": (*Report).Failing,
	// exposed: some key still opens a running machine although rotatord
	// retired or deleted it, or it is past max_age (instances.go).
	"exposed": (*Report).Exposed,
	// stale: some host of a policy with a hosts block is not ok (stale,
	// unreachable or unverified: it may still trust a retired key).
	"stale": (*Report).HostsStale,
}

// GateNames lists the conditions -fail-on accepts, sorted.
func GateNames() []string {
	names := make([]string, 0, len(gates))
	for name := range gates {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// ParseGates reads a -fail-on value: a comma list of gate names, spaces
// around names ignored, duplicates folded. "" names none. An unknown name
// is an error that lists the valid ones.
func ParseGates(s string) ([]string, error) {
	var out []string
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if _, ok := gates[name]; !ok {
			return nil, fmt.Errorf("unknown -fail-on condition %q (want a comma list of %s)", name, strings.Join(GateNames(), ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// Tripped returns, in the order given, the gates among names that hold for
// the report.
func (r *Report) Tripped(names []string) []string {
	var out []string
	for _, name := range names {
		if check, ok := gates[name]; ok && check(r) {
			out = append(out, name)
		}
	}
	return out
}
