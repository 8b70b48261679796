// Package httpapi is the HTTP plumbing the provider clients (cloud/sesterce,
// cloud/gcore) share: one JSON request with a per-attempt timeout, a capped
// response body, a client-side rate limit, retries with backoff for
// idempotent calls, classification of every failure into a *cloud.Error,
// and redaction of the API key from anything a provider sends back.
//
// What differs between providers (auth header, error body shape, which 404
// means what) is passed in by the provider package through Spec and Request,
// so the retry and error rules live in one place and are tested once.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/secret"
)

// MaxBodySize caps every response body the clients read. The largest
// legitimate answer (a Gcore page of 1,000 keys) is well under 1 MiB; a body
// past the cap is a misbehaving server or proxy, not data.
const MaxBodySize = 4 << 20

// Defaults applied by New to zero Config fields.
const (
	DefaultRateLimit   = 10 // requests per second
	DefaultTimeout     = 30 * time.Second
	DefaultMaxAttempts = 4
	DefaultBaseDelay   = 500 * time.Millisecond
	DefaultMaxDelay    = 30 * time.Second
	DefaultUserAgent   = "rotatord/dev"
)

// errBodyTooLarge is the cause of a *cloud.Error for a body past MaxBodySize.
var errBodyTooLarge = errors.New("response body exceeds 4 MiB")

// Config is one provider account's client settings. The provider packages
// take it as their own Config.
type Config struct {
	// Name is the provider's name from the config ("sesterce-prod"); every
	// error and log line carries it.
	Name string
	// BaseURL is the API root, e.g. https://api.cloud.sesterce.com. Empty
	// uses the provider's public endpoint.
	BaseURL string
	// APIKey is the account's credential. It is sent only in the auth
	// header and redacted from anything the provider echoes back.
	APIKey secret.Secret
	// RateLimit is the client-side limit in requests per second: 0 means
	// DefaultRateLimit, a negative value or +Inf means no limit (tests).
	RateLimit float64
	// Timeout bounds one HTTP attempt, body included; 0 means DefaultTimeout.
	Timeout time.Duration
	// Retry shapes the backoff between attempts of idempotent calls.
	Retry RetryConfig
	// HTTPClient is used when set (its Transport and Jar are kept; redirects
	// are refused so the API key never follows one to another host).
	HTTPClient *http.Client
	// UserAgent is sent on every request; callers pass "rotatord/<version>".
	// The Sesterce API sits behind a CDN that rejects some default agents.
	UserAgent string
	// Logger receives a debug line per request and a warning per retry;
	// nil discards. The client adds "provider" (Name) to every line itself,
	// so the logger passed here must not carry that key: a JSON line with a
	// key twice is rejected or mangled by log pipelines.
	Logger *slog.Logger
}

// RetryConfig is exponential backoff with full jitter, capped, and
// overridden by the server's Retry-After (itself capped at MaxDelay).
type RetryConfig struct {
	// MaxAttempts counts the first try; 0 means DefaultMaxAttempts.
	MaxAttempts int
	// BaseDelay is the backoff ceiling after the first failure; 0 means
	// DefaultBaseDelay. The ceiling doubles per attempt.
	BaseDelay time.Duration
	// MaxDelay caps any one wait, Retry-After included; 0 means
	// DefaultMaxDelay.
	MaxDelay time.Duration
}

// SleepFunc waits for d or until ctx is done, whichever comes first, and
// returns ctx.Err() in the latter case.
type SleepFunc func(ctx context.Context, d time.Duration) error

// Spec is what differs between provider APIs. The provider package fills it.
type Spec struct {
	// Type is the provider type ("sesterce", "gcore"), for log lines.
	Type string
	// Authorize sets the auth header from the revealed key.
	Authorize func(h http.Header, apiKey string)
	// ParseError extracts the provider's message and request ID from an
	// error body; it must tolerate bodies that are not JSON.
	ParseError func(body []byte) (message, requestID string)
	// RequestIDHeader names a response header that carries a request ID
	// (used when the body has none); empty when the provider has none.
	RequestIDHeader string
	// Sleep waits between attempts; nil uses a timer. Tests inject a
	// recorder so they can assert the delays without waiting for them.
	Sleep SleepFunc
}

// Client sends requests to one provider account. It is safe for
// concurrent use.
type Client struct {
	name      string
	spec      Spec
	base      *url.URL
	apiKey    secret.Secret
	http      *http.Client
	limiter   *rate.Limiter
	timeout   time.Duration
	retry     RetryConfig
	userAgent string
	log       *slog.Logger
	sleep     SleepFunc
}

