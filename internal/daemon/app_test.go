package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
	"github.com/rotatord/rotatord/policy"
)

// The daemon tests drive App directly, without signals or a process:
// real bbolt, the contract fake of the providers, and the in-memory KV v2
// store that passes Vault's own conformance suite.

// env is one daemon's surroundings.
type env struct {
	t    *testing.T
	dir  string
	fake *cloudtest.Server
	keys *vaulttest.Memory
	logs *syncBuffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Unix socket paths are short; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "rd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	e := &env{t: t, dir: dir, fake: cloudtest.NewServer(cloudtest.Options{}), keys: vaulttest.NewMemory(), logs: &syncBuffer{}}
	t.Cleanup(e.fake.Close)
	t.Setenv("DAEMON_TEST_SESTERCE_KEY", cloudtest.DefaultSesterceAPIKey.Reveal())
	t.Setenv("DAEMON_TEST_VAULT_TOKEN", "unused: the test hands the app its key store")
	return e
}

// policySpec is one policy of a test config.
type policySpec struct {
	name, schedule, maxAge, rotateBefore, grace string
}

// config renders a config: every policy on the one Sesterce account, each
// with its own key name prefix (one of them makes its keys the default).
// extra is added at the top level.
func (e *env) config(extra string, ps ...policySpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state: {path: %s}\ncontrol: {socket: %s}\n", filepath.Join(e.dir, "state.db"), filepath.Join(e.dir, "ctl.sock"))
	b.WriteString("vault: {address: \"http://127.0.0.1:1\", auth: {token_env: DAEMON_TEST_VAULT_TOKEN}}\n")
	fmt.Fprintf(&b, "providers:\n  - {name: sesterce-test, type: sesterce, base_url: %q, api_key_env: DAEMON_TEST_SESTERCE_KEY, rate_limit: 1000}\n", e.fake.URL())
	b.WriteString(extra)
	b.WriteString("policies:\n")
	for i, p := range ps {
		fmt.Fprintf(&b, "  - {name: %s, provider: sesterce-test, make_default: %v, schedule: %q, max_age: %s, rotate_before: %s, grace_period: %s, vault_path: ssh/test/%s}\n",
			p.name, i == 0, p.schedule, p.maxAge, p.rotateBefore, p.grace, p.name)
	}
	return b.String()
}

func (e *env) parse(yaml string) *policy.Config {
	e.t.Helper()
	cfg, err := policy.Parse(strings.NewReader(yaml), filepath.Join(e.dir, "policies.yaml"))
	if err != nil {
		e.t.Fatalf("test config: %v\n%s", err, yaml)
	}
	return cfg
}

