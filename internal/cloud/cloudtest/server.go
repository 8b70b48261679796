// Package cloudtest is the contract fake of the Sesterce and Gcore SSH-key
// and instance APIs and the conformance suites every provider client
// passes.
//
// Server is an in-memory HTTP server that answers both APIs on one listener,
// the way DESIGN.md §4 and the providers' references describe them: the same
// paths, status codes, auth headers and error bodies. Tests seed and inspect
// it directly, and inject faults (errors, rate limits, dropped connections,
// truncated or huge bodies, hangs, commits whose response is lost) per route
// to prove that a client retries what is safe to retry and never creates a
// key twice. It also holds instances (Gcore regions, instances and
// bare-metal servers per project and region, in either field generation;
// Sesterce instances with their launch key), launched and terminated with
// LaunchGcoreInstance, LaunchSesterceInstance and TerminateInstance, behind
// the same auth and fault injection. cmd/fakecloud serves the same Server
// for demos.
//
// RunProviderSuite runs the shared contract checks against a client built by
// a factory, so the Sesterce and Gcore clients are held to the same promises;
// RunInstanceSuite does the same for their instance listings.
package cloudtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rotatord/rotatord/internal/secret"
)

// Routes, as "METHOD /path" ServeMux patterns. They name routes in Requests,
// RequestLog and Fault.Route.
const (
	RouteSesterceList        = "GET /gpu-cloud/ssh-keys"
	RouteSesterceCreate      = "POST /gpu-cloud/ssh-keys"
	RouteSesterceMakeDefault = "PATCH /gpu-cloud/ssh-keys/{id}/makedefault"
	RouteSesterceDelete      = "DELETE /gpu-cloud/ssh-keys/{id}"

	RouteGcoreList   = "GET /cloud/v1/ssh_keys/{project_id}"
	RouteGcoreCreate = "POST /cloud/v1/ssh_keys/{project_id}"
	RouteGcoreGet    = "GET /cloud/v1/ssh_keys/{project_id}/{id}"
	RouteGcorePatch  = "PATCH /cloud/v1/ssh_keys/{project_id}/{id}"
	RouteGcoreDelete = "DELETE /cloud/v1/ssh_keys/{project_id}/{id}"

	// Instance inventory (DESIGN.md §9.1, reference/instances.md).
	RouteSesterceInstances = "GET /gpu-cloud/instances"
	RouteSesterceInstance  = "GET /gpu-cloud/instances/{id}"
	RouteGcoreRegions      = "GET /cloud/v1/regions"
	RouteGcoreInstances    = "GET /cloud/v1/instances/{project_id}/{region_id}"
	RouteGcoreBareMetal    = "GET /cloud/v1/bminstances/{project_id}/{region_id}"

	// RouteAll matches every route in Fault.Route and counts every request
	// in Requests.
	RouteAll = "*"
)

// Routes lists every route the fake serves.
var Routes = []string{
	RouteSesterceList, RouteSesterceCreate, RouteSesterceMakeDefault, RouteSesterceDelete,
	RouteGcoreList, RouteGcoreCreate, RouteGcoreGet, RouteGcorePatch, RouteGcoreDelete,
	RouteSesterceInstances, RouteSesterceInstance,
	RouteGcoreRegions, RouteGcoreInstances, RouteGcoreBareMetal,
}

// Default API keys, used when Options leaves them empty, so a fake started
// without configuration still has a known way in.
const (
	DefaultSesterceAPIKey secret.Secret = "fake-sesterce-key"
	DefaultGcoreAPIKey    secret.Secret = "fake-gcore-key"
)

// requestLogCap bounds RequestLog so a long-running cmd/fakecloud does not
// grow without limit; tests make far fewer requests than this.
const requestLogCap = 10000

