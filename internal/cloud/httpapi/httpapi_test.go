package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/secret"
)

const testKey = "k3y-SUPER-secret-value"

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
	return Spec{
		Type:      "test",
		Authorize: func(h http.Header, key string) { h.Set("X-Key", key) },
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
		Sleep:           rec.sleep,
	}
}

func newTestClient(t *testing.T, url string, rec *recorder, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Name: "test-prov", BaseURL: url, APIKey: secret.Secret(testKey),
		RateLimit: -1, Timeout: 2 * time.Second,
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

// drop closes the connection without answering, as a crashed proxy does.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

func TestClient_Do(t *testing.T) {
	errBody := func(status int, msg string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Request-ID", "hdr-req-1")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"message":%q,"request_id":"body-req-%d"}`, msg, status)
		}
	}
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		idempotent bool
		notFound   error
		timeout    time.Duration
		wantClass  error // nil: success
		wantCalls  int
		wantInMsg  []string
	}{
		{name: "200", idempotent: true, wantCalls: 1, handler: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, `{"value":"ok","extra":{"ignored":true}}`)
		}},
		{name: "201", wantCalls: 1, handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			fmt.Fprint(w, `{"value":"ok"}`)
		}},
		{name: "204 with out ignored", idempotent: true, wantCalls: 1, handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(204)
		}},
		{name: "400", idempotent: true, handler: errBody(400, "name is invalid"), wantClass: cloud.ErrPermanent, wantCalls: 1,
			wantInMsg: []string{"HTTP 400", "name is invalid", "body-req-400"}},
		{name: "401", idempotent: true, handler: errBody(401, "bad token"), wantClass: cloud.ErrUnauthorized, wantCalls: 1,
			wantInMsg: []string{"HTTP 401", "bad token"}},
		{name: "403", idempotent: true, handler: errBody(403, "API key invalid"), wantClass: cloud.ErrUnauthorized, wantCalls: 1,
			wantInMsg: []string{"API key invalid"}},
		{name: "404 default", idempotent: true, handler: errBody(404, "no such key"), wantClass: cloud.ErrNotFound, wantCalls: 1,
			wantInMsg: []string{"no such key"}},
		{name: "404 as unauthorized", idempotent: true, notFound: cloud.ErrUnauthorized, handler: errBody(404, "API key not found"),
			wantClass: cloud.ErrUnauthorized, wantCalls: 1, wantInMsg: []string{"API key not found"}},
		{name: "409", idempotent: true, handler: errBody(409, "duplicate"), wantClass: cloud.ErrPermanent, wantCalls: 1},
		{name: "422", idempotent: true, handler: errBody(422, "bad key"), wantClass: cloud.ErrPermanent, wantCalls: 1},
		{name: "429 idempotent retried", idempotent: true, handler: errBody(429, "slow down"), wantClass: cloud.ErrRateLimited, wantCalls: 3,
			wantInMsg: []string{"slow down"}},
		{name: "429 non-idempotent retried", handler: errBody(429, "slow down"), wantClass: cloud.ErrRateLimited, wantCalls: 3},
		{name: "500 idempotent retried", idempotent: true, handler: errBody(500, "oops"), wantClass: cloud.ErrTransient, wantCalls: 3,
			wantInMsg: []string{"HTTP 500", "oops", "body-req-500"}},
		{name: "500 non-idempotent not retried", handler: errBody(500, "oops"), wantClass: cloud.ErrTransient, wantCalls: 1},
		{name: "502 html", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"Bad gateway", "hdr-req-1"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Request-ID", "hdr-req-1")
				w.WriteHeader(502)
				fmt.Fprint(w, "<html>\n<h1>Bad   gateway</h1></html>")
			}},
		{name: "503", idempotent: true, handler: errBody(503, "maintenance"), wantClass: cloud.ErrTransient, wantCalls: 3},
		{name: "timeout", idempotent: true, timeout: 50 * time.Millisecond, wantClass: cloud.ErrTransient, wantCalls: 3,
			wantInMsg: []string{"timed out"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			}},
		{name: "timeout non-idempotent not retried", timeout: 50 * time.Millisecond, wantClass: cloud.ErrTransient, wantCalls: 1,
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			}},
		{name: "dropped connection", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3,
			handler: func(w http.ResponseWriter, r *http.Request) { drop(w) }},
		{name: "truncated body", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"read response body"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100")
				fmt.Fprint(w, `{"value":`)
			}},
		{name: "malformed json", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"decode response"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"value": nope`)
			}},
		{name: "empty body", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"empty body"},
			handler: func(w http.ResponseWriter, r *http.Request) {}},
		{name: "oversized body", idempotent: true, wantClass: cloud.ErrTransient, wantCalls: 3, wantInMsg: []string{"response body exceeds 4 MiB"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"value":"`)
				w.Write(bytes.Repeat([]byte("a"), MaxBodySize))
				fmt.Fprint(w, `"}`)
			}},
		{name: "redirect refused", idempotent: true, wantClass: cloud.ErrPermanent, wantCalls: 1, wantInMsg: []string{"HTTP 302", "redirect"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://elsewhere.invalid/steal", http.StatusFound)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				tt.handler(w, r)
			}))
			defer srv.Close()
			rec := &recorder{}
			c := newTestClient(t, srv.URL, rec, func(cfg *Config) {
				if tt.timeout > 0 {
					cfg.Timeout = tt.timeout
				}
			})
			var out struct{ Value string }
			err := c.Do(context.Background(), Request{
				Op: "get", Method: http.MethodGet, Path: "/things",
				Idempotent: tt.idempotent, NotFound: tt.notFound,
			}, &out)
			if got := int(calls.Load()); got != tt.wantCalls {
				t.Errorf("server saw %d requests, want %d", got, tt.wantCalls)
			}
			if tt.wantClass == nil {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if out.Value != "ok" && tt.name != "204 with out ignored" {
					t.Errorf("decoded value %q, want ok", out.Value)
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
			if ce.Provider != "test-prov" || ce.Op != "get" {
				t.Errorf("error provider/op = %q/%q", ce.Provider, ce.Op)
			}
			for _, s := range tt.wantInMsg {
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
	var got http.Header
	var body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		var b bytes.Buffer
		b.ReadFrom(r.Body)
		body = b.String()
		w.WriteHeader(204)
	}))
	defer srv.Close()
	for _, ua := range []string{"", "rotatord/1.2.3"} {
		t.Run("ua="+ua, func(t *testing.T) {
			c := newTestClient(t, srv.URL, &recorder{}, func(cfg *Config) { cfg.UserAgent = ua })
			if err := c.Do(context.Background(), Request{Op: "create", Method: "POST", Path: "/x", Body: map[string]string{"name": "n"}}, nil); err != nil {
				t.Fatal(err)
			}
			want := ua
			if want == "" {
				want = DefaultUserAgent
			}
			if got.Get("User-Agent") != want {
				t.Errorf("User-Agent %q, want %q", got.Get("User-Agent"), want)
			}
			if got.Get("Accept") != "application/json" || got.Get("Content-Type") != "application/json" {
				t.Errorf("Accept %q Content-Type %q", got.Get("Accept"), got.Get("Content-Type"))
			}
			if got.Get("X-Key") != testKey {
				t.Errorf("auth header %q not set by Spec.Authorize", got.Get("X-Key"))
			}
			if body != `{"name":"n"}` {
				t.Errorf("body %q", body)
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
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) == 1 {
					w.Header().Set("Retry-After", tt.header)
					w.WriteHeader(429)
					return
				}
				w.WriteHeader(201)
				fmt.Fprint(w, `{}`)
			}))
			defer srv.Close()
			rec := &recorder{}
			c := newTestClient(t, srv.URL, rec, func(cfg *Config) { cfg.Retry.MaxDelay = 2 * time.Second })
			var out struct{}
			if err := c.Do(context.Background(), Request{Op: "create", Method: "POST", Path: "/x"}, &out); err != nil {
				t.Fatalf("Do: %v", err)
			}
			if calls.Load() != 2 {
				t.Errorf("server saw %d requests, want 2 (429 then success)", calls.Load())
			}
			if d := rec.got(); len(d) != 1 || d[0] != tt.want {
				t.Errorf("slept %v, want [%v]", d, tt.want)
			}
		})
	}
}

