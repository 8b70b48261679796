// Command fakecloud serves the contract fake of the Sesterce and Gcore
// SSH-key APIs (internal/cloud/cloudtest) on one local port, for demos,
// trying policies without a cloud account, and end-to-end tests.
//
//	fakecloud -listen 127.0.0.1:8088 -latency 20ms -error-rate 0.1 -seed 1
//
// Point a provider's base_url at the printed URL: both APIs share it. The
// first line on stdout is "listening on http://HOST:PORT" (with the real
// port when -listen asks for port 0), so scripts can read it.
//
// API keys come from -sesterce-key / -gcore-key, or better (they stay out
// of the process list) from FAKECLOUD_SESTERCE_KEY / FAKECLOUD_GCORE_KEY;
// without either, the fake accepts cloudtest's default keys. Each Sesterce
// key is its own account, with its own keys and default key, as on
// Sesterce where an API key belongs to a user: repeat -sesterce-key, or
// separate the keys with commas in FAKECLOUD_SESTERCE_KEY. /admin/keys
// tags every Sesterce key with its account (0 for the first API key).
//
// Admin endpoints, unauthenticated (keep -listen on loopback):
//
//	GET  /admin/healthz         {"status":"ok"}
//	GET  /admin/keys            every key of both providers (public halves only:
//	                            the fake never stores a private key)
//	GET  /admin/faults          the fault rules in force
//	POST /admin/faults          replace the rules with a JSON array of
//	                            {"route","kind","rate","count","status",
//	                            "message","retry_after","delay","body",
//	                            "header"}; [] clears. Kinds: status,
//	                            rate_limit, drop, malformed, commit_then_drop,
//	                            hang, huge, latency, reply (status, body and
//	                            header verbatim), truncate, echo_credential
//	POST /admin/release-hangs   let every request held by a "hang" rule proceed
//	GET  /admin/requests        request counts per route
//	GET  /admin/instances       every instance of both providers
//	POST /admin/instances       launch one: {"provider": "gcore"|"sesterce",
//	                            "name", "key_name" or "key_id", and
//	                            gcore: "project", "region", optional
//	                            "region_name", "bare_metal", "old_fields";
//	                            sesterce: optional "user", "port"; both:
//	                            optional "address", "status"}. A Gcore
//	                            instance names its key (key_id is looked up
//	                            among the project's keys); a Sesterce one
//	                            is launched with a key id (key_name is
//	                            looked up among the account's keys).
//	                            Answers 201 with the instance.
//	DELETE /admin/instances/{id} terminate it (Sesterce instances stay
//	                            listed with status "deleted")
//	POST /admin/regions         add or change a Gcore region:
//	                            {"id", "name", "state"}
//
// SIGINT or SIGTERM stops it gracefully.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/secret"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// config is what the flags and environment ask for.
type config struct {
	listen        string
	sesterceKey   secret.Secret
	moreSesterce  []secret.Secret // accounts 1, 2, ...
	unknownKey    secret.Secret
	gcoreKey      secret.Secret
	latency       time.Duration
	errorRate     float64
	errorStatus   int
	rateLimitRate float64
	retryAfter    time.Duration
	hangRate      float64
	dropRate      float64
	seed          uint64
	verbose       bool
}

