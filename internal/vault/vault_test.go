package vault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/vault"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
)

// Most tests share one dev server and keep to their own paths; tests that
// seal or stop Vault start their own.
var (
	shared    *vaulttest.Server
	sharedErr error
)

func TestMain(m *testing.M) {
	shared, sharedErr = vaulttest.StartMain()
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	os.Exit(code)
}

func sharedServer(t *testing.T) *vaulttest.Server {
	t.Helper()
	return vaulttest.Shared(t, shared, sharedErr)
}

// runIDs numbers each run of a test, so that runs with -count=N against
// the shared server do not see each other's data.
var (
	runMu  sync.Mutex
	runIDs = map[*testing.T]int{}
)

// testPath is a path of the test's own (and of this run's) under ssh/.
func testPath(t *testing.T, leaf string) string {
	runMu.Lock()
	id, ok := runIDs[t]
	if !ok {
		id = len(runIDs) + 1
		runIDs[t] = id
	}
	runMu.Unlock()
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return fmt.Sprintf("ssh/test/%s-%d/%s", name, id, leaf)
}

func newStore(t *testing.T, srv *vaulttest.Server, auth vault.Auth, opts ...func(*vault.Config)) *vault.Store {
	t.Helper()
	s, err := newStoreErr(t, srv, auth, opts...)
	if err != nil {
		t.Fatalf("vault.New: %v", err)
	}
	return s
}

func newStoreErr(t *testing.T, srv *vaulttest.Server, auth vault.Auth, opts ...func(*vault.Config)) (*vault.Store, error) {
	t.Helper()
	cfg := vault.Config{Address: srv.Addr, Mount: vaulttest.Mount, Auth: auth, Timeout: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := vault.New(context.Background(), cfg)
	if err == nil {
		t.Cleanup(s.Close)
	}
	return s, err
}

func rootAuth(srv *vaulttest.Server) vault.Auth { return vault.Auth{Token: srv.RootToken} }

func examplePolicy(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "examples", "vault-policy.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func keyData(n int) map[string]string {
	return map[string]string{
		"private_key": fmt.Sprintf("-----BEGIN OPENSSH PRIVATE KEY-----\nkey-%d\n-----END OPENSSH PRIVATE KEY-----\n", n),
		"fingerprint": fmt.Sprintf("SHA256:fp%d", n),
		"key_id":      fmt.Sprintf("id-%d", n),
	}
}

func equalData(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// TestStore_Conformance holds the real server to the KeyStore suite that
// vaulttest.Memory, the engine's unit-test stand-in, also passes.
func TestStore_Conformance(t *testing.T) {
	srv := sharedServer(t)
	vaulttest.RunKeyStore(t, func(t *testing.T) (vaulttest.KeyStore, string) {
		return newStore(t, srv, rootAuth(srv)), testPath(t, "suite")
	})
}

func TestStore_PutGet(t *testing.T) {
	srv := sharedServer(t)
	s := newStore(t, srv, rootAuth(srv))
	ctx := context.Background()
	p := testPath(t, "key")

	_, _, err := s.Get(ctx, p)
	if !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("Get before any write: err = %v, want ErrNotFound", err)
	}
	// The rotation engine cannot import this package; it branches on the
	// standard sentinel instead.
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Get before any write: err = %v, want a match for fs.ErrNotExist", err)
	}
	for i := 1; i <= 2; i++ {
		v, err := s.Put(ctx, p, keyData(i), vault.NoCAS)
		if err != nil {
			t.Fatalf("Put #%d: %v", i, err)
		}
		if v != i {
			t.Fatalf("Put #%d returned version %d", i, v)
		}
		got, gv, err := s.Get(ctx, p)
		if err != nil {
			t.Fatalf("Get after Put #%d: %v", i, err)
		}
		if gv != i || !equalData(got, keyData(i)) {
			t.Fatalf("Get after Put #%d = %v (version %d), want %v (version %d)", i, got, gv, keyData(i), i)
		}
	}
	// Other tools read what rotatord writes with plain KV v2 calls.
	kvs, err := srv.Client(t).KVv2(vaulttest.Mount).Get(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if kvs.Data["private_key"] != keyData(2)["private_key"] {
		t.Fatalf("vault kv get shows %v", kvs.Data)
	}
	if v, err := s.Versions(ctx, p); err != nil || v != 2 {
		t.Fatalf("Versions = %d, %v; want 2", v, err)
	}
	if v, err := s.Versions(ctx, testPath(t, "never-written")); err != nil || v != 0 {
		t.Fatalf("Versions of an unwritten path = %d, %v; want 0, nil", v, err)
	}
}

func TestStore_Put_CAS(t *testing.T) {
	srv := sharedServer(t)
	s := newStore(t, srv, rootAuth(srv))
	ctx := context.Background()
	p := testPath(t, "key")

	steps := []struct {
		name    string
		cas     int
		want    int  // version written
		refused bool // ErrCASMismatch expected
	}{
		{"cas 0 on a new path writes", 0, 1, false},
		{"cas 0 on an existing path is refused", 0, 0, true},
		{"current version writes", 1, 2, false},
		{"stale version is refused", 1, 0, true},
		{"no cas writes", vault.NoCAS, 3, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			v, err := s.Put(ctx, p, keyData(st.want), st.cas)
			if st.refused {
				if !errors.Is(err, vault.ErrCASMismatch) {
					t.Fatalf("Put(cas=%d) = %d, %v; want ErrCASMismatch", st.cas, v, err)
				}
				want := "vault: write secret/" + p + ": check-and-set version mismatch"
				if !strings.HasPrefix(err.Error(), want) {
					t.Errorf("message %q does not start with %q", err, want)
				}
				return
			}
			if err != nil || v != st.want {
				t.Fatalf("Put(cas=%d) = %d, %v; want version %d", st.cas, v, err, st.want)
			}
		})
	}
	// The refused writes left nothing behind.
	if _, v, err := s.Get(ctx, p); err != nil || v != 3 {
		t.Fatalf("Get = version %d, %v; want 3", v, err)
	}
}

