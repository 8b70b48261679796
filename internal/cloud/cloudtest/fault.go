package cloudtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FaultKind says how a faulted request is answered.
type FaultKind string

// Fault kinds. Only Malformed and CommitThenDrop perform the operation
// (Latency and Hang perform it after their delay); the others never reach
// the API, as when a proxy or load balancer in front of it fails.
const (
	// FaultStatus answers Fault.Status with the provider's error body
	// (and Retry-After when Fault.RetryAfter is set).
	FaultStatus FaultKind = "status"
	// FaultRateLimit answers 429 with Retry-After: Fault.RetryAfter rounded
	// up to whole seconds (1 when unset).
	FaultRateLimit FaultKind = "rate_limit"
	// FaultDrop closes the connection without a response.
	FaultDrop FaultKind = "drop"
	// FaultMalformed performs the operation, then sends its status (200 in
	// place of 204) with the first half of its JSON body, or `{"` when the
	// body was empty.
	FaultMalformed FaultKind = "malformed"
	// FaultCommitThenDrop performs the operation, then closes the
	// connection without a response: a request that commits but loses its
	// response.
	FaultCommitThenDrop FaultKind = "commit_then_drop"
	// FaultHang blocks until ReleaseHangs or Close (then serves the request
	// normally) or until the client gives up (then does nothing).
	FaultHang FaultKind = "hang"
	// FaultHuge answers the route's success status with a valid JSON body
	// of HugeBodySize bytes, streamed without Content-Length.
	FaultHuge FaultKind = "huge"
	// FaultLatency waits Fault.Delay, then serves the request normally.
	FaultLatency FaultKind = "latency"
	// FaultReply answers Fault.Status with Fault.Body and Fault.Header
	// verbatim, without reaching the API: for the answers a server or a
	// proxy may give that the fake never gives on its own (a 204 where the
	// fake sends 200, an error body without a request ID, a redirect, a
	// page whose count lies, an HTML error page). Content-Type defaults to
	// application/json.
	FaultReply FaultKind = "reply"
	// FaultTruncate performs the operation, then announces the full body's
	// Content-Length but sends only its first half before the connection
	// closes: a response cut short in transit.
	FaultTruncate FaultKind = "truncate"
	// FaultEcho answers Fault.Status (401 when unset) with the provider's
	// error body whose message and request ID (body and X-Request-ID)
	// repeat the credential the request carried, as some servers echo the
	// key they rejected. Leak tests use it to prove a client redacts.
	FaultEcho FaultKind = "echo_credential"
)

// HugeBodySize is the default size of a FaultHuge body: 10 MiB, beyond
// any sane response limit for a list of SSH keys. Fault.Size overrides it.
const HugeBodySize = 10 << 20

var faultKinds = []FaultKind{
	FaultStatus, FaultRateLimit, FaultDrop, FaultMalformed,
	FaultCommitThenDrop, FaultHang, FaultHuge, FaultLatency,
	FaultReply, FaultTruncate, FaultEcho,
}

// Fault is one fault injection rule.
//
// Rules are tried in the order they were injected; the first one that
// matches the route and fires decides the request. Rate is the probability
// that a matching request fires the rule (0 means always). Count limits the
// rule to that many firings, after which it is removed (0 means no limit).
// With both set, the rule fires with probability Rate until it has fired
// Count times.
type Fault struct {
	Route      string            // a Route constant, or RouteAll
	Path       string            // when set, only requests to exactly this URL path (one region, one instance)
	Kind       FaultKind         // how to answer
	Rate       float64           // 0..1; 0 means every matching request
	Count      int               // firings left; 0 means unlimited
	Status     int               // FaultStatus, FaultEcho: 400..599; FaultReply: 200..599
	Message    string            // FaultStatus, FaultRateLimit, FaultEcho: the body's message (status text when empty)
	RetryAfter time.Duration     // FaultRateLimit, FaultStatus: the Retry-After header
	Delay      time.Duration     // FaultLatency: the extra delay
	Body       string            // FaultReply: the response body, sent as is
	Header     map[string]string // FaultReply: response headers
	Size       int               // FaultHuge: the body size in bytes (HugeBodySize when 0)
}

// faultJSON is Fault on the wire (cmd/fakecloud /admin/faults), with
// durations as Go duration strings ("1s", "250ms").
type faultJSON struct {
	Route      string            `json:"route"`
	Path       string            `json:"path,omitempty"`
	Kind       FaultKind         `json:"kind"`
	Rate       float64           `json:"rate,omitempty"`
	Count      int               `json:"count,omitempty"`
	Status     int               `json:"status,omitempty"`
	Message    string            `json:"message,omitempty"`
	RetryAfter string            `json:"retry_after,omitempty"`
	Delay      string            `json:"delay,omitempty"`
	Body       string            `json:"body,omitempty"`
	Header     map[string]string `json:"header,omitempty"`
	Size       int               `json:"size,omitempty"`
}

