package gcore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/secret"
)

// The behaviour every provider shares (status codes, retries, ambiguous
// creates of uploaded keys, bad bodies) is checked once: in httpapi's tests
// and in the conformance suite (conformance_test.go). What follows is
// Gcore's own: paging, project-scoped 404s, generated key pairs.

const (
	apiKey = "gc-token-1234567890abcdef"
	proj   = 1234
)

func newFake(t testing.TB) *cloudtest.Server {
	t.Helper()
	srv := cloudtest.NewServer(cloudtest.Options{GcoreAPIKey: apiKey, Seed: 1})
	t.Cleanup(srv.Close)
	return srv
}

func testClient(t testing.TB, baseURL string, key secret.Secret, pageSize int, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Name: "gcore-test", BaseURL: baseURL, APIKey: key,
		RateLimit: -1, Timeout: 10 * time.Second, UserAgent: "rotatord/test",
		Retry: httpapi.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := newClient(cfg, options{pageSize: pageSize})
	if err != nil {
		t.Fatalf("newClient: %v", err)
	}
	return c
}

// queries returns the raw queries of the requests to route, in order.
func queries(srv *cloudtest.Server, route string) []string {
	var out []string
	for _, r := range srv.RequestLog() {
		if r.Route == route {
			out = append(out, r.Query)
		}
	}
	return out
}

