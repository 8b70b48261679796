package main_test

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// The points where the engine's test hook can SIGKILL the process: just
// before and after every side effect, and right after every journal commit
// (the promotion commits with done; Gcore's upload with its promotion).
var crashPoints = []string{
	"journal:planned",
	"before:store_pending", "after:store_pending", "journal:pending_stored",
	"before:upload", "after:upload", "journal:uploaded",
	"before:activate", "after:activate", "journal:activated",
	"before:promote", "after:promote",
	"journal:done",
	"before:delete", "after:delete",
}

var crashPolicies = []policyYAML{{Name: "gpu", Grace: "1s"}, {Name: "infer", Gcore: true, Grace: "1s"}}

// TestCrash_EveryStepBoundary SIGKILLs the real binary at every step
// boundary (via ROTATORD_TEST_CRASH_AT) and checks after each kill that no
// provider key lacks its private half in Vault, and after each restart that
// every policy converged.
func TestCrash_EveryStepBoundary(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	e.writeConfig(crashPolicies, "")
	if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
		t.Fatalf("first run: exit %d\n%s", code, stderr)
	}
	for _, point := range crashPoints {
		// Retired keys from the previous round are due: the delete points fire.
		time.Sleep(1100 * time.Millisecond)
		_, stderr, code := e.rotatord([]string{"ROTATORD_TEST_CRASH_AT=" + point}, "rotate", "-config", e.cfgPath, "-all")
		if code != 128+int(syscall.SIGKILL) {
			t.Fatalf("crash at %s: exit %d, want SIGKILL\n%s", point, code, stderr)
		}
		for _, p := range crashPolicies {
			e.assertPrivateHalvesInVault(p, "after SIGKILL at "+point)
		}
		if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
			t.Fatalf("restart after crash at %s: exit %d\n%s", point, code, stderr)
		}
		for _, p := range crashPolicies {
			e.assertConverged(p, "restart after SIGKILL at "+point)
		}
	}
	e.assertNoOrphansPastGrace(t)
}

// TestCrash_RandomPoints SIGKILLs a daemon at random instants while it
// rotates against a provider with latency, then restarts it.
func TestCrash_RandomPoints(t *testing.T) {
	n := 60
	if testing.Short() {
		n = 10
	}
	e := newEnv(t, cloudtest.Options{Latency: 5 * time.Millisecond})
	e.writeConfig(crashPolicies, "")
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ROTATORD_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set ROTATORD_CRASH_SEED to replay)", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	// Kill inside the window one whole run takes on this machine now, so
	// a loaded CI machine still gets kills in the middle of sagas.
	start := time.Now()
	if _, stderr, code := e.rotatord(nil, "rotate", "-config", e.cfgPath, "-all"); code != 0 {
		t.Fatalf("timing run: exit %d\n%s", code, stderr)
	}
	window := time.Since(start)
	t.Logf("one rotate -all takes %v here: kills land within it", window.Round(time.Millisecond))
	kills, midSaga := 0, 0
	creates := func() int {
		return e.fake.Requests(cloudtest.RouteSesterceCreate) + e.fake.Requests(cloudtest.RouteGcoreCreate)
	}
	for i := 0; i < n; i++ {
		before := creates()
		cmd := exec.Command(rotatordBin, "rotate", "-config", e.cfgPath, "-all")
		cmd.Env = e.environ()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(window))))
		_ = cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			kills++
			if creates() > before {
				midSaga++ // killed after it had started uploading
			}
		}
		for _, p := range crashPolicies {
			e.assertPrivateHalvesInVault(p, "after random SIGKILL #"+strconv.Itoa(i))
		}
		if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
			t.Fatalf("restart after random SIGKILL #%d: exit %d\n%s", i, code, stderr)
		}
		for _, p := range crashPolicies {
			e.assertConverged(p, "restart after random SIGKILL #"+strconv.Itoa(i))
		}
	}
	t.Logf("%d of %d runs were killed before finishing, %d of them after uploads had begun", kills, n, midSaga)
	if midSaga < n/10 {
		t.Errorf("only %d of %d kills landed inside a saga; the kill window misses the interesting part", midSaga, n)
	}
	time.Sleep(1100 * time.Millisecond)
	e.assertNoOrphansPastGrace(t)
}

// TestCrashHook_NotInReleaseBuild: the binary built without the crashtest
// tag ignores ROTATORD_TEST_CRASH_AT, so no environment variable can make
// the shipped rotatord kill itself mid-rotation.
func TestCrashHook_NotInReleaseBuild(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	e.writeConfig(crashPolicies, "")
	release := filepath.Join(t.TempDir(), "rotatord")
	if out, err := exec.Command("go", "build", "-o", release, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(release, "run", "-once", "-config", e.cfgPath)
	cmd.Env = e.environ("ROTATORD_TEST_CRASH_AT=journal:uploaded,after:upload,before:promote")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("release build with ROTATORD_TEST_CRASH_AT set: %v\n%s", err, out)
	}
	for _, p := range crashPolicies {
		e.assertConverged(p, "release build run")
	}
}

// assertNoOrphansPastGrace: once the grace period is over and a run has
// swept, each policy has exactly its one active key on the provider.
func (e *env) assertNoOrphansPastGrace(t *testing.T) {
	t.Helper()
	time.Sleep(1100 * time.Millisecond)
	// Orphans found now get a fresh grace period: run, wait, run again.
	for i := 0; i < 2; i++ {
		if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
			t.Fatalf("final run: exit %d\n%s", code, stderr)
		}
		time.Sleep(1100 * time.Millisecond)
	}
	if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
		t.Fatalf("final sweep: exit %d\n%s", code, stderr)
	}
	for _, p := range crashPolicies {
		cur := e.assertConverged(p, "final")
		if keys := e.managed(p); len(keys) != 1 || keys[0].ID != cur.ID {
			t.Errorf("%s: %d rotatord keys on the provider past the grace period, want only the active one: %+v", p.Name, len(keys), keys)
		}
	}
}
