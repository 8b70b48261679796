package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// latency is what fakecloud adds to every provider call.
const latency = 20 * time.Millisecond

// BenchmarkRotations rotates N policies (default 1,000, ROTATORD_BENCH_N)
// against fakecloud with 20 ms per call: half on Sesterce, each on an
// account of its own and making its keys default, so that each does the
// whole saga (create, makedefault, the verifying list); half on one Gcore
// project. It prints the wall time, the provider calls made (read from the
// fake's request counts), two lower bounds and the ratio of the wall time
// to the larger: the latency bound, the round trips on the busiest
// account's critical path, and the CPU bound, the CPU time rotatord, Vault
// and fakecloud spent divided by the cores. It runs the CPU floor next
// (floor/main.go: the same requests and key generation by a bare program)
// and prints rotatord's CPU as a ratio to the floor's. It then does M rotations
// (default 100, ROTATORD_BENCH_SCRIPT_N) the way people do them by hand —
// a shell loop over ssh-keygen, the vault CLI and curl — against the same
// fakecloud and Vault, and prints the speed ratio per rotation.
// ROTATORD_BENCH_CPUPROFILE=FILE writes rotatord's CPU profile there,
// ROTATORD_BENCH_MEMPROFILE=FILE its allocations. It measures once: b.N
// does not apply.
func BenchmarkRotations(b *testing.B) {
	needSetup(b)
	n := envInt("ROTATORD_BENCH_N", 1000)
	m := envInt("ROTATORD_BENCH_SCRIPT_N", 100)
	const concurrency = 8 // requests in flight per account (the default)
	accountKeys := sesterceAccountKeys(n)
	fake := startFakecloud(b, accountKeys, "-latency", latency.String())
	// The machine inventory is off: it is not rotation work, and it lists
	// every account once more after the rotations, 4 accounts at a time
	// (500 accounts: 2.5 s at 20 ms a call).
	s := newAccountsSetup(b, fake, n, "", ", rate_limit: 100000, inventory: false")
	var env []string
	if p := os.Getenv("ROTATORD_BENCH_CPUPROFILE"); p != "" {
		env = append(env, "ROTATORD_CPUPROFILE="+p)
	}
	if p := os.Getenv("ROTATORD_BENCH_MEMPROFILE"); p != "" {
		env = append(env, "ROTATORD_MEMPROFILE="+p)
	}

	before := fake.requestCounts(b)
	fake0, vault0 := procCPU(b, fake.cmd.Process.Pid), procCPU(b, vaultSrv.Pid())
	busy0, total0 := machineCPU()
	out, stderr, usage, wall, code := s.rotatord(b, env, "rotate", "-config", s.cfgPath, "-all")
	busy1, total1 := machineCPU()
	fakeCPU, vaultCPU := procCPU(b, fake.cmd.Process.Pid)-fake0, procCPU(b, vaultSrv.Pid())-vault0
	if code != 0 {
		b.Fatalf("rotate -all: exit %d\n%s\n%s", code, tail(out, 2000), tail(stderr, 2000))
	}
	if got := strings.Count(out, ": rotated: "); got != n {
		b.Fatalf("%d of %d policies rotated", got, n)
	}
	after := fake.requestCounts(b)
	var routes []string
	var sesterceCalls, gcoreCalls int
	for route, c := range after {
		c -= before[route]
		switch {
		case route == "*" || c == 0:
			continue
		case strings.Contains(route, " /gpu-cloud/"):
			sesterceCalls += c
		default:
			gcoreCalls += c
		}
		routes = append(routes, fmt.Sprintf("%s %d", route, c))
	}
	sort.Strings(routes)
	calls := after["*"] - before["*"]
	perRotation := float64(calls) / float64(n)
	nSesterce, nGcore := len(accountKeys), n-len(accountKeys)

	// The latency bound: on each account the run lists once, then its
	// policies' calls go through at most `concurrency` at a time, and each
	// policy's calls one after another.
	sesterceSteps := criticalPath(ceilDiv(sesterceCalls, nSesterce), 1, concurrency)
	gcoreSteps := criticalPath(gcoreCalls, nGcore, concurrency)
	latencyBound := time.Duration(max(sesterceSteps, gcoreSteps)) * latency
	rotatordCPU := cpu(usage)
	totalCPU := rotatordCPU + vaultCPU + fakeCPU
	cpuBound := totalCPU / time.Duration(runtime.NumCPU())
	bound, limit := latencyBound, "latency"
	if cpuBound > bound {
		bound, limit = cpuBound, "CPU"
	}
	ratio := wall.Seconds() / bound.Seconds()
	perRot := func(d time.Duration) time.Duration { return (d / time.Duration(n)).Round(time.Microsecond) }

	// The floor: the same requests and key generation by a bare program,
	// against the same fakecloud and Vault.
	if out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "floor"), "./floor").CombinedOutput(); err != nil {
		b.Fatalf("build the floor: %v\n%s", err, out)
	}
	floorCmd := exec.Command(filepath.Join(binDir, "floor"), "-cloud", fake.URL, "-vault", vaultSrv.Addr,
		"-prefix", s.prefix+"/floor", "-n", strconv.Itoa(n), "-project", strconv.Itoa(project))
	floorCmd.Env = s.env()
	if out, err := floorCmd.CombinedOutput(); err != nil {
		b.Fatalf("floor: %v\n%s", err, tail(string(out), 2000))
	}
	floorUsage, _ := floorCmd.ProcessState.SysUsage().(*syscall.Rusage)
	floorCPU := cpu(floorUsage)
	overFloor := rotatordCPU.Seconds() / floorCPU.Seconds()

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
	script.Env = append(os.Environ(), "FAKE_URL="+fake.URL, "SESTERCE_KEYS="+strings.Join(accountKeys, " "), "GCORE_KEY="+gcoreKey,
		"PROJECT="+strconv.Itoa(project), "VAULT="+vaultBin, "VAULT_ADDR="+vaultSrv.Addr,
		"VAULT_TOKEN="+vaultSrv.RootToken.Reveal(), "N="+strconv.Itoa(min(m, n)), "PREFIX="+s.prefix+"/manual")
	start := time.Now()
	if out, err := script.CombinedOutput(); err != nil {
		b.Fatalf("manual script: %v\n%s", err, out)
	}
	scriptWall := time.Since(start)
	m = min(m, n)
	speedup := (scriptWall.Seconds() / float64(m)) / (wall.Seconds() / float64(n))

	b.ReportMetric(wall.Seconds(), "wall-s")
	b.ReportMetric(perRotation, "calls/rotation")
	b.ReportMetric(latencyBound.Seconds(), "latency-bound-s")
	b.ReportMetric(cpuBound.Seconds(), "cpu-bound-s")
	b.ReportMetric(ratio, "wall/bound")
	b.ReportMetric(float64(rotatordCPU.Microseconds())/1000/float64(n), "cpu-ms/rotation")
	b.ReportMetric(float64(floorCPU.Microseconds())/1000/float64(n), "floor-cpu-ms/rotation")
	b.ReportMetric(overFloor, "cpu/floor")
	b.ReportMetric(speedup, "x-faster-than-script")
	fmt.Fprintf(os.Stderr, `
rotatord rotate -all, %d policies: %d Sesterce (one account each, make_default), %d Gcore (one project); fakecloud adds %v per call:
  wall time                  %v
  provider calls             %d (%.2f per rotation)
    Sesterce                 %d: %.2f per policy%s
    Gcore                    %d: %.2f per policy%s
    by route                 %s
  latency bound              %v: %d round trips x %v on the busiest account's critical path
                             (a Sesterce account: %d; the Gcore project: 1 listing + max(calls per policy, %d calls / %d in flight) = %d)
  CPU                        rotatord %v (%v per rotation), Vault %v (%v), fakecloud %v (%v): %v in all
  rotatord CPU / floor       %.2f: rotatord %v per rotation, the floor %v (bench/floor: the same requests and
                             key generation by a bare net/http program: no journal, log, audit, retry or check)
  rotatord peak RSS          %.1f MiB
  CPU bound                  %v in all / %d cores = %v
  wall / bound               %.2f (against the %s bound, the larger)
  machine CPU busy           %.0f%% of %d cores; other processes used %v of CPU meanwhile
hand-written script (ssh-keygen + vault CLI + curl, the same calls), %d policies, same fakecloud and Vault:
  wall time                  %v (%v per rotation)
  rotatord per rotation      %v
  speed ratio                %.0fx
`, n, nSesterce, nGcore, latency,
		wall.Round(time.Millisecond),
		calls, perRotation,
		sesterceCalls, float64(sesterceCalls)/float64(max(nSesterce, 1)),
		when(sesterceCalls == 4*nSesterce, " (the run's listing of its account, create, makedefault, the verifying list)"),
		gcoreCalls, float64(gcoreCalls)/float64(max(nGcore, 1)),
		when(gcoreCalls == nGcore+1, " (create; the project is listed once)"),
		strings.Join(routes, ", "),
		latencyBound.Round(time.Millisecond), max(sesterceSteps, gcoreSteps), latency,
		sesterceSteps, gcoreCalls, concurrency, gcoreSteps,
		rotatordCPU.Round(time.Millisecond), perRot(rotatordCPU), vaultCPU.Round(time.Millisecond), perRot(vaultCPU),
		fakeCPU.Round(time.Millisecond), perRot(fakeCPU), totalCPU.Round(time.Millisecond),
		overFloor, perRot(rotatordCPU), perRot(floorCPU),
		maxRSSMiB(usage),
		totalCPU.Round(time.Millisecond), runtime.NumCPU(), cpuBound.Round(time.Millisecond),
		ratio, limit,
		100*float64(busy1-busy0)/float64(max(total1-total0, 1)), runtime.NumCPU(),
		max(time.Duration(busy1-busy0)*10*time.Millisecond-totalCPU, 0).Round(10*time.Millisecond),
		m, scriptWall.Round(time.Millisecond), (scriptWall / time.Duration(m)).Round(time.Millisecond),
		(wall / time.Duration(n)).Round(time.Microsecond), speedup)
	for range b.N {
	}
}

