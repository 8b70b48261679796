package httpapi

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestLooseInt_UnmarshalJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: `22`, want: 22},
		{in: `22.0`, want: 22},
		{in: `"2222"`, want: 2222},
		{in: `" 22 "`, want: 22},
		{in: `null`, want: 0},
		{in: `""`, want: 0},
		{in: `-1`, want: -1},
		{in: `22.5`, wantErr: true},
		{in: `"ssh"`, wantErr: true},
		{in: `true`, wantErr: true},
		{in: `{}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var v struct {
				Port LooseInt `json:"port"`
			}
			err := json.Unmarshal([]byte(`{"port":`+tt.in+`}`), &v)
			if (err != nil) != tt.wantErr {
				t.Fatalf("decode %s: error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil && int64(v.Port) != tt.want {
				t.Errorf("decode %s = %d, want %d", tt.in, v.Port, tt.want)
			}
		})
	}
}

func TestForEach(t *testing.T) {
	const n, limit = 100, 8
	var running, peak atomic.Int32
	var mu sync.Mutex
	seen := make([]int, n)
	gate := make(chan struct{})
	go func() {
		// Hold the first calls until limit of them run at once, so the
		// bound is reached, then let everything through.
		for running.Load() < limit {
			select {
			case <-t.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
		close(gate)
	}()
	ForEach(context.Background(), n, limit, func(_ context.Context, i int) {
		r := running.Add(1)
		for {
			p := peak.Load()
			if r <= p || peak.CompareAndSwap(p, r) {
				break
			}
		}
		<-gate
		mu.Lock()
		seen[i]++
		mu.Unlock()
		running.Add(-1)
	})
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("fn(%d) ran %d times, want once", i, c)
		}
	}
	if p := peak.Load(); p != limit {
		t.Errorf("%d calls ran at once, want the limit %d", p, limit)
	}
}
