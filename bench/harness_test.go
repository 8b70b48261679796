package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
)

var (
	binDir   string // rotatord and fakecloud, built once
	vaultSrv *vaulttest.Server
	setupErr error
)

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "rotatord-bench-")
		if err != nil {
			setupErr = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		binDir = dir
		for _, pkg := range []string{"rotatord", "fakecloud"} {
			if bin := os.Getenv("ROTATORD_BENCH_ROTATORD"); pkg == "rotatord" && bin != "" {
				// A prebuilt rotatord, to compare two versions on the
				// same machine in the same minutes.
				if err := os.Symlink(bin, filepath.Join(dir, pkg)); err != nil {
					setupErr = err
					return m.Run()
				}
				continue
			}
			// The cpuprofile tag lets ROTATORD_CPUPROFILE profile a
			// command (cmd/rotatord/cpuprofile_on.go); it costs nothing
			// when the variable is unset.
			out, err := exec.Command("go", "build", "-tags", "cpuprofile", "-o", filepath.Join(dir, pkg), "../cmd/"+pkg).CombinedOutput()
			if err != nil {
				setupErr = fmt.Errorf("build %s: %v\n%s", pkg, err, out)
				return m.Run()
			}
		}
		if vaultSrv, err = vaulttest.StartMain(); err != nil {
			setupErr = err
			return m.Run()
		}
		defer vaultSrv.Stop()
		return m.Run()
	}()
	os.Exit(code)
}

func needSetup(tb testing.TB) {
	tb.Helper()
	if setupErr != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("setup: %v", setupErr)
		}
		tb.Skipf("setup: %v (run `make vault`)", setupErr)
	}
}

const (
	sesterceKey = "bench-sesterce-key"
	gcoreKey    = "bench-gcore-key"
	project     = 9
)

// fakecloud is a running cmd/fakecloud.
type fakecloud struct {
	URL string
	cmd *exec.Cmd
}

// startFakecloud runs fakecloud with one Sesterce account per key of
// sesterceKeys (the environment carries them: there may be hundreds).
func startFakecloud(tb testing.TB, sesterceKeys []string, args ...string) *fakecloud {
	tb.Helper()
	cmd := exec.Command(filepath.Join(binDir, "fakecloud"), append([]string{"-listen", "127.0.0.1:0", "-gcore-key", gcoreKey}, args...)...)
	cmd.Env = append(os.Environ(), "FAKECLOUD_SESTERCE_KEY="+strings.Join(sesterceKeys, ","))
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatalf("fakecloud: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return &fakecloud{URL: strings.TrimPrefix(strings.TrimSpace(line), "listening on "), cmd: cmd}
}

func (f *fakecloud) getJSON(tb testing.TB, path string, v any) {
	tb.Helper()
	resp, err := http.Get(f.URL + path)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
}

func (f *fakecloud) setFaults(tb testing.TB, rules string) {
	tb.Helper()
	resp, err := http.Post(f.URL+"/admin/faults", "application/json", strings.NewReader(rules))
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("set faults: HTTP %d", resp.StatusCode)
	}
}

// adminKey is a key as /admin/keys shows it.
type adminKey struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	IsDefault bool   `json:"is_default"`
}

func (f *fakecloud) keys(tb testing.TB) []adminKey {
	var v struct {
		Sesterce []adminKey `json:"sesterce"`
		Gcore    []adminKey `json:"gcore"`
	}
	f.getJSON(tb, "/admin/keys", &v)
	return append(v.Sesterce, v.Gcore...)
}

// requestCounts is the fake's request count per route ("*": all).
func (f *fakecloud) requestCounts(tb testing.TB) map[string]int {
	var counts map[string]int
	f.getJSON(tb, "/admin/requests", &counts)
	return counts
}

// setup is one rotatord configuration over n policies: half Sesterce,
// half Gcore (one project).
type setup struct {
	dir     string
	cfgPath string
	fake    *fakecloud
	prefix  string
	names   []string
	// accountKeys holds, with one Sesterce account per policy, each
	// account's API key, in policy order; nil when the Sesterce policies
	// share the account of sesterceKey.
	accountKeys []string
}

// newSetup puts every Sesterce policy on the one account of sesterceKey;
// only the first makes its keys default, since an account has one default.
func newSetup(tb testing.TB, fake *fakecloud, n int, policyExtra, providerExtra string) *setup {
	return buildSetup(tb, fake, n, policyExtra, providerExtra, false)
}

// newAccountsSetup gives each Sesterce policy an account of its own, so
// each makes its keys default: every Sesterce rotation does the whole
// saga (create, makedefault, verifying list). The fake must have been
// started with sesterceAccountKeys(n).
func newAccountsSetup(tb testing.TB, fake *fakecloud, n int, policyExtra, providerExtra string) *setup {
	return buildSetup(tb, fake, n, policyExtra, providerExtra, true)
}

