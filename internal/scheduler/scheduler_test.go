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