// TestClient_Do_realRetryAfter checks the real timer path once: the second
// attempt does not come before the server's Retry-After.
func TestClient_Do_realRetryAfter(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 1s")
	}
	var mu sync.Mutex
	var times []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		n := len(times)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			return
		}
		w.WriteHeader(204)
	}))
	defer srv.Close()
	cfg := Config{Name: "p", BaseURL: srv.URL, APIKey: testKey, RateLimit: -1}
	spec := testSpec(nil)
	spec.Sleep = nil
	c, err := New(cfg, "", spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(context.Background(), Request{Op: "list", Method: "GET", Path: "/", Idempotent: true}, nil); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if len(times) != 2 {
		t.Fatalf("server saw %d requests, want 2", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < time.Second {
		t.Errorf("second attempt came %v after the first, before Retry-After 1s", gap)
	}
}

func TestClient_Do_cancel(t *testing.T) {
	var calls atomic.Int32
	started := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		started <- struct{}{}
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, &recorder{}, func(cfg *Config) { cfg.Timeout = time.Minute })
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	start := time.Now()
	err := c.Do(ctx, Request{Op: "list", Method: "GET", Path: "/", Idempotent: true}, nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, cloud.ErrTransient) {
		t.Fatalf("Do error %v, want context.Canceled classed transient", err)
	}
	if calls.Load() != 1 {
		t.Errorf("server saw %d requests; a cancelled call must not be retried", calls.Load())
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("cancelled call returned after %v", el)
	}
}

func TestClient_Do_cancelDuringBackoff(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	spec := testSpec(nil)
	spec.Sleep = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
	c, err := New(Config{Name: "p", BaseURL: srv.URL, APIKey: testKey, RateLimit: -1}, "", spec)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Do(ctx, Request{Op: "list", Method: "GET", Path: "/", Idempotent: true}, nil)
	var ce *cloud.Error
	if !errors.As(err, &ce) || ce.Status != 503 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Do error %v, want the 503 plus context.Canceled", err)
	}
}

