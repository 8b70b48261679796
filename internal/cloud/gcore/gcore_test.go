package gcore

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

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/secret"
)

const proj = 1234

func TestClient_List(t *testing.T) {
	f := newFake(t)
	pub := newPublicKey()
	stored := f.add(proj, "inference-20250616T170550", pub)
	stored["state"] = "DELETING"
	f.add(proj+1, "other-project", newPublicKey())
	c, _ := testClient(t, f.srv.URL, apiKey, 0, func(cfg *Config) { cfg.UserAgent = "rotatord/2.0.0" })

	keys, err := c.List(context.Background(), proj)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(keys) != 1 {
		t.Fatalf("List returned %d keys, want the project's 1", len(keys))
	}
	want, _ := cloud.Fingerprint(pub)
	k := keys[0]
	if k.ID != stored["id"] || k.Name != "inference-20250616T170550" || k.PublicKey != pub || k.ProjectID != proj ||
		k.State != "DELETING" || k.Fingerprint != want || k.Default {
		t.Errorf("key = %+v, want SHA256 fingerprint %s, state DELETING, project %d", k, want, proj)
	}
	if !k.CreatedAt.Equal(time.Date(2025, 6, 16, 17, 5, 50, 0, time.UTC)) {
		t.Errorf("CreatedAt %v", k.CreatedAt)
	}
	if got := f.last.Get("Authorization"); got != "APIKey "+apiKey {
		t.Errorf("Authorization header %q", got)
	}
	if f.last.Get("User-Agent") != "rotatord/2.0.0" || f.last.Get("Accept") != "application/json" {
		t.Errorf("User-Agent %q Accept %q", f.last.Get("User-Agent"), f.last.Get("Accept"))
	}
	if f.queries[0] != "limit=1000&offset=0" {
		t.Errorf("list query %q, want limit=1000&offset=0", f.queries[0])
	}
	if c.Name() != "gcore-test" || c.Type() != "gcore" || c.Capabilities().DefaultKey || !c.Capabilities().ServerGenerate {
		t.Errorf("identity: %s %s %+v", c.Name(), c.Type(), c.Capabilities())
	}
}

func TestClient_List_paging(t *testing.T) {
	pub := newPublicKey()
	tests := []struct {
		name      string
		keys      int
		pageSize  int
		wantPages int
	}{
		{name: "5000 keys default page", keys: 5000, pageSize: 0, wantPages: 5},
		{name: "exact pages", keys: 21, pageSize: 7, wantPages: 3},
		{name: "partial last page", keys: 22, pageSize: 7, wantPages: 4},
		{name: "empty project", keys: 0, pageSize: 7, wantPages: 1},
		{name: "page size above limit clamped", keys: 1500, pageSize: 5000, wantPages: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			for i := range tt.keys {
				f.add(proj, fmt.Sprintf("k-%d", i), pub)
			}
			c, _ := testClient(t, f.srv.URL, apiKey, tt.pageSize, nil)
			keys, err := c.List(context.Background(), proj)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(keys) != tt.keys {
				t.Fatalf("List returned %d keys, want %d", len(keys), tt.keys)
			}
			seen := map[string]bool{}
			for _, k := range keys {
				seen[k.ID] = true
			}
			if len(seen) != tt.keys {
				t.Errorf("List returned %d distinct keys, want %d", len(seen), tt.keys)
			}
			if got := f.count(routeList); got != tt.wantPages {
				t.Errorf("List read %d pages, want %d (queries %v)", got, tt.wantPages, f.queries)
			}
			size := tt.pageSize
			if size <= 0 || size > 1000 {
				size = 1000
			}
			for i, q := range f.queries {
				if want := fmt.Sprintf("limit=%d&offset=%d", size, i*size); q != want {
					t.Errorf("page %d query %q, want %q", i, q, want)
				}
			}
		})
	}
}

