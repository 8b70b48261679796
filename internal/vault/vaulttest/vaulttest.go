// Package vaulttest starts a real Vault server in dev mode for tests, the way
// consul-template's dependency tests do: the KV v2 engine, the AppRole login
// and the seal/unseal behaviour under test are Vault's own, not a fake's.
//
// Each call to Start runs its own `vault server -dev` on a free port of
// 127.0.0.1 (startup takes about a second) and stops it when the test ends.
// A package whose tests need speed more than isolation may share one server
// started from TestMain, each test using its own paths under the mount:
//
//	var (
//		vaultSrv *vaulttest.Server
//		vaultErr error
//	)
//
//	func TestMain(m *testing.M) {
//		vaultSrv, vaultErr = vaulttest.StartMain()
//		code := m.Run()
//		if vaultSrv != nil {
//			vaultSrv.Stop()
//		}
//		os.Exit(code)
//	}
//
//	func TestSomething(t *testing.T) {
//		srv := vaulttest.Shared(t, vaultSrv, vaultErr)
//		...
//	}
//
// The binary is looked up in this order: $ROTATORD_VAULT_BIN, <repo root>/bin/vault
// (built by `make vault`), then `vault` on $PATH. When none exists the test
// is skipped, or fails when CI=true so that CI cannot pass by skipping.
package vaulttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord/internal/secret"
)

// Mount is where the dev server mounts its KV v2 engine.
const Mount = "secret"

// startTimeout bounds how long Start waits for /v1/sys/health to answer 200.
const startTimeout = 30 * time.Second

// Server is one running `vault server -dev`.
type Server struct {
	// Addr is the server's base URL, e.g. http://127.0.0.1:41234.
	Addr string
	// RootToken authenticates as root on this server only.
	RootToken secret.Secret

	unsealKey secret.Secret
	home      string // HOME of the server process, removed by Stop
	cmd       *exec.Cmd
	out       *lockedBuffer
	exited    chan struct{} // closed once the process has been waited for
	stopOnce  sync.Once
}

// ErrNoBinary is returned by StartMain when no Vault binary is found.
var ErrNoBinary = errors.New("no Vault binary; run `make vault` to build it")

// Start runs a fresh dev server for t and stops it in t.Cleanup. It skips the
// test (fails under CI=true) when no Vault binary is found; run `make vault`.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := findBinary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("vaulttest: %v", err)
		}
		t.Skipf("vaulttest: %v", err)
	}
	s, err := startBinary(bin)
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("vault dev server output:\n%s", s.Output())
		}
	})
	return s
}

// StartMain runs a dev server shared by a whole test package; call it from
// TestMain and Stop the server after m.Run. It returns an error wrapping
// ErrNoBinary when no Vault binary is found.
func StartMain() (*Server, error) {
	bin, err := findBinary()
	if err != nil {
		return nil, err
	}
	return startBinary(bin)
}

// Shared returns the server that StartMain started for the package. Like
// Start, it skips t (fails it under CI=true) when StartMain found no binary,
// and fails t when the server did not start.
func Shared(t testing.TB, s *Server, startErr error) *Server {
	t.Helper()
	switch {
	case errors.Is(startErr, ErrNoBinary) && os.Getenv("CI") != "true":
		t.Skipf("vaulttest: %v", startErr)
	case startErr != nil:
		t.Fatalf("vaulttest: %v", startErr)
	case s == nil:
		t.Fatal("vaulttest: Shared without a server; call StartMain from TestMain")
	}
	return s
}

