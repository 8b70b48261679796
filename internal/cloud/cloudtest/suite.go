package cloudtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/secret"
)

// ProviderFactory builds the client under test against baseURL (the fake's
// URL, serving both APIs) with apiKey. It must configure short per-attempt
// timeouts (at most 2s: some checks hang a request until the client gives
// up) and short backoff (tens of milliseconds), and register any cleanup
// on t.
type ProviderFactory func(t *testing.T, baseURL string, apiKey secret.Secret) cloud.Provider

// API keys the suite's servers accept and refuse. They are distinctive so a
// leak into an error message is found by a plain substring search.
const (
	suiteSesterceKey        secret.Secret = "suite-sesterce-key-5d1c7a0f"
	suiteSesterceUnknownKey secret.Secret = "suite-sesterce-unknown-key-93b0e2"
	suiteGcoreKey           secret.Secret = "suite-gcore-key-b84f11c6"
	suiteWrongKey           secret.Secret = "suite-wrong-key-0e6a2d77"
)

// suiteTimeout bounds every check, so a client that hangs fails the check
// instead of the whole test binary.
const suiteTimeout = 30 * time.Second

// RunProviderSuite checks, through the cloud.Provider interface, that the
// client built by newProvider honours the contract of DESIGN.md §4 against
// the fake: listing, creating, defaults, deletion, error classes, retries of
// what is safe to retry, no duplicate key after an ambiguous create, bounds
// on bad responses, and (Gcore) paging, projects and server-side key
// generation. kind is "sesterce" or "gcore". Every check is a parallel
// subtest with its own Server.
func RunProviderSuite(t *testing.T, kind string, newProvider ProviderFactory) {
	t.Helper()
	runChecks(t, "RunProviderSuite", kind, newProvider, suiteChecks)
}

// runChecks runs the checks that apply to kind, each as a parallel subtest
// with its own suiteEnv.
func runChecks(t *testing.T, suite, kind string, newProvider ProviderFactory, checks []suiteCheck) {
	t.Helper()
	if kind != "sesterce" && kind != "gcore" {
		t.Fatalf("%s: kind %q: want sesterce or gcore", suite, kind)
	}
	for _, c := range checks {
		if c.only != "" && c.only != kind {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, &suiteEnv{kind: kind, newProvider: newProvider})
		})
	}
}

type suiteCheck struct {
	name string
	only string // "sesterce", "gcore", or "" for both
	run  func(t *testing.T, e *suiteEnv)
}

// suiteEnv is one check's fake and client.
type suiteEnv struct {
	kind        string
	newProvider ProviderFactory
	srv         *Server
	p           cloud.Provider
	project     int64 // 0 for Sesterce, 1 for Gcore
}

// start starts the fake (with opts applied) and the client with the valid key.
func (e *suiteEnv) start(t *testing.T, opts ...func(*Options)) {
	t.Helper()
	o := Options{
		SesterceAPIKey:        suiteSesterceKey,
		SesterceUnknownAPIKey: suiteSesterceUnknownKey,
		GcoreAPIKey:           suiteGcoreKey,
		Seed:                  1,
	}
	for _, f := range opts {
		f(&o)
	}
	e.srv = NewServer(o)
	t.Cleanup(e.srv.Close)
	if e.kind == "gcore" {
		e.project = 1
	}
	e.p = e.client(t, e.validKey())
}

func (e *suiteEnv) client(t *testing.T, key secret.Secret) cloud.Provider {
	t.Helper()
	p := e.newProvider(t, e.srv.URL(), key)
	if p == nil {
		t.Fatal("factory returned a nil Provider")
	}
	return p
}

func (e *suiteEnv) validKey() secret.Secret {
	if e.kind == "sesterce" {
		return suiteSesterceKey
	}
	return suiteGcoreKey
}

func (e *suiteEnv) sesterce() bool { return e.kind == "sesterce" }

func (e *suiteEnv) routeList() string { return pick(e.sesterce(), RouteSesterceList, RouteGcoreList) }
func (e *suiteEnv) routeCreate() string {
	return pick(e.sesterce(), RouteSesterceCreate, RouteGcoreCreate)
}
func (e *suiteEnv) routeDelete() string {
	return pick(e.sesterce(), RouteSesterceDelete, RouteGcoreDelete)
}

func pick(cond bool, a, b string) string {
	if cond {
		return a
	}
	return b
}

// storedKey is a key as the fake holds it, for either provider.
type storedKey struct {
	ID, Name, PublicKey string
	Default             bool
	CreatedAt           time.Time
}

// stored returns the keys the fake holds in the check's project.
func (e *suiteEnv) stored() []storedKey {
	return e.storedIn(e.project)
}

func (e *suiteEnv) storedIn(project int64) []storedKey {
	var out []storedKey
	if e.sesterce() {
		for _, k := range e.srv.SesterceKeys() {
			out = append(out, storedKey{k.ID, k.Name, k.PublicKey, k.IsDefault, k.CreatedAt})
		}
		return out
	}
	for _, k := range e.srv.GcoreKeys(project) {
		out = append(out, storedKey{k.ID, k.Name, k.PublicKey, false, k.CreatedAt})
	}
	return out
}

