package daemon_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/secret"
)

// TestProviders_AccountsOnOneHostShareConnections: provider accounts on
// one API host differ only in their API key, so their clients send over
// one pool. Ten accounts rotated one after another reuse one connection;
// with a pool per account they opened ten.
func TestProviders_AccountsOnOneHostShareConnections(t *testing.T) {
	const accounts = 10
	e := newEnv(t)
	var keys []secret.Secret
	for i := range accounts {
		key := fmt.Sprintf("pool-test-sesterce-%02d", i)
		keys = append(keys, secret.Secret(key))
		t.Setenv(fmt.Sprintf("DAEMON_POOL_KEY_%02d", i), key)
	}
	// The accounts' own fake, on a server that counts its connections.
	fake := cloudtest.New(cloudtest.Options{SesterceAPIKey: keys[0], SesterceAPIKeys: keys[1:]})
	defer fake.Close()
	var dials atomic.Int32
	srv := httptest.NewUnstartedServer(fake)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	var b strings.Builder
	fmt.Fprintf(&b, "state: {path: %s}\ncontrol: {socket: %s}\n", filepath.Join(e.dir, "state.db"), filepath.Join(e.dir, "ctl.sock"))
	b.WriteString("vault: {address: \"http://127.0.0.1:1\", auth: {token_env: DAEMON_TEST_VAULT_TOKEN}}\nproviders:\n")
	var policies strings.Builder
	for i := range accounts {
		fmt.Fprintf(&b, "  - {name: s%02d, type: sesterce, base_url: %q, api_key_env: DAEMON_POOL_KEY_%02d, inventory: false}\n", i, srv.URL, i)
		fmt.Fprintf(&policies, "  - {name: p%02d, provider: s%02d, make_default: true, vault_path: ssh/pool/p%02d}\n", i, i, i)
	}
	app := e.newApp(e.parse(b.String()+"policies:\n"+policies.String()), nil)
	defer app.Close()

	for i := range accounts {
		results, err := app.RotatePolicies(context.Background(), []string{fmt.Sprintf("p%02d", i)}, false, "cli")
		if err != nil || len(results) != 1 || !results[0].Rotated || results[0].Err != nil {
			t.Fatalf("rotate p%02d: %+v, %v", i, results, err)
		}
	}
	if got := fake.Requests(cloudtest.RouteSesterceCreate); got != accounts {
		t.Fatalf("%d keys created, want %d", got, accounts)
	}
	if n := dials.Load(); n > 2 {
		t.Errorf("%d accounts on one host, rotated one after another, opened %d connections; want them to share one", accounts, n)
	}
}
