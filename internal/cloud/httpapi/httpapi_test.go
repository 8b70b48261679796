package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/secret"
)

const testKey = "k3y-SUPER-secret-value"

// The tests talk to the contract fake's Gcore routes (its auth header and
// error body are what testSpec reads) and shape every answer with its
// fault injection, so the status-code rules are checked against the same
// server the provider clients are.
const (
	keysPath = "/cloud/v1/ssh_keys/1"
	listOp   = "list"
)

// recorder replaces the backoff sleep: it records each requested delay and
// returns at once (or ctx.Err()).
type recorder struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *recorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.delays = append(r.delays, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *recorder) got() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.delays...)
}

func testSpec(rec *recorder) Spec {
	spec := Spec{
		Type:      "test",
		Authorize: func(h http.Header, key string) { h.Set("Authorization", "APIKey "+key) },
		ParseError: func(body []byte) (string, string) {
			var b struct {
				Message   string `json:"message"`
				RequestID string `json:"request_id"`
			}
			if json.Unmarshal(body, &b) != nil {
				return Snippet(body), ""
			}
			return b.Message, b.RequestID
		},
		RequestIDHeader: "X-Request-ID",
	}
	if rec != nil {
		spec.Sleep = rec.sleep
	}
	return spec
}

func newFake(t *testing.T) *cloudtest.Server {
	t.Helper()
	srv := cloudtest.NewServer(cloudtest.Options{GcoreAPIKey: testKey, Seed: 1})
	t.Cleanup(srv.Close)
	return srv
}

func newTestClient(t *testing.T, url string, rec *recorder, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Name: "test-prov", BaseURL: url, APIKey: secret.Secret(testKey),
		RateLimit: -1, Timeout: 10 * time.Second,
		Retry: RetryConfig{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: time.Second},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg, "https://unused.example", testSpec(rec))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// lastRequestID is the X-Request-ID the fake gave its latest answer.
func lastRequestID(srv *cloudtest.Server) string {
	log := srv.RequestLog()
	return log[len(log)-1].RequestID
}