// TestClient_List_countNeverReached: servers that claim more keys than they
// serve must not loop the client forever.
func TestClient_List_countNeverReached(t *testing.T) {
	tests := []struct {
		name  string
		page  func(offset int) string
		wantN int
	}{
		{name: "count too high", wantN: 3, page: func(offset int) string {
			if offset >= 3 {
				return `{"count":100,"results":[]}`
			}
			return `{"count":100,"results":[{"id":"a"},{"id":"b"},{"id":"c"}]}`
		}},
		{name: "offset ignored", wantN: 2, page: func(int) string {
			return `{"count":100,"results":[{"id":"a"},{"id":"b"}]}`
		}},
		{name: "results missing", wantN: 0, page: func(int) string { return `{"count":5}` }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			f.setFault(func(w http.ResponseWriter, r *http.Request, route string, n int) bool {
				var off int
				fmt.Sscan(r.URL.Query().Get("offset"), &off)
				fmt.Fprint(w, tt.page(off))
				return true
			})
			c, _ := testClient(t, f.srv.URL, apiKey, 3, nil)
			keys, err := c.List(context.Background(), proj)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(keys) != tt.wantN {
				t.Errorf("List returned %d keys, want %d", len(keys), tt.wantN)
			}
			if n := f.count(routeList); n > 3 {
				t.Errorf("List read %d pages, want it to stop after at most 3", n)
			}
		})
	}
}

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
	return func(w http.ResponseWriter, r *http.Request) { writeError(w, code, msg) }
}