func TestClient_List_paging(t *testing.T) {
	pub, _ := cloudtest.NewPublicKey(t)
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
			srv := newFake(t)
			for i := range tt.keys {
				srv.AddGcoreKey(proj, fmt.Sprintf("k-%d", i), pub)
			}
			srv.AddGcoreKey(proj+1, "other-project", pub)
			keys, err := testClient(t, srv.URL(), apiKey, tt.pageSize, nil).List(context.Background(), proj)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			seen := map[string]bool{}
			for _, k := range keys {
				seen[k.ID] = true
			}
			if len(keys) != tt.keys || len(seen) != tt.keys {
				t.Fatalf("List returned %d keys (%d distinct), want the project's %d", len(keys), len(seen), tt.keys)
			}
			size := tt.pageSize
			if size <= 0 || size > 1000 {
				size = 1000
			}
			got := queries(srv, cloudtest.RouteGcoreList)
			if len(got) != tt.wantPages {
				t.Errorf("List read %d pages, want %d (queries %v)", len(got), tt.wantPages, got)
			}
			for i, q := range got {
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
	page := func(body string, count int) cloudtest.Fault {
		return cloudtest.Fault{Route: cloudtest.RouteGcoreList, Kind: cloudtest.FaultReply, Status: 200, Body: body, Count: count}
	}
	tests := []struct {
		name   string
		faults []cloudtest.Fault
		wantN  int
	}{
		{name: "count too high", wantN: 3, faults: []cloudtest.Fault{
			page(`{"count":100,"results":[{"id":"a"},{"id":"b"},{"id":"c"}]}`, 1),
			page(`{"count":100,"results":[]}`, 0),
		}},
		{name: "offset ignored", wantN: 2, faults: []cloudtest.Fault{page(`{"count":100,"results":[{"id":"a"},{"id":"b"}]}`, 0)}},
		{name: "results missing", wantN: 0, faults: []cloudtest.Fault{page(`{"count":5}`, 0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			for _, f := range tt.faults {
				srv.Inject(f)
			}
			keys, err := testClient(t, srv.URL(), apiKey, 3, nil).List(context.Background(), proj)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(keys) != tt.wantN {
				t.Errorf("List returned %d keys, want %d", len(keys), tt.wantN)
			}
			if n := srv.Requests(cloudtest.RouteGcoreList); n > 3 {
				t.Errorf("List read %d pages, want it to stop after at most 3", n)
			}
		})
	}
}

// TestClient_notFound: Gcore answers 404 for a project it does not know.
// On the collection routes that is a configuration error (permanent), not
// a missing key; only a 404 on a key's own route means "already gone". The
// body carries no request ID, so the error takes the header's.
func TestClient_notFound(t *testing.T) {
	const body = `{"exception_class":"ProjectNotFound","message":"Project 1234 not found"}`
	pub, _ := cloudtest.NewPublicKey(t)
	tests := []struct {
		op        string
		route     string
		call      func(c *Client) error
		wantClass error
	}{
		{"list", cloudtest.RouteGcoreList, func(c *Client) error { _, err := c.List(context.Background(), proj); return err }, cloud.ErrPermanent},
		{"create", cloudtest.RouteGcoreCreate, func(c *Client) error {
			_, err := c.Create(context.Background(), proj, cloud.CreateRequest{Name: "k", PublicKey: pub})
			return err
		}, cloud.ErrPermanent},
		{"delete", cloudtest.RouteGcoreDelete, func(c *Client) error { return c.Delete(context.Background(), proj, "gone") }, cloud.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			srv := newFake(t)
			srv.Inject(cloudtest.Fault{Route: tt.route, Kind: cloudtest.FaultReply, Status: 404, Body: body})
			err := tt.call(testClient(t, srv.URL(), apiKey, 0, nil))
			if !errors.Is(err, tt.wantClass) || cloud.Retryable(err) {
				t.Fatalf("%s answered 404: %v, want non-retryable %v", tt.op, err, tt.wantClass)
			}
			log := srv.RequestLog()
			for _, want := range []string{"Project 1234 not found", "request_id " + log[len(log)-1].RequestID} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if n := srv.Requests(tt.route); n != 1 {
				t.Errorf("%d requests, want 1", n)
			}
		})
	}
}

func TestClient_Create(t *testing.T) {
	yes, no := true, false
	pub, _ := cloudtest.NewPublicKey(t)
	tests := []struct {
		name       string
		publicKey  string
		shared     *bool
		wantShared any // in the request body; nil = absent
	}{
		{name: "upload, provider default sharing", publicKey: pub},
		{name: "upload, shared", publicKey: pub, shared: &yes, wantShared: true},
		{name: "upload, not shared", publicKey: pub, shared: &no, wantShared: false},
		{name: "server generated", shared: &no, wantShared: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			got, err := testClient(t, srv.URL(), apiKey, 0, nil).Create(context.Background(), proj,
				cloud.CreateRequest{Name: "k1", PublicKey: tt.publicKey, SharedInProject: tt.shared})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			assertOneKey(t, srv, "k1", got)
			var body map[string]any
			if err := json.Unmarshal([]byte(srv.RequestLog()[0].Body), &body); err != nil {
				t.Fatalf("request body: %v", err)
			}
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

// assertOneKey checks that the fake holds exactly one key named name and
// that it is the one Create returned.
func assertOneKey(t *testing.T, srv *cloudtest.Server, name string, got cloud.Created) {
	t.Helper()
	var n int
	for _, k := range srv.GcoreKeys(proj) {
		if k.Name == name {
			n++
			if k.ID != got.ID || k.PublicKey != got.PublicKey {
				t.Errorf("Create returned %s, fake holds %+v", got.ID, k)
			}
		}
	}
	if n != 1 {
		t.Errorf("fake holds %d keys named %s, want exactly 1", n, name)
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

// TestClient_Create_generatedLost: for a generated pair a lost answer means
// a lost private key, so a key found by name is an orphan to delete, never
// a result.
func TestClient_Create_generatedLost(t *testing.T) {
	t.Run("orphan replaced", func(t *testing.T) {
		srv := newFake(t)
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreCreate, Kind: cloudtest.FaultCommitThenDrop, Count: 1})
		got, err := testClient(t, srv.URL(), apiKey, 0, nil).Create(context.Background(), proj, cloud.CreateRequest{Name: "k1"})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		assertOneKey(t, srv, "k1", got)
		assertPair(t, got)
		if d, c := srv.Requests(cloudtest.RouteGcoreDelete), srv.Requests(cloudtest.RouteGcoreCreate); d != 1 || c != 2 {
			t.Errorf("orphan handling: %d DELETE, %d POST; want 1 and 2", d, c)
		}
	})
	t.Run("orphan that cannot be deleted stops the create", func(t *testing.T) {
		srv := newFake(t)
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreCreate, Kind: cloudtest.FaultCommitThenDrop, Count: 1})
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreDelete, Kind: cloudtest.FaultStatus, Status: 403, Message: "Forbidden"})
		_, err := testClient(t, srv.URL(), apiKey, 0, nil).Create(context.Background(), proj, cloud.CreateRequest{Name: "k1"})
		if !errors.Is(err, cloud.ErrUnauthorized) {
			t.Fatalf("Create error %v, want the delete's 403", err)
		}
		if c, n := srv.Requests(cloudtest.RouteGcoreCreate), len(srv.GcoreKeys(proj)); c != 1 || n != 1 {
			t.Errorf("%d POST, %d keys: a second key must not be stacked next to the orphan", c, n)
		}
	})
	t.Run("answer without private key", func(t *testing.T) {
		srv := newFake(t)
		// The key was committed, but the answer lost its private half.
		orphan := srv.AddGcoreKey(proj, "k1", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIjxL6g1II8NsO8odvBwGKvq2Dx/h/xrvsV9b9LVIYKm")
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreCreate, Kind: cloudtest.FaultReply, Status: 201, Count: 1,
			Body: fmt.Sprintf(`{"id":%q,"name":"k1","public_key":%q,"private_key":null}`, orphan.ID, orphan.PublicKey)})
		got, err := testClient(t, srv.URL(), apiKey, 0, nil).Create(context.Background(), proj, cloud.CreateRequest{Name: "k1"})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		assertOneKey(t, srv, "k1", got)
		assertPair(t, got)
		if got.ID == orphan.ID {
			t.Error("Create returned the key whose private half was lost")
		}
	})
}

