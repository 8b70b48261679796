package bench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// latency is what fakecloud adds to every provider call.
const latency = 20 * time.Millisecond

// BenchmarkRotations rotates N policies (default 1,000, ROTATORD_BENCH_N)
// spread over both providers against fakecloud with 20 ms per call, and
// prints the wall time, the critical-path lower bound, their ratio and the
// CPU time per rotation. It then does M rotations (default 100,
// ROTATORD_BENCH_SCRIPT_N) the way people do them by hand — a shell loop
// over ssh-keygen, the vault CLI and curl — against the same fakecloud and
// Vault, and prints the speed ratio per rotation. It measures once: b.N
// does not apply.
func BenchmarkRotations(b *testing.B) {
	needSetup(b)
	n := envInt("ROTATORD_BENCH_N", 1000)
	m := envInt("ROTATORD_BENCH_SCRIPT_N", 100)
	const concurrency = 8 // per provider (the default), two providers
	fake := startFakecloud(b, "-latency", latency.String())
	s := newSetup(b, fake, n, "", ", rate_limit: 100000")

	before := fake.requests(b)
	busy0, total0 := machineCPU()
	out, stderr, usage, wall, code := s.rotatord(b, nil, "rotate", "-config", s.cfgPath, "-all")
	busy1, total1 := machineCPU()
	if code != 0 {
		b.Fatalf("rotate -all: exit %d\n%s\n%s", code, out, tail(stderr, 2000))
	}
	if got := strings.Count(out, ": rotated: "); got != n {
		b.Fatalf("%d of %d policies rotated", got, n)
	}
	calls := fake.requests(b) - before
	perRotation := float64(calls) / float64(n)
	slots := 2 * concurrency
	bound := time.Duration(perRotation * float64(latency) * float64((n+slots-1)/slots))
	ratio := wall.Seconds() / bound.Seconds()
	cpuPer := cpu(usage) / time.Duration(n)

	// The same work by hand.
	for _, tool := range []string{"ssh-keygen", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("the hand-written script needs %s: apt-get install -y openssh-client curl jq", tool)
		}
	}
	vaultBin, err := exec.LookPath(os.Getenv("ROTATORD_VAULT_BIN"))
	if err != nil {
		vaultBin = "../bin/vault"
	}
	script := exec.Command("bash", "manual-rotate.sh")
	script.Env = append(os.Environ(), "FAKE_URL="+fake.URL, "SESTERCE_KEY="+sesterceKey, "GCORE_KEY="+gcoreKey,
		"PROJECT="+strconv.Itoa(project), "VAULT="+vaultBin, "VAULT_ADDR="+vaultSrv.Addr,
		"VAULT_TOKEN="+vaultSrv.RootToken.Reveal(), "N="+strconv.Itoa(m), "PREFIX="+s.prefix+"/manual")
	start := time.Now()
	if out, err := script.CombinedOutput(); err != nil {
		b.Fatalf("manual script: %v\n%s", err, out)
	}
	scriptWall := time.Since(start)
	speedup := (scriptWall.Seconds() / float64(m)) / (wall.Seconds() / float64(n))

	b.ReportMetric(wall.Seconds(), "wall-s")
	b.ReportMetric(bound.Seconds(), "bound-s")
	b.ReportMetric(ratio, "wall/bound")
	b.ReportMetric(float64(cpuPer.Microseconds())/1000, "cpu-ms/rotation")
	b.ReportMetric(speedup, "x-faster-than-script")
	fmt.Fprintf(os.Stderr, `
rotatord rotate -all, %d policies (half Sesterce, half Gcore), fakecloud latency %v per call:
  wall time                  %v
  provider calls             %d (%.2f per rotation)
  critical-path lower bound  %.2f calls x %v x ceil(%d / %d in flight) = %v
  wall / bound               %.2f
  CPU per rotation           %v (rotatord process: user+sys %v)
  machine CPU busy           %.0f%% of %d cores (rotatord, the Vault dev server and fakecloud share them)
hand-written script (ssh-keygen + vault CLI + curl), %d policies, same fakecloud and Vault:
  wall time                  %v (%v per rotation)
  rotatord per rotation      %v
  speed ratio                %.0fx
`, n, latency, wall.Round(time.Millisecond), calls, perRotation, perRotation, latency, n, slots, bound.Round(time.Millisecond),
		ratio, cpuPer.Round(time.Microsecond), cpu(usage).Round(time.Millisecond),
		100*float64(busy1-busy0)/float64(max(total1-total0, 1)), runtime.NumCPU(),
		m, scriptWall.Round(time.Millisecond), (scriptWall / time.Duration(m)).Round(time.Millisecond),
		(wall / time.Duration(n)).Round(time.Microsecond), speedup)
	for range b.N {
	}
}

// machineCPU returns the busy and total jiffies of all cores (/proc/stat).
func machineCPU() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	fields := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1:]
	for i, f := range fields {
		v, _ := strconv.ParseInt(f, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
