package sesterce

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/secret"
)

// The behaviour every provider shares (status codes, retries, ambiguous
// creates, bad bodies) is checked once: in httpapi's tests and in the
// conformance suite (conformance_test.go). What follows is Sesterce's own.

const apiKey = "sk-live-0123456789abcdef"

func newFake(t testing.TB) *cloudtest.Server {
	t.Helper()
	srv := cloudtest.NewServer(cloudtest.Options{SesterceAPIKey: apiKey, Seed: 1})
	t.Cleanup(srv.Close)
	return srv
}

func testClient(t testing.TB, baseURL string, key secret.Secret, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Name: "sesterce-test", BaseURL: baseURL, APIKey: key,
		RateLimit: -1, Timeout: 10 * time.Second, UserAgent: "rotatord/test",
		Retry: httpapi.RetryConfig{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// TestClient_Delete_anySuccess: Sesterce documents "2xx" for a delete; the
// fake answers 200 with the deleted key, other deployments 202 or 204.
func TestClient_Delete_anySuccess(t *testing.T) {
	for _, status := range []int{200, 202, 204} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			srv := newFake(t)
			pub, _ := cloudtest.NewPublicKey(t)
			k := srv.AddSesterceKey("old", pub, false)
			if status != 200 {
				srv.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceDelete, Kind: cloudtest.FaultReply, Status: status})
			}
			if err := testClient(t, srv.URL(), apiKey, nil).Delete(context.Background(), 0, k.ID); err != nil {
				t.Fatalf("Delete answered %d: %v, want success", status, err)
			}
			if n := srv.Requests(cloudtest.RouteSesterceDelete); n != 1 {
				t.Errorf("%d delete requests, want 1", n)
			}
		})
	}
}

// TestClient_Create_noID: a 2xx without the key's _id says nothing about
// whether the key exists, so the client looks before it creates again.
func TestClient_Create_noID(t *testing.T) {
	srv := newFake(t)
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceCreate, Kind: cloudtest.FaultReply, Status: 201, Count: 1,
		Body: `{"name":"k","isDefault":false}`})
	pub, fp := cloudtest.NewPublicKey(t)
	got, err := testClient(t, srv.URL(), apiKey, nil).Create(context.Background(), 0, cloud.CreateRequest{Name: "k", PublicKey: pub})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	keys := srv.SesterceKeys()
	if len(keys) != 1 || got.ID != keys[0].ID || got.Fingerprint != fp {
		t.Errorf("Create returned %+v, fake holds %+v: want the one key, created once", got.Key, keys)
	}
	if c, l := srv.Requests(cloudtest.RouteSesterceCreate), srv.Requests(cloudtest.RouteSesterceList); c != 2 || l != 1 {
		t.Errorf("%d creates and %d lists, want 2 and 1 (look, then create again)", c, l)
	}
}

func TestClient_Create_rejectedLocally(t *testing.T) {
	srv := newFake(t)
	c := testClient(t, srv.URL(), apiKey, nil)
	pub, _ := cloudtest.NewPublicKey(t)
	tests := []struct {
		name string
		req  cloud.CreateRequest
		want error
	}{
		{name: "no public key", req: cloud.CreateRequest{Name: "k"}, want: cloud.ErrUnsupported},
		{name: "unparseable public key", req: cloud.CreateRequest{Name: "k", PublicKey: "ssh-ed25519 garbage"}, want: cloud.ErrPermanent},
		{name: "no name", req: cloud.CreateRequest{PublicKey: pub}, want: cloud.ErrPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Create(context.Background(), 0, tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Create error %v, want %v", err, tt.want)
			}
			if n := srv.Requests(cloudtest.RouteAll); n != 0 {
				t.Errorf("%d requests sent for a create that cannot succeed", n)
			}
		})
	}
}

func TestParseError(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"string message", `{"statusCode":403,"message":"API key invalid"}`, "API key invalid"},
		{"validation list", `{"statusCode":400,"message":["name must be a string","publicKey should not be empty"],"error":"Bad Request"}`,
			"name must be a string; publicKey should not be empty"},
		{"error only", `{"statusCode":400,"error":"Bad Request"}`, "Bad Request"},
		{"empty list falls back to error", `{"message":[],"error":"Bad Request"}`, "Bad Request"},
		{"not json", "<html>\n<h1>502 Bad   Gateway</h1></html>", "<html> <h1>502 Bad Gateway</h1></html>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, id := parseError([]byte(tt.body)); got != tt.want || id != "" {
				t.Errorf("parseError = %q, %q; want %q and no request ID", got, id, tt.want)
			}
		})
	}
}

// TestClient_noLeak runs every call, key and instance listing alike, and
// has them fail in every way an error can carry text (auth failures, a
// server that echoes the key into its message and request ID, timeouts)
// with debug logging on, and checks that the API key appears in no log
// line and no error.
func TestClient_noLeak(t *testing.T) {
	srv := newFake(t)
	pub, _ := cloudtest.NewPublicKey(t)
	old := srv.AddSesterceKey("old", pub, true)
	for i := range 3 {
		srv.LaunchSesterceInstance(fmt.Sprintf("gpu-%d", i), old.ID)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []error
	run := func(c *Client) {
		ctx := context.Background()
		_, err := c.List(ctx, 0)
		errs = append(errs, err)
		_, err = c.Create(ctx, 0, cloud.CreateRequest{Name: "k", PublicKey: pub})
		errs = append(errs, err)
		errs = append(errs, c.SetDefault(ctx, 0, "abc"), c.Delete(ctx, 0, "abc"))
		_, err = c.ListInstances(ctx, 0, nil)
		errs = append(errs, err)
	}
	wrong := secret.Secret("sk-wrong-key-987654321")
	for _, key := range []secret.Secret{apiKey, wrong} {
		c := testClient(t, srv.URL(), key, func(cfg *Config) { cfg.Logger = logger; cfg.Timeout = 150 * time.Millisecond })
		run(c) // plain run, then auth failures with the wrong key
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultEcho, Status: 403, Rate: 0.5})
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultEcho, Status: 502, Rate: 0.5})
		srv.Inject(cloudtest.Fault{Route: cloudtest.RouteAll, Kind: cloudtest.FaultHang})
		run(c)
		srv.ClearFaults()
	}
	if cloudtest.AssertNoLeak(t, "sesterce", errs, logs.String(), apiKey, wrong.Reveal()) == 0 {
		t.Error("no error carried the redacted echo: the test did not exercise redaction")
	}
	if !strings.Contains(logs.String(), `"route":"/gpu-cloud/ssh-keys"`) || !strings.Contains(logs.String(), `"route":"/gpu-cloud/instances/`) {
		t.Errorf("debug log has no request lines:\n%s", logs.String())
	}
}
