package cloudtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/secret"
)

const (
	testSesterceKey = "test-sesterce-key"
	testUnknownKey  = "test-unknown-key"
	testGcoreKey    = "test-gcore-key"
)

var (
	hexID  = regexp.MustCompile(`^[0-9a-f]{24}$`)
	uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	md5Hex = regexp.MustCompile(`^([0-9a-f]{2}:){15}[0-9a-f]{2}$`)
)

func newTestServer(t *testing.T, opts ...func(*Options)) *Server {
	t.Helper()
	o := Options{SesterceAPIKey: testSesterceKey, SesterceUnknownAPIKey: testUnknownKey, GcoreAPIKey: testGcoreKey, Seed: 7}
	for _, f := range opts {
		f(&o)
	}
	s := NewServer(o)
	t.Cleanup(s.Close)
	return s
}

// call makes one request on a fresh connection (so a dropped connection is
// never retried by the transport) and returns the response and its body.
func call(t *testing.T, s *Server, method, path string, header map[string]string, body string) (*http.Response, []byte, error) {
	t.Helper()
	return callCtx(t.Context(), s, method, path, header, body)
}

func callCtx(ctx context.Context, s *Server, method, path string, header map[string]string, body string) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+path, rd)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// mustCall is call for requests that must get a response.
func mustCall(t *testing.T, s *Server, method, path string, header map[string]string, body string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := call(t, s, method, path, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, b
}

var (
	sesterceAuth = map[string]string{"x-api-key": testSesterceKey}
	gcoreAuth    = map[string]string{"Authorization": "APIKey " + testGcoreKey}
)

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %q: %v", truncate(b), err)
	}
	return v
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func testPublicKey(t *testing.T) (line string, pk ssh.PublicKey) {
	t.Helper()
	line, _ = NewPublicKey(t)
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return line, pk
}

func TestServer_SesterceAuth(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, method, path, key string
		wantStatus              int
		wantMessage             string
	}{
		{"valid key", "GET", "/gpu-cloud/ssh-keys", testSesterceKey, 200, ""},
		{"missing key", "GET", "/gpu-cloud/ssh-keys", "", 403, "API key invalid"},
		{"wrong key", "GET", "/gpu-cloud/ssh-keys", "nope", 403, "API key invalid"},
		{"wrong key on delete", "DELETE", "/gpu-cloud/ssh-keys/" + newHexID(), "nope", 403, "API key invalid"},
		{"unknown key on list", "GET", "/gpu-cloud/ssh-keys", testUnknownKey, 404, "API key not found"},
		{"unknown key on create", "POST", "/gpu-cloud/ssh-keys", testUnknownKey, 404, "API key not found"},
		{"unknown key on makedefault", "PATCH", "/gpu-cloud/ssh-keys/" + newHexID() + "/makedefault", testUnknownKey, 403, "API key invalid"},
		{"unknown key on delete", "DELETE", "/gpu-cloud/ssh-keys/" + newHexID(), testUnknownKey, 403, "API key invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.key != "" {
				h["x-api-key"] = tt.key
			}
			resp, b := mustCall(t, s, tt.method, tt.path, h, `{}`)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, b)
			}
			if tt.wantMessage == "" {
				return
			}
			got := decode[struct {
				StatusCode int    `json:"statusCode"`
				Timestamp  string `json:"timestamp"`
				Path       string `json:"path"`
				Message    string `json:"message"`
			}](t, b)
			if got.StatusCode != tt.wantStatus || got.Message != tt.wantMessage || got.Path != tt.path {
				t.Errorf("body %+v, want statusCode %d, path %q, message %q", got, tt.wantStatus, tt.path, tt.wantMessage)
			}
			if _, err := time.Parse(time.RFC3339, got.Timestamp); err != nil {
				t.Errorf("timestamp %q: %v", got.Timestamp, err)
			}
		})
	}
}

type gcoreErrBody struct {
	ExceptionClass string `json:"exception_class"`
	Message        string `json:"message"`
	RequestID      string `json:"request_id"`
}

func TestServer_GcoreAuth(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name, header string
		wantStatus   int
	}{
		{"valid", "APIKey " + testGcoreKey, 200},
		{"scheme lower case", "apikey " + testGcoreKey, 200},
		{"scheme upper case", "APIKEY " + testGcoreKey, 200},
		{"missing", "", 401},
		{"wrong token", "APIKey nope", 401},
		{"wrong scheme", "Bearer " + testGcoreKey, 401},
		{"no scheme", testGcoreKey, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.header != "" {
				h["Authorization"] = tt.header
			}
			resp, b := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/1", h, "")
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, b)
			}
			if tt.wantStatus == 200 {
				return
			}
			got := decode[gcoreErrBody](t, b)
			if got.ExceptionClass != "NotAuthenticated" || got.Message == "" {
				t.Errorf("body %+v, want exception_class NotAuthenticated and a message", got)
			}
			if id := resp.Header.Get("X-Request-ID"); id == "" || got.RequestID != id {
				t.Errorf("request_id %q, X-Request-ID %q: want equal and set", got.RequestID, id)
			}
		})
	}
}

type sesterceWireKey struct {
	ID        string         `json:"_id"`
	Name      string         `json:"name"`
	PublicKey string         `json:"publicKey"`
	IsDefault bool           `json:"isDefault"`
	CreatedAt string         `json:"createdAt"`
	UpdatedAt string         `json:"updatedAt"`
	User      map[string]any `json:"user"`
}