func TestClient_Do(t *testing.T) {
	status := func(code int, msg string) *cloudtest.Fault {
		return &cloudtest.Fault{Kind: cloudtest.FaultStatus, Status: code, Message: msg}
	}
	reply := func(code int, body string, header map[string]string) *cloudtest.Fault {
		return &cloudtest.Fault{Kind: cloudtest.FaultReply, Status: code, Body: body, Header: header}
	}
	list := cloudtest.RouteGcoreList
	tests := []struct {
		name       string
		method     string // GET (list) when empty
		fault      *cloudtest.Fault
		idempotent bool
		notFound   error
		timeout    time.Duration
		wantClass  error // nil: success
		wantCalls  int
		wantInMsg  []string
		// wantReqID: the error names the request ID the fake answered with.
		wantReqID bool
	}{
		{name: "200", idempotent: true, wantCalls: 1},
		{name: "201", method: "POST", wantCalls: 1},
		{name: "204 with out ignored", method: "DELETE", idempotent: true, wantCalls: 1},
		{name: "400", idempotent: true, fault: status(400, "name is invalid"), wantClass: cloud.ErrPermanent, wantCalls: 1,
			wantInMsg: []string{"HTTP 400", "name is invalid"}, wantReqID: true},
		{name: "401", idempotent: true, fault: status(401, "bad token"), wantClass: cloud.ErrUnauthorized, wantCalls: 1,
			wantInMsg: []string{"HTTP 401", "bad token"}},
		{name: "403", idempotent: true, fault: status(403, "API key invalid"), wantClass: cloud.ErrUnauthorized, wantCalls: 1,
			wantInMsg: []string{"API key invalid"}},
		{name: "404 default", idempotent: true, fault: status(404, "no such key"), wantClass: cloud.ErrNotFound, wantCalls: 1,
			wantInMsg: []string{"no such key"}},
		{name: "404 as unauthorized", idempotent: true, notFound: cloud.ErrUnauthorized, fault: status(404, "API key not found"),
			wantClass: cloud.ErrUnauthorized, wantCalls: 1, wantInMsg: []string{"API key not found"}},
		{name: "409", idempotent: true, fault: status(409, "duplicate"), wantClass: cloud.ErrPermanent, wantCalls: 1},
		{name: "422", idempotent: true, fault: status(422, "bad key"), wantClass: cloud.ErrPermanent, wantCalls: 1},
		{name: "429 idempotent retried", idempotent: true, fault: status(429, "slow down"), wantClass: cloud.ErrRateLimited, wantCalls: 3,
			wantInMsg: []string{"slow down"}},
		{name: "429 non-idempotent retried", method: "POST", fault: status(429, "slow down"), wantClass: cloud.ErrRateLimited, wantCalls: 3},
		{name: "500 idempotent retried", idempotent: true, fault: status(500, "oops"), wantClass: cloud.ErrTransient, wantCalls: 3,
			wantInMsg: []string{"HTTP 500", "oops"}, wantReqID: true},
		{name: "500 non-idempotent not retried", method: "POST", fault: status(500, "oops"), wantClass: cloud.ErrTransient, wantCalls: 1},
		{name: "502 html", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"Bad gateway"}, wantReqID: true,
			fault: reply(502, "<html>\n<h1>Bad   gateway</h1></html>", map[string]string{"Content-Type": "text/html"})},
		{name: "503", idempotent: true, fault: status(503, "maintenance"), wantClass: cloud.ErrTransient, wantCalls: 3},
		{name: "timeout", idempotent: true, timeout: 50 * time.Millisecond, wantClass: cloud.ErrTransient, wantCalls: 3,
			wantInMsg: []string{"timed out"}, fault: &cloudtest.Fault{Kind: cloudtest.FaultHang}},
		{name: "timeout non-idempotent not retried", method: "POST", timeout: 50 * time.Millisecond, wantClass: cloud.ErrTransient, wantCalls: 1,
			fault: &cloudtest.Fault{Kind: cloudtest.FaultHang}},
		{name: "dropped connection", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3,
			fault: &cloudtest.Fault{Kind: cloudtest.FaultDrop}},
		{name: "truncated body", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"read response body"},
			fault: &cloudtest.Fault{Kind: cloudtest.FaultTruncate}},
		{name: "malformed json", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"decode response"},
			fault: &cloudtest.Fault{Kind: cloudtest.FaultMalformed}},
		{name: "empty body", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"empty body"},
			fault: reply(200, "", nil)},
		{name: "oversized body", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"response body exceeds 4 MiB"},
			fault: &cloudtest.Fault{Kind: cloudtest.FaultHuge}},
		{name: "redirect refused", idempotent: true, wantClass: cloud.ErrPermanent, wantCalls: 1, wantInMsg: []string{"HTTP 302", "redirect"},
			fault: reply(302, "", map[string]string{"Location": "http://elsewhere.invalid/steal"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			k := srv.AddGcoreKey(1, "existing", "ssh-ed25519 AAAA")
			req := Request{Op: listOp, Method: http.MethodGet, Path: keysPath, Idempotent: tt.idempotent, NotFound: tt.notFound}
			route := list
			switch tt.method {
			case "POST":
				req.Op, req.Method, req.Body, route = "create", "POST", map[string]string{"name": "new"}, cloudtest.RouteGcoreCreate
			case "DELETE":
				req.Op, req.Method, req.Path, route = "delete", "DELETE", keysPath+"/"+k.ID, cloudtest.RouteGcoreDelete
			}
			if tt.fault != nil {
				f := *tt.fault
				f.Route = route
				srv.Inject(f)
			}
			rec := &recorder{}
			c := newTestClient(t, srv.URL(), rec, func(cfg *Config) {
				if tt.timeout > 0 {
					cfg.Timeout = tt.timeout
				}
			})
			var out struct {
				ID      string            `json:"id"`
				Count   int               `json:"count"`
				Results []json.RawMessage `json:"results"`
			}
			err := c.Do(context.Background(), req, &out)
			if got := srv.Requests(route); got != tt.wantCalls {
				t.Errorf("server saw %d requests, want %d", got, tt.wantCalls)
			}
			if tt.wantClass == nil {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				switch tt.method {
				case "":
					if out.Count != 1 || len(out.Results) != 1 {
						t.Errorf("decoded page %+v, want the one stored key", out)
					}
				case "POST":
					if out.ID == "" {
						t.Error("decoded create answer has no id")
					}
				}
				return
			}
			if !errors.Is(err, tt.wantClass) {
				t.Fatalf("Do error %v, want class %v", err, tt.wantClass)
			}
			var ce *cloud.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Do error %T is not a *cloud.Error", err)
			}
			if ce.Provider != "test-prov" || ce.Op != req.Op {
				t.Errorf("error provider/op = %q/%q", ce.Provider, ce.Op)
			}
			want := tt.wantInMsg
			if tt.wantReqID {
				want = append(want, "request_id "+lastRequestID(srv))
			}
			for _, s := range want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if got := len(rec.got()); got != tt.wantCalls-1 {
				t.Errorf("slept %d times, want %d", got, tt.wantCalls-1)
			}
		})
	}
}

