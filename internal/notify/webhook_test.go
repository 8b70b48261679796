package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/secret"
	"github.com/rotatord/rotatord/policy"
)

const testWebhookSecret = secret.Secret("whsec-Sh4redS1gn1ngS3cret")

// received is one request the receiver got.
type received struct {
	header http.Header
	body   []byte
}

// receiver is a webhook endpoint that answers the scripted replies first,
// then 204, and records every request.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	script []reply
	reqs   []received
}

func newReceiver(t *testing.T, script ...reply) *receiver {
	t.Helper()
	r := &receiver{script: script}
	r.Server = httptest.NewServer(r)
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, received{header: req.Header.Clone(), body: body})
	if len(r.script) > 0 {
		rep := r.script[0]
		r.script = r.script[1:]
		for k, v := range rep.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(rep.status)
		_, _ = io.WriteString(w, rep.body)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func newTestWebhook(t *testing.T, url string, mod ...func(*WebhookConfig)) *Webhook {
	t.Helper()
	cfg := WebhookConfig{Name: "deploy", URL: secret.Secret(url), Secret: testWebhookSecret, Source: "rotatord/ops1", Timeout: 5 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	w, err := NewWebhook(cfg)
	if err != nil {
		t.Fatalf("NewWebhook: %v", err)
	}
	return w
}

// validSignature checks a signature the way a receiver does, without the
// package's own Sign.
func validSignature(key secret.Secret, body []byte, header string) bool {
	m := hmac.New(sha256.New, []byte(key.Reveal()))
	m.Write(body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	return hmac.Equal([]byte(header), []byte(want))
}

func ceID(t *testing.T, body []byte) string {
	t.Helper()
	var ce struct{ ID string }
	if err := json.Unmarshal(body, &ce); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	return ce.ID
}

// A receiver that fails three times, across a daemon restart between each
// attempt (a new Webhook and Dispatcher over the same outbox), gets the
// event once it answers: the same bytes, the same id, a valid signature
// every time, and nothing left queued.
func TestWebhook_retriedUntilDeliveredWithOneID(t *testing.T) {
	rcv := newReceiver(t, replyUnavailable, reply{status: http.StatusBadGateway}, reply{status: http.StatusServiceUnavailable})
	out, clock, logs := &memOutbox{}, &fakeClock{now: t0}, &logBuffer{}
	ev := rotatedEvent()
	id := out.Enqueue(ev)
	opts := DispatcherOptions{BaseBackoff: time.Second, MaxBackoff: time.Minute, Now: clock.Now, Logger: newLogger(logs)}

	for pass := 0; out.Len() > 0; pass++ {
		if pass == 10 {
			t.Fatalf("not delivered after %d passes; receiver saw %d requests", pass, len(rcv.requests()))
		}
		d := NewDispatcher(out, newTestWebhook(t, rcv.URL), opts) // a restart: nothing shared but the outbox
		sent, err := d.DrainOnce(context.Background())
		switch {
		case pass < 3 && (sent != 0 || !errors.Is(err, ErrRetry)):
			t.Fatalf("pass %d: sent %d, err %v; want a retryable failure", pass, sent, err)
		case pass < 3:
			it, _ := out.Item(id)
			if it.Attempts != pass+1 || !it.next.After(clock.Now()) {
				t.Fatalf("pass %d: item has %d attempts, next %v; want %d, after %v", pass, it.Attempts, it.next, pass+1, clock.Now())
			}
		case sent != 1 || err != nil:
			t.Fatalf("pass %d: sent %d, err %v; want the delivery", pass, sent, err)
		}
		clock.Advance(time.Minute)
	}
	reqs := rcv.requests()
	if len(reqs) != 4 {
		t.Fatalf("receiver saw %d requests, want 3 failures and 1 delivery", len(reqs))
	}
	for i, r := range reqs {
		if !bytes.Equal(r.body, reqs[0].body) {
			t.Errorf("attempt %d sent other bytes:\n%s\nvs\n%s", i+1, r.body, reqs[0].body)
		}
		if got := ceID(t, r.body); got != EventID(ev) || got == "" {
			t.Errorf("attempt %d: id %q, want %q", i+1, got, EventID(ev))
		}
		if sig := r.header.Get(SignatureHeader); !validSignature(testWebhookSecret, r.body, sig) {
			t.Errorf("attempt %d: signature %q does not verify", i+1, sig)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/cloudevents+json" {
			t.Errorf("attempt %d: Content-Type %q", i+1, ct)
		}
	}
	if validSignature("another-secret", reqs[0].body, reqs[0].header.Get(SignatureHeader)) {
		t.Error("the signature verifies under a different secret")
	}
}

// A 429 holds delivery for the Retry-After the receiver asked for, then
// the event goes through once.
func TestWebhook_429HonoursRetryAfter(t *testing.T) {
	rcv := newReceiver(t, reply{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "30"}})
	out, clock := &memOutbox{}, &fakeClock{now: t0}
	id := out.Enqueue(rotatedEvent())
	out.Enqueue(eventFor("second"))
	d := NewDispatcher(out, newTestWebhook(t, rcv.URL), DispatcherOptions{BaseBackoff: time.Second, Now: clock.Now})

	sent, err := d.DrainOnce(context.Background())
	if sent != 0 || !errors.Is(err, ErrRetry) || RetryAfter(err) != 30*time.Second {
		t.Fatalf("first pass: sent %d, err %v (RetryAfter %v); want 0 and a 30s retry", sent, err, RetryAfter(err))
	}
	if it, _ := out.Item(id); !it.next.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("rescheduled for %v, want %v", it.next, t0.Add(30*time.Second))
	}
	clock.Advance(29 * time.Second)
	if sent, _ := d.DrainOnce(context.Background()); sent != 0 || len(rcv.requests()) != 1 {
		t.Fatalf("29s later: sent %d, %d requests; the receiver asked for 30s", sent, len(rcv.requests()))
	}
	clock.Advance(time.Second)
	if sent, err := d.DrainOnce(context.Background()); sent != 2 || err != nil {
		t.Fatalf("30s later: sent %d, err %v; want both events", sent, err)
	}
	if n := len(rcv.requests()); n != 3 {
		t.Errorf("receiver saw %d requests, want 3 (one 429, then each event once)", n)
	}
}

// Each answer is classified the way the Dispatcher needs: retry what may
// succeed later, give up on what will not until someone fixes it.
func TestWebhook_Send(t *testing.T) {
	tests := []struct {
		name       string
		rep        reply
		wantClass  error // nil: delivered
		wantAfter  time.Duration
		wantInText string
	}{
		{"200", reply{status: 200}, nil, 0, ""},
		{"202", reply{status: 202}, nil, 0, ""},
		{"429 with seconds", reply{status: 429, header: map[string]string{"Retry-After": "7"}}, ErrRetry, 7 * time.Second, "429 Too Many Requests"},
		{"429 with a date", reply{status: 429, header: map[string]string{"Retry-After": time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)}}, ErrRetry, 0, "429"},
		{"429 without Retry-After", reply{status: 429}, ErrRetry, 0, "429"},
		{"500", reply{status: 500, body: "<html>oops</html>"}, ErrRetry, 0, "500 Internal Server Error: <html>oops</html>"},
		{"503", reply{status: 503}, ErrRetry, 0, "503"},
		{"408", reply{status: 408}, ErrRetry, 0, "408"},
		{"400", reply{status: 400, body: `{"error":"bad signature"}`}, ErrPermanent, 0, `400 Bad Request: {"error":"bad signature"}`},
		{"401", reply{status: 401}, ErrPermanent, 0, "401"},
		{"404", reply{status: 404}, ErrPermanent, 0, "404"},
		{"410", reply{status: 410}, ErrPermanent, 0, "410"},
		{"redirect is not followed", reply{status: 302, header: map[string]string{"Location": "/elsewhere"}}, ErrPermanent, 0, "302 Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := newReceiver(t, tt.rep)
			err := newTestWebhook(t, rcv.URL).Send(context.Background(), rotatedEvent())
			if n := len(rcv.requests()); n != 1 {
				t.Fatalf("receiver saw %d requests, want 1 (no redirect followed, no retry inside Send)", n)
			}
			if tt.wantClass == nil {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantClass) {
				t.Fatalf("Send error %v, want class %v", err, tt.wantClass)
			}
			if tt.name == "429 with a date" {
				if a := RetryAfter(err); a < 80*time.Second || a > 90*time.Second {
					t.Errorf("RetryAfter = %v, want about 90s", a)
				}
			} else if a := RetryAfter(err); a != tt.wantAfter {
				t.Errorf("RetryAfter = %v, want %v", a, tt.wantAfter)
			}
			if !strings.Contains(err.Error(), tt.wantInText) || !strings.HasPrefix(err.Error(), "post webhook deploy: ") {
				t.Errorf("error %q, want it to start with the webhook and contain %q", err, tt.wantInText)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		rcv := newReceiver(t)
		rcv.Close()
		err := newTestWebhook(t, rcv.URL).Send(context.Background(), rotatedEvent())
		if !errors.Is(err, ErrRetry) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Send to a closed port: %v; want a retryable connection error", err)
		}
	})
}