func startBinary(bin string) (*Server, error) {
	var lastErr error
	// A free port can be taken by another process between the probe and
	// Vault's bind; another attempt on another port settles that race.
	for range 3 {
		s, err := start(bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("start %s: %w", bin, lastErr)
}

func start(bin string) (*Server, error) {
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	home, err := os.MkdirTemp("", "vaulttest-home-")
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	token := secret.Secret("root-" + randomHex(16))

	args := []string{
		"server", "-dev",
		"-dev-listen-address=" + addr,
		"-dev-root-token-id=" + token.Reveal(),
	}
	if supportsNoStoreToken(bin) {
		args = append(args, "-dev-no-store-token")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = serverEnv(home)
	// In the test's process group, so a Ctrl-C on `go test` stops it too;
	// on Linux it is also killed if the test binary dies without cleanup.
	cmd.SysProcAttr = sysProcAttr()
	out := &lockedBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		os.RemoveAll(home)
		return nil, err
	}
	s := &Server{
		Addr:      "http://" + addr,
		RootToken: token,
		home:      home,
		cmd:       cmd,
		out:       out,
		exited:    make(chan struct{}),
	}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(startTimeout)
	if err := s.waitHealthy(deadline); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\n--- vault output ---\n%s", err, s.Output())
	}
	// The banner with the unseal key comes a moment after the listener.
	for {
		key, ok := s.parseUnsealKey()
		if ok {
			s.unsealKey = key
			return s, nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("no \"Unseal Key:\" line in the dev server output within %s\n--- vault output ---\n%s",
				startTimeout, s.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client returns a client authenticated as root. It ignores VAULT_*
// variables of the environment running the tests.
func (s *Server) Client(t testing.TB) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		t.Fatalf("vaulttest: client config: %v", cfg.Error)
	}
	cfg.Address = s.Addr
	cfg.AgentAddress = ""
	cfg.MaxRetries = 0
	cfg.Timeout = 10 * time.Second
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("vaulttest: new client: %v", err)
	}
	c.SetToken(s.RootToken.Reveal())
	c.ClearNamespace()
	return c
}

// Seal seals the server: every request but health and unseal then answers
// 503 "Vault is sealed".
func (s *Server) Seal(t testing.TB) {
	t.Helper()
	if err := s.Client(t).Sys().Seal(); err != nil {
		t.Fatalf("vaulttest: seal: %v", err)
	}
}

// Unseal unseals the server with the key the dev server printed at start and
// waits until it is active again.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	st, err := s.Client(t).Sys().Unseal(s.unsealKey.Reveal())
	if err != nil {
		t.Fatalf("vaulttest: unseal: %v", err)
	}
	if st.Sealed {
		t.Fatalf("vaulttest: unseal: still sealed after the dev unseal key")
	}
	if err := s.waitHealthy(time.Now().Add(startTimeout)); err != nil {
		t.Fatalf("vaulttest: unseal: %v", err)
	}
}

var approleSeq atomic.Int64

// EnableAppRole enables the AppRole auth method (once per server), writes
// policyHCL as a new policy and creates a role bound to it alone, and returns
// that role's role_id and a fresh secret_id. Each call makes a new role.
// Its tokens last 20 minutes, renewable up to an hour.
func (s *Server) EnableAppRole(t testing.TB, policyHCL string) (roleID, secretID string) {
	t.Helper()
	return s.EnableAppRoleWith(t, policyHCL, nil)
}

// EnableAppRoleWith is EnableAppRole with role parameters (e.g. "token_ttl",
// "token_max_ttl") that override its defaults.
func (s *Server) EnableAppRoleWith(t testing.TB, policyHCL string, role map[string]any) (roleID, secretID string) {
	t.Helper()
	c := s.Client(t)
	auths, err := c.Sys().ListAuth()
	if err != nil {
		t.Fatalf("vaulttest: list auth methods: %v", err)
	}
	if _, ok := auths["approle/"]; !ok {
		if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			t.Fatalf("vaulttest: enable approle: %v", err)
		}
	}
	name := fmt.Sprintf("rotatord-test-%d", approleSeq.Add(1))
	if err := c.Sys().PutPolicy(name, policyHCL); err != nil {
		t.Fatalf("vaulttest: write policy %s: %v", name, err)
	}
	rolePath := "auth/approle/role/" + name
	params := map[string]any{
		"token_policies": []string{name},
		"token_ttl":      "20m",
		"token_max_ttl":  "1h",
	}
	maps.Copy(params, role)
	if _, err := c.Logical().Write(rolePath, params); err != nil {
		t.Fatalf("vaulttest: write role %s: %v", name, err)
	}
	r, err := c.Logical().Read(rolePath + "/role-id")
	if err != nil || r == nil {
		t.Fatalf("vaulttest: read role-id of %s: %v", name, err)
	}
	sid, err := c.Logical().Write(rolePath+"/secret-id", nil)
	if err != nil || sid == nil {
		t.Fatalf("vaulttest: create secret-id for %s: %v", name, err)
	}
	roleID, _ = r.Data["role_id"].(string)
	secretID, _ = sid.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatalf("vaulttest: approle %s: empty role_id or secret_id in Vault's answer", name)
	}
	return roleID, secretID
}