func TestClient_Do_headers(t *testing.T) {
	srv := newFake(t)
	for _, ua := range []string{"", "rotatord/1.2.3"} {
		t.Run("ua="+ua, func(t *testing.T) {
			c := newTestClient(t, srv.URL(), &recorder{}, func(cfg *Config) { cfg.UserAgent = ua })
			var out struct{ ID string }
			if err := c.Do(context.Background(), Request{Op: "create", Method: "POST", Path: keysPath, Body: map[string]string{"name": "n"}}, &out); err != nil {
				t.Fatalf("Do (the fake refuses a request without the key): %v", err)
			}
			log := srv.RequestLog()
			got := log[len(log)-1]
			want := ua
			if want == "" {
				want = DefaultUserAgent
			}
			if got.UserAgent != want {
				t.Errorf("User-Agent %q, want %q", got.UserAgent, want)
			}
			if got.Header.Get("Accept") != "application/json" || got.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Accept %q Content-Type %q", got.Header.Get("Accept"), got.Header.Get("Content-Type"))
			}
			if got.Body != `{"name":"n"}` {
				t.Errorf("body %q", got.Body)
			}
		})
	}
}

func TestClient_Do_retryAfter(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   time.Duration
	}{
		{name: "seconds", header: "1", want: time.Second},
		{name: "capped at MaxDelay", header: "3600", want: 2 * time.Second},
		{name: "http date", header: time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat), want: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreCreate, Kind: cloudtest.FaultReply, Status: 429, Count: 1,
				Body: `{"message":"slow down"}`, Header: map[string]string{"Retry-After": tt.header}})
			rec := &recorder{}
			c := newTestClient(t, srv.URL(), rec, func(cfg *Config) { cfg.Retry.MaxDelay = 2 * time.Second })
			var out struct{}
			if err := c.Do(context.Background(), Request{Op: "create", Method: "POST", Path: keysPath, Body: map[string]string{"name": "k"}}, &out); err != nil {
				t.Fatalf("Do: %v", err)
			}
			if n := srv.Requests(cloudtest.RouteGcoreCreate); n != 2 {
				t.Errorf("server saw %d requests, want 2 (429 then success)", n)
			}
			if d := rec.got(); len(d) != 1 || d[0] != tt.want {
				t.Errorf("slept %v, want [%v]", d, tt.want)
			}
		})
	}
}

func TestClient_Do_cancel(t *testing.T) {
	srv := newFake(t)
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultHang})
	c := newTestClient(t, srv.URL(), &recorder{}, func(cfg *Config) { cfg.Timeout = time.Minute })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for srv.Hanging() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	err := c.Do(ctx, Request{Op: listOp, Method: "GET", Path: keysPath, Idempotent: true}, nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, cloud.ErrTransient) {
		t.Fatalf("Do error %v, want context.Canceled classed transient", err)
	}
	if n := srv.Requests(cloudtest.RouteAll); n != 1 {
		t.Errorf("server saw %d requests; a cancelled call must not be retried", n)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("cancelled call returned after %v", el)
	}
}

func TestClient_Do_cancelDuringBackoff(t *testing.T) {
	srv := newFake(t)
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultStatus, Status: 503})
	ctx, cancel := context.WithCancel(context.Background())
	spec := testSpec(nil)
	spec.Sleep = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	c, err := New(Config{Name: "p", BaseURL: srv.URL(), APIKey: testKey, RateLimit: -1}, "", spec)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Do(ctx, Request{Op: listOp, Method: "GET", Path: keysPath, Idempotent: true}, nil)
	var ce *cloud.Error
	if !errors.As(err, &ce) || ce.Status != 503 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Do error %v, want the 503 plus context.Canceled", err)
	}
}