func TestClient_errors(t *testing.T) {
	hang := func(w http.ResponseWriter, r *http.Request) { hangUp(r) }
	malformed := func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"count":1,"results":[{"id":`) }
	huge := func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"count":1,"results":[{"id":"x","name":"`)
		w.Write(bytes.Repeat([]byte("a"), httpapi.MaxBodySize))
		fmt.Fprint(w, `"}]}`)
	}
	dropped := func(w http.ResponseWriter, r *http.Request) { drop(w) }
	noRequestID := func(code int) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			fmt.Fprint(w, `{"exception_class":"ProjectNotFound","message":"Project 1234 not found"}`)
		}
	}
	tests := []struct {
		name      string
		op        string
		route     string
		n         int
		fn        func(http.ResponseWriter, *http.Request)
		wantClass error
		wantCalls map[string]int
		wantMsg   []string
		// hangs: the fault holds the request until the client times out,
		// so the client gets a short timeout (others keep a long one: a
		// 4 MiB body under -race on a busy machine takes a while).
		hangs bool
	}{
		{name: "list 200", op: "list", wantCalls: map[string]int{routeList: 1}},
		{name: "list 400", op: "list", route: routeList, fn: status(400, "limit invalid"), wantClass: cloud.ErrPermanent,
			wantCalls: map[string]int{routeList: 1}, wantMsg: []string{"HTTP 400", "limit invalid", "request_id body-req-400"}},
		{name: "list 401", op: "list", route: routeList, fn: status(401, "Invalid API key"), wantClass: cloud.ErrUnauthorized,
			wantCalls: map[string]int{routeList: 1}, wantMsg: []string{"Invalid API key", "body-req-401"}},
		{name: "list 403", op: "list", route: routeList, fn: status(403, "Forbidden for project"), wantClass: cloud.ErrUnauthorized,
			wantCalls: map[string]int{routeList: 1}, wantMsg: []string{"Forbidden for project"}},
		{name: "list 404 project is permanent", op: "list", route: routeList, fn: noRequestID(404), wantClass: cloud.ErrPermanent,
			wantCalls: map[string]int{routeList: 1}, wantMsg: []string{"Project 1234 not found", "request_id hdr-GET-1"}},
		{name: "list 429 retried", op: "list", route: routeList, fn: status(429, "Too many requests"), wantClass: cloud.ErrRateLimited,
			wantCalls: map[string]int{routeList: 3}, wantMsg: []string{"Too many requests"}},
		{name: "list 500 retried", op: "list", route: routeList, fn: status(500, "Internal error"), wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}, wantMsg: []string{"HTTP 500", "body-req-500"}},
		{name: "list 502 then ok", op: "list", route: routeList, n: 1, fn: status(502, "bad gateway"), wantCalls: map[string]int{routeList: 2}},
		{name: "list 503 html", op: "list", route: routeList, fn: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
			fmt.Fprint(w, "<html><body>Service Unavailable</body></html>")
		}, wantClass: cloud.ErrTransient, wantCalls: map[string]int{routeList: 3}, wantMsg: []string{"Service Unavailable", "hdr-GET-3"}},
		{name: "list timeout", op: "list", route: routeList, fn: hang, hangs: true, wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}, wantMsg: []string{"timed out"}},
		{name: "list dropped", op: "list", route: routeList, fn: dropped, wantClass: cloud.ErrTransient, wantCalls: map[string]int{routeList: 3}},
		{name: "list malformed", op: "list", route: routeList, fn: malformed, wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}, wantMsg: []string{"decode response"}},
		{name: "list oversized", op: "list", route: routeList, fn: huge, wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeList: 3}, wantMsg: []string{"response body exceeds 4 MiB"}},

		{name: "create 201", op: "create", wantCalls: map[string]int{routeCreate: 1}},
		{name: "create 400", op: "create", route: routeCreate, fn: status(400, "Invalid public key"), wantClass: cloud.ErrPermanent,
			wantCalls: map[string]int{routeCreate: 1}, wantMsg: []string{"Invalid public key", "body-req-400"}},
		{name: "create 401", op: "create", route: routeCreate, fn: status(401, "Invalid API key"), wantClass: cloud.ErrUnauthorized,
			wantCalls: map[string]int{routeCreate: 1}},
		{name: "create 409", op: "create", route: routeCreate, fn: status(409, "Key with this name exists"), wantClass: cloud.ErrPermanent,
			wantCalls: map[string]int{routeCreate: 1}, wantMsg: []string{"Key with this name exists"}},
		{name: "create 422", op: "create", route: routeCreate, fn: status(422, "name too long"), wantClass: cloud.ErrPermanent,
			wantCalls: map[string]int{routeCreate: 1}},
		{name: "create 429 retries the POST", op: "create", route: routeCreate, n: 2, fn: status(429, "slow down"),
			wantCalls: map[string]int{routeCreate: 3, routeList: 0}},
		{name: "create 500 uncommitted: listed, created again", op: "create", route: routeCreate, n: 1, fn: status(500, "boom"),
			wantCalls: map[string]int{routeCreate: 2, routeList: 1}},
		{name: "create 503 always: bounded", op: "create", route: routeCreate, fn: status(503, "maintenance"), wantClass: cloud.ErrTransient,
			wantCalls: map[string]int{routeCreate: 3, routeList: 3}, wantMsg: []string{"maintenance"}},
		{name: "create timeout: listed", op: "create", route: routeCreate, n: 1, fn: hang, hangs: true,
			wantCalls: map[string]int{routeCreate: 2, routeList: 1}},
		{name: "create oversized: listed", op: "create", route: routeCreate, n: 1, fn: huge,
			wantCalls: map[string]int{routeCreate: 2, routeList: 1}},

		{name: "delete 204", op: "delete", wantCalls: map[string]int{routeDelete: 1}},
		{name: "delete 404 is not found", op: "delete", route: routeDelete, fn: status(404, "SSH key not found"),
			wantClass: cloud.ErrNotFound, wantCalls: map[string]int{routeDelete: 1}, wantMsg: []string{"SSH key not found"}},
		{name: "delete 409", op: "delete", route: routeDelete, fn: status(409, "key in use"),
			wantClass: cloud.ErrPermanent, wantCalls: map[string]int{routeDelete: 1}},
		{name: "delete 500 then ok", op: "delete", route: routeDelete, n: 1, fn: status(500, "oops"), wantCalls: map[string]int{routeDelete: 2}},
		{name: "delete timeout then ok", op: "delete", route: routeDelete, n: 1, fn: hang, hangs: true, wantCalls: map[string]int{routeDelete: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			id := f.add(proj, "old", newPublicKey())["id"].(string)
			if tt.fn != nil {
				f.setFault(outcome(tt.route, tt.n, tt.fn))
			}
			c, _ := testClient(t, f.srv.URL, apiKey, 0, func(cfg *Config) {
				cfg.Timeout = 10 * time.Second
				if tt.hangs {
					cfg.Timeout = 250 * time.Millisecond
				}
			})
			ctx := context.Background()
			var err error
			switch tt.op {
			case "list":
				_, err = c.List(ctx, proj)
			case "create":
				var got cloud.Created
				got, err = c.Create(ctx, proj, cloud.CreateRequest{Name: "new", PublicKey: newPublicKey()})
				if err == nil {
					assertOneKey(t, f, "new", got)
				}
			case "delete":
				err = c.Delete(ctx, proj, id)
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
			if !errors.As(err, &ce) || ce.Provider != "gcore-test" {
				t.Fatalf("%s error %#v is not a *cloud.Error for the provider", tt.op, err)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

// assertOneKey checks that the server holds exactly one key named name and
// that it is the one Create returned.
func assertOneKey(t *testing.T, f *fake, name string, got cloud.Created) {
	t.Helper()
	var n int
	for _, k := range f.stored(proj) {
		if k["name"] == name {
			n++
			if k["id"] != got.ID || k["public_key"] != got.PublicKey {
				t.Errorf("Create returned %s, server holds %v", got.ID, k)
			}
		}
	}
	if n != 1 {
		t.Errorf("server holds %d keys named %s, want exactly 1", n, name)
	}
}

func TestClient_Create(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name       string
		publicKey  string
		shared     *bool
		wantShared any // in the request body; nil = absent
	}{
		{name: "upload, provider default sharing", publicKey: newPublicKey()},
		{name: "upload, shared", publicKey: newPublicKey(), shared: &yes, wantShared: true},
		{name: "upload, not shared", publicKey: newPublicKey(), shared: &no, wantShared: false},
		{name: "server generated", shared: &no, wantShared: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
			got, err := c.Create(context.Background(), proj, cloud.CreateRequest{Name: "k1", PublicKey: tt.publicKey, SharedInProject: tt.shared})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			assertOneKey(t, f, "k1", got)
			body := f.bodies[0]
			if shared, ok := body["shared_in_project"]; ok != (tt.wantShared != nil) || shared != tt.wantShared {
				t.Errorf("shared_in_project in body = %v (present %v), want %v", shared, ok, tt.wantShared)
			}
			if _, ok := body["public_key"]; ok != (tt.publicKey != "") {
				t.Errorf("public_key present in body = %v, want %v", ok, tt.publicKey != "")
			}
			if got.ProjectID != proj || got.State != "ACTIVE" || !strings.HasPrefix(got.Fingerprint, "SHA256:") {
				t.Errorf("created key %+v", got.Key)
			}
			if tt.publicKey != "" {
				if !got.PrivateKey.Empty() {
					t.Error("uploaded key came back with a private key")
				}
				return
			}
			assertPair(t, got)
		})
	}
}

// assertPair checks that a generated key's private half matches its public
// half.
func assertPair(t *testing.T, got cloud.Created) {
	t.Helper()
	signer, err := ssh.ParsePrivateKey([]byte(got.PrivateKey.Reveal()))
	if err != nil {
		t.Fatalf("generated private key does not parse: %v", err)
	}
	if fp := ssh.FingerprintSHA256(signer.PublicKey()); fp != got.Fingerprint {
		t.Errorf("private key fingerprint %s, public key %s", fp, got.Fingerprint)
	}
}

// TestClient_Create_ambiguous: the server commits the key, then the
// connection drops. The client ends with exactly one key on the server.
func TestClient_Create_ambiguous(t *testing.T) {
	t.Run("uploaded key is found", func(t *testing.T) {
		f := newFake(t)
		f.setFault(outcome(routeCreate, 1, f.commitThenDrop))
		c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
		pub := newPublicKey()
		got, err := c.Create(context.Background(), proj, cloud.CreateRequest{Name: "k1", PublicKey: pub})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		assertOneKey(t, f, "k1", got)
		if f.count(routeCreate) != 1 || len(f.stored(proj)) != 1 {
			t.Errorf("POST sent %d times, %d keys stored; want 1 and 1", f.count(routeCreate), len(f.stored(proj)))
		}
	})
	t.Run("generated key without its private half is replaced", func(t *testing.T) {
		f := newFake(t)
		f.setFault(outcome(routeCreate, 1, f.commitThenDrop))
		c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
		got, err := c.Create(context.Background(), proj, cloud.CreateRequest{Name: "k1"})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		assertOneKey(t, f, "k1", got)
		assertPair(t, got)
		if f.count(routeDelete) != 1 || f.count(routeCreate) != 2 {
			t.Errorf("orphan handling: %d DELETE, %d POST; want 1 and 2", f.count(routeDelete), f.count(routeCreate))
		}
	})
	t.Run("orphan that cannot be deleted stops the create", func(t *testing.T) {
		f := newFake(t)
		f.setFault(func(w http.ResponseWriter, r *http.Request, route string, n int) bool {
			switch {
			case route == routeCreate && n == 1:
				f.commitThenDrop(w, r)
			case route == routeDelete:
				writeError(w, 403, "Forbidden")
			default:
				return false
			}
			return true
		})
		c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
		_, err := c.Create(context.Background(), proj, cloud.CreateRequest{Name: "k1"})
		if !errors.Is(err, cloud.ErrUnauthorized) {
			t.Fatalf("Create error %v, want the delete's 403", err)
		}
		if f.count(routeCreate) != 1 || len(f.stored(proj)) != 1 {
			t.Errorf("%d POST, %d keys: a second key must not be stacked next to the orphan", f.count(routeCreate), len(f.stored(proj)))
		}
	})
	t.Run("generated answer without private key", func(t *testing.T) {
		f := newFake(t)
		f.setFault(outcome(routeCreate, 1, func(w http.ResponseWriter, r *http.Request) {
			f.create(discard{}, r)
			w.WriteHeader(201)
			k := f.stored(proj)[0]
			fmt.Fprintf(w, `{"id":%q,"name":"k1","public_key":%q,"private_key":null}`, k["id"], k["public_key"])
		}))
		c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
		got, err := c.Create(context.Background(), proj, cloud.CreateRequest{Name: "k1"})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		assertOneKey(t, f, "k1", got)
		assertPair(t, got)
	})
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

func TestClient_Create_fingerprintMismatch(t *testing.T) {
	f := newFake(t)
	other := newPublicKey()
	f.setFault(outcome(routeCreate, 0, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"id":"x-1","name":"k1","public_key":%q,"project_id":%d,"state":"ACTIVE"}`, other, proj)
	}))
	c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
	_, err := c.Create(context.Background(), proj, cloud.CreateRequest{Name: "k1", PublicKey: newPublicKey()})
	if !errors.Is(err, cloud.ErrPermanent) || !strings.Contains(err.Error(), "x-1") {
		t.Fatalf("Create error %v, want a permanent mismatch naming the key", err)
	}
}

func TestClient_Create_rejectedLocally(t *testing.T) {
	f := newFake(t)
	c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
	tests := []struct {
		name    string
		project int64
		req     cloud.CreateRequest
	}{
		{name: "no project", project: 0, req: cloud.CreateRequest{Name: "k"}},
		{name: "no name", project: proj, req: cloud.CreateRequest{}},
		{name: "name too long", project: proj, req: cloud.CreateRequest{Name: strings.Repeat("n", 256)}},
		{name: "bad public key", project: proj, req: cloud.CreateRequest{Name: "k", PublicKey: "ssh-rsa nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Create(context.Background(), tt.project, tt.req)
			if !errors.Is(err, cloud.ErrPermanent) {
				t.Fatalf("Create error %v, want permanent", err)
			}
			if f.count(routeCreate) != 0 {
				t.Error("request sent for a create that cannot succeed")
			}
		})
	}
}

func TestClient_SetDefault(t *testing.T) {
	f := newFake(t)
	c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
	err := c.SetDefault(context.Background(), proj, "any")
	if !errors.Is(err, cloud.ErrUnsupported) {
		t.Fatalf("SetDefault error %v, want ErrUnsupported", err)
	}
	var ce *cloud.Error
	if !errors.As(err, &ce) || ce.Op != "set default" {
		t.Errorf("SetDefault error %#v is not a set default *cloud.Error", err)
	}
}

func TestClient_Delete(t *testing.T) {
	f := newFake(t)
	id := f.add(proj, "old", newPublicKey())["id"].(string)
	c, _ := testClient(t, f.srv.URL, apiKey, 0, nil)
	if err := c.Delete(context.Background(), proj, id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if len(f.stored(proj)) != 0 {
		t.Fatal("key still on the server after Delete")
	}
	if err := c.Delete(context.Background(), proj, id); !errors.Is(err, cloud.ErrNotFound) {
		t.Fatalf("second Delete error %v, want ErrNotFound", err)
	}
}

func TestClient_retryAfter(t *testing.T) {
	f := newFake(t)
	f.setFault(outcome(routeCreate, 1, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		writeError(w, 429, "Too many requests")
	}))
	c, d := testClient(t, f.srv.URL, apiKey, 0, nil)
	if _, err := c.Create(context.Background(), proj, cloud.CreateRequest{Name: "k", PublicKey: newPublicKey()}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if got := d.got(); len(got) != 1 || got[0] != time.Second {
		t.Errorf("waited %v before retrying the POST, want [1s] from Retry-After", got)
	}
	if f.count(routeCreate) != 2 || f.count(routeList) != 0 {
		t.Errorf("%d POST, %d GET: a 429 commits nothing, so the POST is simply repeated", f.count(routeCreate), f.count(routeList))
	}
}

// TestClient_noLeak: neither the API key nor a generated private key shows
// up in any error or debug log line, even when the server echoes the key.
func TestClient_noLeak(t *testing.T) {
	f := newFake(t)
	f.add(proj, "old", newPublicKey())
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []error
	var privateKeys []string
	run := func(c *Client) {
		ctx := context.Background()
		_, err := c.List(ctx, proj)
		errs = append(errs, err)
		created, err := c.Create(ctx, proj, cloud.CreateRequest{Name: "gen"})
		errs = append(errs, err)
		if !created.PrivateKey.Empty() {
			privateKeys = append(privateKeys, created.PrivateKey.Reveal())
			logger.Info("created", "key", created) // a careless caller
		}
		errs = append(errs, c.Delete(ctx, proj, "nope"))
	}
	wrong := secret.Secret("gc-wrong-token-555555")
	for _, key := range []secret.Secret{apiKey, wrong} {
		c, _ := testClient(t, f.srv.URL, key, 0, func(cfg *Config) { cfg.Logger = logger; cfg.Timeout = 150 * time.Millisecond })
		run(c)
		f.setFault(func(w http.ResponseWriter, r *http.Request, route string, n int) bool {
			token := strings.TrimPrefix(r.Header.Get("Authorization"), "APIKey ")
			switch n % 3 {
			case 0:
				w.Header().Set("X-Request-ID", token)
				writeError(w, 401, "token "+token+" rejected")
			case 1:
				w.WriteHeader(500)
				fmt.Fprintf(w, `{"message":"upstream said %s","request_id":%q}`, token, "r-"+token)
			default:
				hangUp(r)
			}
			return true
		})
		run(c)
		f.setFault(nil)
	}
	if len(privateKeys) == 0 {
		t.Fatal("no key was generated: the test did not exercise private keys")
	}
	secrets := append([]string{apiKey, wrong.Reveal()}, privateKeys...)
	echoed := 0
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			for _, sec := range secrets {
				if strings.Contains(s, sec) {
					t.Errorf("secret leaked in error %q", s)
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
	for _, sec := range secrets {
		// PEM bodies are multi-line: check a line of it, too.
		probe := sec
		if lines := strings.Split(sec, "\n"); len(lines) > 2 {
			probe = lines[1]
		}
		if strings.Contains(logs.String(), probe) {
			t.Errorf("secret leaked in logs")
		}
	}
	if !strings.Contains(logs.String(), "route=/cloud/v1/ssh_keys/1234") {
		t.Errorf("debug log has no request lines:\n%s", logs.String())
	}
}
