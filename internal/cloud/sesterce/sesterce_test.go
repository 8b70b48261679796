package sesterce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/secret"
)

const (
	routeList    = "GET /gpu-cloud/ssh-keys"
	routeCreate  = "POST /gpu-cloud/ssh-keys"
	routeDefault = "PATCH /gpu-cloud/ssh-keys/{id}/makedefault"
	routeDelete  = "DELETE /gpu-cloud/ssh-keys/{id}"
)

func TestClient_List(t *testing.T) {
	f := newFake(t)
	pub := newPublicKey(t, "ops@host")
	id := f.add("gpu-team-20240304T050607", pub, true)
	f.add("broken", "not a key", false)
	c, _ := testClient(t, f.srv.URL, apiKey, func(cfg *Config) { cfg.UserAgent = "rotatord/1.0.0" })

	keys, err := c.List(context.Background(), 0)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(keys) != 2 {
		t.Fatalf("List returned %d keys, want 2", len(keys))
	}
	want, _ := cloud.Fingerprint(pub)
	k := keys[0]
	if k.ID != id || k.Name != "gpu-team-20240304T050607" || k.PublicKey != pub || !k.Default || k.Fingerprint != want {
		t.Errorf("key = %+v, want id %s, default, fingerprint %s", k, id, want)
	}
	if wantT := time.Date(2024, 3, 4, 5, 6, 7, 890e6, time.UTC); !k.CreatedAt.Equal(wantT) {
		t.Errorf("CreatedAt %v, want %v (millis kept)", k.CreatedAt, wantT)
	}
	if keys[1].Fingerprint != "" {
		t.Errorf("unparseable key got fingerprint %q", keys[1].Fingerprint)
	}
	if got := f.last.Get("x-api-key"); got != apiKey {
		t.Errorf("x-api-key header %q", got)
	}
	if f.last.Get("User-Agent") != "rotatord/1.0.0" || f.last.Get("Accept") != "application/json" {
		t.Errorf("User-Agent %q Accept %q", f.last.Get("User-Agent"), f.last.Get("Accept"))
	}
	if c.Name() != "sesterce-test" || c.Type() != "sesterce" || !c.Capabilities().DefaultKey || c.Capabilities().ServerGenerate {
		t.Errorf("identity: %s %s %+v", c.Name(), c.Type(), c.Capabilities())
	}
}

// outcome answers the first n requests to route with fn.
func outcome(route string, n int, fn func(w http.ResponseWriter, r *http.Request)) func(http.ResponseWriter, *http.Request, string, int) bool {
	return func(w http.ResponseWriter, r *http.Request, rt string, i int) bool {
		if rt != route || (n > 0 && i > n) {
			return false
		}
		fn(w, r)
		return true
	}
}

func status(code int, msg string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) { writeError(w, r, code, msg) }
}