// seed stores a key on the fake, bypassing the client.
func (e *suiteEnv) seed(name, publicKey string, isDefault bool) storedKey {
	if e.sesterce() {
		k := e.srv.AddSesterceKey(name, publicKey, isDefault)
		return storedKey{k.ID, k.Name, k.PublicKey, k.IsDefault, k.CreatedAt}
	}
	k := e.srv.AddGcoreKey(e.project, name, publicKey)
	return storedKey{k.ID, k.Name, k.PublicKey, false, k.CreatedAt}
}

// unknownID is an ID of the right shape that the fake does not hold.
func (e *suiteEnv) unknownID() string {
	if e.sesterce() {
		return newHexID()
	}
	return newUUID()
}

func (e *suiteEnv) authMessage() string {
	return pick(e.sesterce(), "API key invalid", "Invalid API key.")
}

func suiteCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), suiteTimeout)
	t.Cleanup(cancel)
	return ctx
}

func findKey(keys []cloud.Key, id string) (cloud.Key, bool) {
	i := slices.IndexFunc(keys, func(k cloud.Key) bool { return k.ID == id })
	if i < 0 {
		return cloud.Key{}, false
	}
	return keys[i], true
}

func keyIDs(keys []cloud.Key) []string {
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	return ids
}

func storedIDs(keys []storedKey) []string {
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	return ids
}

// mustList lists or fails the check.
func (e *suiteEnv) mustList(t *testing.T, ctx context.Context) []cloud.Key {
	t.Helper()
	keys, err := e.p.List(ctx, e.project)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return keys
}

// wantOneCreated checks that Create returned the key named name with
// fingerprint fp and that the fake holds exactly that one key.
func (e *suiteEnv) wantOneCreated(t *testing.T, c cloud.Created, name, fp string) {
	t.Helper()
	stored := e.stored()
	if len(stored) != 1 {
		t.Fatalf("fake holds %d keys after Create, want exactly 1 (a create was repeated or lost): %+v", len(stored), stored)
	}
	if c.ID != stored[0].ID {
		t.Errorf("Create returned ID %q, fake holds %q", c.ID, stored[0].ID)
	}
	if c.Name != name {
		t.Errorf("Create returned Name %q, want %q", c.Name, name)
	}
	if c.Fingerprint != fp {
		t.Errorf("Create returned Fingerprint %q, want %q", c.Fingerprint, fp)
	}
}

// assertNoSecret fails when err's text, in any fmt form, holds a key.
func assertNoSecret(t *testing.T, op string, err error, keys ...secret.Secret) {
	t.Helper()
	secrets := make([]string, 0, len(keys))
	for _, k := range keys {
		secrets = append(secrets, k.Reveal())
	}
	AssertNoLeak(t, op, []error{err}, "", secrets...)
}