// MarshalJSON encodes durations as strings such as "1s".
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Route: f.Route, Path: f.Path, Kind: f.Kind, Rate: f.Rate, Count: f.Count, Status: f.Status,
		Message: f.Message, Body: f.Body, Header: f.Header, Size: f.Size}
	if f.RetryAfter != 0 {
		j.RetryAfter = f.RetryAfter.String()
	}
	if f.Delay != 0 {
		j.Delay = f.Delay.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON encodes; unknown fields are errors
// so a typo in an admin request is not silently ignored.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("decode fault: %w", err)
	}
	*f = Fault{Route: j.Route, Path: j.Path, Kind: j.Kind, Rate: j.Rate, Count: j.Count, Status: j.Status,
		Message: j.Message, Body: j.Body, Header: j.Header, Size: j.Size}
	var err error
	if j.RetryAfter != "" {
		if f.RetryAfter, err = time.ParseDuration(j.RetryAfter); err != nil {
			return fmt.Errorf("decode fault: retry_after: %w", err)
		}
	}
	if j.Delay != "" {
		if f.Delay, err = time.ParseDuration(j.Delay); err != nil {
			return fmt.Errorf("decode fault: delay: %w", err)
		}
	}
	return nil
}

// Validate reports what is wrong with the rule, if anything.
func (f Fault) Validate() error {
	var errs []error
	if f.Route != RouteAll && !slices.Contains(Routes, f.Route) {
		errs = append(errs, fmt.Errorf("route %q: want %q or one of %q", f.Route, RouteAll, Routes))
	}
	if !slices.Contains(faultKinds, f.Kind) {
		errs = append(errs, fmt.Errorf("kind %q: want one of %q", f.Kind, faultKinds))
	}
	if f.Rate < 0 || f.Rate > 1 || math.IsNaN(f.Rate) {
		errs = append(errs, fmt.Errorf("rate %v: want 0..1", f.Rate))
	}
	if f.Count < 0 {
		errs = append(errs, fmt.Errorf("count %d: want >= 0", f.Count))
	}
	if f.Path != "" && !strings.HasPrefix(f.Path, "/") {
		errs = append(errs, fmt.Errorf("path %q: want an absolute URL path", f.Path))
	}
	if f.Size < 0 || (f.Size > 0 && f.Kind != FaultHuge) {
		errs = append(errs, fmt.Errorf("size %d: want a positive size with kind %q only", f.Size, FaultHuge))
	}
	switch {
	case f.Kind == FaultStatus && (f.Status < 400 || f.Status > 599):
		errs = append(errs, fmt.Errorf("status %d: want 400..599", f.Status))
	case f.Kind == FaultEcho && f.Status != 0 && (f.Status < 400 || f.Status > 599):
		errs = append(errs, fmt.Errorf("status %d: want 400..599", f.Status))
	case f.Kind == FaultReply && (f.Status < 200 || f.Status > 599):
		errs = append(errs, fmt.Errorf("status %d: want 200..599", f.Status))
	}
	if (f.Body != "" || len(f.Header) > 0) && f.Kind != FaultReply {
		errs = append(errs, fmt.Errorf("body and header go with kind %q only", FaultReply))
	}
	if f.RetryAfter < 0 || f.Delay < 0 {
		errs = append(errs, errors.New("retry_after and delay must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("invalid fault: %w", err)
	}
	return nil
}

// Inject adds a rule after the existing ones. It panics on an invalid rule:
// a test that injects a typo should stop, not pass without the fault.
func (s *Server) Inject(f Fault) {
	if err := f.Validate(); err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// SetFaults replaces every rule, or returns an error and changes nothing
// when one is invalid.
func (s *Server) SetFaults(faults []Fault) error {
	var errs []error
	for i, f := range faults {
		if err := f.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("fault %d: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = slices.Clone(faults)
	return nil
}

// Faults returns the rules in force, with their remaining counts.
func (s *Server) Faults() []Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.faults)
}

// ClearFaults removes every rule. Requests already hanging stay hung until
// ReleaseHangs.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// ReleaseHangs lets every request hung by FaultHang proceed.
func (s *Server) ReleaseHangs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		close(s.release)
		s.release = make(chan struct{})
	}
}

// Hanging returns how many requests FaultHang holds right now, so a test
// can wait until its request is stuck before it acts.
func (s *Server) Hanging() int { return int(s.hanging.Load()) }

// rngSource decides probabilistic faults; guarded by Server.mu.
type rngSource = *rand.Rand

func newRNG(seed uint64) rngSource {
	if seed == 0 {
		seed = rand.Uint64()
	}
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// pickFault returns the rule that fires for a request to path on route,
// and consumes one of its counts.
func (s *Server) pickFault(route, path string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.faults {
		f := &s.faults[i]
		if (f.Route != RouteAll && f.Route != route) || (f.Path != "" && f.Path != path) {
			continue
		}
		if f.Rate > 0 && f.Rate < 1 && s.rng.Float64() >= f.Rate {
			continue
		}
		fired := *f
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
		}
		return fired, true
	}
	return Fault{}, false
}

// apply answers a request that fired f.
func (s *Server) apply(f Fault, route string, h http.HandlerFunc, w http.ResponseWriter, r *http.Request) {
	switch f.Kind {
	case FaultLatency:
		if sleepCtx(r.Context(), f.Delay) {
			h(w, r)
		}
	case FaultHang:
		// net/http notices a client leaving (and cancels the request's
		// context) only once the body has been read to the end.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if s.hang(r.Context()) {
			h(w, r)
		}
	case FaultStatus:
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", retryAfterSeconds(f.RetryAfter))
		}
		s.providerError(w, r, route, f.Status, cmpOr(f.Message, http.StatusText(f.Status)))
	case FaultRateLimit:
		w.Header().Set("Retry-After", retryAfterSeconds(cmpOr(f.RetryAfter, time.Second)))
		s.providerError(w, r, route, http.StatusTooManyRequests, cmpOr(f.Message, "Too Many Requests"))
	case FaultDrop:
		dropConn(w)
	case FaultCommitThenDrop:
		h(recorderFor(w), r)
		dropConn(w)
	case FaultMalformed:
		rec := recorderFor(w)
		h(rec, r)
		body := rec.Body.Bytes()
		body = body[:len(body)/2]
		if len(body) == 0 {
			body = []byte(`{"`)
		}
		status := rec.Code
		if status == http.StatusNoContent {
			status = http.StatusOK
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		_, _ = w.Write(body)
	case FaultHuge:
		writeHuge(w, r, route, cmpOr(f.Size, HugeBodySize))
	case FaultReply:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		for k, v := range f.Header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body)
	case FaultTruncate:
		rec := recorderFor(w)
		h(rec, r)
		body := rec.Body.Bytes()
		if len(body) < 2 {
			body = []byte(`{}`)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		// net/http closes the connection when a handler writes less than
		// the Content-Length it announced.
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(cmpOr(rec.Code, http.StatusOK))
		_, _ = w.Write(body[:len(body)/2])
	case FaultEcho:
		credential := requestCredential(r)
		w.Header().Set("X-Request-ID", "req-"+credential)
		msg := cmpOr(f.Message, "API key") + " " + credential + " is invalid"
		s.providerError(w, r, route, cmpOr(f.Status, http.StatusUnauthorized), msg)
	}
}

