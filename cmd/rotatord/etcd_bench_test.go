package main_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/state/etcdtest"
)

// BenchmarkRotate1000_EtcdVsBolt prints rotations per second of
// `rotatord rotate -all` over 1,000 policies (the real binary, real Vault,
// the contract fake with no latency) with the state in a bbolt file and
// in a 3-member etcd cluster, both on the same disk, and their ratio. It
// measures once; b.N does not apply.
func BenchmarkRotate1000_EtcdVsBolt(b *testing.B) {
	const n = 1000
	var ps []policyYAML
	for i := range n {
		ps = append(ps, policyYAML{Name: fmt.Sprintf("p%04d", i), Gcore: i%2 == 1, NoDefault: i > 0 && i%2 == 0, MaxAge: "24h", Grace: "1h"})
	}
	measure := func(cfg string, e *env) float64 {
		if _, stderr, code := e.rotatord(nil, "run", "-once", "-config", cfg); code != 0 {
			b.Fatalf("first run: exit %d\n%s", code, stderr)
		}
		start := time.Now()
		if _, stderr, code := e.rotatord(nil, "rotate", "-all", "-config", cfg); code != 0 {
			b.Fatalf("rotate -all: exit %d\n%s", code, stderr)
		}
		return n / time.Since(start).Seconds()
	}

	eb := newEnv(b, cloudtest.Options{})
	eb.rateLimit = "1000"
	eb.writeConfig(ps, "")
	bolt := measure(eb.cfgPath, eb)

	ee := newEnv(b, cloudtest.Options{})
	ee.rateLimit = "1000"
	f := newFleetOn(b, ee, etcdtest.StartWith(b, etcdtest.Config{Members: 3, Disk: true}), 1, ps, 10*time.Second)
	etcd := measure(f.procs[0].cfg, ee)

	b.ReportMetric(bolt, "bbolt-rotations/s")
	b.ReportMetric(etcd, "etcd-rotations/s")
	b.ReportMetric(etcd/bolt, "etcd/bbolt")
	fmt.Fprintf(os.Stderr, "rotate -all over %d policies: bbolt %.1f rotations/s, etcd (3 members) %.1f rotations/s: etcd/bbolt = %.2f\n", n, bolt, etcd, etcd/bolt)
	for range b.N {
	}
}
