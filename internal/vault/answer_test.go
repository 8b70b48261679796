package vault_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/internal/vault"
)

// TestPut_BadAnswer: Put decodes the answer to a write itself, so an
// answer that is not Vault's (a proxy's HTML page, an empty 200, one
// without a version, a huge body) must be an error with context that
// quotes none of it, never a version of 0 taken for success.
func TestPut_BadAnswer(t *testing.T) {
	const echo = "PRIVATE-KEY-MATERIAL-echoed-by-a-broken-proxy"
	cases := []struct {
		name   string
		status int
		body   string
		kind   error // nil: no sentinel, but still an error
	}{
		{"html page", 200, "<html><body>" + echo + "</body></html>", nil},
		{"truncated json", 200, `{"data": {"version": 3, "note": "` + echo, nil},
		{"no version", 200, `{"data": {"created_time": "2026-12-02T00:00:00Z"}, "note": "` + echo + `"}`, vault.ErrMount},
		{"kv v1 no content", 204, "", vault.ErrMount},
		{"huge body", 200, `{"data": {"version": 3, "pad": "` + strings.Repeat("x", 3<<20) + `"}}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := standIn(t, func(w http.ResponseWriter) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			})
			v, err := s.Put(context.Background(), "ssh/x", map[string]string{"private_key": echo}, vault.NoCAS)
			if err == nil {
				t.Fatalf("Put = version %d, nil; want an error", v)
			}
			if tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Errorf("Put: %v, want %v", err, tc.kind)
			}
			if tc.kind == nil && (errors.Is(err, vault.ErrMount) || errors.Is(err, vault.ErrUnreachable)) {
				t.Errorf("Put: %v: a bad answer is neither a mount nor a reachability problem", err)
			}
			if !strings.Contains(err.Error(), "secret/ssh/x") {
				t.Errorf("Put: %q does not name the path", err)
			}
			if strings.Contains(err.Error(), echo) {
				t.Errorf("Put: the error quotes the answer: %q", err)
			}
		})
	}
}

// TestPut_KeepsItsConnection: a write's answer is read to the end while
// its request is still alive, so the connection goes back to the pool.
// Through Logical().WriteRaw, whose context is cancelled before the body
// is read, every write dialled anew.
func TestPut_KeepsItsConnection(t *testing.T) {
	s, dials := standIn(t, func(w http.ResponseWriter) {
		// As Vault answers: the JSON, then a newline.
		_, _ = w.Write([]byte(`{"request_id": "1", "data": {"created_time": "2026-12-02T00:00:00Z", "version": 7, "destroyed": false}}` + "\n"))
	})
	const writes = 20
	for range writes {
		v, err := s.Put(context.Background(), "ssh/x", map[string]string{"k": "v"}, vault.NoCAS)
		if err != nil || v != 7 {
			t.Fatalf("Put = %d, %v; want version 7", v, err)
		}
	}
	if n := dials(); n > 2 {
		t.Errorf("%d sequential writes opened %d connections, want them to reuse one", writes, n)
	}
}

// standIn is a Store on an httptest stand-in for Vault that accepts the
// token and answers each write of secret/ssh/x with answer; it returns the
// number of connections the stand-in accepted so far.
func standIn(t *testing.T, answer func(w http.ResponseWriter)) (*vault.Store, func() int) {
	t.Helper()
	var dials atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/auth/token/lookup-self":
			_, _ = w.Write([]byte(`{"data": {"renewable": false, "ttl": 0, "policies": ["root"]}}`))
		case r.Method == http.MethodPut && r.URL.Path == "/v1/secret/data/ssh/x":
			answer(w)
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	s, err := vault.New(context.Background(), vault.Config{Address: srv.URL, Mount: "secret",
		Auth: vault.Auth{Token: secret.Secret("s.token-for-the-test")}, Timeout: 5 * time.Second, MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, func() int { return int(dials.Load()) }
}