func TestServer_SesterceCreate(t *testing.T) {
	pub, _ := testPublicKey(t)
	clock := time.Date(2025, 6, 16, 17, 5, 50, 123456789, time.UTC)
	s := newTestServer(t, func(o *Options) { o.Clock = func() time.Time { return clock } })

	t.Run("created", func(t *testing.T) {
		resp, b := mustCall(t, s, "POST", "/gpu-cloud/ssh-keys", sesterceAuth, fmt.Sprintf(`{"name":"k1","publicKey":%q}`, pub))
		if resp.StatusCode != 201 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		k := decode[sesterceWireKey](t, b)
		if !hexID.MatchString(k.ID) || k.Name != "k1" || k.PublicKey != pub || k.IsDefault {
			t.Errorf("created %+v, want a 24-hex _id, name k1, the public key, not default", k)
		}
		if k.CreatedAt != "2025-06-16T17:05:50.123Z" || k.UpdatedAt != k.CreatedAt {
			t.Errorf("createdAt %q updatedAt %q, want 2025-06-16T17:05:50.123Z", k.CreatedAt, k.UpdatedAt)
		}
		if k.User["_id"] == nil {
			t.Errorf("created key lacks the extra user object real responses carry: %s", b)
		}
	})

	tests := []struct {
		name, body string
		wantStatus int
		wantMsg    string
	}{
		{"name at limit", fmt.Sprintf(`{"name":%q,"publicKey":%q}`, strings.Repeat("é", 255), pub), 201, ""},
		{"name too long", fmt.Sprintf(`{"name":%q,"publicKey":%q}`, strings.Repeat("n", 256), pub), 400, "name must be shorter than or equal to 255 characters"},
		{"name empty", fmt.Sprintf(`{"name":"","publicKey":%q}`, pub), 400, "name should not be empty"},
		{"name missing", fmt.Sprintf(`{"publicKey":%q}`, pub), 400, "name must be a string"},
		{"public key missing", `{"name":"k"}`, 400, "publicKey must be a string"},
		{"public key invalid", `{"name":"k","publicKey":"ssh-rsa AAAA"}`, 400, "publicKey must be a valid SSH public key"},
		{"duplicate name allowed", fmt.Sprintf(`{"name":"k1","publicKey":%q}`, pub), 201, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := mustCall(t, s, "POST", "/gpu-cloud/ssh-keys", sesterceAuth, tt.body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, b)
			}
			if tt.wantMsg == "" {
				return
			}
			got := decode[struct {
				StatusCode int      `json:"statusCode"`
				Message    []string `json:"message"`
			}](t, b)
			if got.StatusCode != 400 || len(got.Message) != 1 || got.Message[0] != tt.wantMsg {
				t.Errorf("body %s, want statusCode 400 and message [%q]", b, tt.wantMsg)
			}
		})
	}

	t.Run("invalid JSON", func(t *testing.T) {
		resp, b := mustCall(t, s, "POST", "/gpu-cloud/ssh-keys", sesterceAuth, `{"name":`)
		got := decode[struct{ Message string }](t, b)
		if resp.StatusCode != 400 || got.Message == "" {
			t.Errorf("status %d body %s, want 400 with a message", resp.StatusCode, b)
		}
	})

	if n := len(s.SesterceKeys()); n != 3 {
		t.Errorf("fake holds %d keys, want 3 (the created ones only)", n)
	}
}

func TestServer_SesterceDefault(t *testing.T) {
	s := newTestServer(t)
	pub, _ := testPublicKey(t)
	create := func(name string) string {
		resp, b := mustCall(t, s, "POST", "/gpu-cloud/ssh-keys", sesterceAuth, fmt.Sprintf(`{"name":%q,"publicKey":%q}`, name, pub))
		if resp.StatusCode != 201 {
			t.Fatalf("create: %d %s", resp.StatusCode, b)
		}
		return decode[sesterceWireKey](t, b).ID
	}
	defaults := func() map[string]bool {
		_, b := mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", sesterceAuth, "")
		out := map[string]bool{}
		for _, k := range decode[[]sesterceWireKey](t, b) {
			out[k.ID] = k.IsDefault
		}
		return out
	}
	makeDefault := func(id string) int {
		resp, b := mustCall(t, s, "PATCH", "/gpu-cloud/ssh-keys/"+id+"/makedefault", sesterceAuth, "")
		if len(b) != 0 && resp.StatusCode == 204 {
			t.Errorf("204 with a body: %s", b)
		}
		return resp.StatusCode
	}
	a := create("a")
	if d := defaults(); d[a] {
		t.Errorf("the first key is default before makedefault: %v", d)
	}
	b := create("b")
	for _, step := range []struct{ id, name string }{{a, "a"}, {b, "b"}, {b, "b again"}} {
		if code := makeDefault(step.id); code != 204 {
			t.Fatalf("makedefault %s: status %d, want 204", step.name, code)
		}
		if d := defaults(); !d[step.id] || len(d) != 2 || d[a] == d[b] {
			t.Errorf("after makedefault %s: defaults %v, want exactly that key", step.name, d)
		}
	}
	resp, body := mustCall(t, s, "PATCH", "/gpu-cloud/ssh-keys/"+newHexID()+"/makedefault", sesterceAuth, "")
	if got := decode[map[string]any](t, body); resp.StatusCode != 404 || got["message"] != "Not found" || got["statusCode"] != 404.0 {
		t.Errorf("makedefault of an unknown id: %d %s, want 404 {statusCode:404, message:Not found}", resp.StatusCode, body)
	}
	if resp, body := mustCall(t, s, "DELETE", "/gpu-cloud/ssh-keys/"+b, sesterceAuth, ""); resp.StatusCode != 200 {
		t.Errorf("delete the default key: %d %s", resp.StatusCode, body)
	}
	if d := defaults(); len(d) != 1 || d[a] {
		t.Errorf("after deleting the default key: %v, want a left and not default", d)
	}
	if resp, body := mustCall(t, s, "DELETE", "/gpu-cloud/ssh-keys/"+b, sesterceAuth, ""); resp.StatusCode != 404 {
		t.Errorf("delete twice: %d %s, want 404", resp.StatusCode, body)
	}
}