// requestCredential returns the API key a request carried, in either
// provider's header.
func requestCredential(r *http.Request) string {
	if k := r.Header.Get("x-api-key"); k != "" {
		return k
	}
	_, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	return token
}

func cmpOr[T comparable](v, fallback T) T {
	var zero T
	if v == zero {
		return fallback
	}
	return v
}

func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(d.Seconds())))
}

// providerError writes the error body of the provider that owns route.
func (s *Server) providerError(w http.ResponseWriter, r *http.Request, route string, status int, message string) {
	if isSesterce(route) {
		s.sesterceError(w, r, status, message)
		return
	}
	gcoreError(w, status, message)
}

func isSesterce(route string) bool { return strings.Contains(route, " /gpu-cloud/") }

// recorderFor returns a recorder that answers with w's request ID.
func recorderFor(w http.ResponseWriter) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Request-ID", w.Header().Get("X-Request-ID"))
	return rec
}

// dropConn closes the connection without writing a response.
func dropConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): abort the stream instead.
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// hang blocks until ReleaseHangs or Close (true) or until ctx ends (false).
func (s *Server) hang(ctx context.Context) bool {
	s.mu.Lock()
	release := s.release
	s.mu.Unlock()
	s.hanging.Add(1)
	defer s.hanging.Add(-1)
	select {
	case <-release:
		return true
	case <-ctx.Done():
		return false
	}
}

// writeHuge streams a valid JSON body of size bytes shaped like the
// route's response (an array for the Sesterce lists, an object otherwise),
// so only a size limit can stop a client from accepting it.
func writeHuge(w http.ResponseWriter, r *http.Request, route string, size int) {
	open, closing := `{"padding":"`, `"}`
	if route == RouteSesterceList || route == RouteSesterceInstances {
		open, closing = `[{"padding":"`, `"}]`
	}
	status := http.StatusOK
	if r.Method == http.MethodPost {
		status = http.StatusCreated
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if _, err := io.WriteString(w, open); err != nil {
		return
	}
	chunk := []byte(strings.Repeat("a", 64<<10))
	for left := size - len(open) - len(closing); left > 0; left -= len(chunk) {
		if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
			return // the client stopped reading, as it should
		}
	}
	_, _ = io.WriteString(w, closing)
}
