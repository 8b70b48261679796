package cloudtest

import (
	"fmt"
	"testing"

	"github.com/rotatord/rotatord/internal/secret"
)

// TestServer_SesterceAccounts: each Sesterce API key is its own account.
// What one account's key creates, defaults or deletes, another account
// neither sees nor can touch; each account keeps its own default key.
func TestServer_SesterceAccounts(t *testing.T) {
	const otherKey = "test-sesterce-key-2"
	s := newTestServer(t, func(o *Options) { o.SesterceAPIKeys = []secret.Secret{otherKey} })
	auth := []map[string]string{sesterceAuth, {"x-api-key": otherKey}}
	pub, _ := testPublicKey(t)
	create := func(acct int, name string) string {
		t.Helper()
		resp, b := mustCall(t, s, "POST", "/gpu-cloud/ssh-keys", auth[acct], fmt.Sprintf(`{"name":%q,"publicKey":%q}`, name, pub))
		if resp.StatusCode != 201 {
			t.Fatalf("account %d: create: %d %s", acct, resp.StatusCode, b)
		}
		return decode[sesterceWireKey](t, b).ID
	}
	list := func(acct int) map[string]bool {
		t.Helper()
		resp, b := mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", auth[acct], "")
		if resp.StatusCode != 200 {
			t.Fatalf("account %d: list: %d %s", acct, resp.StatusCode, b)
		}
		out := map[string]bool{}
		for _, k := range decode[[]sesterceWireKey](t, b) {
			out[k.ID] = k.IsDefault
		}
		return out
	}
	status := func(acct int, method, path string) int {
		t.Helper()
		resp, _ := mustCall(t, s, method, path, auth[acct], "")
		return resp.StatusCode
	}

	a := create(0, "same-name")
	b := create(1, "same-name")
	if got := list(0); len(got) != 1 || !containsKey(got, a) {
		t.Errorf("account 0 lists %v, want only its key %s", got, a)
	}
	if got := list(1); len(got) != 1 || !containsKey(got, b) {
		t.Errorf("account 1 lists %v, want only its key %s", got, b)
	}

	// Each account makes its own key default; neither clears the other's.
	for acct, id := range []string{a, b} {
		if code := status(acct, "PATCH", "/gpu-cloud/ssh-keys/"+id+"/makedefault"); code != 204 {
			t.Fatalf("account %d: makedefault of its key: %d, want 204", acct, code)
		}
	}
	if d0, d1 := list(0), list(1); !d0[a] || !d1[b] {
		t.Errorf("defaults: account 0 %v, account 1 %v; want each account's key default", d0, d1)
	}

	// Another account's key is answered as if it did not exist.
	if code := status(0, "PATCH", "/gpu-cloud/ssh-keys/"+b+"/makedefault"); code != 404 {
		t.Errorf("account 0 makes account 1's key default: %d, want 404", code)
	}
	if code := status(0, "DELETE", "/gpu-cloud/ssh-keys/"+b); code != 404 {
		t.Errorf("account 0 deletes account 1's key: %d, want 404", code)
	}
	if d1 := list(1); len(d1) != 1 || !d1[b] {
		t.Errorf("account 1 after account 0's attempts: %v, want its key, still default", d1)
	}

	// Instances run in the account of their launch key.
	inst := s.LaunchSesterceInstance("gpu-1", b)
	if code := status(0, "GET", "/gpu-cloud/instances/"+inst.ID); code != 404 {
		t.Errorf("account 0 reads account 1's instance: %d, want 404", code)
	}
	if code := status(1, "GET", "/gpu-cloud/instances/"+inst.ID); code != 200 {
		t.Errorf("account 1 reads its instance: %d, want 200", code)
	}
	for acct, want := range []int{0, 1} {
		_, body := mustCall(t, s, "GET", "/gpu-cloud/instances", auth[acct], "")
		if got := len(decode[[]map[string]any](t, body)); got != want {
			t.Errorf("account %d lists %d instances, want %d", acct, got, want)
		}
	}

	if code := status(1, "DELETE", "/gpu-cloud/ssh-keys/"+b); code != 200 {
		t.Errorf("account 1 deletes its key: %d, want 200", code)
	}
	if got, want := len(s.SesterceAccountKeys(0)), 1; got != want {
		t.Errorf("account 0 holds %d keys after account 1's delete, want %d", got, want)
	}
	if keys := s.SesterceKeys(); len(keys) != 1 || keys[0].ID != a || keys[0].Account != 0 {
		t.Errorf("SesterceKeys = %+v, want account 0's key alone", keys)
	}
}

func containsKey(m map[string]bool, id string) bool {
	_, ok := m[id]
	return ok
}