type gcoreWireKey struct {
	ID              string  `json:"id"`
	Name            string  `json:"name"`
	PublicKey       string  `json:"public_key"`
	Fingerprint     string  `json:"fingerprint"`
	CreatedAt       string  `json:"created_at"`
	ProjectID       int64   `json:"project_id"`
	SharedInProject bool    `json:"shared_in_project"`
	State           string  `json:"state"`
	PrivateKey      *string `json:"private_key"`
}

type gcorePage struct {
	Count   int            `json:"count"`
	Results []gcoreWireKey `json:"results"`
}

func TestServer_GcoreList(t *testing.T) {
	s := newTestServer(t)
	pub, _ := testPublicKey(t)
	for i := range 1005 {
		s.AddGcoreKey(3, fmt.Sprintf("k%04d", i), pub)
	}
	s.AddGcoreKey(4, "other-project", pub)
	tests := []struct {
		query      string
		wantStatus int
		wantFirst  string // name of the first result
		wantLen    int
	}{
		{"", 200, "k0000", 10},
		{"?limit=25&offset=20", 200, "k0020", 25},
		{"?offset=1000", 200, "k1000", 5},
		{"?offset=2000", 200, "", 0},
		{"?limit=1000", 200, "k0000", 1000},
		{"?limit=1", 200, "k0000", 1},
		{"?limit=1001", 400, "", 0},
		{"?limit=0", 400, "", 0},
		{"?limit=ten", 400, "", 0},
		{"?offset=-1", 400, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, b := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/3"+tt.query, gcoreAuth, "")
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, truncate(b))
			}
			if tt.wantStatus != 200 {
				if got := decode[gcoreErrBody](t, b); got.ExceptionClass != "ValidationError" || got.Message == "" {
					t.Errorf("body %s, want a ValidationError with a message", b)
				}
				return
			}
			page := decode[gcorePage](t, b)
			if page.Count != 1005 || len(page.Results) != tt.wantLen {
				t.Fatalf("count %d, %d results; want 1005, %d", page.Count, len(page.Results), tt.wantLen)
			}
			if tt.wantLen > 0 && page.Results[0].Name != tt.wantFirst {
				t.Errorf("first result %q, want %q", page.Results[0].Name, tt.wantFirst)
			}
		})
	}
	t.Run("project is separate", func(t *testing.T) {
		_, b := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/4", gcoreAuth, "")
		if page := decode[gcorePage](t, b); page.Count != 1 || page.Results[0].Name != "other-project" {
			t.Errorf("project 4 lists %+v, want only its own key", page)
		}
	})
}