func parseFlags(args []string, stderr io.Writer, getenv func(string) string) (config, error) {
	var c config
	var sesterceKeys []string
	var unknownKey, gcoreKey string
	fs := flag.NewFlagSet("fakecloud", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8088", "address to listen on (port 0 picks a free port)")
	fs.Func("sesterce-key", "Sesterce x-api-key to accept; repeat it for more accounts, one per key (default $FAKECLOUD_SESTERCE_KEY, comma-separated, else "+cloudtest.DefaultSesterceAPIKey.Reveal()+")", func(v string) error {
		sesterceKeys = append(sesterceKeys, v)
		return nil
	})
	fs.StringVar(&unknownKey, "sesterce-unknown-key", "", `a Sesterce key to answer with 404 "API key not found"`)
	fs.StringVar(&gcoreKey, "gcore-key", "", "Gcore APIKey token to accept (default $FAKECLOUD_GCORE_KEY, else "+cloudtest.DefaultGcoreAPIKey.Reveal()+")")
	fs.DurationVar(&c.latency, "latency", 0, "delay before every API response")
	fs.Float64Var(&c.errorRate, "error-rate", 0, "fraction of API requests answered with -error-status")
	fs.IntVar(&c.errorStatus, "error-status", http.StatusServiceUnavailable, "status for -error-rate")
	fs.Float64Var(&c.rateLimitRate, "rate-limit-rate", 0, "fraction of API requests answered 429")
	fs.DurationVar(&c.retryAfter, "retry-after", time.Second, "Retry-After of -rate-limit-rate answers")
	fs.Float64Var(&c.hangRate, "hang-rate", 0, "fraction of API requests held until the client gives up")
	fs.Float64Var(&c.dropRate, "drop-rate", 0, "fraction of API requests whose connection is closed without a response")
	fs.Uint64Var(&c.seed, "seed", 0, "seed for the fault rates (0: random)")
	fs.BoolVar(&c.verbose, "v", false, "log every request")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if len(sesterceKeys) == 0 && getenv("FAKECLOUD_SESTERCE_KEY") != "" {
		sesterceKeys = strings.Split(getenv("FAKECLOUD_SESTERCE_KEY"), ",")
	}
	seen := map[string]bool{}
	for i, k := range sesterceKeys {
		switch {
		case k == "":
			return config{}, fmt.Errorf("sesterce key %d of %d is empty", i+1, len(sesterceKeys))
		case seen[k]:
			// Not echoed: it is a credential.
			return config{}, fmt.Errorf("sesterce key %d of %d repeats an earlier one: each key is one account", i+1, len(sesterceKeys))
		}
		seen[k] = true
		if i == 0 {
			c.sesterceKey = secret.Secret(k)
		} else {
			c.moreSesterce = append(c.moreSesterce, secret.Secret(k))
		}
	}
	c.gcoreKey = secret.Secret(cmp.Or(gcoreKey, getenv("FAKECLOUD_GCORE_KEY")))
	c.unknownKey = secret.Secret(unknownKey)
	return c, nil
}

// faults turns the rate flags into rules. They are tried in this order, so
// each rate applies to the requests the earlier rules left alone.
func (c config) faults() []cloudtest.Fault {
	var fs []cloudtest.Fault
	add := func(rate float64, f cloudtest.Fault) {
		if rate > 0 {
			f.Route, f.Rate = cloudtest.RouteAll, rate
			fs = append(fs, f)
		}
	}
	add(c.errorRate, cloudtest.Fault{Kind: cloudtest.FaultStatus, Status: c.errorStatus})
	add(c.rateLimitRate, cloudtest.Fault{Kind: cloudtest.FaultRateLimit, RetryAfter: c.retryAfter})
	add(c.hangRate, cloudtest.Fault{Kind: cloudtest.FaultHang})
	add(c.dropRate, cloudtest.Fault{Kind: cloudtest.FaultDrop})
	return fs
}

// run serves until ctx ends and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c, err := parseFlags(args, stderr, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "fakecloud:", err)
		return 2
	}
	level := slog.LevelInfo
	if c.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	fake := cloudtest.New(cloudtest.Options{
		SesterceAPIKey:        c.sesterceKey,
		SesterceAPIKeys:       c.moreSesterce,
		SesterceUnknownAPIKey: c.unknownKey,
		GcoreAPIKey:           c.gcoreKey,
		Latency:               c.latency,
		Logger:                log,
		Seed:                  c.seed,
	})
	if err := fake.SetFaults(c.faults()); err != nil {
		fmt.Fprintln(stderr, "fakecloud: flags:", err)
		return 2
	}

	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		fmt.Fprintln(stderr, "fakecloud:", err)
		return 1
	}
	srv := &http.Server{Handler: newMux(fake, log), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	for provider, key := range map[string]secret.Secret{"sesterce": c.sesterceKey, "gcore": c.gcoreKey} {
		if key.Empty() {
			log.Info("no API key given: accepting the cloudtest default key", "provider", provider)
		}
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		fmt.Fprintln(stderr, "fakecloud: serve:", err)
		return 1
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// Release hung requests first, or Shutdown would wait for them.
	fake.Close()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		fmt.Fprintln(stderr, "fakecloud: shutdown:", err)
		return 1
	}
	return 0
}