// New checks cfg, applies defaults and returns a client. defaultBaseURL is
// used when cfg.BaseURL is empty.
func New(cfg Config, defaultBaseURL string, spec Spec) (*Client, error) {
	if cfg.Name == "" {
		return nil, errors.New("new client: provider name is empty")
	}
	if cfg.APIKey.Empty() {
		return nil, fmt.Errorf("new client %q: api key is empty", cfg.Name)
	}
	raw := cfg.BaseURL
	if raw == "" {
		raw = defaultBaseURL
	}
	base, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil {
		return nil, fmt.Errorf("new client %q: parse base url: %w", cfg.Name, err)
	}
	if (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("new client %q: base url %q: want http(s)://host[/path]", cfg.Name, raw)
	}
	if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("new client %q: base url %q: must not carry credentials, a query or a fragment", cfg.Name, base.Redacted())
	}
	if spec.Authorize == nil || spec.ParseError == nil {
		return nil, fmt.Errorf("new client %q: spec needs Authorize and ParseError", cfg.Name)
	}

	limit := rate.Limit(cfg.RateLimit)
	switch {
	case cfg.RateLimit == 0:
		limit = DefaultRateLimit
	case cfg.RateLimit < 0 || math.IsInf(cfg.RateLimit, 1):
		limit = rate.Inf
	case math.IsNaN(cfg.RateLimit):
		return nil, fmt.Errorf("new client %q: rate limit is NaN", cfg.Name)
	}
	// A small burst: rotations are a handful of calls, and the provider's
	// own limit is what the client must stay under. (rate.Inf ignores it.)
	burst := 3
	if limit < 3 {
		burst = 1
	}

	retry := cfg.Retry
	if retry.MaxAttempts <= 0 {
		retry.MaxAttempts = DefaultMaxAttempts
	}
	if retry.BaseDelay <= 0 {
		retry.BaseDelay = DefaultBaseDelay
	}
	if retry.MaxDelay <= 0 {
		retry.MaxDelay = DefaultMaxDelay
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	var hc http.Client
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// The default keeps 2 idle connections per host; the engine has up
		// to 8 requests in flight per account (more when configured), and
		// dialling again for each is wasted work.
		tr.MaxIdleConnsPerHost = 64
		hc.Transport = tr
	}
	// Go forwards custom headers such as x-api-key on redirects, even to
	// another host; the APIs never redirect, so a redirect is refused.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	sleep := spec.Sleep
	if sleep == nil {
		sleep = sleepTimer
	}
	return &Client{
		name:      cfg.Name,
		spec:      spec,
		base:      base,
		apiKey:    cfg.APIKey,
		http:      &hc,
		limiter:   rate.NewLimiter(limit, burst),
		timeout:   timeout,
		retry:     retry,
		userAgent: ua,
		log:       logger.With("provider", cfg.Name),
		sleep:     sleep,
	}, nil
}

// Name returns the provider name the client was configured with.
func (c *Client) Name() string { return c.name }

// Logger returns the client's logger, already carrying the provider name.
func (c *Client) Logger() *slog.Logger { return c.log }

// Request is one API call.
type Request struct {
	// Op names the operation in errors: "list", "create", "set default",
	// "delete".
	Op     string
	Method string
	// Path is appended to the base URL as is; it holds no secrets and is
	// logged as the route. Callers escape IDs with url.PathEscape.
	Path  string
	Query url.Values
	// Body is JSON-encoded when non-nil.
	Body any
	// Idempotent allows retries after transient failures. A non-idempotent
	// call (create) is retried only after 429, which commits nothing.
	Idempotent bool
	// NotFound is the class of a 404; nil means cloud.ErrNotFound. Sesterce
	// answers 404 "API key not found" to a bad key on its collection routes.
	NotFound error
	// Subject, when set, names what the call is about in its errors
	// ("region 76", "instance 65f..."), so one failed part of a listing
	// says which.
	Subject string
}