// when is s when ok, else "": a description the counts bear out.
func when(ok bool, s string) string {
	if ok {
		return s
	}
	return ""
}

// maxRSSMiB is a finished process's peak resident memory.
func maxRSSMiB(u *syscall.Rusage) float64 {
	if u == nil {
		return 0
	}
	return float64(u.Maxrss) / 1024 // KiB on Linux
}

// criticalPath is the fewest round trips that calls on one account can
// take: the run's listing, then the policies' calls, no more than
// concurrency at a time and each policy's one after another.
func criticalPath(calls, policies, concurrency int) int {
	if calls == 0 || policies == 0 {
		return 0
	}
	rest := calls - 1
	return 1 + max(ceilDiv(rest, policies), ceilDiv(rest, concurrency))
}

func ceilDiv(a, b int) int {
	if b <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// procCPU returns the user+system CPU time of process pid so far
// (/proc/<pid>/stat, in clock ticks of 10 ms).
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatalf("CPU time of process %d: %v", pid, err)
	}
	// The command name (field 2) may hold spaces: count from its ")".
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(fields) < 13 {
		tb.Fatalf("CPU time of process %d: short /proc stat %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		tb.Fatalf("CPU time of process %d: /proc stat %q", pid, b)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}

// machineCPU returns the busy and total jiffies (10 ms) of all cores
// (/proc/stat).
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