func TestClient_Do_rateLimit(t *testing.T) {
	srv := newFake(t)
	// 1 req/s, burst 1: the second call cannot get a token before the
	// deadline, and says so instead of hanging.
	c := newTestClient(t, srv.URL(), &recorder{}, func(cfg *Config) { cfg.RateLimit = 1 })
	req := Request{Op: listOp, Method: "GET", Path: keysPath, Idempotent: true}
	if err := c.Do(context.Background(), req, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Do(ctx, req, nil)
	if !errors.Is(err, cloud.ErrTransient) || !strings.Contains(err.Error(), "rate limiter") {
		t.Fatalf("Do error %v, want a rate limiter wait error", err)
	}
	if n := srv.Requests(cloudtest.RouteAll); n != 1 {
		t.Errorf("server saw %d requests, want 1: the second waited for the limiter", n)
	}
}

func TestClient_Do_redactsKey(t *testing.T) {
	srv := newFake(t)
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultEcho, Status: 403})
	var logs bytes.Buffer
	c := newTestClient(t, srv.URL(), &recorder{}, func(cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	err := c.Do(context.Background(), Request{Op: listOp, Method: "GET", Path: keysPath, Idempotent: true}, nil)
	if !errors.Is(err, cloud.ErrUnauthorized) {
		t.Fatalf("Do error %v, want unauthorized", err)
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), logs.String()} {
		if strings.Contains(s, testKey) {
			t.Errorf("API key leaked in %q", s)
		}
	}
	if !strings.Contains(err.Error(), "API key "+secret.Redacted+" is invalid") || !strings.Contains(err.Error(), "request_id req-"+secret.Redacted) {
		t.Errorf("error %q does not keep the redacted provider message and request ID", err)
	}
}

func TestNew(t *testing.T) {
	spec := testSpec(&recorder{})
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no name", cfg: Config{APIKey: "k"}, want: "provider name is empty"},
		{name: "no key", cfg: Config{Name: "p"}, want: "api key is empty"},
		{name: "bad scheme", cfg: Config{Name: "p", APIKey: "k", BaseURL: "ftp://x"}, want: "want http(s)"},
		{name: "credentials in url", cfg: Config{Name: "p", APIKey: "k", BaseURL: "https://user:pw@x"}, want: "must not carry credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, "https://default.example", spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New error %v, want %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "pw") {
				t.Errorf("error %q shows the URL password", err)
			}
		})
	}
	c, err := New(Config{Name: "p", APIKey: "k"}, "https://default.example/", spec)
	if err != nil {
		t.Fatal(err)
	}
	if c.base.String() != "https://default.example" || c.retry.MaxAttempts != DefaultMaxAttempts || c.timeout != DefaultTimeout {
		t.Errorf("defaults not applied: base %s retry %+v timeout %v", c.base, c.retry, c.timeout)
	}
}