// waitHanging waits until n requests are held by FaultHang.
func waitHanging(ctx context.Context, srv *Server, n int) error {
	for srv.Hanging() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d hung requests: %w", n, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

var suiteChecks = []suiteCheck{
	{name: "TypeAndCapabilities", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		if got := e.p.Type(); got != e.kind {
			t.Errorf("Type() = %q, want %q", got, e.kind)
		}
		want := cloud.Capabilities{DefaultKey: e.sesterce(), ServerGenerate: !e.sesterce()}
		if got := e.p.Capabilities(); got != want {
			t.Errorf("Capabilities() = %+v, want %+v", got, want)
		}
	}},

	{name: "ListEmptyAccount", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		if keys := e.mustList(t, suiteCtx(t)); len(keys) != 0 {
			t.Errorf("List on an empty account returned %d keys: %+v", len(keys), keys)
		}
	}},

	{name: "CreateThenList", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		pub, fp := NewPublicKey(t)
		c, err := e.p.Create(ctx, e.project, cloud.CreateRequest{Name: "suite-create", PublicKey: pub})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		e.wantOneCreated(t, c, "suite-create", fp)
		if c.CreatedAt.IsZero() {
			t.Error("Create returned a zero CreatedAt")
		}
		if !c.PrivateKey.Empty() {
			t.Error("Create of an uploaded public key returned a private key")
		}
		stored := e.stored()[0]
		got, ok := findKey(e.mustList(t, ctx), c.ID)
		if !ok {
			t.Fatalf("List does not show created key %q", c.ID)
		}
		if got.Name != "suite-create" || got.Fingerprint != fp || got.PublicKey != stored.PublicKey {
			t.Errorf("List shows %+v, want name suite-create, fingerprint %s, public key %q", got, fp, stored.PublicKey)
		}
		if !got.CreatedAt.Equal(stored.CreatedAt) {
			t.Errorf("List shows CreatedAt %v, fake holds %v", got.CreatedAt, stored.CreatedAt)
		}
		if got.Default {
			t.Error("a new key is listed as default before SetDefault")
		}
		if !e.sesterce() && (got.ProjectID != e.project || got.State != "ACTIVE") {
			t.Errorf("List shows ProjectID %d State %q, want %d ACTIVE", got.ProjectID, got.State, e.project)
		}
	}},

	{name: "ListSeededKeys", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		pubA, fpA := NewPublicKey(t)
		pubB, fpB := NewPublicKey(t)
		a := e.seed("seed-a", pubA, e.sesterce())
		b := e.seed("seed-b", pubB, false)
		// A key the client cannot parse is still listed, with no fingerprint.
		bad := e.seed("seed-unparsable", "ssh-ed25519 not-base64!", false)
		keys := e.mustList(t, suiteCtx(t))
		if len(keys) != 3 {
			t.Fatalf("List returned %d keys, want 3: %+v", len(keys), keys)
		}
		for _, want := range []struct {
			stored storedKey
			fp     string
		}{{a, fpA}, {b, fpB}, {bad, ""}} {
			got, ok := findKey(keys, want.stored.ID)
			if !ok {
				t.Errorf("List misses %q", want.stored.Name)
				continue
			}
			if got.Name != want.stored.Name || got.PublicKey != want.stored.PublicKey || got.Fingerprint != want.fp {
				t.Errorf("List shows %+v, want name %q, public key %q, fingerprint %q", got, want.stored.Name, want.stored.PublicKey, want.fp)
			}
			if got.Default != want.stored.Default {
				t.Errorf("key %q: Default = %v, fake holds %v", got.Name, got.Default, want.stored.Default)
			}
			if !got.CreatedAt.Equal(want.stored.CreatedAt) {
				t.Errorf("key %q: CreatedAt = %v, fake holds %v", got.Name, got.CreatedAt, want.stored.CreatedAt)
			}
		}
	}},

	{name: "UnknownFieldsTolerated", run: func(t *testing.T, e *suiteEnv) {
		e.start(t, func(o *Options) {
			o.ExtraKeyFields = map[string]any{
				"labels":         map[string]any{"team": "gpu", "nested": []any{1, "two", nil}},
				"x_future_field": 42.5,
				"region_id":      nil,
			}
		})
		ctx := suiteCtx(t)
		pub, fp := NewPublicKey(t)
		c, err := e.p.Create(ctx, e.project, cloud.CreateRequest{Name: "suite-extra", PublicKey: pub})
		if err != nil {
			t.Fatalf("Create with unknown response fields: %v", err)
		}
		e.wantOneCreated(t, c, "suite-extra", fp)
		if got, ok := findKey(e.mustList(t, ctx), c.ID); !ok || got.Fingerprint != fp {
			t.Errorf("List with unknown response fields: key %q found=%v %+v", c.ID, ok, got)
		}
	}},

	{name: "SetDefault", only: "sesterce", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		pubA, _ := NewPublicKey(t)
		pubB, _ := NewPublicKey(t)
		e.seed("old-default", pubA, true)
		b := e.seed("new-default", pubB, false)
		if err := e.p.SetDefault(ctx, e.project, b.ID); err != nil {
			t.Fatalf("SetDefault: %v", err)
		}
		for _, k := range e.mustList(t, ctx) {
			if k.Default != (k.ID == b.ID) {
				t.Errorf("after SetDefault(%s): key %s listed with Default=%v", b.Name, k.Name, k.Default)
			}
		}
		for _, k := range e.stored() {
			if k.Default != (k.ID == b.ID) {
				t.Errorf("after SetDefault(%s): fake holds %s with default=%v", b.Name, k.Name, k.Default)
			}
		}
	}},

	{name: "SetDefaultUnknownID", only: "sesterce", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		err := e.p.SetDefault(suiteCtx(t), e.project, e.unknownID())
		if !errors.Is(err, cloud.ErrNotFound) {
			t.Errorf("SetDefault of an unknown ID = %v, want an error wrapping cloud.ErrNotFound", err)
		}
	}},

	{name: "SetDefaultUnsupported", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		pub, _ := NewPublicKey(t)
		k := e.seed("only", pub, false)
		err := e.p.SetDefault(suiteCtx(t), e.project, k.ID)
		if !errors.Is(err, cloud.ErrUnsupported) {
			t.Errorf("SetDefault on gcore = %v, want an error wrapping cloud.ErrUnsupported", err)
		}
		if n := e.srv.Requests(RouteAll); n != 0 {
			t.Errorf("SetDefault on gcore sent %d requests, want none", n)
		}
	}},

	{name: "Delete", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		pubA, _ := NewPublicKey(t)
		pubB, _ := NewPublicKey(t)
		gone := e.seed("to-delete", pubA, false)
		kept := e.seed("to-keep", pubB, false)
		if err := e.p.Delete(ctx, e.project, gone.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if ids := keyIDs(e.mustList(t, ctx)); !slices.Equal(ids, []string{kept.ID}) {
			t.Errorf("after Delete, List shows %v, want only %v", ids, kept.ID)
		}
		if ids := storedIDs(e.stored()); !slices.Equal(ids, []string{kept.ID}) {
			t.Errorf("after Delete, fake holds %v, want only %v", ids, kept.ID)
		}
	}},

	{name: "DeleteUnknownID", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		err := e.p.Delete(suiteCtx(t), e.project, e.unknownID())
		if !errors.Is(err, cloud.ErrNotFound) {
			t.Fatalf("Delete of an unknown ID = %v, want an error wrapping cloud.ErrNotFound", err)
		}
		if cloud.Retryable(err) {
			t.Errorf("Delete of an unknown ID is retryable: %v", err)
		}
		if n := e.srv.Requests(e.routeDelete()); n != 1 {
			t.Errorf("Delete of an unknown ID sent %d requests, want 1 (404 is final)", n)
		}
	}},

	{name: "ErrorCarriesRequestID", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		err := e.p.Delete(suiteCtx(t), e.project, e.unknownID())
		var ce *cloud.Error
		if !errors.As(err, &ce) {
			t.Fatalf("Delete of an unknown ID = %v (%T), want a *cloud.Error", err, err)
		}
		log := e.srv.RequestLog()
		if want := log[len(log)-1].RequestID; ce.RequestID != want || !strings.Contains(err.Error(), want) {
			t.Errorf("error RequestID = %q, text %q; want request ID %q in both", ce.RequestID, err, want)
		}
		if ce.Status != 404 {
			t.Errorf("error Status = %d, want 404", ce.Status)
		}
	}},

	{name: "WrongAPIKey", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		pub, _ := NewPublicKey(t)
		existing := e.seed("existing", pub, false)
		bad := e.client(t, suiteWrongKey)
		ops := map[string]func() error{
			"List": func() error { _, err := bad.List(ctx, e.project); return err },
			"Create": func() error {
				_, err := bad.Create(ctx, e.project, cloud.CreateRequest{Name: "never", PublicKey: pub})
				return err
			},
			"Delete": func() error { return bad.Delete(ctx, e.project, existing.ID) },
		}
		if e.sesterce() {
			ops["SetDefault"] = func() error { return bad.SetDefault(ctx, e.project, existing.ID) }
		}
		for name, op := range ops {
			err := op()
			if !errors.Is(err, cloud.ErrUnauthorized) {
				t.Errorf("%s with a wrong API key = %v, want an error wrapping cloud.ErrUnauthorized", name, err)
				continue
			}
			if cloud.Retryable(err) || errors.Is(err, cloud.ErrNotFound) {
				t.Errorf("%s with a wrong API key: error is retryable or not-found: %v", name, err)
			}
			if !strings.Contains(err.Error(), e.authMessage()) {
				t.Errorf("%s with a wrong API key: error %q lacks the provider's message %q", name, err, e.authMessage())
			}
			assertNoSecret(t, name, err, suiteWrongKey, e.validKey())
		}
		for _, route := range Routes {
			if n := e.srv.Requests(route); n > 1 {
				t.Errorf("%d requests to %s with a wrong API key, want at most 1 (auth failures are not retried)", n, route)
			}
		}
		if ids := storedIDs(e.stored()); !slices.Equal(ids, []string{existing.ID}) {
			t.Errorf("fake holds %v after calls with a wrong key, want only %v", ids, existing.ID)
		}
	}},

	{name: "UnknownAPIKey", only: "sesterce", run: func(t *testing.T, e *suiteEnv) {
		// Sesterce answers 404 "API key not found" on POST and GET: an auth
		// failure, not a missing key.
		e.start(t)
		ctx := suiteCtx(t)
		unknown := e.client(t, suiteSesterceUnknownKey)
		pub, _ := NewPublicKey(t)
		_, listErr := unknown.List(ctx, e.project)
		_, createErr := unknown.Create(ctx, e.project, cloud.CreateRequest{Name: "never", PublicKey: pub})
		for name, err := range map[string]error{"List": listErr, "Create": createErr} {
			if !errors.Is(err, cloud.ErrUnauthorized) || errors.Is(err, cloud.ErrNotFound) {
				t.Errorf("%s with an unknown API key = %v, want cloud.ErrUnauthorized and not cloud.ErrNotFound", name, err)
				continue
			}
			if !strings.Contains(err.Error(), "API key not found") {
				t.Errorf("%s with an unknown API key: error %q lacks %q", name, err, "API key not found")
			}
			assertNoSecret(t, name, err, suiteSesterceUnknownKey, suiteSesterceKey)
		}
		if n := len(e.stored()); n != 0 {
			t.Errorf("fake holds %d keys after a create with an unknown API key", n)
		}
	}},

	{name: "RetriesServiceUnavailable", run: func(t *testing.T, e *suiteEnv) {
		type op struct {
			route string
			call  func(ctx context.Context, e *suiteEnv, k storedKey) error
			check func(t *testing.T, e *suiteEnv, k storedKey)
		}
		ops := map[string]op{
			"List": {e.routeList(), func(ctx context.Context, e *suiteEnv, _ storedKey) error {
				keys, err := e.p.List(ctx, e.project)
				if err == nil && len(keys) != 1 {
					return fmt.Errorf("list returned %d keys, want 1", len(keys))
				}
				return err
			}, nil},
			"Delete": {e.routeDelete(), func(ctx context.Context, e *suiteEnv, k storedKey) error {
				return e.p.Delete(ctx, e.project, k.ID)
			}, func(t *testing.T, e *suiteEnv, _ storedKey) {
				if n := len(e.stored()); n != 0 {
					t.Errorf("fake holds %d keys after Delete", n)
				}
			}},
		}
		if e.sesterce() {
			ops["SetDefault"] = op{RouteSesterceMakeDefault, func(ctx context.Context, e *suiteEnv, k storedKey) error {
				return e.p.SetDefault(ctx, e.project, k.ID)
			}, func(t *testing.T, e *suiteEnv, _ storedKey) {
				if k := e.stored(); len(k) != 1 || !k[0].Default {
					t.Errorf("fake holds %+v after SetDefault, want the key default", k)
				}
			}}
		}
		for name, o := range ops {
			t.Run(name, func(t *testing.T) {
				e := &suiteEnv{kind: e.kind, newProvider: e.newProvider}
				e.start(t)
				pub, _ := NewPublicKey(t)
				k := e.seed("retry", pub, false)
				e.srv.Inject(Fault{Route: o.route, Kind: FaultStatus, Status: 503, Count: 2})
				if err := o.call(suiteCtx(t), e, k); err != nil {
					t.Fatalf("%s after two 503s = %v, want success (5xx is transient)", name, err)
				}
				if n := e.srv.Requests(o.route); n != 3 {
					t.Errorf("%d requests to %s, want 3 (two 503s, then success)", n, o.route)
				}
				if o.check != nil {
					o.check(t, e, k)
				}
			})
		}
	}},

	{name: "RetriesDroppedConnection", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		pub, _ := NewPublicKey(t)
		k := e.seed("dropped", pub, false)
		e.srv.Inject(Fault{Route: e.routeList(), Kind: FaultDrop, Count: 1})
		e.srv.Inject(Fault{Route: e.routeDelete(), Kind: FaultDrop, Count: 1})
		if keys, err := e.p.List(ctx, e.project); err != nil || len(keys) != 1 {
			t.Errorf("List after a dropped connection = %d keys, %v; want 1 key", len(keys), err)
		}
		if err := e.p.Delete(ctx, e.project, k.ID); err != nil {
			t.Errorf("Delete after a dropped connection = %v, want success", err)
		}
		if n := len(e.stored()); n != 0 {
			t.Errorf("fake holds %d keys after Delete", n)
		}
	}},

	{name: "DeleteAfterCommitThenDrop", run: func(t *testing.T, e *suiteEnv) {
		// The key is gone but the response was lost; the retry sees 404,
		// which callers treat as success.
		e.start(t)
		pub, _ := NewPublicKey(t)
		k := e.seed("lost-response", pub, false)
		e.srv.Inject(Fault{Route: e.routeDelete(), Kind: FaultCommitThenDrop, Count: 1})
		if err := e.p.Delete(suiteCtx(t), e.project, k.ID); err != nil && !errors.Is(err, cloud.ErrNotFound) {
			t.Errorf("Delete whose response was lost = %v, want success or cloud.ErrNotFound", err)
		}
		if n := len(e.stored()); n != 0 {
			t.Errorf("fake holds %d keys after Delete", n)
		}
	}},

	{name: "HonoursRetryAfter", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		e.srv.Inject(Fault{Route: e.routeList(), Kind: FaultRateLimit, RetryAfter: time.Second, Count: 1})
		if _, err := e.p.List(suiteCtx(t), e.project); err != nil {
			t.Fatalf("List after a 429 = %v, want success (429 is retried)", err)
		}
		var times []time.Time
		for _, r := range e.srv.RequestLog() {
			if r.Route == e.routeList() {
				times = append(times, r.Time)
			}
		}
		if len(times) != 2 {
			t.Fatalf("%d list requests, want 2 (429, then success)", len(times))
		}
		if gap := times[1].Sub(times[0]); gap < time.Second {
			t.Errorf("retry came %v after a 429 with Retry-After: 1, want at least 1s", gap)
		}
	}},

	{name: "RetriesHungRequest", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		e.srv.Inject(Fault{Route: e.routeList(), Kind: FaultHang, Count: 1})
		if _, err := e.p.List(suiteCtx(t), e.project); err != nil {
			t.Fatalf("List after a hung request = %v, want success (the factory must set a short per-attempt timeout)", err)
		}
		if n := e.srv.Requests(e.routeList()); n != 2 {
			t.Errorf("%d list requests, want 2 (one hung, then success)", n)
		}
	}},

	{name: "ContextCanceled", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		e.srv.Inject(Fault{Route: e.routeList(), Kind: FaultHang})
		ctx, cancel := context.WithCancel(suiteCtx(t))
		defer cancel()
		go func() {
			if waitHanging(ctx, e.srv, 1) == nil {
				cancel()
			}
		}()
		_, err := e.p.List(ctx, e.project)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("List with a canceled context = %v, want an error wrapping context.Canceled", err)
		}
	}},

	{name: "CreateCanceled", run: func(t *testing.T, e *suiteEnv) {
		// A caller that gives up while a create hangs gets its context's
		// error at once: no lookup, no second create.
		e.start(t)
		pub, _ := NewPublicKey(t)
		e.srv.Inject(Fault{Route: e.routeCreate(), Kind: FaultHang})
		ctx, cancel := context.WithCancel(suiteCtx(t))
		defer cancel()
		go func() {
			if waitHanging(ctx, e.srv, 1) == nil {
				cancel()
			}
		}()
		_, err := e.p.Create(ctx, e.project, cloud.CreateRequest{Name: "suite-canceled", PublicKey: pub})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Create with a canceled context = %v, want an error wrapping context.Canceled", err)
		}
		if c, l := e.srv.Requests(e.routeCreate()), e.srv.Requests(e.routeList()); c != 1 || l != 0 {
			t.Errorf("%d creates and %d lists after the caller gave up, want 1 and 0", c, l)
		}
	}},

	{name: "CreateAfterCommitThenDrop", run: func(t *testing.T, e *suiteEnv) {
		// The key was created but the response was lost: the client must
		// find it by name and fingerprint instead of creating it twice.
		e.start(t)
		pub, fp := NewPublicKey(t)
		e.srv.Inject(Fault{Route: e.routeCreate(), Kind: FaultCommitThenDrop, Count: 1})
		c, err := e.p.Create(suiteCtx(t), e.project, cloud.CreateRequest{Name: "suite-ambiguous", PublicKey: pub})
		if err != nil {
			t.Fatalf("Create whose response was lost = %v, want the committed key", err)
		}
		e.wantOneCreated(t, c, "suite-ambiguous", fp)
	}},

	{name: "CreateAfterMalformedResponse", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		pub, fp := NewPublicKey(t)
		e.srv.Inject(Fault{Route: e.routeCreate(), Kind: FaultMalformed, Count: 1})
		c, err := e.p.Create(suiteCtx(t), e.project, cloud.CreateRequest{Name: "suite-malformed", PublicKey: pub})
		if err != nil {
			t.Fatalf("Create with a truncated response = %v, want the committed key", err)
		}
		e.wantOneCreated(t, c, "suite-malformed", fp)
	}},

	{name: "CreateAfterUncommittedFailure", run: func(t *testing.T, e *suiteEnv) {
		for name, f := range map[string]Fault{
			"500":       {Kind: FaultStatus, Status: 500},
			"503":       {Kind: FaultStatus, Status: 503},
			"Drop":      {Kind: FaultDrop},
			"RateLimit": {Kind: FaultRateLimit, RetryAfter: time.Second},
			"Timeout":   {Kind: FaultHang},
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				e := &suiteEnv{kind: e.kind, newProvider: e.newProvider}
				e.start(t)
				pub, fp := NewPublicKey(t)
				f.Route, f.Count = e.routeCreate(), 1
				e.srv.Inject(f)
				c, err := e.p.Create(suiteCtx(t), e.project, cloud.CreateRequest{Name: "suite-retry", PublicKey: pub})
				if err != nil {
					t.Fatalf("Create after a %s fault that did not commit = %v, want one new key", f.Kind, err)
				}
				e.wantOneCreated(t, c, "suite-retry", fp)
				if n := e.srv.Requests(e.routeList()); f.Kind == FaultRateLimit && n != 0 {
					t.Errorf("%d list requests after a 429 on create, want none (a 429 commits nothing: the create is simply repeated)", n)
				}
			})
		}
	}},

	{name: "CreateMatchesFingerprintNotJustName", run: func(t *testing.T, e *suiteEnv) {
		// After an ambiguous failure, a key with the same name but another
		// public key is not ours: the client must create its own.
		e.start(t)
		otherPub, _ := NewPublicKey(t)
		other := e.seed("suite-same-name", otherPub, false)
		pub, fp := NewPublicKey(t)
		e.srv.Inject(Fault{Route: e.routeCreate(), Kind: FaultStatus, Status: 500, Count: 1})
		c, err := e.p.Create(suiteCtx(t), e.project, cloud.CreateRequest{Name: "suite-same-name", PublicKey: pub})
		if err != nil {
			t.Fatalf("Create after a 500 = %v, want a new key", err)
		}
		if c.ID == other.ID || c.Fingerprint != fp {
			t.Errorf("Create returned %+v: the other key of the same name (ID %s), not a new one with fingerprint %s", c.Key, other.ID, fp)
		}
		if n := len(e.stored()); n != 2 {
			t.Errorf("fake holds %d keys, want 2 (the other key and the new one)", n)
		}
	}},

	{name: "CreateRejectsInvalidPublicKey", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		_, err := e.p.Create(suiteCtx(t), e.project, cloud.CreateRequest{Name: "suite-invalid", PublicKey: "ssh-ed25519 definitely-not-a-key"})
		if !errors.Is(err, cloud.ErrPermanent) || cloud.Retryable(err) {
			t.Fatalf("Create with an invalid public key = %v, want a non-retryable cloud.ErrPermanent", err)
		}
		switch n := e.srv.Requests(e.routeCreate()); n {
		case 0: // refused locally
		case 1:
			want := pick(e.sesterce(), "publicKey must be a valid SSH public key", "public_key: Invalid SSH public key.")
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Create with an invalid public key: error %q lacks the provider's message %q", err, want)
			}
		default:
			t.Errorf("%d create requests for a validation error, want at most 1", n)
		}
		if n := len(e.stored()); n != 0 {
			t.Errorf("fake holds %d keys after a rejected create", n)
		}
	}},

	{name: "CreateRejectsLongName", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		pub, _ := NewPublicKey(t)
		_, err := e.p.Create(suiteCtx(t), e.project, cloud.CreateRequest{Name: strings.Repeat("n", 256), PublicKey: pub})
		if !errors.Is(err, cloud.ErrPermanent) || cloud.Retryable(err) {
			t.Errorf("Create with a 256-character name = %v, want a non-retryable cloud.ErrPermanent", err)
		}
		if n := e.srv.Requests(e.routeCreate()); n > 1 {
			t.Errorf("%d create requests for a validation error, want at most 1", n)
		}
		if n := len(e.stored()); n != 0 {
			t.Errorf("fake holds %d keys after a rejected create", n)
		}
	}},

	{name: "CreateWithoutPublicKeyRefused", only: "sesterce", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		_, err := e.p.Create(suiteCtx(t), e.project, cloud.CreateRequest{Name: "suite-generate"})
		if !errors.Is(err, cloud.ErrUnsupported) && !errors.Is(err, cloud.ErrPermanent) {
			t.Errorf("Create without a public key on sesterce = %v, want cloud.ErrUnsupported (or cloud.ErrPermanent)", err)
		}
		if n := len(e.stored()); n != 0 {
			t.Errorf("fake holds %d keys after a refused create", n)
		}
	}},

	{name: "MalformedResponse", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		pub, _ := NewPublicKey(t)
		e.seed("k", pub, false)
		e.srv.Inject(Fault{Route: e.routeList(), Kind: FaultMalformed})
		keys, err := e.p.List(suiteCtx(t), e.project)
		if err == nil {
			t.Fatalf("List of truncated JSON returned %d keys and no error", len(keys))
		}
		if !errors.Is(err, cloud.ErrTransient) {
			t.Errorf("List of truncated JSON = %v, want an error wrapping cloud.ErrTransient", err)
		}
	}},

	{name: "HugeResponse", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		e.srv.Inject(Fault{Route: e.routeList(), Kind: FaultHuge})
		keys, err := e.p.List(suiteCtx(t), e.project)
		if err == nil {
			t.Fatalf("List of a %d-byte body returned %d keys and no error", HugeBodySize, len(keys))
		}
		msg := strings.ToLower(err.Error())
		if !strings.Contains(msg, "limit") && !strings.Contains(msg, "too large") && !strings.Contains(msg, "exceeds") {
			t.Errorf("List of a %d-byte body = %q, want an error that names the size limit (\"limit\", \"too large\" or \"exceeds\")", HugeBodySize, err)
		}
	}},

	{name: "ConcurrentCreates", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			pub, _ := NewPublicKey(t)
			wg.Go(func() {
				_, errs[i] = e.p.Create(ctx, e.project, cloud.CreateRequest{Name: fmt.Sprintf("suite-concurrent-%d", i), PublicKey: pub})
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("concurrent Create: %v", err)
		}
		if keys := e.mustList(t, ctx); len(keys) != n || len(e.stored()) != n {
			t.Errorf("List shows %d keys, fake holds %d, want %d", len(keys), len(e.stored()), n)
		}
	}},

	{name: "SendsUserAgent", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		pub, _ := NewPublicKey(t)
		if _, err := e.p.Create(ctx, e.project, cloud.CreateRequest{Name: "suite-ua", PublicKey: pub}); err != nil {
			t.Fatalf("Create: %v", err)
		}
		e.mustList(t, ctx)
		for _, r := range e.srv.RequestLog() {
			if !strings.HasPrefix(r.UserAgent, "rotatord/") {
				t.Errorf("%s sent User-Agent %q, want rotatord/<version> (a CDN in front of the API rejects default agents)", r.Route, r.UserAgent)
			}
		}
	}},

	{name: "ListsAllPages", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		for _, n := range []int{25, gcoreMaxLimit + 5} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				e := &suiteEnv{kind: e.kind, newProvider: e.newProvider}
				e.start(t)
				pub, _ := NewPublicKey(t)
				for i := range n {
					e.seed(fmt.Sprintf("page-%04d", i), pub, false)
				}
				keys := e.mustList(t, suiteCtx(t))
				if got, want := keyIDs(keys), storedIDs(e.stored()); !slices.Equal(got, want) {
					t.Errorf("List returned %d keys (%d distinct), want all %d", len(keys), len(slices.Compact(got)), n)
				}
			})
		}
	}},

	{name: "ServerGeneratedKey", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		c, err := e.p.Create(ctx, e.project, cloud.CreateRequest{Name: "suite-generated"})
		if err != nil {
			t.Fatalf("Create without a public key: %v", err)
		}
		if c.PrivateKey.Empty() {
			t.Fatal("Create without a public key returned no private key")
		}
		signer, err := ssh.ParsePrivateKey([]byte(c.PrivateKey.Reveal()))
		if err != nil {
			t.Fatalf("parse returned private key: %v", err)
		}
		stored := e.stored()
		if len(stored) != 1 || stored[0].ID != c.ID {
			t.Fatalf("fake holds %+v, want the one created key %q", stored, c.ID)
		}
		storedFP, err := cloud.Fingerprint(stored[0].PublicKey)
		if err != nil {
			t.Fatalf("fingerprint stored key: %v", err)
		}
		if fp := ssh.FingerprintSHA256(signer.PublicKey()); fp != storedFP || c.Fingerprint != storedFP {
			t.Errorf("private key's public half %s, Created.Fingerprint %s, stored key %s: want all equal", fp, c.Fingerprint, storedFP)
		}
		dump, _ := json.Marshal(e.srv.GcoreKeys(e.project))
		printed := []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)}
		for _, line := range privateKeyLines(c.PrivateKey.Reveal()) {
			if strings.Contains(string(dump), line) {
				t.Error("the fake stored the private key it generated")
			}
			for _, form := range printed {
				if strings.Contains(form, line) {
					t.Error("printing Created shows the private key")
				}
			}
		}
		if got, ok := findKey(e.mustList(t, ctx), c.ID); !ok || got.Fingerprint != storedFP {
			t.Errorf("List shows generated key found=%v %+v, want fingerprint %s", ok, got, storedFP)
		}
	}},

	{name: "SharedInProject", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		no := false
		pubA, _ := NewPublicKey(t)
		pubB, _ := NewPublicKey(t)
		private, err := e.p.Create(ctx, e.project, cloud.CreateRequest{Name: "not-shared", PublicKey: pubA, SharedInProject: &no})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		def, err := e.p.Create(ctx, e.project, cloud.CreateRequest{Name: "default-shared", PublicKey: pubB})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		for _, k := range e.srv.GcoreKeys(e.project) {
			if want := k.ID == def.ID; k.SharedInProject != want {
				t.Errorf("key %s stored with shared_in_project=%v, want %v (private ID %s)", k.Name, k.SharedInProject, want, private.ID)
			}
		}
	}},

	{name: "ProjectIsolation", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		ctx := suiteCtx(t)
		pubA, _ := NewPublicKey(t)
		pubB, _ := NewPublicKey(t)
		inOne := e.srv.AddGcoreKey(1, "in-project-1", pubA)
		c, err := e.p.Create(ctx, 2, cloud.CreateRequest{Name: "in-project-2", PublicKey: pubB})
		if err != nil {
			t.Fatalf("Create in project 2: %v", err)
		}
		for project, want := range map[int64]string{1: inOne.ID, 2: c.ID} {
			keys, err := e.p.List(ctx, project)
			if err != nil {
				t.Fatalf("List project %d: %v", project, err)
			}
			if ids := keyIDs(keys); !slices.Equal(ids, []string{want}) {
				t.Errorf("List project %d = %v, want only %v", project, ids, want)
			}
			for _, k := range keys {
				if k.ProjectID != project {
					t.Errorf("List project %d shows key %s with ProjectID %d", project, k.Name, k.ProjectID)
				}
			}
		}
		if err := e.p.Delete(ctx, 2, inOne.ID); !errors.Is(err, cloud.ErrNotFound) {
			t.Errorf("Delete of a project-1 key in project 2 = %v, want cloud.ErrNotFound", err)
		}
		if n := len(e.srv.GcoreKeys(1)); n != 1 {
			t.Errorf("project 1 holds %d keys after a delete in project 2, want 1", n)
		}
	}},
}

// privateKeyLines returns the base64 lines of a PEM private key that carry
// key material (not the first, which is the same for every OpenSSH key of a
// type): none of them may appear anywhere but in the Created value.
func privateKeyLines(pemText string) []string {
	lines := strings.Split(strings.TrimSpace(pemText), "\n")
	if len(lines) < 4 {
		return []string{pemText}
	}
	var out []string
	for _, l := range lines[2 : len(lines)-1] {
		if len(l) >= 16 {
			out = append(out, l)
		}
	}
	return out
}
