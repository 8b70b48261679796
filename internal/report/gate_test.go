package report

import (
	"slices"
	"strings"
	"testing"
)

func TestParseGates(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"  ", nil},
		{"overdue", []string{"overdue"}},
		{" overdue , overdue", []string{"overdue"}},
	} {
		got, err := ParseGates(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseGates(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"overdu", "overdue,", "overdue,nope"} {
		_, err := ParseGates(bad)
		if err == nil {
			t.Errorf("ParseGates(%q) accepted an unknown condition", bad)
			continue
		}
		// The error names every valid condition, so the user can fix it.
		for _, name := range GateNames() {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("ParseGates(%q) error %q does not list %q", bad, err, name)
			}
		}
	}
}

func TestTripped(t *testing.T) {
	ok := &Report{Keys: []Row{{Policy: "p", Status: StatusOK}}}
	overdue := &Report{Keys: []Row{{Policy: "p", Status: StatusOverdue}}}
	failingPolicy := &Report{Policies: []PolicyInfo{{Name: "p", Failing: true}}}
	if got := ok.Tripped([]string{"overdue"}); len(got) != 0 {
		t.Errorf("an all-ok report tripped %v", got)
	}
	if got := overdue.Tripped([]string{"overdue"}); !slices.Equal(got, []string{"overdue"}) {
		t.Errorf("an overdue key tripped %v, want [overdue]", got)
	}
	if got := failingPolicy.Tripped([]string{"overdue"}); !slices.Equal(got, []string{"overdue"}) {
		t.Errorf("a failing policy with no key tripped %v, want [overdue]", got)
	}
	if got := overdue.Tripped(nil); len(got) != 0 {
		t.Errorf("no -fail-on tripped %v", got)
	}
}
