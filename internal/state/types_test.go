package state

import (
	"testing"
	"time"
)

func TestCurrent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		recs []KeyRecord
		want string // key ID, "" for none
	}{
		{"none", nil, ""},
		{"no active key", []KeyRecord{{KeyID: "a", Status: KeyRetiring}, {KeyID: "b", Status: KeyDeleted}}, ""},
		{"the only active one", []KeyRecord{{KeyID: "a", Status: KeyRetiring}, {KeyID: "b", Status: KeyActive}}, "b"},
		{"activated last wins over created last", []KeyRecord{
			{KeyID: "old", Status: KeyActive, CreatedAt: t0.Add(time.Hour), ActivatedAt: t0},
			{KeyID: "new", Status: KeyActive, CreatedAt: t0, ActivatedAt: t0.Add(time.Minute)},
		}, "new"},
		{"pending is not current", []KeyRecord{{KeyID: "p", Status: KeyPending, ActivatedAt: t0.Add(time.Hour)}, {KeyID: "a", Status: KeyActive}}, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur, ok := Current(tc.recs)
			if ok != (tc.want != "") || cur.KeyID != tc.want {
				t.Errorf("Current = %q, %v; want %q", cur.KeyID, ok, tc.want)
			}
		})
	}
}
