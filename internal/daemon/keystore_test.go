package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/vault"
)

// kvStub answers the few Vault endpoints the key store uses (login check,
// health, mount check, KV v2 writes), holding every write for a moment as
// a real server takes a moment, and counts the writes in flight and the
// connections opened.
type kvStub struct {
	hold      time.Duration
	inFlight  atomic.Int64
	maxFlight atomic.Int64
	conns     atomic.Int64
	mu        sync.Mutex
	versions  map[string]int
}

func (s *kvStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	switch p := r.URL.Path; {
	case p == "/v1/sys/health":
		reply(map[string]any{"initialized": true, "sealed": false})
	case p == "/v1/auth/token/lookup-self":
		reply(map[string]any{"data": map[string]any{"renewable": false, "ttl": 0, "policies": []string{"root"}}})
	case strings.HasPrefix(p, "/v1/sys/internal/ui/mounts/"):
		reply(map[string]any{"data": map[string]any{"path": "secret/", "type": "kv", "options": map[string]any{"version": "2"}}})
	case strings.HasPrefix(p, "/v1/secret/data/") && (r.Method == http.MethodPut || r.Method == http.MethodPost):
		n := s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		for m := s.maxFlight.Load(); n > m && !s.maxFlight.CompareAndSwap(m, n); m = s.maxFlight.Load() {
		}
		time.Sleep(s.hold) // the server's own latency, not a wait for a condition
		s.mu.Lock()
		s.versions[p]++
		v := s.versions[p]
		s.mu.Unlock()
		reply(map[string]any{"data": map[string]any{"version": v, "created_time": time.Now().UTC().Format(time.RFC3339Nano)}})
	default:
		http.NotFound(w, r)
	}
}

// TestKeyStore_BoundsRequestsInFlight: however many rotations write at
// once, the key store sends at most vaultInFlight requests at a time, so
// they all go over the client's pool of kept connections: Vault sees no
// more connections than that, instead of one dialled and closed again per
// request past the pool.
func TestKeyStore_BoundsRequestsInFlight(t *testing.T) {
	stub := &kvStub{hold: 5 * time.Millisecond, versions: map[string]int{}}
	srv := httptest.NewUnstartedServer(stub)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			stub.conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	k := &keyStore{
		cfg:   vault.Config{Address: srv.URL, Mount: "secret", Auth: vault.Auth{Token: "stub-token"}},
		log:   slog.New(slog.DiscardHandler),
		slots: make(chan struct{}, vaultInFlight),
	}
	t.Cleanup(k.Close)
	if _, err := k.connect(t.Context()); err != nil {
		t.Fatal(err)
	}
	const writers = 5 * vaultInFlight
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := k.Put(ctx, fmt.Sprintf("ssh/p%04d/pending", i), map[string]string{"public_key": "k"}, vault.NoCAS); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("put: %v", err)
	}
	if got := stub.maxFlight.Load(); got > vaultInFlight {
		t.Errorf("%d writes in flight at once, want at most %d", got, vaultInFlight)
	}
	// A slot is given back when the response is read, a moment before
	// net/http returns the connection to its idle pool, so a waiting write
	// can still dial a few more on a loaded machine. Without the bound
	// every write dials its own (here 5x the pool); with it the count
	// stays near the pool.
	if got := stub.conns.Load(); got > 2*vaultInFlight {
		t.Errorf("vault saw %d connections for %d writes, want at most %d: connections were dialled past the pool", got, writers, 2*vaultInFlight)
	}
}

// TestKeyStore_WaitForSlotEndsWithContext: a request waiting for a slot
// gives up when its context ends, saying why.
func TestKeyStore_WaitForSlotEndsWithContext(t *testing.T) {
	k := &keyStore{log: slog.New(slog.DiscardHandler), slots: make(chan struct{}, 1)}
	k.slots <- struct{}{} // every slot taken
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := k.Put(ctx, "ssh/p/pending", map[string]string{"k": "v"}, vault.NoCAS)
	if err == nil || !strings.Contains(err.Error(), "wait for a request slot") {
		t.Fatalf("put with every slot taken and a cancelled context: %v, want a slot wait error", err)
	}
}