func TestStore_GetVersion(t *testing.T) {
	srv := sharedServer(t)
	s := newStore(t, srv, rootAuth(srv))
	ctx := context.Background()
	p := testPath(t, "key")

	for i := 1; i <= 2; i++ {
		if _, err := s.Put(ctx, p, keyData(i), vault.NoCAS); err != nil {
			t.Fatal(err)
		}
	}
	// The previous key stays readable during its grace period.
	got, err := s.GetVersion(ctx, p, 1)
	if err != nil {
		t.Fatalf("GetVersion(1): %v", err)
	}
	if !equalData(got, keyData(1)) {
		t.Fatalf("GetVersion(1) = %v, want %v", got, keyData(1))
	}
	if _, err := s.GetVersion(ctx, p, 7); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("GetVersion(7) of a 2-version secret: err = %v, want ErrNotFound", err)
	}
	// A version deleted by someone else (vault kv delete) reads as absent.
	if err := srv.Client(t).KVv2(vaulttest.Mount).Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, p); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("Get of a soft-deleted latest version: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetVersion(ctx, p, 2); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("GetVersion of a soft-deleted version: err = %v, want ErrNotFound", err)
	}
	if v, err := s.Versions(ctx, p); err != nil || v != 2 {
		t.Fatalf("Versions after a soft delete = %d, %v; want 2 (the next cas)", v, err)
	}
}

func TestStore_Delete(t *testing.T) {
	srv := sharedServer(t)
	s := newStore(t, srv, rootAuth(srv))
	ctx := context.Background()
	p := testPath(t, "key/pending")

	for i := 1; i <= 3; i++ {
		if _, err := s.Put(ctx, p, keyData(i), vault.NoCAS); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, p); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := s.Get(ctx, p); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Get after Delete: err = %v, want ErrNotFound", err)
	}
	for v := 1; v <= 3; v++ {
		if _, err := s.GetVersion(ctx, p, v); !errors.Is(err, vault.ErrNotFound) {
			t.Errorf("GetVersion(%d) after Delete: err = %v, want ErrNotFound", v, err)
		}
	}
	// No metadata either: the path starts over at version 1 with cas 0.
	if _, err := srv.Client(t).KVv2(vaulttest.Mount).GetMetadata(ctx, p); !errors.Is(err, api.ErrSecretNotFound) {
		t.Errorf("metadata after Delete: err = %v, want none", err)
	}
	if v, err := s.Put(ctx, p, keyData(4), 0); err != nil || v != 1 {
		t.Errorf("Put(cas=0) after Delete = %d, %v; want version 1", v, err)
	}
	if err := s.Delete(ctx, testPath(t, "never-written")); err != nil {
		t.Errorf("Delete of an absent path: %v", err)
	}
}

func TestStore_InvalidPath(t *testing.T) {
	srv := sharedServer(t)
	s := newStore(t, srv, rootAuth(srv))
	for _, p := range []string{"", "/ssh/x", "ssh/x/", "ssh//x", "ssh/../sys"} {
		t.Run(p, func(t *testing.T) {
			if _, err := s.Put(context.Background(), p, keyData(1), vault.NoCAS); err == nil {
				t.Fatalf("Put(%q) succeeded", p)
			}
		})
	}
}