func TestClient_Do_rateLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer srv.Close()
	// 1 req/s, burst 1: the second call cannot get a token before the
	// deadline, and says so instead of hanging.
	c := newTestClient(t, srv.URL, &recorder{}, func(cfg *Config) { cfg.RateLimit = 1 })
	req := Request{Op: "list", Method: "GET", Path: "/", Idempotent: true}
	if err := c.Do(context.Background(), req, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Do(ctx, req, nil)
	if !errors.Is(err, cloud.ErrTransient) || !strings.Contains(err.Error(), "rate limiter") {
		t.Fatalf("Do error %v, want a rate limiter wait error", err)
	}
}

func TestClient_Do_redactsKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-ID", "id-"+r.Header.Get("X-Key"))
		w.WriteHeader(403)
		fmt.Fprintf(w, `{"message":"API key %s is invalid"}`, r.Header.Get("X-Key"))
	}))
	defer srv.Close()
	var logs bytes.Buffer
	c := newTestClient(t, srv.URL, &recorder{}, func(cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	err := c.Do(context.Background(), Request{Op: "list", Method: "GET", Path: "/", Idempotent: true}, nil)
	if !errors.Is(err, cloud.ErrUnauthorized) {
		t.Fatalf("Do error %v, want unauthorized", err)
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), logs.String()} {
		if strings.Contains(s, testKey) {
			t.Errorf("API key leaked in %q", s)
		}
	}
	if !strings.Contains(err.Error(), "API key "+secret.Redacted+" is invalid") {
		t.Errorf("error %q does not keep the redacted provider message", err)
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