// keysView is the /admin/keys body.
type keysView struct {
	Sesterce []cloudtest.SesterceKey `json:"sesterce"`
	Gcore    []cloudtest.GcoreKey    `json:"gcore"`
}

// newMux serves the admin endpoints beside the fake APIs.
func newMux(fake *cloudtest.Server, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /admin/keys", func(w http.ResponseWriter, _ *http.Request) {
		v := keysView{Sesterce: fake.SesterceKeys(), Gcore: []cloudtest.GcoreKey{}}
		if v.Sesterce == nil {
			v.Sesterce = []cloudtest.SesterceKey{}
		}
		for _, p := range fake.GcoreProjects() {
			v.Gcore = append(v.Gcore, fake.GcoreKeys(p)...)
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /admin/faults", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(fake.Faults()))
	})
	mux.HandleFunc("POST /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		var faults []cloudtest.Fault
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&faults); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "decode faults: " + err.Error()})
			return
		}
		if err := fake.SetFaults(faults); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		log.Info("fault rules replaced", "count", len(faults))
		writeJSON(w, http.StatusOK, nonNil(fake.Faults()))
	})
	mux.HandleFunc("POST /admin/release-hangs", func(w http.ResponseWriter, _ *http.Request) {
		fake.ReleaseHangs()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /admin/requests", func(w http.ResponseWriter, _ *http.Request) {
		counts := map[string]int{}
		for _, route := range append([]string{cloudtest.RouteAll}, cloudtest.Routes...) {
			counts[route] = fake.Requests(route)
		}
		writeJSON(w, http.StatusOK, counts)
	})
	mux.HandleFunc("GET /admin/faults-met", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, fake.FaultsMet())
	})
	mux.HandleFunc("GET /admin/instances", func(w http.ResponseWriter, _ *http.Request) {
		v := instancesView{Gcore: fake.GcoreInstances(0), Sesterce: fake.SesterceInstances()}
		if v.Gcore == nil {
			v.Gcore = []cloudtest.GcoreInstance{}
		}
		if v.Sesterce == nil {
			v.Sesterce = []cloudtest.SesterceInstance{}
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("POST /admin/instances", func(w http.ResponseWriter, r *http.Request) {
		var req launchRequest
		if err := decodeStrict(w, r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "decode instance: " + err.Error()})
			return
		}
		inst, err := req.launch(fake)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		log.Info("instance launched", "provider", req.Provider, "name", req.Name)
		writeJSON(w, http.StatusCreated, inst)
	})
	mux.HandleFunc("DELETE /admin/instances/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !fake.TerminateInstance(r.PathValue("id")) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no running instance %q", r.PathValue("id"))})
			return
		}
		log.Info("instance terminated", "instance_id", r.PathValue("id"))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /admin/regions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID    int64  `json:"id"`
			Name  string `json:"name"`
			State string `json:"state"`
		}
		if err := decodeStrict(w, r, &req); err != nil || req.ID < 1 || req.Name == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want {\"id\" (>= 1), \"name\", \"state\"}"})
			return
		}
		writeJSON(w, http.StatusOK, fake.AddGcoreRegion(req.ID, req.Name, cmp.Or(req.State, "ACTIVE")))
	})
	mux.Handle("/", fake)
	return mux
}

