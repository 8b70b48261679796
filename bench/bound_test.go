package bench

import "testing"

// TestCriticalPath: the latency bound counts round trips on one account:
// its listing, then its policies' calls, no more than the concurrency at
// a time and each policy's one after another.
func TestCriticalPath(t *testing.T) {
	tests := []struct {
		name                         string
		calls, policies, concurrency int
		want                         int
	}{
		{"a Sesterce account with one policy: listing, create, makedefault, verify", 4, 1, 8, 4},
		{"the Gcore project: listing, then 500 creates 8 at a time", 501, 500, 8, 1 + 63},
		{"fewer policies than slots: each policy's chain", 1 + 3*4, 4, 8, 1 + 3},
		{"one call per policy, one slot", 1 + 10, 10, 1, 1 + 10},
		{"no calls", 0, 5, 8, 0},
		{"no policies", 7, 0, 8, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := criticalPath(tt.calls, tt.policies, tt.concurrency); got != tt.want {
				t.Errorf("criticalPath(%d, %d, %d) = %d, want %d", tt.calls, tt.policies, tt.concurrency, got, tt.want)
			}
		})
	}
}
