package gcore

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/secret"
)

const apiKey = "gc-token-1234567890abcdef"

const (
	routeList   = "GET /cloud/v1/ssh_keys/{project_id}"
	routeCreate = "POST /cloud/v1/ssh_keys/{project_id}"
	routeDelete = "DELETE /cloud/v1/ssh_keys/{project_id}/{id}"
)

// fake is a small in-memory Gcore SSH-key API.
type fake struct {
	srv *httptest.Server

	mu      sync.Mutex
	keys    map[int64][]map[string]any
	calls   map[string]int
	queries []string // raw queries of list requests
	bodies  []map[string]any
	nextID  int
	fault   func(w http.ResponseWriter, r *http.Request, route string, n int) bool
	last    http.Header
}

func newFake(t testing.TB) *fake {
	f := &fake{keys: map[int64][]map[string]any{}, calls: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc(routeList, f.list)
	mux.HandleFunc(routeCreate, f.create)
	mux.HandleFunc(routeDelete, f.delete)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, route := mux.Handler(r)
		f.mu.Lock()
		f.calls[route]++
		n := f.calls[route]
		f.last = r.Header.Clone()
		if route == routeList {
			f.queries = append(f.queries, r.URL.RawQuery)
		}
		fault := f.fault
		f.mu.Unlock()
		w.Header().Set("X-Request-ID", fmt.Sprintf("hdr-%s-%d", strings.Fields(route)[0], n))
		if fault != nil && fault(w, r, route, n) {
			return
		}
		if r.Header.Get("Authorization") != "APIKey "+apiKey {
			writeError(w, 401, "Invalid API key")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"exception_class": "SomeError", "message": msg,
		"request_id": fmt.Sprintf("body-req-%d", status),
	})
}

// project reads the path itself: fault handlers call the fake's handlers
// before the mux has set path values.
func project(r *http.Request) int64 {
	parts := strings.Split(r.URL.Path, "/") // "", cloud, v1, ssh_keys, project_id, ...
	if len(parts) < 5 {
		return 0
	}
	p, _ := strconv.ParseInt(parts[4], 10, 64)
	return p
}

func (f *fake) count(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[route]
}

func (f *fake) stored(p int64) []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.keys[p]...)
}

func (f *fake) setFault(fn func(w http.ResponseWriter, r *http.Request, route string, n int) bool) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

func (f *fake) add(p int64, name, pub string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	k := map[string]any{
		"id":   fmt.Sprintf("00000000-0000-4000-8000-%012d", f.nextID),
		"name": name, "public_key": pub, "fingerprint": "86:75:ce:e7:e9:1e:f0:79:ec:6f:d8:92:9b:43:fc:4d",
		"created_at": "2025-06-16T17:05:50Z", "project_id": p, "shared_in_project": true,
		"state": "ACTIVE", "region": "ignored",
	}
	f.keys[p] = append(f.keys[p], k)
	return k
}

func (f *fake) list(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	if limit < 1 || limit > 1000 {
		writeError(w, 400, "limit must be 1..1000")
		return
	}
	keys := f.stored(project(r))
	page := []map[string]any{}
	if offset < len(keys) {
		page = keys[offset:min(offset+limit, len(keys))]
	}
	json.NewEncoder(w).Encode(map[string]any{"count": len(keys), "results": page})
}

func (f *fake) create(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, 400, "invalid JSON")
		return
	}
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.mu.Unlock()
	name, _ := body["name"].(string)
	pub, _ := body["public_key"].(string)
	var priv any
	if pub == "" {
		pub, priv = generate()
	} else if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub)); err != nil {
		writeError(w, 400, "invalid public key")
		return
	}
	k := f.add(project(r), name, pub)
	f.mu.Lock()
	if shared, ok := body["shared_in_project"].(bool); ok {
		k["shared_in_project"] = shared
	}
	out := map[string]any{"private_key": priv}
	for n, v := range k {
		out[n] = v
	}
	f.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(out)
}

func (f *fake) delete(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	p, found := project(r), false
	for i, k := range f.keys[p] {
		if k["id"] == r.PathValue("id") {
			f.keys[p] = append(f.keys[p][:i], f.keys[p][i+1:]...)
			found = true
			break
		}
	}
	f.mu.Unlock()
	if !found {
		writeError(w, 404, "SSH key not found")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// generate makes an ed25519 pair the way Gcore returns one.
func generate() (pub, priv string) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	sp, err := ssh.NewPublicKey(pk)
	if err != nil {
		panic(err)
	}
	block, err := ssh.MarshalPrivateKey(sk, "")
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))), string(pem.EncodeToMemory(block))
}

func newPublicKey() string {
	pub, _ := generate()
	return pub + " user@host"
}

// commitThenDrop performs the create, then closes the connection without
// the answer.
func (f *fake) commitThenDrop(w http.ResponseWriter, r *http.Request) {
	f.create(httptest.NewRecorder(), r)
	drop(w)
}

func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

// hangUp answers nothing until the client gives up. The body is read
// first: only then does the server notice the client closing.
func hangUp(r *http.Request) {
	io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

type delays struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *delays) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *delays) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

func testClient(t testing.TB, baseURL string, key secret.Secret, pageSize int, mod func(*Config)) (*Client, *delays) {
	t.Helper()
	cfg := Config{
		Name: "gcore-test", BaseURL: baseURL, APIKey: key,
		RateLimit: -1, Timeout: 2 * time.Second,
		Retry: httpapi.RetryConfig{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: time.Second},
	}
	if mod != nil {
		mod(&cfg)
	}
	d := &delays{}
	c, err := newClient(cfg, options{sleep: d.sleep, pageSize: pageSize})
	if err != nil {
		t.Fatalf("newClient: %v", err)
	}
	return c, d
}
