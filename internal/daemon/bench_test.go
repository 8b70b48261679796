package daemon_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
	"github.com/rotatord/rotatord/policy"
)

// BenchmarkApp_RotateAll is the engine's share of `make bench-rotations`,
// in process, to profile it (-cpuprofile): each iteration rotates 500
// policies once, on fresh state and a fresh fake,
// half Sesterce (each on its own account, making its keys default), half
// Gcore on one project, against the contract fake without added latency,
// with real bbolt and the in-memory key store in place of Vault, logging
// JSON at info level as the binary does. The fake and the key store run
// in this process too, so its CPU per rotation is an upper bound of the
// engine's; bench/ measures the real processes apart.
func BenchmarkApp_RotateAll(b *testing.B) {
	const n = 500
	var calls int
	var busy time.Duration
	for range b.N {
		b.StopTimer()
		app, fake := benchApp(b, n)
		calls0 := fake.Requests(cloudtest.RouteAll)
		b.StartTimer()
		start := time.Now()
		results, err := app.RotatePolicies(context.Background(), nil, false, "cli")
		busy += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range results {
			if r.Err != nil || !r.Rotated {
				b.Fatalf("%s: rotated %v, err %v", r.Policy, r.Rotated, r.Err)
			}
		}
		b.StopTimer()
		calls += fake.Requests(cloudtest.RouteAll) - calls0
		_ = app.Close()
		fake.Close()
	}
	rotations := float64(b.N * n)
	b.ReportMetric(float64(busy.Microseconds())/1000/rotations, "ms/rotation")
	b.ReportMetric(float64(calls)/rotations, "calls/rotation")
}

// benchApp is an App over n policies (half Sesterce, one account each;
// half Gcore on one project) and the fake they rotate against.
func benchApp(b *testing.B, n int) (*daemon.App, *cloudtest.Server) {
	dir, err := os.MkdirTemp("", "rd-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	var keys []secret.Secret
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "state: {path: %s}\ncontrol: {socket: %s}\n", filepath.Join(dir, "state.db"), filepath.Join(dir, "ctl.sock"))
	cfg.WriteString("vault: {address: \"http://127.0.0.1:1\", auth: {token_env: DAEMON_TEST_VAULT_TOKEN}}\nproviders:\n")
	cfg.WriteString("  - {name: gcore, type: gcore, base_url: URL, api_key_env: DAEMON_BENCH_GCORE_KEY, rate_limit: 100000}\n")
	var policies strings.Builder
	for i := range n {
		if i%2 == 1 {
			fmt.Fprintf(&policies, "  - {name: p%04d, provider: gcore, project_id: 9, vault_path: ssh/bench/p%04d}\n", i, i)
			continue
		}
		key := fmt.Sprintf("bench-sesterce-%04d", i)
		keys = append(keys, secret.Secret(key))
		b.Setenv(fmt.Sprintf("DAEMON_BENCH_SESTERCE_KEY_%04d", i), key)
		fmt.Fprintf(&cfg, "  - {name: s%04d, type: sesterce, base_url: URL, api_key_env: DAEMON_BENCH_SESTERCE_KEY_%04d, rate_limit: 100000}\n", i, i)
		fmt.Fprintf(&policies, "  - {name: p%04d, provider: s%04d, make_default: true, vault_path: ssh/bench/p%04d}\n", i, i, i)
	}
	fake := cloudtest.NewServer(cloudtest.Options{SesterceAPIKey: keys[0], SesterceAPIKeys: keys[1:]})
	b.Setenv("DAEMON_BENCH_GCORE_KEY", cloudtest.DefaultGcoreAPIKey.Reveal())
	b.Setenv("DAEMON_TEST_VAULT_TOKEN", "unused: the benchmark hands the app its key store")
	yaml := strings.ReplaceAll(cfg.String()+"policies:\n"+policies.String(), "base_url: URL", "base_url: "+fake.URL())
	c, err := policy.Parse(strings.NewReader(yaml), filepath.Join(dir, "policies.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	app, err := daemon.New(context.Background(), c, daemon.Options{
		Version: "bench", Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Keys: vaulttest.NewMemory(), NoSlack: true,
	})
	if err != nil {
		b.Fatal(err)
	}

	return app, fake
}