func TestServer_GcoreCreate(t *testing.T) {
	clock := time.Date(2025, 6, 16, 17, 5, 50, 999, time.UTC)
	s := newTestServer(t, func(o *Options) { o.Clock = func() time.Time { return clock } })
	pub, pk := testPublicKey(t)

	t.Run("uploaded key", func(t *testing.T) {
		resp, b := mustCall(t, s, "POST", "/cloud/v1/ssh_keys/7", gcoreAuth, fmt.Sprintf(`{"name":"up","public_key":%q}`, pub))
		if resp.StatusCode != 201 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		k := decode[gcoreWireKey](t, b)
		want := gcoreWireKey{ID: k.ID, Name: "up", PublicKey: pub, Fingerprint: ssh.FingerprintLegacyMD5(pk),
			CreatedAt: "2025-06-16T17:05:50Z", ProjectID: 7, SharedInProject: true, State: "ACTIVE"}
		if k != want || !uuidV4.MatchString(k.ID) || !md5Hex.MatchString(k.Fingerprint) {
			t.Errorf("created %+v, want %+v with a uuid4 id", k, want)
		}
		if !strings.Contains(string(b), `"private_key":null`) {
			t.Errorf("create response %s, want private_key null", b)
		}
	})

	t.Run("not shared", func(t *testing.T) {
		_, b := mustCall(t, s, "POST", "/cloud/v1/ssh_keys/7", gcoreAuth, fmt.Sprintf(`{"name":"private","public_key":%q,"shared_in_project":false}`, pub))
		if k := decode[gcoreWireKey](t, b); k.SharedInProject {
			t.Errorf("created %+v, want shared_in_project false", k)
		}
	})

	t.Run("generated key", func(t *testing.T) {
		for _, body := range []string{`{"name":"gen"}`, `{"name":"gen","public_key":""}`} {
			resp, b := mustCall(t, s, "POST", "/cloud/v1/ssh_keys/8", gcoreAuth, body)
			if resp.StatusCode != 201 {
				t.Fatalf("%s: status %d: %s", body, resp.StatusCode, b)
			}
			k := decode[gcoreWireKey](t, b)
			if k.PrivateKey == nil {
				t.Fatalf("%s: no private_key in %s", body, b)
			}
			signer, err := ssh.ParsePrivateKey([]byte(*k.PrivateKey))
			if err != nil {
				t.Fatalf("parse private key: %v", err)
			}
			if got := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))); got != k.PublicKey {
				t.Errorf("private key's public half %q, response public_key %q", got, k.PublicKey)
			}
			if k.Fingerprint != ssh.FingerprintLegacyMD5(signer.PublicKey()) {
				t.Errorf("fingerprint %q does not match the generated key", k.Fingerprint)
			}
			// Stored without the private half: a second read never shows it.
			_, again := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/8/"+k.ID, gcoreAuth, "")
			dump, _ := json.Marshal(s.GcoreKeys(8))
			for _, line := range privateKeyLines(*k.PrivateKey) {
				if strings.Contains(string(again), line) || strings.Contains(string(dump), line) {
					t.Fatal("the private key can be read back after create")
				}
			}
		}
	})

	tests := []struct {
		name, path, body string
		wantMsg          string
	}{
		{"name missing", "/cloud/v1/ssh_keys/7", `{}`, "name: This field is required."},
		{"name blank", "/cloud/v1/ssh_keys/7", `{"name":""}`, "name: This field may not be blank."},
		{"name too long", "/cloud/v1/ssh_keys/7", fmt.Sprintf(`{"name":%q}`, strings.Repeat("n", 256)), "name: Ensure this field has no more than 255 characters."},
		{"public key invalid", "/cloud/v1/ssh_keys/7", `{"name":"x","public_key":"ssh-ed25519 !!"}`, "public_key: Invalid SSH public key."},
		{"bad JSON", "/cloud/v1/ssh_keys/7", `[`, ""},
		{"bad project", "/cloud/v1/ssh_keys/abc", `{"name":"x"}`, ""},
		{"zero project", "/cloud/v1/ssh_keys/0", `{"name":"x"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := mustCall(t, s, "POST", tt.path, gcoreAuth, tt.body)
			got := decode[gcoreErrBody](t, b)
			if resp.StatusCode != 400 || got.ExceptionClass != "ValidationError" || got.RequestID != resp.Header.Get("X-Request-ID") {
				t.Fatalf("status %d body %s, want 400 ValidationError with the request ID", resp.StatusCode, b)
			}
			if tt.wantMsg != "" && got.Message != tt.wantMsg {
				t.Errorf("message %q, want %q", got.Message, tt.wantMsg)
			}
		})
	}
	if n := len(s.GcoreKeys(7)); n != 2 {
		t.Errorf("project 7 holds %d keys, want the 2 valid creates", n)
	}
}

func TestServer_GcoreKeyRoutes(t *testing.T) {
	s := newTestServer(t)
	pub, _ := testPublicKey(t)
	k := s.AddGcoreKey(5, "k", pub)
	path := "/cloud/v1/ssh_keys/5/" + k.ID

	if resp, b := mustCall(t, s, "GET", path, gcoreAuth, ""); resp.StatusCode != 200 || decode[gcoreWireKey](t, b).ID != k.ID {
		t.Errorf("GET key: %d %s", resp.StatusCode, b)
	}
	if resp, b := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/6/"+k.ID, gcoreAuth, ""); resp.StatusCode != 404 || decode[gcoreErrBody](t, b).ExceptionClass != "NotFound" {
		t.Errorf("GET key through another project: %d %s, want 404 NotFound", resp.StatusCode, b)
	}
	if resp, b := mustCall(t, s, "PATCH", path, gcoreAuth, `{"shared_in_project":false}`); resp.StatusCode != 200 || decode[gcoreWireKey](t, b).SharedInProject {
		t.Errorf("PATCH shared_in_project false: %d %s", resp.StatusCode, b)
	}
	if got := s.GcoreKeys(5)[0]; got.SharedInProject {
		t.Errorf("PATCH not stored: %+v", got)
	}
	if resp, b := mustCall(t, s, "PATCH", path, gcoreAuth, `{}`); resp.StatusCode != 400 {
		t.Errorf("PATCH without shared_in_project: %d %s, want 400", resp.StatusCode, b)
	}
	if resp, b := mustCall(t, s, "DELETE", "/cloud/v1/ssh_keys/6/"+k.ID, gcoreAuth, ""); resp.StatusCode != 404 {
		t.Errorf("DELETE through another project: %d %s, want 404", resp.StatusCode, b)
	}
	if resp, b := mustCall(t, s, "DELETE", path, gcoreAuth, ""); resp.StatusCode != 204 || len(b) != 0 {
		t.Errorf("DELETE: %d %q, want 204 with no body", resp.StatusCode, b)
	}
	for _, method := range []string{"GET", "PATCH", "DELETE"} {
		if resp, b := mustCall(t, s, method, path, gcoreAuth, `{"shared_in_project":true}`); resp.StatusCode != 404 {
			t.Errorf("%s after delete: %d %s, want 404", method, resp.StatusCode, b)
		}
	}
}

func TestServer_Routing(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		method, path string
		wantStatus   int
	}{
		{"GET", "/nope", 404},
		{"GET", "/gpu-cloud/ssh-keys/" + newHexID() + "/other", 404},
		{"PUT", "/gpu-cloud/ssh-keys", 405},
		{"GET", "/gpu-cloud/ssh-keys/" + newHexID() + "/makedefault", 405},
		{"POST", "/cloud/v1/ssh_keys/1/" + newUUID(), 405},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, b := mustCall(t, s, tt.method, tt.path, nil, "")
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, b)
			}
			id := resp.Header.Get("X-Request-ID")
			if !uuidV4.MatchString(id) || seen[id] {
				t.Errorf("X-Request-ID %q: want a fresh uuid on every response", id)
			}
			seen[id] = true
		})
	}
	if n := s.Requests(""); n != len(tests) {
		t.Errorf("Requests(\"\") = %d, want %d unmatched requests", n, len(tests))
	}
}

func TestServer_Requests(t *testing.T) {
	s := newTestServer(t)
	h := map[string]string{"x-api-key": testSesterceKey, "User-Agent": "rotatord/test"}
	mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", h, "")
	mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", nil, "")
	mustCall(t, s, "GET", "/cloud/v1/ssh_keys/1", gcoreAuth, "")
	if got := s.Requests(RouteSesterceList); got != 2 {
		t.Errorf("Requests(sesterce list) = %d, want 2 (authorised or not)", got)
	}
	if got := s.Requests(RouteGcoreList); got != 1 {
		t.Errorf("Requests(gcore list) = %d, want 1", got)
	}
	if got := s.Requests(RouteAll); got != 3 {
		t.Errorf("Requests(*) = %d, want 3", got)
	}
	log := s.RequestLog()
	if len(log) != 3 || log[0].UserAgent != "rotatord/test" || log[2].Path != "/cloud/v1/ssh_keys/1" || log[2].Route != RouteGcoreList {
		t.Errorf("RequestLog = %+v", log)
	}
	mustCall(t, s, "POST", "/cloud/v1/ssh_keys/1", gcoreAuth, `{"name":"logged"}`)
	last := s.RequestLog()[3]
	if last.Body != `{"name":"logged"}` {
		t.Errorf("logged body %q, want the request body", last.Body)
	}
	if got := last.Header.Get("Authorization"); got != secret.Redacted {
		t.Errorf("logged Authorization %q, want it redacted", got)
	}
	if got := log[0].Header.Get("X-Api-Key"); got != secret.Redacted {
		t.Errorf("logged x-api-key %q, want it redacted", got)
	}
	if len(s.GcoreKeys(1)) != 1 {
		t.Error("the handler did not see the body the request log read")
	}
}

func TestServer_ExtraKeyFields(t *testing.T) {
	s := newTestServer(t, func(o *Options) { o.ExtraKeyFields = map[string]any{"x_new": []int{1}} })
	pub, _ := testPublicKey(t)
	s.AddSesterceKey("s", pub, false)
	s.AddGcoreKey(1, "g", pub)
	for path, h := range map[string]map[string]string{"/gpu-cloud/ssh-keys": sesterceAuth, "/cloud/v1/ssh_keys/1": gcoreAuth} {
		if _, b := mustCall(t, s, "GET", path, h, ""); !strings.Contains(string(b), `"x_new":[1]`) {
			t.Errorf("GET %s = %s, want the extra field", path, b)
		}
	}
}

func TestServer_ConcurrentCreates(t *testing.T) {
	s := newTestServer(t)
	pub, _ := testPublicKey(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"name":"k%d","public_key":%q}`, i, pub)
			if resp, b, err := callCtx(t.Context(), s, "POST", "/cloud/v1/ssh_keys/1", gcoreAuth, body); err != nil || resp.StatusCode != 201 {
				t.Errorf("create %d: %v %s", i, err, b)
			}
		})
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, k := range s.GcoreKeys(1) {
		ids[k.ID] = true
	}
	if len(ids) != 20 {
		t.Errorf("%d distinct keys stored, want 20", len(ids))
	}
}