// Do sends req, retrying as req.Idempotent allows, and decodes a 2xx JSON
// body into out when out is non-nil. Every error is a *cloud.Error.
func (c *Client) Do(ctx context.Context, req Request, out any) error {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = json.Marshal(req.Body); err != nil {
			e := c.errorf(req.Op, cloud.ErrPermanent, fmt.Errorf("encode request: %w", err))
			e.Subject = req.Subject
			return e
		}
	}
	for attempt := 1; ; attempt++ {
		err := c.attempt(ctx, req, body, out, attempt)
		if err == nil {
			return nil
		}
		err.Subject = req.Subject
		if ctx.Err() != nil || attempt >= c.retry.MaxAttempts || !c.retryable(req, err) {
			return err
		}
		delay := c.backoff(attempt, err.RetryAfter)
		c.log.WarnContext(ctx, "retrying provider request",
			"op", req.Op, "method", req.Method, "route", req.Path,
			"attempt", attempt, "delay", delay, "err", err)
		if serr := c.sleep(ctx, delay); serr != nil {
			return stopped(err, serr)
		}
	}
}

// retryable: 429 never committed anything, so any call may wait and retry;
// other transient failures only when repeating the call is harmless.
func (c *Client) retryable(req Request, err *cloud.Error) bool {
	if errors.Is(err.Class, cloud.ErrRateLimited) {
		return true
	}
	return req.Idempotent && errors.Is(err.Class, cloud.ErrTransient)
}

// backoff returns the wait before attempt+1: the server's Retry-After when
// it sent one, else full jitter over an exponential ceiling; both capped at
// MaxDelay so a hostile Retry-After cannot park a rotation for hours.
func (c *Client) backoff(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, c.retry.MaxDelay)
	}
	ceiling := c.retry.MaxDelay
	if shift := attempt - 1; shift < 32 {
		if d := c.retry.BaseDelay << shift; d > 0 && d < ceiling {
			ceiling = d
		}
	}
	return rand.N(ceiling + 1)
}

// attempt is one HTTP exchange. It waits for the rate limiter first, so
// retries are limited too.
func (c *Client) attempt(ctx context.Context, req Request, body []byte, out any, n int) *cloud.Error {
	if err := c.limiter.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return c.errorf(req.Op, cloud.ErrTransient, fmt.Errorf("wait for rate limiter: %w", err))
	}
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	target := c.base.String() + req.Path
	if len(req.Query) > 0 {
		target += "?" + req.Query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hreq, err := http.NewRequestWithContext(actx, req.Method, target, rd)
	if err != nil {
		return c.errorf(req.Op, cloud.ErrPermanent, fmt.Errorf("build request: %w", err))
	}
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	c.spec.Authorize(hreq.Header, c.apiKey.Reveal())

	start := time.Now()
	resp, err := c.http.Do(hreq)
	if err != nil {
		return c.finish(ctx, req, 0, start, n, c.transportError(ctx, actx, req.Op, err, "send request"))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodySize+1))
	if err != nil {
		// A body cut short (connection dropped, Content-Length not met) is
		// as ambiguous as no answer at all.
		e := c.transportError(ctx, actx, req.Op, err, "read response body")
		e.Status = resp.StatusCode
		return c.finish(ctx, req, resp.StatusCode, start, n, e)
	}
	tooLarge := len(data) > MaxBodySize
	if tooLarge {
		data = data[:MaxBodySize]
	}

	return c.finish(ctx, req, resp.StatusCode, start, n, c.check(req, resp, data, tooLarge, out))
}

// check turns a complete response into nil or a classified error.
func (c *Client) check(req Request, resp *http.Response, data []byte, tooLarge bool, out any) *cloud.Error {
	status := resp.StatusCode
	if status >= 200 && status < 300 {
		if tooLarge {
			// Treated like a truncated body: for a create, the key may
			// exist, and the ambiguous-create path lists to find out.
			e := c.errorf(req.Op, cloud.ErrTransient, errBodyTooLarge)
			e.Status = status
			return e
		}
		if out == nil || status == http.StatusNoContent {
			return nil
		}
		if len(bytes.TrimSpace(data)) == 0 {
			e := c.errorf(req.Op, cloud.ErrTransient, errors.New("decode response: empty body"))
			e.Status = status
			return e
		}
		if err := json.Unmarshal(data, out); err != nil {
			e := c.errorf(req.Op, cloud.ErrTransient, fmt.Errorf("decode response: %w", c.redactErr(err)))
			e.Status = status
			return e
		}
		return nil
	}

	class := cloud.ErrPermanent
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		class = cloud.ErrUnauthorized
	case status == http.StatusNotFound:
		class = cloud.ErrNotFound
		if req.NotFound != nil {
			class = req.NotFound
		}
	case status == http.StatusTooManyRequests:
		class = cloud.ErrRateLimited
	case status == http.StatusRequestTimeout || status >= 500:
		// 408: the server gave up waiting for the request; nothing was
		// processed, so it is as retryable as a 5xx.
		class = cloud.ErrTransient
	case status >= 300 && status < 400:
		// Redirects are refused (see New); an API that redirects is
		// misconfigured (wrong base URL), and retrying will not fix it.
		class = cloud.ErrPermanent
	}
	msg, reqID := c.spec.ParseError(data)
	if reqID == "" && c.spec.RequestIDHeader != "" {
		reqID = resp.Header.Get(c.spec.RequestIDHeader)
	}
	e := &cloud.Error{
		Provider:  c.name,
		Op:        req.Op,
		Status:    status,
		Message:   c.redact(msg),
		RequestID: c.redact(reqID),
		Class:     class,
	}
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	if tooLarge {
		e.Err = errBodyTooLarge
	}
	if e.Err == nil && status >= 300 && status < 400 {
		e.Err = fmt.Errorf("unexpected redirect to %q", c.redact(resp.Header.Get("Location")))
	}
	return e
}

