package main_test

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// BenchmarkDaemon_Idle1000Policies prints the idle daemon's resident memory
// and CPU with 1,000 policies loaded and 1,000 keys in state (targets:
// under 40 MiB RSS, about 0 % CPU between runs). It also prints how long
// the first `run -once` over the 1,000 policies took. It measures once;
// b.N does not apply.
func BenchmarkDaemon_Idle1000Policies(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	e := newEnv(b, cloudtest.Options{})
	e.rateLimit = "1000" // the default 10 req/s would make the set-up run take minutes
	var ps []policyYAML
	for i := 0; i < 1000; i++ {
		ps = append(ps, policyYAML{Name: fmt.Sprintf("p%04d", i), Gcore: i%2 == 1, NoDefault: i > 0 && i%2 == 0})
	}
	e.writeConfig(ps, "")
	start := time.Now()
	if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
		b.Fatalf("run -once: exit %d\n%s", code, stderr)
	}
	once := time.Since(start)

	d := e.startDaemon()
	pid := d.cmd.Process.Pid
	time.Sleep(3 * time.Second) // start-up settles (resume, schedules built)
	ticks0, err := cpuTicks(pid)
	if err != nil {
		b.Fatal(err)
	}
	window := 10 * time.Second
	time.Sleep(window)
	ticks1, _ := cpuTicks(pid)
	mem, err := rss(pid)
	if err != nil {
		b.Fatal(err)
	}
	const clkTck = 100 // USER_HZ on Linux
	cpuPct := float64(ticks1-ticks0) / clkTck / window.Seconds() * 100
	b.ReportMetric(float64(mem)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(cpuPct, "idle-CPU-%")
	b.ReportMetric(once.Seconds(), "run-once-1000-s")
	fmt.Fprintf(os.Stderr, "idle daemon, 1000 policies: RSS %.1f MiB, CPU %.2f %% over %v; first run -once over 1000 policies: %v\n",
		float64(mem)/(1<<20), cpuPct, window, once.Round(time.Millisecond))
	for range b.N {
	}
}
