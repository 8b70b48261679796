package main_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/cloud/gcore"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/cloud/sesterce"
	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/keygen"
	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
	"github.com/rotatord/rotatord/internal/vault"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
)

// The end-to-end tests run the real rotatord binary against a real Vault
// dev server and the contract fake of both providers.
var (
	rotatordBin string
	vaultSrv    *vaulttest.Server
	setupErr    error
)

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "rotatord-e2e-")
		if err != nil {
			setupErr = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		rotatordBin = filepath.Join(dir, "rotatord")
		if out, err := exec.Command("go", "build", "-o", rotatordBin, ".").CombinedOutput(); err != nil {
			setupErr = fmt.Errorf("build rotatord: %v\n%s", err, out)
			return m.Run()
		}
		vaultSrv, err = vaulttest.StartMain()
		if err != nil {
			setupErr = err
			return m.Run()
		}
		defer vaultSrv.Stop()
		return m.Run()
	}()
	os.Exit(code)
}

// env is one end-to-end environment: a fake cloud, a Vault path prefix of
// its own in the shared dev server, a state dir and a config file.
type env struct {
	t       testing.TB
	fake    *cloudtest.Server
	dir     string
	prefix  string // vault path prefix, unique per test
	store   *vault.Store
	cfgPath string
	sest    cloud.Provider
	gcore   cloud.Provider
	// rateLimit, when set, is the providers' rate_limit (requests/s).
	rateLimit string
}

const e2eProject = 77

