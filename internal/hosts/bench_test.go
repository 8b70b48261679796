package hosts

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/hosts/sshdtest"
)

// BenchmarkConvergeAll_WAN converges ROTATORD_BENCH_HOSTS hosts (default
// 200) at concurrency 16, each behind a proxy that adds ROTATORD_BENCH_RTT
// (default 20ms) per round trip, through both phases of a rotation: "add"
// (log in with the old key, add the new one, verify with a fresh login) and
// "remove" (log in with the new key, remove the old one, verify again).
//
// The bound for a phase is what perfect scheduling of network waits would
// give: round trips per host × RTT × ceil(hosts/16). Round trips per host
// are measured, not estimated: one host is converged alone with and
// without a large delay and the difference divided by the round trip. The
// ratio wall/bound is the figure to watch; CPU (sshd forks and re-executes
// a process for every connection: 200 hosts' sshd on the benchmark's own
// cores) is what lifts it above 1 on a small machine, which the "no delay"
// wall of the same work shows; a longer RTT shows the pipeline's own
// efficiency.
// Run with -benchtime=1x.
func BenchmarkConvergeAll_WAN(b *testing.B) {
	n := 200
	if v := os.Getenv("ROTATORD_BENCH_HOSTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("ROTATORD_BENCH_HOSTS=%q", v)
		}
	}
	rtt := 20 * time.Millisecond
	if v := os.Getenv("ROTATORD_BENCH_RTT"); v != "" {
		var err error
		if rtt, err = time.ParseDuration(v); err != nil || rtt <= 0 {
			b.Fatalf("ROTATORD_BENCH_RTT=%q", v)
		}
	}
	const concurrency = 16
	srv := sshdtest.Start(b, n)
	hosts := srv.Hosts()
	old := ed25519Key(b, "rotatord:bench")
	cur := ed25519Key(b, "rotatord:bench")
	others := []testKey{ed25519Key(b, "a"), ed25519Key(b, "b"), ed25519Key(b, "c")}
	keys := Keys{Current: cur.Key, Older: []Key{{Signer: old.Signer}}, Retired: []string{old.Fingerprint}}

	proxies := make([]*sshdtest.DelayProxy, n)
	direct := make([]Target, n)
	delayed := make([]Target, n)
	for i, h := range hosts {
		proxies[i] = sshdtest.NewDelayProxy(b, h.Addr(), rtt/2)
		direct[i] = targetOf(h)
		delayed[i] = Target{Addr: "127.0.0.1", Port: proxies[i].Port(), User: h.User}
	}
	reset := func() {
		for i, h := range hosts {
			h.WriteAuthorizedKeys(b, unrelatedContent(b, i, others, old), 0o600)
		}
	}
	opts := Options{HostKeys: HostKeys{Pins: newMemPins()}, Concurrency: concurrency, Timeout: 5 * time.Minute}
	removeOpts := opts
	removeOpts.RemoveRetired = true

	run := func(targets []Target, o Options) time.Duration {
		start := time.Now()
		rs := ConvergeAll(context.Background(), targets, keys, o)
		d := time.Since(start)
		for _, r := range rs {
			if r.Status != StatusOK {
				b.Fatalf("%s: %s: %v", r.Target.Label(), r.Status, r.Err)
			}
		}
		return d
	}
	// Round trips of each phase on the critical path of one host: the same
	// host converged alone, with and without a proxy adding 50ms each way
	// (large, so that CPU noise is small beside it). Scheduling noise only
	// ever adds time, so the fastest of five runs of each is compared.
	// Turns counted by the proxy include those of the verification
	// connection that overlap the edit, so they are reported beside.
	slow := sshdtest.NewDelayProxy(b, hosts[0].Addr(), 50*time.Millisecond)
	slowTarget := Target{Addr: "127.0.0.1", Port: slow.Port(), User: hosts[0].User}
	resetOne := func() { hosts[0].WriteAuthorizedKeys(b, unrelatedContent(b, 0, others, old), 0o600) }
	phase := func(target Target, remove bool) time.Duration {
		resetOne()
		if remove {
			run(direct[:1], opts)
			return run([]Target{target}, removeOpts)
		}
		return run([]Target{target}, opts)
	}
	measure := func(remove bool) (rtts float64, turns int64) {
		var fast, delayed []time.Duration
		for range 5 {
			fast = append(fast, phase(direct[0], remove))
			t0 := slow.Turns()
			delayed = append(delayed, phase(slowTarget, remove))
			turns = slow.Turns() - t0
		}
		return float64(slices.Min(delayed)-slices.Min(fast)) / float64(100*time.Millisecond), turns
	}
	addRTT, addTurns := measure(false)
	removeRTT, removeTurns := measure(true)

	waves := time.Duration((n + concurrency - 1) / concurrency)
	var addWall, removeWall, addDirect, removeDirect time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		reset()
		b.StartTimer()
		addWall = run(delayed, opts)
		removeWall = run(delayed, removeOpts)
		b.StopTimer()
		reset()
		addDirect = run(direct, opts)
		removeDirect = run(direct, removeOpts)
		b.StartTimer()
	}
	b.StopTimer()
	addBound := time.Duration(addRTT * float64(rtt*waves))
	removeBound := time.Duration(removeRTT * float64(rtt*waves))
	b.ReportMetric(addRTT, "add-rtts/host")
	b.ReportMetric(removeRTT, "remove-rtts/host")
	b.ReportMetric(addWall.Seconds(), "add-wall-s")
	b.ReportMetric(addBound.Seconds(), "add-bound-s")
	b.ReportMetric(addWall.Seconds()/addBound.Seconds(), "add-ratio")
	b.ReportMetric(removeWall.Seconds(), "remove-wall-s")
	b.ReportMetric(removeBound.Seconds(), "remove-bound-s")
	b.ReportMetric(removeWall.Seconds()/removeBound.Seconds(), "remove-ratio")
	b.Logf("%d hosts, concurrency %d, +%v per round trip", n, concurrency, rtt)
	b.Logf("add:    %.1f round trips/host (%d turns over its connections); wall %v, bound %v, ratio %.2f; same work without delay %v",
		addRTT, addTurns, addWall.Round(time.Millisecond), addBound.Round(time.Millisecond), addWall.Seconds()/addBound.Seconds(), addDirect.Round(time.Millisecond))
	b.Logf("remove: %.1f round trips/host (%d turns over its connections); wall %v, bound %v, ratio %.2f; same work without delay %v",
		removeRTT, removeTurns, removeWall.Round(time.Millisecond), removeBound.Round(time.Millisecond), removeWall.Seconds()/removeBound.Seconds(), removeDirect.Round(time.Millisecond))
}
