package scheduler

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestScheduler_RunsEveryEntryOnItsSchedule(t *testing.T) {
	s := New(Options{})
	var a, b atomic.Int32
	if err := s.Add("a", "@every 1s", func(context.Context) { a.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("b", "@every 1h", func(context.Context) { b.Add(1) }); err != nil {
		t.Fatal(err)
	}
	s.Start()
	deadline := time.Now().Add(5 * time.Second)
	for a.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.Load() < 2 {
		t.Errorf("@every 1s entry ran %d times in 5s, want >= 2", a.Load())
	}
	if b.Load() != 0 {
		t.Errorf("@every 1h entry ran %d times, want 0", b.Load())
	}
	if next := s.Next("b"); next.Before(time.Now().Add(59 * time.Minute)) {
		t.Errorf("Next(b) = %v, want about an hour from now", next)
	}
}

func TestScheduler_Add(t *testing.T) {
	tests := []struct {
		name, spec string
		wantErr    bool
	}{
		{"five fields", "0 3 * * *", false},
		{"descriptor", "@daily", false},
		{"every", "@every 6h", false},
		{"too few fields", "* *", true},
		{"seconds field not allowed", "0 0 3 * * *", true},
		{"garbage", "tuesday", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := New(Options{}).Add("p", tt.spec, func(context.Context) {})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Add(%q) error = %v, wantErr %v", tt.spec, err, tt.wantErr)
			}
		})
	}
	s := New(Options{})
	_ = s.Add("p", "@daily", func(context.Context) {})
	if err := s.Add("p", "@daily", func(context.Context) {}); err == nil {
		t.Error("adding the same entry twice succeeded; want an error")
	}
}

func TestScheduler_PanicDoesNotKillTheScheduler(t *testing.T) {
	s := New(Options{})
	var after atomic.Int32
	_ = s.Add("boom", "@every 1s", func(context.Context) { panic("boom") })
	_ = s.Add("ok", "@every 1s", func(context.Context) { after.Add(1) })
	s.Start()
	deadline := time.Now().Add(5 * time.Second)
	for after.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_ = s.Stop(context.Background())
	if after.Load() < 2 {
		t.Fatalf("healthy entry ran %d times next to a panicking one, want >= 2", after.Load())
	}
}

func TestScheduler_StopWaitsForJobInFlight(t *testing.T) {
	s := New(Options{})
	started := make(chan struct{})
	var finished atomic.Bool
	_ = s.Add("slow", "@every 1s", func(ctx context.Context) {
		select {
		case started <- struct{}{}:
		default:
			return
		}
		time.Sleep(300 * time.Millisecond) // the step in flight
		finished.Store(true)
	})
	s.Start()
	<-started
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("Stop returned before the job in flight finished")
	}
}

func TestScheduler_StopDeadlineCancelsJob(t *testing.T) {
	s := New(Options{})
	started := make(chan struct{}, 1)
	var sawCancel atomic.Bool
	_ = s.Add("hang", "@every 1s", func(ctx context.Context) {
		started <- struct{}{}
		<-ctx.Done()
		sawCancel.Store(true)
	})
	s.Start()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Stop(ctx); err == nil {
		t.Fatal("Stop with a hung job returned nil; want the deadline error")
	}
	if !sawCancel.Load() {
		t.Fatal("hung job's context was not cancelled after the stop deadline")
	}
}

func TestScheduler_JitterDelaysRunsAndStopCutsTheWait(t *testing.T) {
	s := New(Options{Jitter: 10 * time.Hour})
	var ran atomic.Int32
	_ = s.Add("spread", "@every 1s", func(context.Context) { ran.Add(1) })
	s.Start()
	time.Sleep(2500 * time.Millisecond) // two firings, each waiting up to 10h
	start := time.Now()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Stop took %v: it waited out the jitter instead of cancelling it", took)
	}
	if n := ran.Load(); n > 0 {
		t.Errorf("job ran %d times within 2.5s despite up to 10h of jitter", n)
	}
}

// A policy's own jitter overrides the scheduler's: WithJitter(0) runs on
// time next to entries that wait up to 10h, and an entry's own 10h holds
// it back in a scheduler without jitter. Stop cuts every wait short.
func TestScheduler_WithJitterOverridesTheDefault(t *testing.T) {
	jittered := New(Options{Jitter: 10 * time.Hour})
	plain := New(Options{})
	var prompt, byDefault, own atomic.Int32
	if err := jittered.Add("prompt", "@every 1s", func(context.Context) { prompt.Add(1) }, WithJitter(0)); err != nil {
		t.Fatal(err)
	}
	if err := jittered.Add("default", "@every 1s", func(context.Context) { byDefault.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if err := plain.Add("own", "@every 1s", func(context.Context) { own.Add(1) }, WithJitter(10*time.Hour)); err != nil {
		t.Fatal(err)
	}
	jittered.Start()
	plain.Start()
	// Both schedulers fire on the same whole seconds: once the prompt
	// entry ran twice, the others fired at least once too.
	deadline := time.Now().Add(5 * time.Second)
	for prompt.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	for _, s := range []*Scheduler{jittered, plain} {
		if err := s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Stop took %v: it waited out an entry's jitter", took)
	}
	if prompt.Load() < 2 {
		t.Fatalf("the WithJitter(0) entry ran %d times in 5s, want >= 2", prompt.Load())
	}
	if n := byDefault.Load(); n > 0 {
		t.Errorf("the entry with the scheduler's 10h jitter ran %d times", n)
	}
	if n := own.Load(); n > 0 {
		t.Errorf("the entry with its own 10h jitter ran %d times", n)
	}
}

// The delay before a run is uniform in [0, jitter): never the full
// jitter, and spread over the whole range rather than bunched.
func TestDelay(t *testing.T) {
	const jitter = time.Second
	lo, hi := jitter, time.Duration(0)
	var buckets [10]int
	const draws = 10000
	for range draws {
		d := delay(jitter)
		if d < 0 || d >= jitter {
			t.Fatalf("delay(%v) = %v, outside [0, %v)", jitter, d, jitter)
		}
		lo, hi = min(lo, d), max(hi, d)
		buckets[d*10/jitter]++
	}
	for i, n := range buckets {
		// Each tenth expects 1000; 800 is more than six standard
		// deviations below, so a fair generator never fails this.
		if n < 800 {
			t.Errorf("only %d of %d delays in [%v, %v): not uniform (%v)", n, draws, time.Duration(i)*jitter/10, time.Duration(i+1)*jitter/10, buckets)
		}
	}
	for _, j := range []time.Duration{0, -time.Second} {
		if d := delay(j); d != 0 {
			t.Errorf("delay(%v) = %v, want 0", j, d)
		}
	}
}