func TestStore_Sealed(t *testing.T) {
	srv := vaulttest.Start(t)
	s := newStore(t, srv, rootAuth(srv))
	ctx := context.Background()
	p := "ssh/sealed/key"

	srv.Seal(t)
	_, err := s.Put(ctx, p, keyData(1), vault.NoCAS)
	if !errors.Is(err, vault.ErrSealed) {
		t.Fatalf("Put on a sealed Vault: err = %v, want ErrSealed", err)
	}
	if want := "vault: write secret/ssh/sealed/key: vault is sealed"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if err := s.Check(ctx); !errors.Is(err, vault.ErrSealed) {
		t.Errorf("Check on a sealed Vault: err = %v, want ErrSealed", err)
	}
	srv.Unseal(t)
	if err := s.Check(ctx); err != nil {
		t.Errorf("Check after unseal: %v", err)
	}
	if _, err := s.Put(ctx, p, keyData(1), vault.NoCAS); err != nil {
		t.Errorf("Put after unseal: %v", err)
	}
}

func TestStore_Unreachable(t *testing.T) {
	srv := vaulttest.Start(t)
	s := newStore(t, srv, rootAuth(srv), func(c *vault.Config) {
		c.Timeout = 2 * time.Second
		c.MaxRetries = -1
	})
	srv.Stop()
	ctx := context.Background()

	_, err := s.Put(ctx, "ssh/x", keyData(1), vault.NoCAS)
	if !errors.Is(err, vault.ErrUnreachable) {
		t.Fatalf("Put on a stopped Vault: err = %v, want ErrUnreachable", err)
	}
	if !strings.HasPrefix(err.Error(), "vault: write secret/ssh/x: vault unreachable: ") ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("message %q does not say what, where and why", err)
	}
	if _, _, err := s.Get(ctx, "ssh/x"); !errors.Is(err, vault.ErrUnreachable) {
		t.Errorf("Get on a stopped Vault: err = %v, want ErrUnreachable", err)
	}
	if err := s.Check(ctx); !errors.Is(err, vault.ErrUnreachable) {
		t.Errorf("Check on a stopped Vault: err = %v, want ErrUnreachable", err)
	}
	// A caller giving up is not an outage.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := s.Get(cctx, "ssh/x"); !errors.Is(err, context.Canceled) || errors.Is(err, vault.ErrUnreachable) {
		t.Errorf("Get with a cancelled context: err = %v, want context.Canceled only", err)
	}
}