// sesterceAccountKeys returns the API keys of the Sesterce accounts of
// newAccountsSetup over n policies, one per even-numbered policy.
func sesterceAccountKeys(n int) []string {
	var keys []string
	for i := 0; i < n; i += 2 {
		keys = append(keys, fmt.Sprintf("%s-%04d", sesterceKey, i))
	}
	return keys
}

func buildSetup(tb testing.TB, fake *fakecloud, n int, policyExtra, providerExtra string, accounts bool) *setup {
	tb.Helper()
	s := &setup{dir: tb.TempDir(), fake: fake, prefix: fmt.Sprintf("ssh/bench%d", time.Now().UnixNano())}
	var b strings.Builder
	fmt.Fprintf(&b, "state: {path: %s/state.db}\ncontrol: {socket: %s/ctl.sock}\n", s.dir, s.dir)
	fmt.Fprintf(&b, "vault: {address: %s, auth: {method: token, token_env: BENCH_VAULT_TOKEN}}\n", vaultSrv.Addr)
	fmt.Fprintf(&b, "providers:\n  - {name: gcore, type: gcore, base_url: %s, api_key_env: BENCH_GCORE_KEY%s}\n", fake.URL, providerExtra)
	if accounts {
		s.accountKeys = sesterceAccountKeys(n)
		for i := 0; i < n; i += 2 {
			fmt.Fprintf(&b, "  - {name: sesterce-%04d, type: sesterce, base_url: %s, api_key_env: BENCH_SESTERCE_KEY_%04d%s}\n", i, fake.URL, i, providerExtra)
		}
	} else {
		fmt.Fprintf(&b, "  - {name: sesterce, type: sesterce, base_url: %s, api_key_env: BENCH_SESTERCE_KEY%s}\n", fake.URL, providerExtra)
	}
	b.WriteString("policies:\n")
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("p%04d", i)
		s.names = append(s.names, name)
		if i%2 == 0 && accounts {
			fmt.Fprintf(&b, "  - {name: %s, provider: sesterce-%04d, make_default: true, vault_path: %s/%s%s}\n", name, i, s.prefix, name, policyExtra)
		} else if i%2 == 0 {
			fmt.Fprintf(&b, "  - {name: %s, provider: sesterce, make_default: %v, vault_path: %s/%s%s}\n", name, i == 0, s.prefix, name, policyExtra)
		} else {
			fmt.Fprintf(&b, "  - {name: %s, provider: gcore, project_id: %d, vault_path: %s/%s%s}\n", name, project, s.prefix, name, policyExtra)
		}
	}
	s.cfgPath = filepath.Join(s.dir, "policies.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *setup) env(extra ...string) []string {
	env := append(os.Environ(),
		"BENCH_VAULT_TOKEN="+vaultSrv.RootToken.Reveal(),
		"BENCH_SESTERCE_KEY="+sesterceKey,
		"BENCH_GCORE_KEY="+gcoreKey,
	)
	for i, k := range s.accountKeys {
		env = append(env, fmt.Sprintf("BENCH_SESTERCE_KEY_%04d=%s", 2*i, k))
	}
	return append(env, extra...)
}

// rotatord runs one command to completion and returns its output and
// resource usage.
func (s *setup) rotatord(tb testing.TB, extraEnv []string, args ...string) (stdout, stderr string, usage *syscall.Rusage, wall time.Duration, code int) {
	tb.Helper()
	cmd := exec.Command(filepath.Join(binDir, "rotatord"), args...)
	cmd.Env = s.env(extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	_ = cmd.Run()
	wall = time.Since(start)
	usage, _ = cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return out.String(), errb.String(), usage, wall, cmd.ProcessState.ExitCode()
}

func cpu(u *syscall.Rusage) time.Duration {
	if u == nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// daemon is a running `rotatord run` whose log lines are kept.
type daemon struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan struct{}
}

func (d *daemon) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.Write(p)
}

func (d *daemon) log() string { d.mu.Lock(); defer d.mu.Unlock(); return d.logs.String() }

func (s *setup) startDaemon(tb testing.TB, extraEnv ...string) *daemon {
	tb.Helper()
	d := &daemon{done: make(chan struct{})}
	d.cmd = exec.Command(filepath.Join(binDir, "rotatord"), "run", "-config", s.cfgPath)
	d.cmd.Env = s.env(extraEnv...)
	d.cmd.Stdout, d.cmd.Stderr = d, d
	if err := d.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	tb.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := control.Wait(ctx, filepath.Join(s.dir, "ctl.sock")); err != nil {
		tb.Fatalf("daemon did not come up: %v\n%s", err, d.log())
	}
	return d
}