func TestServer_Inject(t *testing.T) {
	pub, _ := testPublicKey(t)
	sesterceCreate := fmt.Sprintf(`{"name":"k","publicKey":%q}`, pub)
	gcoreCreate := fmt.Sprintf(`{"name":"k","public_key":%q}`, pub)

	t.Run("status then recovery", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteSesterceList, Kind: FaultStatus, Status: 503, Count: 2})
		s.Inject(Fault{Route: RouteGcoreList, Kind: FaultStatus, Status: 502, Message: "upstream down", Count: 1})
		for i := range 2 {
			resp, b := mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", sesterceAuth, "")
			got := decode[map[string]any](t, b)
			if resp.StatusCode != 503 || got["statusCode"] != 503.0 || got["message"] != "Service Unavailable" {
				t.Errorf("request %d: %d %s, want the Sesterce-shaped 503", i, resp.StatusCode, b)
			}
		}
		if resp, b := mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", sesterceAuth, ""); resp.StatusCode != 200 {
			t.Errorf("third request: %d %s, want 200 once the count is spent", resp.StatusCode, b)
		}
		resp, b := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/1", gcoreAuth, "")
		if got := decode[gcoreErrBody](t, b); resp.StatusCode != 502 || got.Message != "upstream down" || got.RequestID == "" {
			t.Errorf("gcore: %d %s, want the Gcore-shaped 502 with the message", resp.StatusCode, b)
		}
		if f := s.Faults(); len(f) != 0 {
			t.Errorf("spent rules still in force: %+v", f)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteAll, Kind: FaultRateLimit, RetryAfter: 1500 * time.Millisecond})
		resp, b := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/1", gcoreAuth, "")
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" || decode[gcoreErrBody](t, b).ExceptionClass != "Throttled" {
			t.Errorf("%d Retry-After %q %s, want 429, Retry-After 2 (rounded up), Throttled", resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
	})

	t.Run("drop", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteSesterceCreate, Kind: FaultDrop, Count: 1})
		if _, _, err := call(t, s, "POST", "/gpu-cloud/ssh-keys", sesterceAuth, sesterceCreate); err == nil {
			t.Error("dropped request returned a response")
		}
		if n := len(s.SesterceKeys()); n != 0 {
			t.Errorf("a dropped create stored %d keys, want 0", n)
		}
	})

	t.Run("commit then drop", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteGcoreCreate, Kind: FaultCommitThenDrop, Count: 1})
		if _, _, err := call(t, s, "POST", "/cloud/v1/ssh_keys/1", gcoreAuth, gcoreCreate); err == nil {
			t.Error("dropped request returned a response")
		}
		if n := len(s.GcoreKeys(1)); n != 1 {
			t.Errorf("a committed create stored %d keys, want 1", n)
		}
	})

	t.Run("malformed", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteSesterceCreate, Kind: FaultMalformed, Count: 1})
		s.Inject(Fault{Route: RouteSesterceMakeDefault, Kind: FaultMalformed, Count: 1})
		resp, b := mustCall(t, s, "POST", "/gpu-cloud/ssh-keys", sesterceAuth, sesterceCreate)
		if resp.StatusCode != 201 || json.Valid(b) || !strings.HasPrefix(string(b), `{"_id":`) {
			t.Errorf("malformed create: %d %q, want 201 with truncated JSON", resp.StatusCode, b)
		}
		keys := s.SesterceKeys()
		if len(keys) != 1 {
			t.Fatalf("malformed create stored %d keys, want 1 (it commits)", len(keys))
		}
		resp, b = mustCall(t, s, "PATCH", "/gpu-cloud/ssh-keys/"+keys[0].ID+"/makedefault", sesterceAuth, "")
		if resp.StatusCode != 200 || string(b) != `{"` {
			t.Errorf("malformed makedefault: %d %q, want 200 {\"", resp.StatusCode, b)
		}
		if !s.SesterceKeys()[0].IsDefault {
			t.Error("malformed makedefault did not commit")
		}
	})

	t.Run("huge", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteAll, Kind: FaultHuge})
		for path, h := range map[string]map[string]string{"/gpu-cloud/ssh-keys": sesterceAuth, "/cloud/v1/ssh_keys/1": gcoreAuth} {
			resp, b := mustCall(t, s, "GET", path, h, "")
			if resp.StatusCode != 200 || len(b) != HugeBodySize || !json.Valid(b) || resp.ContentLength != -1 {
				t.Errorf("GET %s: %d, %d bytes, valid %v, length %d; want 200, %d bytes of valid JSON, chunked",
					path, resp.StatusCode, len(b), json.Valid(b), resp.ContentLength, HugeBodySize)
			}
			if path == "/gpu-cloud/ssh-keys" && b[0] != '[' {
				t.Errorf("Sesterce list body starts %q, want an array", b[:1])
			}
		}
	})

	t.Run("reply", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteGcoreDelete, Kind: FaultReply, Status: 302, Count: 1,
			Header: map[string]string{"Location": "http://elsewhere.invalid/"}})
		s.Inject(Fault{Route: RouteSesterceList, Kind: FaultReply, Status: 502, Count: 1,
			Body: "<html>Bad gateway</html>", Header: map[string]string{"Content-Type": "text/html"}})
		k := s.AddGcoreKey(1, "kept", pub)
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequestWithContext(t.Context(), "DELETE", s.URL()+"/cloud/v1/ssh_keys/1/"+k.ID, nil)
		req.Header.Set("Authorization", "APIKey "+testGcoreKey)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "http://elsewhere.invalid/" {
			t.Errorf("reply: %d Location %q, want 302 to elsewhere", resp.StatusCode, resp.Header.Get("Location"))
		}
		if len(s.GcoreKeys(1)) != 1 {
			t.Error("a reply fault reached the API: the key was deleted")
		}
		resp, b := mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", sesterceAuth, "")
		if resp.StatusCode != 502 || string(b) != "<html>Bad gateway</html>" || resp.Header.Get("Content-Type") != "text/html" {
			t.Errorf("reply: %d %q %q, want the body and content type verbatim", resp.StatusCode, b, resp.Header.Get("Content-Type"))
		}
	})

	t.Run("truncate", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteSesterceCreate, Kind: FaultTruncate, Count: 1})
		resp, b, err := call(t, s, "POST", "/gpu-cloud/ssh-keys", sesterceAuth, sesterceCreate)
		if err == nil {
			t.Fatalf("truncated response read without error: %d %q", resp.StatusCode, b)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("truncated response: %v, want an unexpected EOF", err)
		}
		if n := len(s.SesterceKeys()); n != 1 {
			t.Errorf("a truncated create stored %d keys, want 1 (it commits)", n)
		}
	})

	t.Run("echo credential", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteAll, Kind: FaultEcho})
		resp, b := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/1", gcoreAuth, "")
		got := decode[gcoreErrBody](t, b)
		if resp.StatusCode != 401 || !strings.Contains(got.Message, testGcoreKey) || !strings.Contains(got.RequestID, testGcoreKey) ||
			!strings.Contains(resp.Header.Get("X-Request-ID"), testGcoreKey) {
			t.Errorf("gcore echo: %d %s (X-Request-ID %q), want 401 repeating the key in message and request ID", resp.StatusCode, b, resp.Header.Get("X-Request-ID"))
		}
		resp, b = mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", sesterceAuth, "")
		if resp.StatusCode != 401 || !strings.Contains(string(b), testSesterceKey) {
			t.Errorf("sesterce echo: %d %s, want 401 repeating the key", resp.StatusCode, b)
		}
	})

	t.Run("latency", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteGcoreList, Kind: FaultLatency, Delay: 50 * time.Millisecond})
		start := time.Now()
		resp, _ := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/1", gcoreAuth, "")
		if elapsed := time.Since(start); resp.StatusCode != 200 || elapsed < 50*time.Millisecond {
			t.Errorf("%d after %v, want 200 after at least 50ms", resp.StatusCode, elapsed)
		}
	})

	t.Run("base latency", func(t *testing.T) {
		s := newTestServer(t, func(o *Options) { o.Latency = 30 * time.Millisecond })
		start := time.Now()
		resp, _ := mustCall(t, s, "GET", "/gpu-cloud/ssh-keys", sesterceAuth, "")
		if elapsed := time.Since(start); resp.StatusCode != 200 || elapsed < 30*time.Millisecond {
			t.Errorf("%d after %v, want 200 after at least Options.Latency", resp.StatusCode, elapsed)
		}
	})

	t.Run("hang until released", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteGcoreCreate, Kind: FaultHang, Count: 1})
		done := make(chan int)
		go func() {
			resp, _, err := call(t, s, "POST", "/cloud/v1/ssh_keys/1", gcoreAuth, gcoreCreate)
			if err != nil {
				t.Errorf("hung request: %v", err)
				done <- 0
				return
			}
			done <- resp.StatusCode
		}()
		if err := waitHanging(t.Context(), s, 1); err != nil {
			t.Fatal(err)
		}
		if n := len(s.GcoreKeys(1)); n != 0 {
			t.Errorf("a hung create stored %d keys before release", n)
		}
		s.ReleaseHangs()
		if code := <-done; code != 201 {
			t.Errorf("released request: status %d, want 201", code)
		}
		if n := len(s.GcoreKeys(1)); n != 1 {
			t.Errorf("a released create stored %d keys, want 1", n)
		}
	})

	t.Run("hang until the client gives up", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteSesterceCreate, Kind: FaultHang})
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			if waitHanging(ctx, s, 1) == nil {
				cancel()
			}
		}()
		if _, _, err := callCtx(ctx, s, "POST", "/gpu-cloud/ssh-keys", sesterceAuth, sesterceCreate); !errors.Is(err, context.Canceled) {
			t.Errorf("canceled request: %v, want context.Canceled", err)
		}
		ctx, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel2()
		for s.Hanging() != 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		if s.Hanging() != 0 {
			t.Fatal("the hung handler did not notice the client left")
		}
		if n := len(s.SesterceKeys()); n != 0 {
			t.Errorf("an abandoned hung create stored %d keys, want 0", n)
		}
	})

	t.Run("close releases hangs", func(t *testing.T) {
		s := NewServer(Options{})
		s.Inject(Fault{Route: RouteAll, Kind: FaultHang})
		errc := make(chan error, 1)
		go func() {
			_, _, err := callCtx(t.Context(), s, "GET", "/gpu-cloud/ssh-keys", nil, "")
			errc <- err
		}()
		if err := waitHanging(t.Context(), s, 1); err != nil {
			t.Fatal(err)
		}
		s.Close() // would block forever on a hung handler
		s.Close()
		<-errc
	})

	t.Run("rate is seeded", func(t *testing.T) {
		faulted := func(seed uint64) []bool {
			s := newTestServer(t, func(o *Options) { o.Seed = seed })
			s.Inject(Fault{Route: RouteGcoreList, Kind: FaultStatus, Status: 500, Rate: 0.3})
			var out []bool
			for range 60 {
				resp, _ := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/1", gcoreAuth, "")
				out = append(out, resp.StatusCode == 500)
			}
			return out
		}
		a, b := faulted(42), faulted(42)
		n := 0
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("request %d: same seed, different faults", i)
			}
			if a[i] {
				n++
			}
		}
		if n == 0 || n == len(a) {
			t.Errorf("rate 0.3 faulted %d of %d requests", n, len(a))
		}
	})

	t.Run("rate with count", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteAll, Kind: FaultStatus, Status: 500, Rate: 0.5, Count: 3})
		n := 0
		for range 40 {
			if resp, _ := mustCall(t, s, "GET", "/cloud/v1/ssh_keys/1", gcoreAuth, ""); resp.StatusCode == 500 {
				n++
			}
		}
		if n != 3 {
			t.Errorf("%d faults, want exactly the count of 3", n)
		}
	})

	t.Run("first matching rule wins", func(t *testing.T) {
		s := newTestServer(t)
		s.Inject(Fault{Route: RouteSesterceList, Kind: FaultStatus, Status: 500, Count: 1})
		s.Inject(Fault{Route: RouteAll, Kind: FaultStatus, Status: 503, Count: 1})
		var got []int
		for _, path := range []string{"/cloud/v1/ssh_keys/1", "/gpu-cloud/ssh-keys", "/gpu-cloud/ssh-keys"} {
			resp, _ := mustCall(t, s, "GET", path, map[string]string{"x-api-key": testSesterceKey, "Authorization": "APIKey " + testGcoreKey}, "")
			got = append(got, resp.StatusCode)
		}
		if fmt.Sprint(got) != "[503 500 200]" {
			t.Errorf("statuses %v, want [503 500 200]", got)
		}
	})
}