func TestClient_backoff(t *testing.T) {
	c := newTestClient(t, "http://127.0.0.1:1", &recorder{}, func(cfg *Config) {
		cfg.Retry = RetryConfig{MaxAttempts: 10, BaseDelay: 100 * time.Millisecond, MaxDelay: time.Second}
	})
	for attempt := 1; attempt <= 70; attempt++ {
		ceiling := min(100*time.Millisecond<<min(attempt-1, 20), time.Second)
		for range 50 {
			if d := c.backoff(attempt, 0); d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, want within [0, %v]", attempt, d, ceiling)
			}
		}
	}
	if d := c.backoff(1, 5*time.Second); d != time.Second {
		t.Errorf("backoff with Retry-After 5s = %v, want MaxDelay 1s", d)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-3", 0},
		{"7", 7 * time.Second},
		{" 2 ", 2 * time.Second},
		{"soon", 0},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-30 * time.Second).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := parseRetryAfter(tt.in, now); got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, in := range []string{"2024-05-06T07:08:09Z", "2024-05-06T07:08:09.000Z", "2024-05-06T09:08:09+02:00", "2024-05-06T07:08:09"} {
		got, err := ParseTime(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseTime("yesterday"); err == nil {
		t.Error("ParseTime(yesterday) succeeded")
	}
}

func TestSnippet(t *testing.T) {
	tests := []struct{ in, want string }{
		{"<html>\n  <h1>502   Bad Gateway</h1>\n</html>", "<html> <h1>502 Bad Gateway</h1> </html>"},
		{strings.Repeat("é", 300), strings.Repeat("é", 200) + "..."},
		{"bad \xff byte", "bad ? byte"},
	}
	for _, tt := range tests {
		if got := Snippet([]byte(tt.in)); got != tt.want {
			t.Errorf("Snippet(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestClient_shortKeyNotScrubbed: a key too short to be a credential
// (api_key_env pointing at a variable holding "1") must not turn every 1 in
// an error into [REDACTED], which garbles the message and reveals the key
// by the pattern of its replacements.
func TestClient_shortKeyNotScrubbed(t *testing.T) {
	srv := cloudtest.NewServer(cloudtest.Options{GcoreAPIKey: "1"})
	t.Cleanup(srv.Close)
	const upstream = "upstream 10.0.0.1 gave up after 1s"
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultStatus, Status: 400, Message: upstream})
	refused := newTestClient(t, "http://127.0.0.1:1", &recorder{}, func(cfg *Config) { cfg.APIKey = "1" })
	answered := newTestClient(t, srv.URL(), &recorder{}, func(cfg *Config) { cfg.APIKey = "1" })
	req := Request{Op: listOp, Method: "GET", Path: keysPath}
	tests := []struct {
		name string
		c    *Client
		want string
	}{
		{name: "transport error", c: refused, want: "127.0.0.1:1"},
		{name: "provider message", c: answered, want: upstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Do(context.Background(), req, nil)
			if err == nil {
				t.Fatal("Do succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), secret.Redacted) {
				t.Errorf("error %q: want %q intact and nothing redacted", err, tt.want)
			}
		})
	}
}

// TestClient_logKeysOnce parses every line the client logs (request lines,
// retry warnings, the ambiguous-create lookup) strictly: valid JSON with no
// key twice at any level. A duplicate key (the provider name added by both
// the daemon and the client, once) breaks log pipelines.
func TestClient_logKeysOnce(t *testing.T) {
	srv := newFake(t)
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreList, Kind: cloudtest.FaultStatus, Status: 503, Count: 1})
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreCreate, Kind: cloudtest.FaultCommitThenDrop, Count: 1})
	var logs bytes.Buffer
	// The logger as the daemon hands it over: its own keys, not "provider".
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "cloud")
	c := newTestClient(t, srv.URL(), &recorder{}, func(cfg *Config) { cfg.Logger = logger })
	ctx := context.Background()
	list := func(ctx context.Context) (string, bool, error) {
		var page struct {
			Results []struct{ ID, Name string } `json:"results"`
		}
		err := c.Do(ctx, Request{Op: listOp, Method: "GET", Path: keysPath, Idempotent: true}, &page)
		for _, k := range page.Results {
			if k.Name == "once" {
				return k.ID, true, nil
			}
		}
		return "", false, err
	}
	if _, _, err := list(ctx); err != nil {
		t.Fatalf("list: %v", err)
	}
	_, err := CreateOrFind(ctx, c, "once", func(ctx context.Context) (string, error) {
		var k struct{ ID string }
		err := c.Do(ctx, Request{Op: "create", Method: "POST", Path: keysPath, Body: map[string]string{"name": "once"}}, &k)
		return k.ID, err
	}, list)
	if err != nil {
		t.Fatalf("CreateOrFind: %v", err)
	}
	msgs := map[string]bool{}
	for line := range bytes.Lines(logs.Bytes()) {
		if err := strictJSON(line); err != nil {
			t.Errorf("log line %s: %v", line, err)
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line %s: %v", line, err)
		}
		if m["provider"] != "test-prov" || m["component"] != "cloud" {
			t.Errorf("log line %s: want provider test-prov and component cloud", line)
		}
		msgs[m["msg"].(string)] = true
	}
	for _, want := range []string{"provider request", "retrying provider request", "create outcome unknown; listing to look for the key",
		"key found after an unknown create outcome"} {
		if !msgs[want] {
			t.Errorf("no %q line logged: the test did not cover it (got %v)", want, msgs)
		}
	}
}

// strictJSON checks that b is one JSON value in which no object has a key
// twice; encoding/json would silently keep the last of two.
func strictJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := strictValue(dec); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

func strictValue(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return err
			}
			k := key.(string)
			if seen[k] {
				return fmt.Errorf("key %q appears twice", k)
			}
			seen[k] = true
			if err := strictValue(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
		return err
	case json.Delim('['):
		for dec.More() {
			if err := strictValue(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	}
	return nil
}

func TestStrictJSON(t *testing.T) {
	for in, wantErr := range map[string]bool{
		`{"a":1,"b":{"a":2}}`:             false,
		`{"a":1,"a":2}`:                   true,
		`{"a":[{"b":1,"b":2}]}`:           true,
		`{"provider":"x","provider":"x"}`: true,
		`{"a":1} {"b":2}`:                 true,
		`{"a":`:                           true,
	} {
		if err := strictJSON([]byte(in)); (err != nil) != wantErr {
			t.Errorf("strictJSON(%s) = %v, want error %v", in, err, wantErr)
		}
	}
}