// Stop ends the server (SIGTERM, then SIGKILL after 5 s) and waits for it, so
// that clients see "connection refused". It is safe to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		os.RemoveAll(s.home)
	})
}

// Pid is the server's process ID, for benchmarks that read its CPU time
// from /proc.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Output returns what the server printed so far, with the root token and the
// unseal key replaced, for failure messages.
func (s *Server) Output() string {
	out := s.out.String()
	if k, ok := s.parseUnsealKey(); ok {
		out = strings.ReplaceAll(out, k.Reveal(), secret.Redacted)
	}
	for _, v := range []secret.Secret{s.RootToken, s.unsealKey} {
		if !v.Empty() {
			out = strings.ReplaceAll(out, v.Reveal(), secret.Redacted)
		}
	}
	return out
}

func (s *Server) waitHealthy(deadline time.Time) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Addr+"/v1/sys/health", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = "HTTP " + resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-s.exited:
			return fmt.Errorf("vault exited before answering /v1/sys/health (%s)", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("no 200 from %s/v1/sys/health within %s (last: %s)", s.Addr, startTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// parseUnsealKey reads the "Unseal Key: <base64>" line that the dev server
// prints once it has initialised itself.
func (s *Server) parseUnsealKey() (secret.Secret, bool) {
	sc := bufio.NewScanner(strings.NewReader(s.out.String()))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, ok := strings.CutPrefix(line, "Unseal Key:"); ok && strings.HasSuffix(k, "=") {
			return secret.Secret(strings.TrimSpace(k)), true
		}
	}
	return "", false
}

func findBinary() (string, error) {
	var tried []string
	if p := os.Getenv("ROTATORD_VAULT_BIN"); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		tried = append(tried, p)
	}
	if root, ok := repoRoot(); ok {
		p := filepath.Join(root, "bin", "vault")
		if isExecutable(p) {
			return p, nil
		}
		tried = append(tried, p)
	}
	if p, err := exec.LookPath("vault"); err == nil {
		return p, nil
	}
	tried = append(tried, "vault on $PATH")
	return "", fmt.Errorf("%w (tried %s)", ErrNoBinary, strings.Join(tried, ", "))
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// repoRoot walks up from the working directory (the test's package
// directory) to the directory holding go.mod.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

var noStoreToken sync.Map // binary path -> bool

// supportsNoStoreToken reports whether the binary knows -dev-no-store-token
// (Vault 1.11+). HOME points at a temporary directory anyway, so older
// binaries only write a token file there.
func supportsNoStoreToken(bin string) bool {
	if v, ok := noStoreToken.Load(bin); ok {
		return v.(bool)
	}
	out, _ := exec.Command(bin, "server", "-h").CombinedOutput()
	ok := bytes.Contains(out, []byte("-dev-no-store-token"))
	noStoreToken.Store(bin, ok)
	return ok
}

// serverEnv is the environment minus every VAULT_* variable (a developer's
// VAULT_TOKEN or VAULT_ADDR must not reach the dev server), with HOME in a
// temporary directory so nothing is written to the real ~/.vault-token.
func serverEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

// freePortPair returns a port p such that p and p+1 are free: the dev
// server derives its cluster address from the listener's port plus one.
func freePortPair() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		l.Close()
		if err == nil {
			l2.Close()
			return port, nil
		}
	}
	return 0, errors.New("no pair of free adjacent ports on 127.0.0.1")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// lockedBuffer collects the server's stdout and stderr, which the exec
// package copies from two goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
