package sesterce

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/secret"
)

const apiKey = "sk-live-0123456789abcdef"

// fake is a small in-memory Sesterce: enough of the API to prove the
// client's behaviour, with a hook to answer chosen requests with faults.
type fake struct {
	srv *httptest.Server

	mu    sync.Mutex
	keys  []map[string]any
	calls map[string]int // by "METHOD /route"
	// fault, when set, sees every request first (with the count of requests
	// to its route so far, this one included) and reports whether it
	// answered it.
	fault func(w http.ResponseWriter, r *http.Request, route string, n int) bool
	last  http.Header
}

func newFake(t testing.TB) *fake {
	f := &fake{calls: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /gpu-cloud/ssh-keys", f.list)
	mux.HandleFunc("POST /gpu-cloud/ssh-keys", f.create)
	mux.HandleFunc("PATCH /gpu-cloud/ssh-keys/{id}/makedefault", f.makeDefault)
	mux.HandleFunc("DELETE /gpu-cloud/ssh-keys/{id}", f.delete)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, route := mux.Handler(r)
		f.mu.Lock()
		f.calls[route]++
		n := f.calls[route]
		f.last = r.Header.Clone()
		fault := f.fault
		f.mu.Unlock()
		if fault != nil && fault(w, r, route, n) {
			return
		}
		if r.Header.Get("x-api-key") != apiKey {
			// The real API answers an unknown key with 404 on the
			// collection routes and 403 elsewhere.
			status, msg := http.StatusForbidden, "API key invalid"
			if route == "GET /gpu-cloud/ssh-keys" || route == "POST /gpu-cloud/ssh-keys" {
				status, msg = http.StatusNotFound, "API key not found"
			}
			writeError(w, r, status, msg)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func writeError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"statusCode": status, "timestamp": time.Now().UTC().Format(time.RFC3339),
		"path": r.URL.Path, "message": msg,
	})
}

func (f *fake) count(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[route]
}

func (f *fake) stored() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.keys...)
}

func (f *fake) setFault(fn func(w http.ResponseWriter, r *http.Request, route string, n int) bool) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

func (f *fake) add(name, pub string, def bool) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := make([]byte, 12)
	rand.Read(b)
	id := hex.EncodeToString(b)
	f.keys = append(f.keys, map[string]any{
		"_id": id, "name": name, "publicKey": pub, "isDefault": def,
		"createdAt": "2024-03-04T05:06:07.890Z", "updatedAt": "2024-03-04T05:06:07.890Z",
		"user": "u-1", "__v": 0,
	})
	return id
}

func (f *fake) list(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(f.stored())
}

func (f *fake) create(w http.ResponseWriter, r *http.Request) {
	var body struct{ Name, PublicKey string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Name == "" {
		writeError(w, r, http.StatusBadRequest, "name should not be empty")
		return
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(body.PublicKey)); err != nil {
		writeError(w, r, http.StatusBadRequest, "publicKey must be a valid SSH public key")
		return
	}
	id := f.add(body.Name, body.PublicKey, false)
	for _, k := range f.stored() {
		if k["_id"] == id {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(k)
		}
	}
}

func (f *fake) makeDefault(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	found := false
	for _, k := range f.keys {
		if k["_id"] == r.PathValue("id") {
			found = true
		}
	}
	if !found {
		writeError(w, r, http.StatusNotFound, "SSH key not found")
		return
	}
	for _, k := range f.keys {
		k["isDefault"] = k["_id"] == r.PathValue("id")
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fake) delete(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, k := range f.keys {
		if k["_id"] == r.PathValue("id") {
			f.keys = append(f.keys[:i], f.keys[i+1:]...)
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, `{"deleted":true}`)
			return
		}
	}
	writeError(w, r, http.StatusNotFound, "SSH key not found")
}

// commitThenDrop performs the request, then closes the connection without
// sending the response: the create happened, the client cannot know.
func (f *fake) commitThenDrop(w http.ResponseWriter, r *http.Request) {
	f.create(httptest.NewRecorder(), r)
	drop(w)
}

// hangUp answers nothing until the client gives up. The body is read
// first: only then does the server notice the client closing.
func hangUp(r *http.Request) {
	io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	conn.Close()
}

// delays records backoff waits without waiting.
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

func testClient(t testing.TB, baseURL string, key secret.Secret, mod func(*Config)) (*Client, *delays) {
	t.Helper()
	cfg := Config{
		Name: "sesterce-test", BaseURL: baseURL, APIKey: key,
		RateLimit: -1, Timeout: 2 * time.Second,
		Retry: httpapi.RetryConfig{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: time.Second},
	}
	if mod != nil {
		mod(&cfg)
	}
	d := &delays{}
	c, err := newClient(cfg, d.sleep)
	if err != nil {
		t.Fatalf("newClient: %v", err)
	}
	return c, d
}

func newPublicKey(t testing.TB, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}