// transportError classifies a failure with no complete response: the
// caller's context ending is reported as such (and is never retried by Do);
// the attempt's own deadline is a timeout; anything else is a connection
// error. All are transient.
func (c *Client) transportError(ctx, actx context.Context, op string, err error, what string) *cloud.Error {
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("request timed out after %s: %w", c.timeout, context.DeadlineExceeded)
	default:
		err = fmt.Errorf("%s: %w", what, c.redactErr(err))
	}
	return c.errorf(op, cloud.ErrTransient, err)
}

func (c *Client) errorf(op string, class, cause error) *cloud.Error {
	return &cloud.Error{Provider: c.name, Op: op, Class: class, Err: cause}
}

// finish gives err (nil on success) the request's subject, logs the
// exchange at debug level and returns err.
func (c *Client) finish(ctx context.Context, req Request, status int, start time.Time, attempt int, err *cloud.Error) *cloud.Error {
	if err != nil {
		err.Subject = req.Subject
	}
	if !c.log.Enabled(ctx, slog.LevelDebug) {
		return err
	}
	attrs := []any{
		"type", c.spec.Type, "op", req.Op, "method", req.Method, "route", req.Path,
		"status", status, "duration", time.Since(start), "attempt", attempt,
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	c.log.DebugContext(ctx, "provider request", attrs...)
	return err
}

// redact replaces the API key wherever it appears in s: some servers echo
// the credential they rejected. It follows secret.Scrub's rule, so a key
// too short to be a credential does not garble every message.
func (c *Client) redact(s string) string {
	return secret.Scrub(s, c.apiKey)
}

// redactErr returns err, or an error with the same chain whose text has the
// key redacted.
func (c *Client) redactErr(err error) error {
	if err == nil {
		return nil
	}
	if msg := err.Error(); msg != c.redact(msg) {
		return &redactedError{msg: c.redact(msg), err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// stopped reports a retry loop cut short by its context: the last failure,
// plus why no further attempt was made.
func stopped(last *cloud.Error, ctxErr error) *cloud.Error {
	e := *last
	if e.Err != nil {
		e.Err = fmt.Errorf("%w; stop retrying: %w", last.Err, ctxErr)
	} else {
		e.Err = fmt.Errorf("stop retrying: %w", ctxErr)
	}
	return &e
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
// It returns 0 when the header is absent, malformed or in the past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(math.MaxInt64/time.Second) {
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// ParseTime reads a provider timestamp: RFC 3339 with or without fractional
// seconds, or the same without a zone (taken as UTC), which some APIs emit.
func ParseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("parse time %q: not RFC 3339", s)
}

// Time reads a provider timestamp field with ParseTime. An empty value is
// the zero time; one that does not parse is the zero time too, with a
// warning naming field and the object (idKey, id): one odd timestamp must
// not cost the listing it is part of.
func (c *Client) Time(ctx context.Context, value, field, idKey, id string) time.Time {
	if value == "" {
		return time.Time{}
	}
	t, err := ParseTime(value)
	if err != nil {
		c.log.WarnContext(ctx, "provider sent an unreadable "+field, idKey, id, "err", err)
	}
	return t
}

// Snippet is a short single-line excerpt of a body that is not the
// provider's JSON error shape (a CDN's HTML page, plain text), so the
// operator sees something rather than nothing.
func Snippet(body []byte) string {
	body = body[:min(len(body), 1024)]
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(body), "?")), " ")
	const max = 200
	if r := []rune(s); len(r) > max {
		s = string(r[:max]) + "..."
	}
	return s
}

func sleepTimer(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