// instancesView is the /admin/instances body.
type instancesView struct {
	Gcore    []cloudtest.GcoreInstance    `json:"gcore"`
	Sesterce []cloudtest.SesterceInstance `json:"sesterce"`
}

// launchRequest is the POST /admin/instances body.
type launchRequest struct {
	Provider   string `json:"provider"`
	Name       string `json:"name"`
	KeyName    string `json:"key_name"`
	KeyID      string `json:"key_id"`
	Project    int64  `json:"project"`
	Region     int64  `json:"region"`
	RegionName string `json:"region_name"`
	BareMetal  bool   `json:"bare_metal"`
	OldFields  bool   `json:"old_fields"`
	Address    string `json:"address"`
	User       string `json:"user"`
	Port       int    `json:"port"`
	Status     string `json:"status"`
}

// launch checks the request, resolves the key and launches the instance.
func (req launchRequest) launch(fake *cloudtest.Server) (any, error) {
	if req.Name == "" {
		return nil, errors.New("name is required")
	}
	var opts []cloudtest.InstanceOption
	if req.Status != "" {
		opts = append(opts, cloudtest.WithStatus(req.Status))
	}
	switch req.Provider {
	case "gcore":
		if req.Project < 1 || req.Region < 1 {
			return nil, errors.New("gcore: project and region are required")
		}
		if req.User != "" || req.Port != 0 {
			return nil, errors.New("gcore: user and port are not provider fields (Gcore does not report them)")
		}
		key := req.KeyName
		if req.KeyID != "" {
			i := slices.IndexFunc(fake.GcoreKeys(req.Project), func(k cloudtest.GcoreKey) bool { return k.ID == req.KeyID })
			if i < 0 {
				return nil, fmt.Errorf("gcore: project %d has no key %q", req.Project, req.KeyID)
			}
			key = fake.GcoreKeys(req.Project)[i].Name
		}
		if req.RegionName != "" {
			opts = append(opts, cloudtest.InRegion(req.RegionName))
		}
		if req.BareMetal {
			opts = append(opts, cloudtest.BareMetal())
		}
		if req.OldFields {
			opts = append(opts, cloudtest.OldFieldNames())
		}
		if req.Address != "" {
			opts = append(opts, cloudtest.WithAddresses(cloudtest.GcoreAddress{Network: "public", Addr: req.Address, Type: "floating"}))
		}
		return fake.LaunchGcoreInstance(req.Project, req.Region, req.Name, key, opts...), nil
	case "sesterce":
		if req.Project != 0 || req.Region != 0 || req.RegionName != "" || req.BareMetal || req.OldFields {
			return nil, errors.New("sesterce: project, region, region_name, bare_metal and old_fields are Gcore fields")
		}
		keyID := req.KeyID
		if keyID == "" && req.KeyName != "" {
			var ids []string
			for _, k := range fake.SesterceKeys() {
				if k.Name == req.KeyName {
					ids = append(ids, k.ID)
				}
			}
			if len(ids) != 1 {
				return nil, fmt.Errorf("sesterce: %d keys named %q, want exactly 1 (or give key_id)", len(ids), req.KeyName)
			}
			keyID = ids[0]
		}
		if req.Address != "" || req.User != "" || req.Port != 0 {
			opts = append(opts, cloudtest.WithSSH(req.Address, cmp.Or(req.User, "ubuntu"), cmp.Or(req.Port, 22)))
		}
		return fake.LaunchSesterceInstance(req.Name, keyID, opts...), nil
	default:
		return nil, fmt.Errorf("provider %q: want gcore or sesterce", req.Provider)
	}
}

// decodeStrict reads a JSON body of at most 1 MiB; unknown fields are
// errors, so a typo is not silently ignored.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func nonNil(fs []cloudtest.Fault) []cloudtest.Fault {
	if fs == nil {
		return []cloudtest.Fault{}
	}
	return fs
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