func TestRetryAfter_header(t *testing.T) {
	now := time.Date(2025, 3, 1, 3, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"0":                             0,
		"-5":                            0,
		"120":                           2 * time.Minute,
		"99999999999999999999":          0, // not an int: unreadable, the backoff applies
		"9999999999":                    24 * time.Hour,
		"Sat, 01 Mar 2025 03:01:00 GMT": time.Minute,
		"Sat, 01 Mar 2025 02:00:00 GMT": 0,
		"soon":                          0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", v, got, want)
		}
	}
}

// The body is a CloudEvents 1.0 structured-mode document whose data holds
// the public facts of the event and nothing else.
func TestWebhook_cloudEvent(t *testing.T) {
	rcv := newReceiver(t)
	ev := rotatedEvent()
	if err := newTestWebhook(t, rcv.URL).Send(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(rcv.requests()[0].body, &doc); err != nil {
		t.Fatal(err)
	}
	data, _ := doc["data"].(map[string]any)
	delete(doc, "data")
	want := map[string]any{
		"specversion": "1.0", "type": "io.rotatord.rotated", "source": "rotatord/ops1", "id": EventID(ev),
		"time": "2025-03-01T03:00:00Z", "subject": "gpu-team", "datacontenttype": "application/json",
	}
	if fmt.Sprint(doc) != fmt.Sprint(want) {
		t.Errorf("attributes\n got %v\nwant %v", doc, want)
	}
	wantData := map[string]any{
		"kind": "rotated", "policy": "gpu-team", "provider": "sesterce-prod",
		"key_name": "gpu-team-20250301T030000", "key_id": "65f1c0ffee0000000000beef", "old_key_id": "65f1c0ffee0000000000dead",
		"old_fingerprint": "SHA256:oldOLDoldOLDoldOLDoldOLDoldOLDoldOLDold", "new_fingerprint": "SHA256:newNEWnewNEWnewNEWnewNEWnewNEWnewNEWnew",
		"vault_path": "ssh/sesterce/gpu-team", "grace_deadline": "2025-03-08T03:00:00Z",
	}
	if fmt.Sprint(data) != fmt.Sprint(wantData) {
		t.Errorf("data\n got %v\nwant %v", data, wantData)
	}

	other := ev
	other.KeyID = "65f1c0ffee0000000000f00d"
	if EventID(other) == EventID(ev) || EventID(ev) != EventID(rotatedEvent()) || len(EventID(ev)) != 32 {
		t.Errorf("EventID: %q for the event, %q for its copy, %q for another; want equal, equal, different, 32 hex digits",
			EventID(ev), EventID(rotatedEvent()), EventID(other))
	}
}

// A webhook sends only the events it subscribes to; the others are
// reported delivered without a request, so they never clog its outbox.
func TestWebhook_eventFilter(t *testing.T) {
	rcv := newReceiver(t)
	w := newTestWebhook(t, rcv.URL, func(c *WebhookConfig) { c.Events = []string{policy.EventFailed, policy.EventReloadFailed} })
	if w.Wants(policy.EventRotated) || !w.Wants(policy.EventFailed) {
		t.Errorf("Wants(rotated) = %v, Wants(failed) = %v", w.Wants(policy.EventRotated), w.Wants(policy.EventFailed))
	}
	if err := w.Send(context.Background(), rotatedEvent()); err != nil {
		t.Fatal(err)
	}
	failed := rotatedEvent()
	failed.Kind = policy.EventFailed
	if err := w.Send(context.Background(), failed); err != nil {
		t.Fatal(err)
	}
	reqs := rcv.requests()
	if len(reqs) != 1 || !strings.Contains(string(reqs[0].body), `"type":"io.rotatord.failed"`) {
		t.Errorf("receiver got %d requests, want only the failed event", len(reqs))
	}
}

func TestNewWebhook(t *testing.T) {
	const token = "T0KEN-in-the-URL-0123456789"
	tests := []struct {
		url      string
		insecure bool
		secret   secret.Secret
		wantErr  string
	}{
		{url: "https://hooks.example.com/" + token},
		{url: "http://127.0.0.1:8080/" + token},
		{url: "http://127.9.9.9/" + token},
		{url: "http://localhost:8080/" + token},
		{url: "http://[::1]:8080/" + token},
		{url: "http://hooks.example.com/" + token, insecure: true},
		{url: "http://hooks.example.com/" + token,
			wantErr: "new webhook deploy: URL is http:// to a host other than loopback, which would send every event and its signature in clear; use https:// or set insecure: true"},
		{url: "http://10.0.0.5/" + token, wantErr: "new webhook deploy: URL is http:// to a host other than loopback"},
		{url: "http://localhost.example.com/" + token, wantErr: "new webhook deploy: URL is http:// to a host other than loopback"},
		{url: "ftp://hooks.example.com/" + token, wantErr: "new webhook deploy: URL must start with https:// (or http:// to a loopback host)"},
		{url: "https:///" + token, wantErr: "new webhook deploy: URL has no host"},
		{url: "https://hooks.example.com/%zz" + token, wantErr: "new webhook deploy: URL is not a URL"},
		{url: "", wantErr: "new webhook deploy: no URL"},
		{url: "https://hooks.example.com/" + token, secret: "-", wantErr: "new webhook deploy: no signing secret"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			key := testWebhookSecret
			if tt.secret == "-" {
				key = ""
			}
			_, err := NewWebhook(WebhookConfig{Name: "deploy", URL: secret.Secret(tt.url), Secret: key, Insecure: tt.insecure})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewWebhook: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("NewWebhook error %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "hooks.example.com") {
				t.Errorf("error quotes the URL: %v", err)
			}
		})
	}
}