func newEnv(t testing.TB, fakeOpts cloudtest.Options) *env {
	t.Helper()
	if setupErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("end-to-end setup: %v", setupErr)
		}
		t.Skipf("end-to-end setup: %v (run `make vault`)", setupErr)
	}
	e := &env{t: t, dir: t.TempDir()}
	e.prefix = "ssh/" + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	e.fake = cloudtest.NewServer(fakeOpts)
	t.Cleanup(e.fake.Close)
	var err error
	e.store, err = vault.New(context.Background(), vault.Config{Address: vaultSrv.Addr, Mount: vaulttest.Mount, Auth: vault.Auth{Token: vaultSrv.RootToken}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.store.Close)
	mk := func(typ string, key secret.Secret) cloud.Provider {
		cfg := httpapi.Config{Name: typ, BaseURL: e.fake.URL(), APIKey: key, RateLimit: -1}
		var p cloud.Provider
		if typ == "sesterce" {
			p, err = sesterce.New(cfg)
		} else {
			p, err = gcore.New(cfg)
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	e.sest = mk("sesterce", cloudtest.DefaultSesterceAPIKey)
	e.gcore = mk("gcore", cloudtest.DefaultGcoreAPIKey)
	return e
}

// policyYAML is one policy block for writeConfig.
type policyYAML struct {
	Name, Provider, Schedule, MaxAge, RotateBefore, Grace string
	Gcore                                                 bool
	NoDefault                                             bool // sesterce: make_default: false (one default per account)
}

func (e *env) socket() string { return filepath.Join(e.dir, "ctl.sock") }
func (e *env) statePath() string {
	return filepath.Join(e.dir, "state.db")
}

// writeConfig writes the config file; extra is appended verbatim at the top level.
func (e *env) writeConfig(ps []policyYAML, extra string) {
	e.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "state: {path: %s}\ncontrol: {socket: %s}\n", e.statePath(), e.socket())
	fmt.Fprintf(&b, "vault:\n  address: %s\n  mount: secret\n  auth: {method: token, token_env: E2E_VAULT_TOKEN}\n", vaultSrv.Addr)
	rl := ""
	if e.rateLimit != "" {
		rl = ", rate_limit: " + e.rateLimit
	}
	fmt.Fprintf(&b, "providers:\n  - {name: sesterce-e2e, type: sesterce, base_url: %s, api_key_env: E2E_SESTERCE_KEY%s}\n", e.fake.URL(), rl)
	fmt.Fprintf(&b, "  - {name: gcore-e2e, type: gcore, base_url: %s, api_key_env: E2E_GCORE_KEY%s}\n", e.fake.URL(), rl)
	b.WriteString(extra)
	b.WriteString("policies:\n")
	for _, p := range ps {
		fmt.Fprintf(&b, "  - name: %s\n", p.Name)
		if p.Gcore {
			fmt.Fprintf(&b, "    provider: gcore-e2e\n    project_id: %d\n", e2eProject)
		} else {
			b.WriteString("    provider: sesterce-e2e\n")
			if p.NoDefault {
				b.WriteString("    make_default: false\n")
			}
		}
		fmt.Fprintf(&b, "    schedule: %q\n    max_age: %s\n    rotate_before: %s\n    grace_period: %s\n    vault_path: %s/%s\n",
			or(p.Schedule, "@daily"), or(p.MaxAge, "1h"), or(p.RotateBefore, "1m"), or(p.Grace, "1s"), e.prefix, p.Name)
	}
	if e.cfgPath == "" {
		e.cfgPath = filepath.Join(e.dir, "policies.yaml")
	}
	if err := os.WriteFile(e.cfgPath, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func (e *env) environ(extra ...string) []string {
	return append(os.Environ(),
		append([]string{
			"E2E_VAULT_TOKEN=" + vaultSrv.RootToken.Reveal(),
			"E2E_SESTERCE_KEY=" + cloudtest.DefaultSesterceAPIKey.Reveal(),
			"E2E_GCORE_KEY=" + cloudtest.DefaultGcoreAPIKey.Reveal(),
			"ROTATORD_BACKOFF_BASE=10ms",
		}, extra...)...)
}

// rotatord runs one command to completion.
func (e *env) rotatord(extraEnv []string, args ...string) (stdout, stderr string, exit int) {
	e.t.Helper()
	cmd := exec.Command(rotatordBin, args...)
	cmd.Env = e.environ(extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	exit = cmd.ProcessState.ExitCode()
	if err != nil && exit == -1 {
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			exit = 128 + int(ws.Signal())
		}
	}
	return out.String(), errb.String(), exit
}

// daemon is a running `rotatord run`.
type daemon struct {
	t    testing.TB
	cmd  *exec.Cmd
	logs *lineBuffer
	done chan struct{}
	err  error
}

func (e *env) startDaemon(extraEnv ...string) *daemon {
	e.t.Helper()
	d := &daemon{t: e.t, logs: &lineBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(rotatordBin, "run", "-config", e.cfgPath)
	d.cmd.Env = e.environ(extraEnv...)
	d.cmd.Stderr = d.logs
	d.cmd.Stdout = d.logs
	if err := d.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	e.t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if e.t.Failed() {
			e.t.Logf("daemon log:\n%s", d.logs.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		select {
		case <-d.done: // exited early: stop waiting for its socket
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := control.Wait(ctx, e.socket()); err != nil {
		e.t.Fatalf("daemon did not answer on its socket: %v\n%s", err, d.logs.String())
	}
	return d
}

func (d *daemon) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (d *daemon) wait(timeout time.Duration) int {
	d.t.Helper()
	select {
	case <-d.done:
		return d.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		d.t.Fatalf("daemon still running after %v\n%s", timeout, d.logs.String())
		return -1
	}
}

// lineBuffer collects a process's output for assertions.
type lineBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lineBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// count returns the number of log lines containing s.
func (l *lineBuffer) count(s string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) provider(gcore bool) (cloud.Provider, int64) {
	if gcore {
		return e.gcore, e2eProject
	}
	return e.sest, 0
}

// managed lists the provider keys named like policy's keys.
func (e *env) managed(p policyYAML) []cloud.Key {
	e.t.Helper()
	prov, project := e.provider(p.Gcore)
	keys, err := prov.List(context.Background(), project)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []cloud.Key
	for _, k := range keys {
		if strings.HasPrefix(k.Name, p.Name+"-") {
			out = append(out, k)
		}
	}
	return out
}

// vaultFingerprints returns the fingerprints of every version of the
// policy's vault path and of its pending path, each checked against the
// private key stored with it.
func (e *env) vaultFingerprints(p policyYAML) (current string, all map[string]bool) {
	e.t.Helper()
	ctx := context.Background()
	path := e.prefix + "/" + p.Name
	all = map[string]bool{}
	check := func(data map[string]string) string {
		k, err := keygen.ParsePrivateKey(secret.Secret(data["private_key"]))
		if err != nil {
			e.t.Fatalf("vault %s: unusable private key: %v", path, err)
		}
		if k.SHA256 != data["fingerprint"] {
			e.t.Fatalf("vault %s: private key %s stored as %s", path, k.SHA256, data["fingerprint"])
		}
		return k.SHA256
	}
	if data, v, err := e.store.Get(ctx, path); err == nil {
		current = check(data)
		for i := 1; i <= v; i++ {
			if d, err := e.store.GetVersion(ctx, path, i); err == nil {
				all[check(d)] = true
			}
		}
	}
	if data, _, err := e.store.Get(ctx, path+"/pending"); err == nil {
		all[check(data)] = true
	}
	return current, all
}

// assertPrivateHalvesInVault checks the promise that holds at every
// instant, even right after a SIGKILL: every rotatord key on the provider
// has its private half in Vault.
func (e *env) assertPrivateHalvesInVault(p policyYAML, when string) {
	e.t.Helper()
	_, all := e.vaultFingerprints(p)
	for _, k := range e.managed(p) {
		if !all[k.Fingerprint] {
			e.t.Fatalf("%s: %s: provider key %s (%s) has no private half in Vault", when, p.Name, k.Name, k.Fingerprint)
		}
	}
}

// assertConverged checks DESIGN.md §3 after a restart has finished its
// work: one active key, the default where there is one, its private half
// at <vault_path>, nothing pending, no open rotation.
func (e *env) assertConverged(p policyYAML, when string) cloud.Key {
	e.t.Helper()
	current, _ := e.vaultFingerprints(p)
	if _, _, err := e.store.Get(context.Background(), e.prefix+"/"+p.Name+"/pending"); err == nil {
		e.t.Fatalf("%s: %s: a pending key is left in Vault", when, p.Name)
	}
	var active []state.KeyRecord
	var open []state.Rotation
	db, err := bolt.OpenStore(e.statePath(), bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if errors.Is(err, bolt.ErrLocked) {
		// A daemon runs and holds the state: ask it.
		st, err := control.NewClient(e.socket()).Status(context.Background())
		if err != nil {
			e.t.Fatalf("%s: status: %v", when, err)
		}
		for _, ps := range st.Policies {
			if ps.Name == p.Name {
				if ps.InFlight {
					e.t.Fatalf("%s: %s: a rotation is still in flight", when, p.Name)
				}
				if ps.CurrentKeyID != "" {
					active = append(active, state.KeyRecord{KeyID: ps.CurrentKeyID})
				}
			}
		}
		return e.checkActive(p, when, active, current)
	}
	if err != nil {
		e.t.Fatalf("%s: open state: %v", when, err)
	}
	_ = db.View(func(tx state.Tx) error {
		recs, _ := tx.Keys(p.Name)
		for _, r := range recs {
			if r.Status == state.KeyActive {
				active = append(active, r)
			}
		}
		rots, _ := tx.OpenRotations()
		for _, r := range rots {
			if r.Policy == p.Name {
				open = append(open, r)
			}
		}
		return nil
	})
	db.Close()
	if len(open) != 0 {
		e.t.Fatalf("%s: %s: %d rotations still open: %+v", when, p.Name, len(open), open)
	}
	return e.checkActive(p, when, active, current)
}

// checkActive: exactly one active key, on the provider, default where the
// provider has one, and the one Vault holds at <vault_path>.
func (e *env) checkActive(p policyYAML, when string, active []state.KeyRecord, current string) cloud.Key {
	e.t.Helper()
	if len(active) != 1 {
		e.t.Fatalf("%s: %s: %d active key records, want 1", when, p.Name, len(active))
	}
	var cur *cloud.Key
	for _, k := range e.managed(p) {
		if k.ID == active[0].KeyID {
			cur = &k
		}
	}
	if cur == nil {
		e.t.Fatalf("%s: %s: active key %s not on the provider", when, p.Name, active[0].KeyID)
	}
	if cur.Fingerprint != current {
		e.t.Fatalf("%s: %s: provider's active key %s, Vault holds %s", when, p.Name, cur.Fingerprint, current)
	}
	if !p.Gcore && !cur.Default {
		e.t.Fatalf("%s: %s: active key is not the default", when, p.Name)
	}
	return *cur
}

// rss returns the resident set size of pid in bytes (Linux).
func rss(pid int) (int64, error) {
	if runtime.GOOS != "linux" {
		return 0, fmt.Errorf("rss: linux only")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d kB", &kb)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// cpuTicks returns utime+stime of pid in clock ticks (Linux).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ut, st int64
	fmt.Sscan(fields[11], &ut)
	fmt.Sscan(fields[12], &st)
	return ut + st, nil
}

func mustPublicKey(t testing.TB) string {
	t.Helper()
	k, err := keygen.Generate(keygen.Spec{Type: keygen.TypeED25519}, "someone@laptop")
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey
}