// Options configure a Server. The zero value is usable.
type Options struct {
	// SesterceAPIKey is the x-api-key of the first Sesterce account,
	// account 0 (DefaultSesterceAPIKey when empty).
	SesterceAPIKey secret.Secret
	// SesterceAPIKeys adds more Sesterce accounts, one per key:
	// SesterceAPIKeys[i] is account i+1. On Sesterce an API key belongs
	// to a user, and keys, their default and instances are the user's, so
	// accounts are isolated: a list shows only the caller's keys, each
	// account has its own default, and another account's key or instance
	// ID is answered 404 "Not found" as if it did not exist.
	SesterceAPIKeys []secret.Secret
	// SesterceUnknownAPIKey, when set, is answered the way Sesterce answers
	// a well-formed key it does not know: 404 "API key not found" on POST
	// and GET, 403 "API key invalid" elsewhere.
	SesterceUnknownAPIKey secret.Secret
	// GcoreAPIKey is the only "Authorization: APIKey <token>" token the
	// Gcore API accepts (DefaultGcoreAPIKey when empty).
	GcoreAPIKey secret.Secret
	// Latency delays every API request, before faults apply.
	Latency time.Duration
	// Clock stamps created/updated times (time.Now when nil). Request
	// arrival times in RequestLog always use the real clock.
	Clock func() time.Time
	// Logger receives one debug line per request and one info line per
	// injected fault (discarded when nil).
	Logger *slog.Logger
	// Seed seeds the generator that decides probabilistic faults, so a run
	// with the same requests in the same order injects the same faults.
	// Zero picks a random seed.
	Seed uint64
	// ExtraKeyFields are added to every key and instance object of both
	// APIs, to prove that clients tolerate fields they do not know.
	// Sesterce keys always carry "user" and "__v" as the real API does.
	ExtraKeyFields map[string]any
	// GcoreOldInstanceFields serves every Gcore instance with the field
	// names Gcore used before 2025 (instance_id, instance_name,
	// instance_created, keypair_name); OldFieldNames does it for one.
	GcoreOldInstanceFields bool
	// SesterceInstancesEnvelope, when set ("instances" or "data"), wraps
	// the Sesterce instance list as {<envelope>: [...]} instead of sending
	// a bare array: third-party clients accept both, so real answers may
	// come either way.
	SesterceInstancesEnvelope string
}

// Request is one request the fake received, for tests that check retries,
// their spacing, headers and bodies.
type Request struct {
	Route     string // matched route, "" when no route matched
	Method    string // HTTP method
	Path      string // URL path
	Query     string // raw query
	UserAgent string // User-Agent header
	// Header holds the request headers with the credential headers
	// (x-api-key, Authorization) replaced by secret.Redacted, so a test
	// that prints a request cannot leak its key.
	Header    http.Header
	Body      string    // the first requestLogBody bytes of the body
	RequestID string    // the X-Request-ID the fake answered with
	Time      time.Time // arrival, real clock
	Fault     FaultKind // the fault injected, "" when none
}

// requestLogBody bounds the body each RequestLog entry keeps.
const requestLogBody = 4 << 10

// Server is the contract fake of both APIs. It is safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	now  func() time.Time
	// users holds each Sesterce account's user id, echoed in its keys.
	users []string
	// sesterceAccts maps an API key to its Sesterce account.
	sesterceAccts map[string]int

	mu                sync.Mutex
	sesterce          []SesterceKey
	gcore             map[int64][]GcoreKey
	regions           []GcoreRegion
	gcoreInstances    []GcoreInstance
	sesterceInstances []SesterceInstance
	addrSeq           uint32 // numbers generated instance addresses
	counts            map[string]int
	// faultCounts counts the requests each fault kind answered.
	faultCounts map[FaultKind]int
	reqLog      []Request
	faults      []Fault
	rng         rngSource
	release     chan struct{} // closed by ReleaseHangs
	closed      bool
	httpSrv     *httptest.Server
	hanging     atomic.Int64
	closeOne    sync.Once
}