func TestClient_errors(t *testing.T) {
	hang := func(w http.ResponseWriter, r *http.Request) { hangUp(r) }
	malformed := func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `[{"_id":`) }
	huge := func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `[{"_id":"x","name":"`)
		w.Write(bytes.Repeat([]byte("a"), httpapi.MaxBodySize))
		fmt.Fprint(w, `"}]`)
	}
	dropped := func(w http.ResponseWriter, r *http.Request) { drop(w) }
	tests := []struct {
		name  string
		op    string // list, create, default, delete
		route string
		n     int // faulted requests; 0: all
		fn    func(http.ResponseWriter, *http.Request)
		// wantClass nil means success.
		wantClass error
		wantCalls map[string]int
		wantMsg   string
		// hangs: the fault holds the request until the client times out,
		// so the client gets a short timeout (others keep a long one: a
		// 4 MiB body under -race on a busy machine takes a while).
		hangs bool
	}{
		{name: "list 200", op: "list", route: routeList, n: 1, fn: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `[]`) },
			wantCalls: map[string]int{routeList: 1}},
		{name: "list 401", op: "list", route: routeList, fn: status(401, "Unauthorized"), wantClass: cloud.ErrUnauthorized,
			wantCalls: map[string]int{routeList: 1}, wantMsg: "HTTP 401: Unauthorized"},
		{name: "list 403", op: "list", route: routeList, fn: status(403, "API key invalid"), wantClass: cloud.ErrUnauthorized,
			wantCalls: map[string]int{routeList: 1}, wantMsg: "API key invalid"},
		{name: "list 404 is auth", op: "list", route: routeList, fn: status(404, "API key not found"), wantClass: cloud.ErrUnauthorized,
			wantCalls: map[string]int{routeList: 1}, wantMsg: "API key not found"},
		{name: "list 429 retried", op: "list", route: routeList, fn: status(429, "ThrottlerException: Too Many Requests"),
			wantClass: cloud.ErrRateLimited, wantCalls: map[string]int{routeList: 3}, wantMsg: "Too Many Requests"},
		{name: "list 429 once then ok", op: "list", route: routeList, n: 1, fn: status(429, "slow"),
			wantCalls: map[string]int{routeList: 2}},
		{name: "list 500 retried", op: "list", route: routeList, fn: status(500, "Internal server error"), wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}, wantMsg: "HTTP 500: Internal server error"},
		{name: "list 502 then ok", op: "list", route: routeList, n: 2, fn: status(502, "Bad Gateway"),
			wantCalls: map[string]int{routeList: 3}},
		{name: "list 503", op: "list", route: routeList, fn: status(503, "down"), wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}},
		{name: "list timeout", op: "list", route: routeList, fn: hang, hangs: true, wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}, wantMsg: "timed out"},
		{name: "list dropped", op: "list", route: routeList, fn: dropped, wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}},
		{name: "list malformed", op: "list", route: routeList, fn: malformed, wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}, wantMsg: "decode response"},
		{name: "list oversized", op: "list", route: routeList, fn: huge, wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}, wantMsg: "response body exceeds 4 MiB"},

		{name: "create 201", op: "create", wantCalls: map[string]int{routeCreate: 1}},
		{name: "create 400", op: "create", route: routeCreate, fn: status(400, "publicKey must be valid"), wantClass: cloud.ErrPermanent,
			wantCalls: map[string]int{routeCreate: 1}, wantMsg: "publicKey must be valid"},
		{name: "create 400 list message", op: "create", route: routeCreate, fn: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"statusCode":400,"message":["name must be a string","publicKey should not be empty"],"error":"Bad Request"}`)
		}, wantClass: cloud.ErrPermanent, wantCalls: map[string]int{routeCreate: 1}, wantMsg: "name must be a string; publicKey should not be empty"},
		{name: "create 401", op: "create", route: routeCreate, fn: status(401, "nope"), wantClass: cloud.ErrUnauthorized,
			wantCalls: map[string]int{routeCreate: 1}},
		{name: "create 404 is auth", op: "create", route: routeCreate, fn: status(404, "API key not found"), wantClass: cloud.ErrUnauthorized,
			wantCalls: map[string]int{routeCreate: 1}, wantMsg: "API key not found"},
		{name: "create 409", op: "create", route: routeCreate, fn: status(409, "already exists"), wantClass: cloud.ErrPermanent,
			wantCalls: map[string]int{routeCreate: 1}, wantMsg: "already exists"},
		{name: "create 429 retries the POST", op: "create", route: routeCreate, n: 1, fn: status(429, "slow"),
			wantCalls: map[string]int{routeCreate: 2}},
		{name: "create 500 every time: bounded, listed each time", op: "create", route: routeCreate, fn: status(500, "boom"),
			wantClass: cloud.ErrTransient, wantCalls: map[string]int{routeCreate: 3, routeList: 3}, wantMsg: "boom"},
		{name: "create 500 uncommitted: listed, created once more", op: "create", route: routeCreate, n: 1, fn: status(500, "boom"),
			wantCalls: map[string]int{routeCreate: 2, routeList: 1}},
		{name: "create timeout: list before retry", op: "create", route: routeCreate, n: 1, fn: hang, hangs: true,
			wantCalls: map[string]int{routeCreate: 2, routeList: 1}},
		{name: "create malformed but committed: found by list", op: "create", route: routeCreate, n: 1,
			wantCalls: map[string]int{routeCreate: 1, routeList: 1}},
		{name: "create oversized: listed", op: "create", route: routeCreate, n: 1, fn: huge,
			wantCalls: map[string]int{routeCreate: 2, routeList: 1}},

		{name: "default 204", op: "default", wantCalls: map[string]int{routeDefault: 1}},
		{name: "default 404 is not found", op: "default", route: routeDefault, fn: status(404, "SSH key not found"),
			wantClass: cloud.ErrNotFound, wantCalls: map[string]int{routeDefault: 1}, wantMsg: "SSH key not found"},
		{name: "default 403", op: "default", route: routeDefault, fn: status(403, "API key invalid"),
			wantClass: cloud.ErrUnauthorized, wantCalls: map[string]int{routeDefault: 1}},
		{name: "default 502 retried", op: "default", route: routeDefault, n: 1, fn: status(502, "bad gateway"),
			wantCalls: map[string]int{routeDefault: 2}},

		{name: "delete 200", op: "delete", wantCalls: map[string]int{routeDelete: 1}},
		{name: "delete 204", op: "delete", route: routeDelete, fn: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) },
			wantCalls: map[string]int{routeDelete: 1}},
		{name: "delete 202", op: "delete", route: routeDelete, fn: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(202) },
			wantCalls: map[string]int{routeDelete: 1}},
		{name: "delete 404 is not found", op: "delete", route: routeDelete, fn: status(404, "SSH key not found"),
			wantClass: cloud.ErrNotFound, wantCalls: map[string]int{routeDelete: 1}},
		{name: "delete 422", op: "delete", route: routeDelete, fn: status(422, "key in use"),
			wantClass: cloud.ErrPermanent, wantCalls: map[string]int{routeDelete: 1}, wantMsg: "key in use"},
		{name: "delete dropped then ok", op: "delete", route: routeDelete, n: 1, fn: dropped,
			wantCalls: map[string]int{routeDelete: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			id := f.add("old", newPublicKey(t, "old"), true)
			fn := tt.fn
			if tt.name == "create malformed but committed: found by list" {
				fn = func(w http.ResponseWriter, r *http.Request) {
					f.create(discard{}, r)
					fmt.Fprint(w, `{"_id":`)
				}
			}
			if fn != nil {
				f.setFault(outcome(tt.route, tt.n, fn))
			}
			c, _ := testClient(t, f.srv.URL, apiKey, func(cfg *Config) {
				cfg.Timeout = 10 * time.Second
				if tt.hangs {
					cfg.Timeout = 250 * time.Millisecond
				}
			})
			ctx := context.Background()
			var err error
			switch tt.op {
			case "list":
				_, err = c.List(ctx, 0)
			case "create":
				var got cloud.Created
				got, err = c.Create(ctx, 0, cloud.CreateRequest{Name: "new", PublicKey: newPublicKey(t, "new")})
				if err == nil {
					var n int
					for _, k := range f.stored() {
						if k["name"] == "new" {
							n++
							if k["_id"] != got.ID {
								t.Errorf("Create returned id %s, server holds %s", got.ID, k["_id"])
							}
						}
					}
					if n != 1 {
						t.Errorf("server holds %d keys named new, want exactly 1", n)
					}
				}
			case "default":
				err = c.SetDefault(ctx, 0, id)
			case "delete":
				err = c.Delete(ctx, 0, id)
			}
			for route, want := range tt.wantCalls {
				if got := f.count(route); got != want {
					t.Errorf("server saw %d %s, want %d", got, route, want)
				}
			}
			if tt.wantClass == nil {
				if err != nil {
					t.Fatalf("%s: %v", tt.op, err)
				}
				return
			}
			if !errors.Is(err, tt.wantClass) {
				t.Fatalf("%s error %v, want class %v", tt.op, err, tt.wantClass)
			}
			var ce *cloud.Error
			if !errors.As(err, &ce) || ce.Provider != "sesterce-test" {
				t.Fatalf("%s error %#v is not a *cloud.Error for the provider", tt.op, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

// discard is a ResponseWriter that throws the response away.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// TestClient_Create_ambiguous: the server stores the key, then the
// connection drops before the answer. The client must end with exactly one
// key on the server and return it.
func TestClient_Create_ambiguous(t *testing.T) {
	f := newFake(t)
	f.setFault(outcome(routeCreate, 1, f.commitThenDrop))
	c, _ := testClient(t, f.srv.URL, apiKey, nil)
	pub := newPublicKey(t, "rotated")
	got, err := c.Create(context.Background(), 0, cloud.CreateRequest{Name: "gpu-team-20250101T000000", PublicKey: pub})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	keys := f.stored()
	if len(keys) != 1 {
		t.Fatalf("server holds %d keys, want exactly 1", len(keys))
	}
	fp, _ := cloud.Fingerprint(pub)
	if got.ID != keys[0]["_id"] || got.Fingerprint != fp || got.Name != "gpu-team-20250101T000000" {
		t.Errorf("Create returned %+v, server holds %v", got.Key, keys[0])
	}
	if f.count(routeCreate) != 1 {
		t.Errorf("POST sent %d times, want 1", f.count(routeCreate))
	}
}

// TestClient_Create_sameNameOtherKey: a key of the same name but another
// fingerprint is not ours; the client creates its own.
func TestClient_Create_sameNameOtherKey(t *testing.T) {
	f := newFake(t)
	f.add("k", newPublicKey(t, "other"), false)
	f.setFault(outcome(routeCreate, 1, status(503, "busy")))
	c, _ := testClient(t, f.srv.URL, apiKey, nil)
	pub := newPublicKey(t, "mine")
	got, err := c.Create(context.Background(), 0, cloud.CreateRequest{Name: "k", PublicKey: pub})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if len(f.stored()) != 2 || got.PublicKey != pub {
		t.Errorf("server holds %d keys and Create returned %q; want 2 keys and ours", len(f.stored()), got.PublicKey)
	}
}

func TestClient_Create_rejectedLocally(t *testing.T) {
	f := newFake(t)
	c, _ := testClient(t, f.srv.URL, apiKey, nil)
	tests := []struct {
		name string
		req  cloud.CreateRequest
		want error
	}{
		{name: "no public key", req: cloud.CreateRequest{Name: "k"}, want: cloud.ErrUnsupported},
		{name: "unparseable public key", req: cloud.CreateRequest{Name: "k", PublicKey: "ssh-ed25519 garbage"}, want: cloud.ErrPermanent},
		{name: "no name", req: cloud.CreateRequest{PublicKey: newPublicKey(t, "x")}, want: cloud.ErrPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Create(context.Background(), 0, tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Create error %v, want %v", err, tt.want)
			}
			if f.count(routeCreate) != 0 {
				t.Errorf("request sent for a create that cannot succeed")
			}
		})
	}
}

func TestClient_SetDefault(t *testing.T) {
	f := newFake(t)
	old := f.add("old", newPublicKey(t, "old"), true)
	id := f.add("new", newPublicKey(t, "new"), false)
	c, _ := testClient(t, f.srv.URL, apiKey, nil)
	if err := c.SetDefault(context.Background(), 0, id); err != nil {
		t.Fatalf("SetDefault: %v", err)
	}
	keys, err := c.List(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Default != (k.ID == id) {
			t.Errorf("key %s default=%v after SetDefault(%s) (old %s)", k.ID, k.Default, id, old)
		}
	}
}

func TestClient_Delete(t *testing.T) {
	f := newFake(t)
	id := f.add("old", newPublicKey(t, "old"), false)
	c, _ := testClient(t, f.srv.URL, apiKey, nil)
	if err := c.Delete(context.Background(), 0, id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if len(f.stored()) != 0 {
		t.Fatalf("key still on the server after Delete")
	}
	if err := c.Delete(context.Background(), 0, id); !errors.Is(err, cloud.ErrNotFound) {
		t.Fatalf("second Delete error %v, want ErrNotFound (already gone)", err)
	}
}

func TestClient_retryAfter(t *testing.T) {
	f := newFake(t)
	f.setFault(outcome(routeList, 1, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		writeError(w, r, 429, "ThrottlerException: Too Many Requests")
	}))
	c, d := testClient(t, f.srv.URL, apiKey, nil)
	if _, err := c.List(context.Background(), 0); err != nil {
		t.Fatalf("List: %v", err)
	}
	if got := d.got(); len(got) != 1 || got[0] != time.Second {
		t.Errorf("waited %v before the retry, want [1s] from Retry-After", got)
	}
}

func TestClient_cancelled(t *testing.T) {
	f := newFake(t)
	f.setFault(outcome(routeCreate, 0, func(w http.ResponseWriter, r *http.Request) { hangUp(r) }))
	c, _ := testClient(t, f.srv.URL, apiKey, func(cfg *Config) { cfg.Timeout = time.Minute })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Create(ctx, 0, cloud.CreateRequest{Name: "k", PublicKey: newPublicKey(t, "k")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Create error %v, want the caller's deadline", err)
	}
	if f.count(routeCreate) != 1 || f.count(routeList) != 0 {
		t.Errorf("server saw %d POST and %d GET after the caller gave up, want 1 and 0", f.count(routeCreate), f.count(routeList))
	}
}

// TestClient_noLeak runs calls that fail in every way an error can carry
// text (auth failures, a server that echoes the key into its message and
// request id, a non-JSON error page, timeouts) with debug logging on, and
// checks that the API key appears in no log line and no error.
func TestClient_noLeak(t *testing.T) {
	f := newFake(t)
	f.add("old", newPublicKey(t, "old"), true)
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []error
	run := func(c *Client) {
		ctx := context.Background()
		_, err := c.List(ctx, 0)
		errs = append(errs, err)
		_, err = c.Create(ctx, 0, cloud.CreateRequest{Name: "k", PublicKey: newPublicKey(t, "k")})
		errs = append(errs, err)
		errs = append(errs, c.SetDefault(ctx, 0, "abc"), c.Delete(ctx, 0, "abc"))
	}
	wrong := secret.Secret("sk-wrong-key-987654321")
	for _, key := range []secret.Secret{apiKey, wrong} {
		c, _ := testClient(t, f.srv.URL, key, func(cfg *Config) { cfg.Logger = logger; cfg.Timeout = 150 * time.Millisecond })
		run(c) // plain run, then auth failures with the wrong key
		f.setFault(func(w http.ResponseWriter, r *http.Request, route string, n int) bool {
			switch n % 3 {
			case 0:
				writeError(w, r, 403, "API key "+r.Header.Get("x-api-key")+" is invalid")
			case 1:
				w.WriteHeader(502)
				fmt.Fprintf(w, "<html>upstream rejected key=%s</html>", r.Header.Get("x-api-key"))
			default:
				hangUp(r)
			}
			return true
		})
		run(c)
		f.setFault(nil)
	}
	echoed := 0
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			for _, key := range []string{apiKey, wrong.Reveal()} {
				if strings.Contains(s, key) {
					t.Errorf("API key leaked in error %q", s)
				}
			}
		}
		if strings.Contains(err.Error(), secret.Redacted) {
			echoed++
		}
	}
	if echoed == 0 {
		t.Error("no error carried the redacted echo: the test did not exercise redaction")
	}
	for _, key := range []string{apiKey, wrong.Reveal()} {
		if strings.Contains(logs.String(), key) {
			t.Errorf("API key leaked in logs")
		}
	}
	if !strings.Contains(logs.String(), `"route":"/gpu-cloud/ssh-keys"`) {
		t.Errorf("debug log has no request lines:\n%s", logs.String())
	}
}