// newApp makes an App whose reloads read what load returns.
func (e *env) newApp(cfg *policy.Config, load func(string) (*policy.Config, error)) *daemon.App {
	e.t.Helper()
	app, err := daemon.New(context.Background(), cfg, daemon.Options{
		Version: "test", Logger: slog.New(slog.NewJSONHandler(e.logs, nil)),
		Keys: e.keys, Load: load, BackoffBase: 10 * time.Millisecond,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return app
}

// rotationsOf lists the journal's rotations of policy, by reopening the
// state file read-only after the app has stopped, or through a running
// app's status otherwise (see rotationsRunning).
func rotationsAfter(t *testing.T, st state.Store, policy string, after time.Time) int {
	t.Helper()
	n := 0
	if err := st.View(func(tx state.Tx) error {
		rs, err := tx.Rotations(policy, 0)
		for _, r := range rs {
			if r.StartedAt.After(after) {
				n++
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestApp_ReloadStorm: 50 reloads at once, alternating between a config
// with policies keep and drop and one with keep alone. They apply one at a
// time, so the 50th config read is the one in force: keep is scheduled,
// drop is not, and drop never starts another rotation, while keep goes on
// rotating every second.
func TestApp_ReloadStorm(t *testing.T) {
	e := newEnv(t)
	fast := func(name string) policySpec { return policySpec{name, "@every 1s", "3s", "2s", "1s"} }
	both := e.parse(e.config("", fast("keep"), fast("drop")))
	keepOnly := e.parse(e.config("", fast("keep")))
	var loads atomic.Int64
	app := e.newApp(both, func(string) (*policy.Config, error) {
		if loads.Add(1)%2 == 1 {
			return both, nil
		}
		return keepOnly, nil
	})
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = app.Stop(context.Background())
		}
	}()

	const reloads = 50
	var wg sync.WaitGroup
	errs := make(chan error, reloads)
	for range reloads {
		wg.Go(func() {
			_, err := app.Reload(ctx)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Reload: %v", err)
		}
	}
	settled := time.Now()
	if n := loads.Load(); n != reloads {
		t.Fatalf("config read %d times, want %d", n, reloads)
	}
	if got := app.Scheduled(); !slices.Equal(got, []string{"keep"}) {
		t.Fatalf("scheduled after the storm = %v, want [keep]", got)
	}
	st, err := app.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Policies) != 1 || st.Policies[0].Name != "keep" || st.Policies[0].NextRun.IsZero() {
		t.Fatalf("status after the storm = %+v, want keep alone, scheduled", st.Policies)
	}
	// keep rotates twice more (its key is due every second); by then any
	// stale schedule of drop would have fired too.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if n := rotationsAfter(t, app.Store(), "keep", settled); n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("keep did not rotate twice after the storm")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := app.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped = true
	db, err := bolt.OpenStore(filepath.Join(e.dir, "state.db"), bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n := rotationsAfter(t, db, "drop", settled); n != 0 {
		t.Errorf("drop, removed by the last reload, started %d rotation(s) after it", n)
	}
}

// TestApp_StopWaitsForRunsInFlight: a rotation hangs on the provider while
// the daemon is asked to stop. Manual rotations are refused from then on;
// Stop returns only once the run finished, and the run's last journal
// write landed (the state was not closed under it).
func TestApp_StopWaitsForRunsInFlight(t *testing.T) {
	e := newEnv(t)
	// other is free while gpu hangs: asking for it probes whether manual
	// rotations are still accepted without queueing behind gpu's lock.
	cfg := e.parse(e.config("", policySpec{"gpu", "@daily", "30d", "7d", "1d"}, policySpec{"other", "@daily", "30d", "7d", "1d"}))
	app := e.newApp(cfg, nil)
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceCreate, Kind: cloudtest.FaultHang, Count: 1})
	rotated := make(chan error, 1)
	go func() {
		res, err := app.RotatePolicies(ctx, []string{"gpu"}, false, "test")
		if err == nil && (len(res) != 1 || !res[0].Rotated) {
			err = fmt.Errorf("results %+v", res)
			if len(res) == 1 && res[0].Err != nil {
				err = res[0].Err
			}
		}
		rotated <- err
	}()
	waitFor(t, "the upload to hang", func() bool { return e.fake.Hanging() == 1 })

	stopped := make(chan error, 1)
	go func() { stopped <- app.Stop(context.Background()) }()
	waitFor(t, "manual rotations to be refused", func() bool {
		_, err := app.RotatePolicies(ctx, []string{"other"}, false, "test")
		return errors.Is(err, daemon.ErrStopping)
	})
	if _, err := app.Reload(ctx); !errors.Is(err, daemon.ErrStopping) {
		t.Errorf("Reload during stop = %v, want ErrStopping", err)
	}
	e.fake.ReleaseHangs()
	if err := <-rotated; err != nil {
		t.Fatalf("the rotation in flight failed: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	db, err := bolt.OpenStore(filepath.Join(e.dir, "state.db"), bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx state.Tx) error {
		open, err := tx.OpenRotations()
		done, _ := tx.Rotations("gpu", 1)
		if err != nil || len(open) != 0 || len(done) != 1 || done[0].Step != state.StepDone {
			t.Errorf("after stop: open %v, last %+v (%v); want the rotation done", open, done, err)
		}
		return nil
	})
}

// TestApp_StopDeadline: a run that outlives the stop deadline is
// cancelled, and the state is closed only once it returned; the journal
// keeps the open rotation for the next start to resume.
func TestApp_StopDeadline(t *testing.T) {
	e := newEnv(t)
	cfg := e.parse(e.config("", policySpec{"gpu", "@daily", "30d", "7d", "1d"}))
	app := e.newApp(cfg, nil)
	if err := app.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceCreate, Kind: cloudtest.FaultHang, Count: 1})
	rotated := make(chan error, 1)
	go func() {
		res, err := app.RotatePolicies(context.Background(), []string{"gpu"}, false, "test")
		if err == nil && len(res) == 1 {
			err = res[0].Err
		}
		rotated <- err
	}()
	waitFor(t, "the upload to hang", func() bool { return e.fake.Hanging() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := app.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop past its deadline = %v, want DeadlineExceeded", err)
	}
	if err := <-rotated; !errors.Is(err, context.Canceled) {
		t.Errorf("the run cut short returned %v, want context.Canceled", err)
	}
	db, err := bolt.OpenStore(filepath.Join(e.dir, "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx state.Tx) error {
		open, err := tx.OpenRotationsOf("gpu")
		if err != nil || len(open) != 1 {
			t.Errorf("open rotations after a cut-short stop = %+v, %v; want the one to resume", open, err)
		}
		return nil
	})
}

// TestApp_Reload says which changed settings wait for a restart, and keeps
// the running config when the new one does not load.
func TestApp_Reload(t *testing.T) {
	e := newEnv(t)
	spec := policySpec{"gpu", "@daily", "30d", "7d", "1d"}
	first := e.parse(e.config("", spec))
	var next func(string) (*policy.Config, error)
	app := e.newApp(first, func(p string) (*policy.Config, error) { return next(p) })
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer app.Stop(context.Background())

	t.Run("restart-only settings are named", func(t *testing.T) {
		changed := strings.Replace(e.config("metrics: {listen: \"127.0.0.1:1\"}\n", spec, policySpec{"infer", "@daily", "30d", "7d", "1d"}),
			"vault: {address: \"http://127.0.0.1:1\"", "vault: {address: \"http://127.0.0.1:2\"", 1)
		next = func(string) (*policy.Config, error) { return e.parse(changed), nil }
		res, err := app.Reload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Policies != 2 || !slices.Equal(res.RestartRequired, []string{"vault", "metrics.listen"}) {
			t.Errorf("Reload = %+v, want 2 policies and vault, metrics.listen waiting for a restart", res)
		}
		if !strings.Contains(e.logs.String(), `"restart_required":["vault","metrics.listen"]`) {
			t.Errorf("the log does not name the restart-only settings:\n%s", e.logs)
		}
		if got := app.Scheduled(); !slices.Equal(got, []string{"gpu", "infer"}) {
			t.Errorf("scheduled = %v, want the new policies", got)
		}
	})
	t.Run("a bad config keeps the running one", func(t *testing.T) {
		bad := errors.New("policies.yaml:7: policy \"gpu\": schedule: invalid cron spec")
		next = func(string) (*policy.Config, error) { return nil, bad }
		if _, err := app.Reload(ctx); !errors.Is(err, bad) {
			t.Fatalf("Reload = %v, want the load error", err)
		}
		st, err := app.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastReloadOK || st.LastReloadErr != bad.Error() || len(st.Policies) != 2 {
			t.Errorf("status after a bad reload: ok %v, error %q, %d policies; want the error and the 2 running policies", st.LastReloadOK, st.LastReloadErr, len(st.Policies))
		}
		if got := app.Scheduled(); !slices.Equal(got, []string{"gpu", "infer"}) {
			t.Errorf("scheduled = %v, want the running config's", got)
		}
		next = func(string) (*policy.Config, error) { return first, nil }
		if _, err := app.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		if st, _ := app.Status(ctx); !st.LastReloadOK {
			t.Error("a good reload did not clear the error")
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