// Neither the signing secret, nor the URL (with a token in its path and
// its query), nor key material planted in an event shows up in a body, a
// log line or an error, whatever the receiver answers.
func TestWebhook_leaksNoSecret(t *testing.T) {
	const pathToken, queryToken = "PaThT0kenABCDEF012345", "QuErYT0kenXYZ98765"
	rcv := newReceiver(t,
		replyUnavailable,
		reply{status: http.StatusForbidden, body: "forbidden for /hooks/" + pathToken + "?token=" + queryToken},
		reply{status: http.StatusTooManyRequests, header: map[string]string{"Retry-After": "1"}})
	hook := rcv.URL + "/hooks/" + pathToken + "?token=" + queryToken
	logs := &logBuffer{}
	w := newTestWebhook(t, hook, func(c *WebhookConfig) { c.Logger = newLogger(logs) })
	out, clock := &memOutbox{}, &fakeClock{now: t0}
	d := NewDispatcher(out, w, DispatcherOptions{Logger: newLogger(logs), Now: clock.Now, BaseBackoff: time.Second})
	out.Enqueue(leakyEvent())

	var errs []error
	for range 4 {
		_, err := d.DrainOnce(context.Background())
		errs = append(errs, err)
		clock.Advance(time.Hour)
	}
	if out.Len() != 0 {
		t.Fatal("the receiver never accepted the event")
	}
	// Unreachable: *url.Error quotes the whole URL.
	rcv.Close()
	out.Enqueue(leakyEvent())
	_, err := d.DrainOnce(context.Background())
	errs = append(errs, err, w.Send(context.Background(), leakyEvent()))
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("the unreachable receiver was not logged:\n%s", logs)
	}
	// A URL that fails only when the request is built, and one refused at
	// construction.
	_, err = NewWebhook(WebhookConfig{Name: "bad", URL: secret.Secret("http://203.0.113.9/hooks/" + pathToken), Secret: testWebhookSecret})
	errs = append(errs, err)
	cfg := WebhookConfig{URL: secret.Secret(hook), Secret: testWebhookSecret}
	errs = append(errs, fmt.Errorf("config %+v %#v", cfg, cfg))

	var bodies []string
	for _, r := range rcv.requests() {
		bodies = append(bodies, string(r.body))
		if !validSignature(testWebhookSecret, r.body, r.header.Get(SignatureHeader)) {
			t.Error("a request carried no valid signature")
		}
		for k, vs := range r.header {
			for _, v := range vs {
				if strings.Contains(v, testWebhookSecret.Reveal()) {
					t.Errorf("header %s carries the signing secret", k)
				}
			}
		}
	}
	assertNoLeak(t, bodies, logs.String(), errs, testWebhookSecret.Reveal(), pathToken, queryToken, hook)
}