// New returns a Server that is not listening: use it as an http.Handler
// (cmd/fakecloud does). NewServer also starts a loopback listener.
func New(opts Options) *Server {
	if opts.SesterceAPIKey.Empty() {
		opts.SesterceAPIKey = DefaultSesterceAPIKey
	}
	if opts.GcoreAPIKey.Empty() {
		opts.GcoreAPIKey = DefaultGcoreAPIKey
	}
	s := &Server{
		opts:          opts,
		log:           opts.Logger,
		now:           opts.Clock,
		sesterceAccts: make(map[string]int, 1+len(opts.SesterceAPIKeys)),
		gcore:         make(map[int64][]GcoreKey),
		counts:        make(map[string]int),
		faultCounts:   make(map[FaultKind]int),
		rng:           newRNG(opts.Seed),
		release:       make(chan struct{}),
	}
	for i, k := range append([]secret.Secret{opts.SesterceAPIKey}, opts.SesterceAPIKeys...) {
		if _, dup := s.sesterceAccts[k.Reveal()]; !dup && !k.Empty() {
			s.sesterceAccts[k.Reveal()] = i
		}
		s.users = append(s.users, newHexID())
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.mux = http.NewServeMux()
	handlers := map[string]http.HandlerFunc{
		RouteSesterceList:        s.sesterceList,
		RouteSesterceCreate:      s.sesterceCreate,
		RouteSesterceMakeDefault: s.sesterceMakeDefault,
		RouteSesterceDelete:      s.sesterceDelete,
		RouteGcoreList:           s.gcoreList,
		RouteGcoreCreate:         s.gcoreCreate,
		RouteGcoreGet:            s.gcoreGet,
		RouteGcorePatch:          s.gcorePatch,
		RouteGcoreDelete:         s.gcoreDelete,
		RouteSesterceInstances:   s.sesterceInstanceList,
		RouteSesterceInstance:    s.sesterceInstanceGet,
		RouteGcoreRegions:        s.gcoreRegionList,
		RouteGcoreInstances:      s.gcoreInstanceList(KindInstance),
		RouteGcoreBareMetal:      s.gcoreInstanceList(KindBareMetal),
	}
	for _, route := range Routes {
		s.mux.Handle(route, s.route(route, handlers[route]))
	}
	return s
}

// NewServer returns a Server listening on a loopback port; Close stops it.
func NewServer(opts Options) *Server {
	s := New(opts)
	s.httpSrv = httptest.NewServer(s)
	return s
}

// URL is the base URL of a Server made by NewServer ("" for New), to pass
// as a client's base URL for either provider.
func (s *Server) URL() string {
	if s.httpSrv == nil {
		return ""
	}
	return s.httpSrv.URL
}

// Close releases every hung request, lets no new request hang, and stops
// the listener of a Server made by NewServer. It is safe to call twice.
func (s *Server) Close() {
	s.closeOne.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.release)
		s.mu.Unlock()
		if s.httpSrv != nil {
			s.httpSrv.Close()
		}
	})
}

// ServeHTTP serves both APIs. Every response carries an X-Request-ID.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Request-ID", newUUID())
	if _, pattern := s.mux.Handler(r); pattern == "" {
		// Unknown paths (404) and wrong methods (405) are answered by the
		// mux itself; log them so a misrouted client shows up in RequestLog.
		s.record("", r, w.Header().Get("X-Request-ID"), "")
	}
	s.mux.ServeHTTP(w, r)
}

// route wraps an API handler with bookkeeping, latency and fault injection.
func (s *Server) route(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqID := w.Header().Get("X-Request-ID")
		f, fired := s.pickFault(route, r.URL.Path)
		kind := FaultKind("")
		if fired {
			kind = f.Kind
		}
		s.record(route, r, reqID, kind)
		s.log.Debug("request", "route", route, "path", r.URL.Path, "request_id", reqID)
		if !sleepCtx(r.Context(), s.opts.Latency) {
			return
		}
		if !fired {
			h(w, r)
			return
		}
		s.log.Info("fault injected", "route", route, "fault", string(f.Kind), "request_id", reqID)
		s.apply(f, route, h, w, r)
	})
}

func (s *Server) record(route string, r *http.Request, reqID string, kind FaultKind) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		// Read the body once and put it back for the handler; the cap is
		// the one the handlers apply, so nothing they would read is lost.
		body, _ = io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	header := r.Header.Clone()
	for _, h := range []string{"X-Api-Key", "Authorization"} {
		if header.Get(h) != "" {
			header.Set(h, secret.Redacted)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[route]++
	s.counts[RouteAll]++
	if kind != "" {
		s.faultCounts[kind]++
	}
	if len(s.reqLog) == requestLogCap {
		s.reqLog = slices.Delete(s.reqLog, 0, requestLogCap/10)
	}
	s.reqLog = append(s.reqLog, Request{
		Route:     route,
		Method:    r.Method,
		Path:      r.URL.Path,
		Query:     r.URL.RawQuery,
		UserAgent: r.UserAgent(),
		Header:    header,
		Body:      string(body[:min(len(body), requestLogBody)]),
		RequestID: reqID,
		Time:      time.Now(),
		Fault:     kind,
	})
}

// Requests returns how many requests arrived on route (one of the Route
// constants; RouteAll counts every request, "" the unmatched ones),
// including the ones a fault answered.
func (s *Server) Requests(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[route]
}

// FaultsMet returns how many requests each fault kind answered so far.
func (s *Server) FaultsMet() map[FaultKind]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.faultCounts)
}

// RequestLog returns the requests received so far, oldest first (the most
// recent ones only, on a long-running server).
func (s *Server) RequestLog() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqLog)
}

// sleepCtx waits d, or less when ctx ends first; it reports whether the full
// wait elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// newHexID returns a 24-hex-digit ID, the shape of Sesterce's Mongo IDs.
func newHexID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newUUID returns a random (version 4) UUID, the shape of Gcore's IDs.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