func TestStore_PermissionDenied(t *testing.T) {
	srv := sharedServer(t)
	c := srv.Client(t)
	if err := c.Sys().PutPolicy("only-other", `path "secret/data/other/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"only-other"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t, srv, vault.Auth{Token: secret.Secret(tok.Auth.ClientToken)})
	ctx := context.Background()
	p := testPath(t, "key")

	_, err = s.Put(ctx, p, keyData(1), vault.NoCAS)
	if !errors.Is(err, vault.ErrPermissionDenied) {
		t.Fatalf("Put outside the policy: err = %v, want ErrPermissionDenied", err)
	}
	if want := "vault: write secret/" + p + ": permission denied"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q does not start with %q", err, want)
	}
	if _, _, err := s.Get(ctx, p); !errors.Is(err, vault.ErrPermissionDenied) {
		t.Errorf("Get outside the policy: err = %v, want ErrPermissionDenied", err)
	}
	if err := s.Delete(ctx, p); !errors.Is(err, vault.ErrPermissionDenied) {
		t.Errorf("Delete outside the policy: err = %v, want ErrPermissionDenied", err)
	}

	// A revoked token is refused at once, with an error that says so.
	if err := c.Auth().Token().RevokeTree(tok.Auth.ClientToken); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); !errors.Is(err, vault.ErrPermissionDenied) {
		t.Errorf("Check with a revoked token: err = %v, want ErrPermissionDenied", err)
	}
}

// TestExamplePolicy_AuditKey: the least-privilege policy lets rotatord
// make the audit key once and read it, and nothing can replace it.
func TestExamplePolicy_AuditKey(t *testing.T) {
	srv := sharedServer(t)
	roleID, secretID := srv.EnableAppRole(t, examplePolicy(t))
	s := newStore(t, srv, vault.Auth{AppRole: &vault.AppRole{RoleID: secret.Secret(roleID), SecretID: secret.Secret(secretID)}})
	ctx := context.Background()
	first, err := audit.LoadKey(ctx, s)
	if err != nil {
		t.Fatalf("LoadKey under the example policy: %v", err)
	}
	again, err := audit.LoadKey(ctx, s)
	if err != nil || !again.Equal(first) {
		t.Fatalf("second LoadKey = %v; want the same key", err)
	}
	if _, err := s.Put(ctx, audit.KeyPath, map[string]string{"key": strings.Repeat("00", audit.KeySize)}, vault.NoCAS); !errors.Is(err, vault.ErrPermissionDenied) {
		t.Errorf("overwriting the audit key: err = %v, want ErrPermissionDenied", err)
	}
}

func TestStore_AppRole(t *testing.T) {
	srv := sharedServer(t)
	roleID, secretID := srv.EnableAppRole(t, examplePolicy(t))
	s := newStore(t, srv, vault.Auth{AppRole: &vault.AppRole{RoleID: secret.Secret(roleID), SecretID: secret.Secret(secretID)}})
	ctx := context.Background()
	p := testPath(t, "key")

	// The least-privilege policy is enough for everything the saga does.
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if v, err := s.Put(ctx, p+"/pending", keyData(1), 0); err != nil || v != 1 {
		t.Fatalf("Put pending = %d, %v", v, err)
	}
	cur, err := s.Versions(ctx, p)
	if err != nil || cur != 0 {
		t.Fatalf("Versions = %d, %v", cur, err)
	}
	for i := 1; i <= 2; i++ {
		if _, err := s.Put(ctx, p, keyData(i), cur); err != nil {
			t.Fatalf("promote #%d: %v", i, err)
		}
		cur++
	}
	if got, _, err := s.Get(ctx, p); err != nil || !equalData(got, keyData(2)) {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if got, err := s.GetVersion(ctx, p, 1); err != nil || !equalData(got, keyData(1)) {
		t.Fatalf("GetVersion(1) = %v, %v", got, err)
	}
	if err := s.Delete(ctx, p+"/pending"); err != nil {
		t.Fatalf("Delete pending: %v", err)
	}
	if _, _, err := s.Get(ctx, p+"/pending"); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("Get pending after Delete: err = %v, want ErrNotFound", err)
	}

	// Nothing outside ssh/.
	for _, other := range []string{"other/key", "sshx/key"} {
		if _, err := s.Put(ctx, other, keyData(1), vault.NoCAS); !errors.Is(err, vault.ErrPermissionDenied) {
			t.Errorf("Put %s: err = %v, want ErrPermissionDenied", other, err)
		}
		if _, _, err := s.Get(ctx, other); !errors.Is(err, vault.ErrPermissionDenied) {
			t.Errorf("Get %s: err = %v, want ErrPermissionDenied", other, err)
		}
	}
	if _, err := srv.Client(t).Logical().Read("secret/data/other/key"); err != nil {
		t.Fatal(err)
	}
}

func TestNew_LoginRefused(t *testing.T) {
	srv := sharedServer(t)
	roleID, _ := srv.EnableAppRole(t, examplePolicy(t))
	tests := []struct {
		name string
		auth vault.Auth
	}{
		{"wrong secret_id", vault.Auth{AppRole: &vault.AppRole{RoleID: secret.Secret(roleID), SecretID: "not-the-secret-id-0000"}}},
		{"wrong role_id", vault.Auth{AppRole: &vault.AppRole{RoleID: "not-a-role-id-00000", SecretID: "not-the-secret-id-0000"}}},
		{"unknown token", vault.Auth{Token: "hvs.not-a-token-00000000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newStoreErr(t, srv, tt.auth)
			if !errors.Is(err, vault.ErrPermissionDenied) {
				t.Fatalf("New: err = %v, want ErrPermissionDenied", err)
			}
			if !strings.HasPrefix(err.Error(), "vault: login: permission denied") {
				t.Errorf("message %q", err)
			}
		})
	}
}

func TestNew_Config(t *testing.T) {
	tests := []struct {
		name string
		cfg  vault.Config
		want string
	}{
		{"no address", vault.Config{Mount: "secret", Auth: vault.Auth{Token: "t"}}, "vault: address is empty"},
		{"no mount", vault.Config{Address: "http://127.0.0.1:1", Auth: vault.Auth{Token: "t"}}, "vault: mount is empty"},
		{"no auth", vault.Config{Address: "http://127.0.0.1:1", Mount: "secret"}, "vault: auth: no token and no AppRole credentials"},
		{"both auths", vault.Config{Address: "http://127.0.0.1:1", Mount: "secret",
			Auth: vault.Auth{Token: "t", AppRole: &vault.AppRole{RoleID: "r", SecretID: "s"}}}, "vault: auth: both a token and AppRole credentials are set; choose one"},
		{"half approle", vault.Config{Address: "http://127.0.0.1:1", Mount: "secret",
			Auth: vault.Auth{AppRole: &vault.AppRole{RoleID: "r"}}}, "vault: auth: AppRole needs both role_id and secret_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vault.New(context.Background(), tt.cfg)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("New: err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestStore_Check(t *testing.T) {
	srv := sharedServer(t)
	c := srv.Client(t)
	if err := c.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Sys().Unmount("kv1") })
	if err := c.Sys().Mount("transit-check", &api.MountInput{Type: "transit"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Sys().Unmount("transit-check") })
	tests := []struct {
		mount string
		want  error
	}{
		{"secret", nil},
		{"kv1", vault.ErrMount},
		{"transit-check", vault.ErrMount},
		{"no-such-mount", vault.ErrMount},
	}
	for _, tt := range tests {
		t.Run(tt.mount, func(t *testing.T) {
			s := newStore(t, srv, rootAuth(srv), func(c *vault.Config) { c.Mount = tt.mount })
			err := s.Check(context.Background())
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Check: err = %v, want %v", err, tt.want)
			}
		})
	}
	// Without Check, the first write to a KV v1 mount still fails clearly.
	s := newStore(t, srv, rootAuth(srv), func(c *vault.Config) { c.Mount = "kv1" })
	if _, err := s.Put(context.Background(), "ssh/x", keyData(1), vault.NoCAS); !errors.Is(err, vault.ErrMount) {
		t.Errorf("Put to a KV v1 mount: err = %v, want ErrMount", err)
	}
}

// syncBuffer collects log output written from the renewal goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func debugLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// A renewable token outlives its TTL because the Store renews it; the same
// token left alone expires.
func TestStore_TokenRenewal(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	c := srv.Client(t)
	if err := c.Sys().PutPolicy("rotatord-renew", examplePolicy(t)); err != nil {
		t.Fatal(err)
	}
	const ttl = 3 * time.Second
	create := func() string {
		tok, err := c.Auth().Token().Create(&api.TokenCreateRequest{
			Policies: []string{"rotatord-renew"}, TTL: ttl.String(), ExplicitMaxTTL: "1m",
		})
		if err != nil {
			t.Fatal(err)
		}
		return tok.Auth.ClientToken
	}
	renewed, idle := create(), create()
	expiry := time.Now().Add(ttl)
	var logs syncBuffer
	s := newStore(t, srv, vault.Auth{Token: secret.Secret(renewed)}, func(c *vault.Config) { c.Logger = debugLogger(&logs) })

	time.Sleep(time.Until(expiry) + 1500*time.Millisecond)

	if _, err := s.Put(context.Background(), testPath(t, "key"), keyData(1), vault.NoCAS); err != nil {
		t.Fatalf("Put past the token's first TTL: %v\nlogs:\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "token renewed") {
		t.Errorf("no renewal in the logs:\n%s", logs.String())
	}
	idleClient := srv.Client(t)
	idleClient.SetToken(idle)
	if _, err := idleClient.Auth().Token().LookupSelf(); err == nil {
		t.Fatalf("control: the idle token is still valid past its TTL; the test proves nothing")
	}
}

// An AppRole token that reaches its max TTL is replaced by a new login.
func TestStore_AppRoleRelogin(t *testing.T) {
	t.Parallel()
	srv := sharedServer(t)
	roleID, secretID := srv.EnableAppRoleWith(t, examplePolicy(t), map[string]any{"token_ttl": "2s", "token_max_ttl": "3s"})
	var logs syncBuffer
	start := time.Now()
	s := newStore(t, srv, vault.Auth{AppRole: &vault.AppRole{RoleID: secret.Secret(roleID), SecretID: secret.Secret(secretID)}},
		func(c *vault.Config) { c.Logger = debugLogger(&logs) })

	time.Sleep(time.Until(start.Add(4500 * time.Millisecond)))

	if _, err := s.Put(context.Background(), testPath(t, "key"), keyData(1), vault.NoCAS); err != nil {
		t.Fatalf("Put past the first token's max TTL: %v\nlogs:\n%s", err, logs.String())
	}
	if n := strings.Count(logs.String(), "logged in with AppRole"); n < 2 {
		t.Errorf("%d logins in the logs, want a new login after the max TTL:\n%s", n, logs.String())
	}
}