func TestClient_Create_fingerprintMismatch(t *testing.T) {
	srv := newFake(t)
	other, _ := cloudtest.NewPublicKey(t)
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreCreate, Kind: cloudtest.FaultReply, Status: 201,
		Body: fmt.Sprintf(`{"id":"x-1","name":"k1","public_key":%q,"project_id":%d,"state":"ACTIVE"}`, other, proj)})
	pub, _ := cloudtest.NewPublicKey(t)
	_, err := testClient(t, srv.URL(), apiKey, 0, nil).Create(context.Background(), proj, cloud.CreateRequest{Name: "k1", PublicKey: pub})
	if !errors.Is(err, cloud.ErrPermanent) || !strings.Contains(err.Error(), "x-1") {
		t.Fatalf("Create error %v, want a permanent mismatch naming the key", err)
	}
}

func TestClient_Create_rejectedLocally(t *testing.T) {
	srv := newFake(t)
	c := testClient(t, srv.URL(), apiKey, 0, nil)
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
			if n := srv.Requests(cloudtest.RouteAll); n != 0 {
				t.Errorf("%d requests sent for a create that cannot succeed", n)
			}
		})
	}
}

func TestParseError(t *testing.T) {
	tests := []struct {
		name, body, wantMsg, wantID string
	}{
		{"message and request id", `{"exception_class":"NotFound","message":"SSH key x not found.","request_id":"r-1"}`, "SSH key x not found.", "r-1"},
		{"field errors object", `{"exception_class":"ValidationError","message":{"name":["This field is required."]}}`, `{"name":["This field is required."]}`, ""},
		{"class only", `{"exception_class":"Throttled"}`, "Throttled", ""},
		{"not json", "<html><body>Service Unavailable</body></html>", "<html><body>Service Unavailable</body></html>", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if msg, id := parseError([]byte(tt.body)); msg != tt.wantMsg || id != tt.wantID {
				t.Errorf("parseError = %q, %q; want %q, %q", msg, id, tt.wantMsg, tt.wantID)
			}
		})
	}
}

// TestClient_noLeak: neither the API key nor a generated private key shows
// up in any error or debug log line of any call, key or instance listing,
// even when the server echoes the key.
func TestClient_noLeak(t *testing.T) {
	srv := newFake(t)
	pub, _ := cloudtest.NewPublicKey(t)
	srv.AddGcoreKey(proj, "old", pub)
	srv.LaunchGcoreInstance(proj, 1, "vm", "old")
	srv.LaunchGcoreInstance(proj, 2, "bm", "old", cloudtest.BareMetal())
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
		_, err = c.ListInstances(ctx, proj, nil)
		errs = append(errs, err)
	}
	wrong := secret.Secret("gc-wrong-token-555555")
	for _, key := range []secret.Secret{apiKey, wrong} {
		c := testClient(t, srv.URL(), key, 0, func(cfg *Config) { cfg.Logger = logger; cfg.Timeout = 150 * time.Millisecond })
		run(c)
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultEcho, Status: 401, Rate: 0.5})
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultEcho, Status: 500, Rate: 0.5})
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultHang})
		run(c)
		srv.ClearFaults()
	}
	if len(privateKeys) == 0 {
		t.Fatal("no key was generated: the test did not exercise private keys")
	}
	secrets := []string{apiKey, wrong.Reveal()}
	for _, pk := range privateKeys {
		// PEM bodies are multi-line: a line of one is what a log would show.
		secrets = append(secrets, pk, strings.Split(pk, "\n")[1])
	}
	if cloudtest.AssertNoLeak(t, "gcore", errs, logs.String(), secrets...) == 0 {
		t.Error("no error carried the redacted echo: the test did not exercise redaction")
	}
	if !strings.Contains(logs.String(), "route=/cloud/v1/ssh_keys/1234") || !strings.Contains(logs.String(), "route=/cloud/v1/bminstances/1234/2") {
		t.Errorf("debug log has no request lines:\n%s", logs.String())
	}
}