func TestFault_Validate(t *testing.T) {
	tests := []struct {
		name    string
		f       Fault
		wantErr string
	}{
		{"valid status", Fault{Route: RouteAll, Kind: FaultStatus, Status: 503}, ""},
		{"valid drop", Fault{Route: RouteGcoreDelete, Kind: FaultDrop, Rate: 1}, ""},
		{"unknown route", Fault{Route: "GET /cloud/v1/ssh_keys", Kind: FaultDrop}, `route "GET /cloud/v1/ssh_keys"`},
		{"unknown kind", Fault{Route: RouteAll, Kind: "explode"}, `kind "explode"`},
		{"status out of range", Fault{Route: RouteAll, Kind: FaultStatus, Status: 200}, "status 200"},
		{"rate out of range", Fault{Route: RouteAll, Kind: FaultDrop, Rate: 1.5}, "rate 1.5"},
		{"negative count", Fault{Route: RouteAll, Kind: FaultDrop, Count: -1}, "count -1"},
		{"valid reply", Fault{Route: RouteAll, Kind: FaultReply, Status: 204}, ""},
		{"reply status out of range", Fault{Route: RouteAll, Kind: FaultReply, Status: 100}, "status 100"},
		{"echo status out of range", Fault{Route: RouteAll, Kind: FaultEcho, Status: 200}, "status 200"},
		{"body without reply", Fault{Route: RouteAll, Kind: FaultStatus, Status: 500, Body: "x"}, "body and header"},
		{"relative path", Fault{Route: RouteAll, Kind: FaultDrop, Path: "cloud/v1/regions"}, `path "cloud/v1/regions"`},
		{"size without huge", Fault{Route: RouteAll, Kind: FaultDrop, Size: 10}, "size 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func TestServer_SetFaults(t *testing.T) {
	s := newTestServer(t)
	good := []Fault{{Route: RouteAll, Kind: FaultLatency, Delay: time.Millisecond}}
	if err := s.SetFaults(good); err != nil {
		t.Fatalf("SetFaults(valid) = %v", err)
	}
	if err := s.SetFaults([]Fault{{Route: RouteAll, Kind: FaultDrop}, {Route: "x", Kind: FaultDrop}}); err == nil || !strings.Contains(err.Error(), "fault 1") {
		t.Errorf("SetFaults(invalid) = %v, want an error naming fault 1", err)
	}
	if got := s.Faults(); len(got) != 1 || !reflect.DeepEqual(got[0], good[0]) {
		t.Errorf("after a rejected SetFaults, rules are %+v, want the previous ones", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("Inject of an invalid rule did not panic")
		}
	}()
	s.Inject(Fault{Route: RouteAll, Kind: "nope"})
}

func TestFault_JSON(t *testing.T) {
	in := `[{"route":"*","kind":"rate_limit","rate":0.25,"count":3,"retry_after":"2s"},{"route":"GET /gpu-cloud/ssh-keys","kind":"latency","delay":"150ms"},` +
		`{"route":"*","kind":"reply","status":204,"body":"x","header":{"Retry-After":"1"}}]`
	var got []Fault
	if err := json.Unmarshal([]byte(in), &got); err != nil {
		t.Fatal(err)
	}
	want := []Fault{
		{Route: RouteAll, Kind: FaultRateLimit, Rate: 0.25, Count: 3, RetryAfter: 2 * time.Second},
		{Route: RouteSesterceList, Kind: FaultLatency, Delay: 150 * time.Millisecond},
		{Route: RouteAll, Kind: FaultReply, Status: 204, Body: "x", Header: map[string]string{"Retry-After": "1"}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("decoded %+v, want %+v", got, want)
	}
	out, err := json.Marshal(got)
	if err != nil || string(out) != in {
		t.Errorf("re-encoded %s (%v), want %s", out, err, in)
	}
	for _, bad := range []string{`{"route":"*","kind":"drop","delay":"soon"}`, `{"route":"*","kind":"drop","typo":1}`} {
		var f Fault
		if err := json.Unmarshal([]byte(bad), &f); err == nil {
			t.Errorf("decoding %s succeeded, want an error", bad)
		}
	}
}
