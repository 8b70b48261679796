package daemon_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// receiver is a webhook endpoint that is down (503) until told otherwise,
// and records what it accepted and the ids of every attempt.
type receiver struct {
	mu       sync.Mutex
	up       bool
	attempts map[string]int // CloudEvents id -> POSTs seen
	accepted []map[string]any
	bodies   []string
	badSigs  int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	var ev map[string]any
	_ = json.Unmarshal(body, &ev)
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write(body)
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Header.Get("X-Rotatord-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
		r.badSigs++
	}
	id, _ := ev["id"].(string)
	r.attempts[id]++
	r.bodies = append(r.bodies, string(body))
	if !r.up {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	r.accepted = append(r.accepted, ev)
}

func (r *receiver) setUp(up bool) { r.mu.Lock(); r.up = up; r.mu.Unlock() }

const hookSecret = "webhook-signing-secret-for-tests"

// TestApp_WebhookAcrossRestart: a rotation's event reaches a receiver that
// was down for the whole life of the daemon that rotated, once it is back
// and a new daemon runs on the same state; every attempt carried the same
// id and a valid signature, and no body holds the secret.
func TestApp_WebhookAcrossRestart(t *testing.T) {
	e := newEnv(t)
	rec := &receiver{attempts: map[string]int{}}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	t.Setenv("DAEMON_TEST_HOOK_URL", srv.URL+"/hooks/rotatord?token=url-token-secret")
	t.Setenv("DAEMON_TEST_HOOK_SECRET", hookSecret)
	cfg := e.parse(e.config("webhooks:\n  - {name: pipeline, url_env: DAEMON_TEST_HOOK_URL, secret_env: DAEMON_TEST_HOOK_SECRET, events: [rotated]}\n",
		policySpec{"gpu", "@daily", "30d", "7d", "1d"}))

	app := e.newApp(cfg, nil)
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := app.RotatePolicies(ctx, []string{"gpu"}, false, "test")
	if err != nil || len(res) != 1 || !res[0].Rotated {
		t.Fatalf("rotate: %+v, %v", res, err)
	}
	waitFor(t, "a failed delivery attempt", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.bodies) > 0 })
	if err := app.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	rec.setUp(true)
	app = e.newApp(cfg, nil)
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer app.Stop(context.Background())
	// The dispatcher backs off after failures; a restart starts afresh.
	waitFor(t, "the event to be delivered", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.accepted) == 1 })

	rec.mu.Lock()
	defer rec.mu.Unlock()
	ev := rec.accepted[0]
	if ev["type"] != "io.rotatord.rotated" || ev["specversion"] != "1.0" {
		t.Errorf("delivered event = %v", ev)
	}
	if data, _ := ev["data"].(map[string]any); data["key_id"] != res[0].KeyID || data["policy"] != "gpu" {
		t.Errorf("event data = %v, want the rotated key %s", ev["data"], res[0].KeyID)
	}
	if len(rec.attempts) != 1 {
		t.Errorf("attempts carried %d different ids, want one stable id: %v", len(rec.attempts), rec.attempts)
	}
	for id, n := range rec.attempts {
		if n < 2 {
			t.Errorf("id %s seen %d time(s), want the failed attempt and the delivery", id, n)
		}
	}
	if rec.badSigs != 0 {
		t.Errorf("%d attempt(s) had a bad signature", rec.badSigs)
	}
	for _, b := range append(rec.bodies, e.logs.String()) {
		for _, leak := range []string{hookSecret, "url-token-secret"} {
			if strings.Contains(b, leak) {
				t.Errorf("a body or log line holds %q", leak)
			}
		}
	}
}
