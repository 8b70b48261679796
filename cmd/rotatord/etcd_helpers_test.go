package main_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/etcd"
	"github.com/rotatord/rotatord/internal/state/etcdtest"
)

// The etcd end-to-end tests run several real rotatord processes on one
// real etcd cluster. Each process reaches the providers and Vault through
// a recording proxy of its own, so that a test can say which process made
// which call.

const etcdPrefix = "/rotatord-e2e/"

// fleet is several rotatord processes sharing state on one etcd.
type fleet struct {
	t     testing.TB
	e     *env
	etcd  *etcdtest.Cluster
	cli   *clientv3.Client
	store state.Store // read-only view of the shared state
	procs []*proc
	ttl   time.Duration
	env   []string // extra environment of every process
}

// proc is one rotatord process of a fleet, restartable.
type proc struct {
	f       *fleet
	name    string
	cfg     string
	sock    string
	prov    *recorder // its provider calls
	vault   *recorder // its Vault calls
	metrics string    // its metrics.listen address
	d       *daemon
	pid     int
}

// recorder is a reverse proxy that logs every request it forwards.
type recorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	log []recorded
}

type recorded struct {
	At     time.Time
	Method string
	Path   string
	Name   string // the key name of a create
	Status int    // the upstream's answer; 502 when it gave none
}

// statusWriter keeps the status the proxy answered with, even when the
// caller is gone (killed) and the answer goes nowhere.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

var keyName = regexp.MustCompile(`"name"\s*:\s*"([^"]+)"`)

func newRecorder(t testing.TB, target string) *recorder {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	rp := httputil.NewSingleHostReverseProxy(u)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := recorded{At: time.Now(), Method: req.Method, Path: req.URL.Path}
		if req.Method == http.MethodPost && req.Body != nil {
			body, _ := io.ReadAll(req.Body)
			req.Body = io.NopCloser(strings.NewReader(string(body)))
			if m := keyName.FindSubmatch(body); m != nil {
				rec.Name = string(m[1])
			}
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rp.ServeHTTP(sw, req)
		rec.Status = sw.status
		r.mu.Lock()
		r.log = append(r.log, rec)
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) URL() string { return r.srv.URL }

// since returns the requests received at or after t0 that match keep.
func (r *recorder) since(t0 time.Time, keep func(recorded) bool) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, rec := range r.log {
		if !rec.At.Before(t0) && (keep == nil || keep(rec)) {
			out = append(out, rec)
		}
	}
	return out
}

// newFleet starts an etcd cluster and writes one config per process,
// each with its own socket and proxies; none is started.
func newFleet(t testing.TB, e *env, n int, ps []policyYAML, ttl time.Duration) *fleet {
	t.Helper()
	return newFleetOn(t, e, etcdtest.Start(t, 3), n, ps, ttl)
}

func newFleetOn(t testing.TB, e *env, c *etcdtest.Cluster, n int, ps []policyYAML, ttl time.Duration) *fleet {
	t.Helper()
	f := &fleet{t: t, e: e, etcd: c, ttl: ttl}
	f.cli = f.etcd.Client(t)
	e.writeConfig(ps, "")
	base, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	stateLine := fmt.Sprintf("state: {path: %s}", e.statePath())
	etcdState := fmt.Sprintf("state:\n  backend: etcd\n  etcd: {endpoints: [%s], prefix: %s, lease_ttl: %s}",
		strings.Join(f.etcd.Endpoints(), ", "), etcdPrefix, ttl)
	for i := range n {
		p := &proc{f: f, name: fmt.Sprintf("p%d", i)}
		p.sock = filepath.Join(e.dir, p.name+".sock")
		p.prov = newRecorder(t, e.fake.URL())
		p.vault = newRecorder(t, vaultSrv.Addr)
		cfg := strings.Replace(string(base), stateLine, etcdState, 1)
		p.metrics = fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t))
		cfg = strings.Replace(cfg, fmt.Sprintf("control: {socket: %s}", e.socket()),
			fmt.Sprintf("control: {socket: %s}\nmetrics: {listen: %q}", p.sock, p.metrics), 1)
		cfg = strings.ReplaceAll(cfg, e.fake.URL(), p.prov.URL())
		cfg = strings.Replace(cfg, "address: "+vaultSrv.Addr, "address: "+p.vault.URL(), 1)
		if cfg == string(base) || !strings.Contains(cfg, "backend: etcd") {
			t.Fatalf("config rewrite failed:\n%s", cfg)
		}
		p.cfg = filepath.Join(e.dir, p.name+".yaml")
		if err := os.WriteFile(p.cfg, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		f.procs = append(f.procs, p)
	}
	b, err := etcd.New(f.cli, etcd.Options{Prefix: etcdPrefix, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f.store = &lazyStore{b: b}
	return f
}

// lazyStore opens the typed state over b at its first use: the schema is
// written by the first rotatord that starts.
type lazyStore struct {
	b  state.Backend
	mu sync.Mutex
	s  state.Store
}

func (l *lazyStore) open() (state.Store, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.s == nil {
		s, err := state.Open(l.b)
		if err != nil {
			return nil, err
		}
		l.s = s
	}
	return l.s, nil
}

func (l *lazyStore) View(fn func(state.Tx) error) error {
	s, err := l.open()
	if err != nil {
		return err
	}
	return s.View(fn)
}

func (l *lazyStore) Update(func(state.Tx) error) error { return state.ErrReadOnly }
func (l *lazyStore) Close() error                      { return nil }

// start starts p's daemon and waits for its socket.
func (p *proc) start() {
	t := p.f.t
	t.Helper()
	_ = os.Remove(p.sock)
	d := &daemon{t: t, logs: &lineBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(rotatordBin, "run", "-config", p.cfg)
	d.cmd.Env = p.f.e.environ(p.f.env...)
	d.cmd.Stderr, d.cmd.Stdout = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	p.d, p.pid = d, d.cmd.Process.Pid
	name := p.name
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Signal(syscall.SIGCONT)
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("%s (pid %d) log (tail):\n%s", name, d.cmd.Process.Pid, tailString(d.logs.String(), 4000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-d.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := control.Wait(ctx, p.sock); err != nil {
		t.Fatalf("%s did not answer on its socket: %v\n%s", p.name, err, d.logs.String())
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (p *proc) alive() bool {
	if p.d == nil {
		return false
	}
	select {
	case <-p.d.done:
		return false
	default:
		return true
	}
}

// kill SIGKILLs p and waits for it to die.
func (p *proc) kill() {
	_ = p.d.cmd.Process.Kill()
	<-p.d.done
}

// status asks p over its socket, briefly.
func (p *proc) status() (control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return control.NewClient(p.sock).Status(ctx)
}

// leads asks p whether it leads now.
func (p *proc) leads() bool {
	st, err := p.status()
	return err == nil && st.Role == control.RoleLeader
}

// leader returns the process that reports itself the leader, if exactly
// one of the given ones does.
func (f *fleet) leader(among []*proc) *proc {
	var found *proc
	for _, p := range among {
		if !p.alive() {
			continue
		}
		st, err := p.status()
		if err == nil && st.Role == control.RoleLeader {
			if found != nil {
				// The questions are asked one after the other: the lead
				// may have moved in between. Ask both again; two that
				// still both lead are two leaders.
				switch a, b := found.leads(), p.leads(); {
				case a && b:
					f.t.Fatalf("two processes report themselves leader: %s and %s", found.name, p.name)
				case a:
					continue
				case !b:
					found = nil // neither leads now: the caller polls again
					continue
				}
			}
			found = p
		}
	}
	return found
}

// waitLeader polls until one of among leads and returns it with how long
// that took.
func (f *fleet) waitLeader(among []*proc, within time.Duration) (*proc, time.Duration) {
	f.t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if p := f.leader(among); p != nil {
			return p, time.Since(start)
		}
		time.Sleep(25 * time.Millisecond) // poll interval
	}
	f.t.Fatalf("no leader among %d processes within %s", len(among), within)
	return nil, 0
}

func (f *fleet) others(p *proc) []*proc {
	var out []*proc
	for _, q := range f.procs {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// openRotations lists the journal's open rotations.
func (f *fleet) openRotations() []state.Rotation {
	f.t.Helper()
	var open []state.Rotation
	if err := f.store.View(func(tx state.Tx) (err error) { open, err = tx.OpenRotations(); return err }); err != nil {
		f.t.Fatalf("read open rotations: %v", err)
	}
	return open
}

// commitWriters returns who committed each state Update after revision
// rev, from etcd's history of the commit key.
func (f *fleet) commitWriters(rev int64) []string {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cur, err := f.cli.Get(ctx, etcdPrefix+"commit")
	if err != nil {
		f.t.Fatal(err)
	}
	if cur.Header.Revision <= rev {
		return nil
	}
	wch := f.cli.Watch(ctx, etcdPrefix+"commit", clientv3.WithRev(rev+1))
	var out []string
	for wr := range wch {
		if err := wr.Err(); err != nil {
			f.t.Fatalf("watch commit history: %v", err)
		}
		for _, ev := range wr.Events {
			v := string(ev.Kv.Value)
			if i := strings.IndexByte(v, ' '); i >= 0 {
				v = v[i+1:]
			}
			out = append(out, v)
			if ev.Kv.ModRevision >= cur.Header.Revision {
				return out
			}
		}
		if wr.Header.Revision >= cur.Header.Revision && len(wr.Events) == 0 {
			return out
		}
	}
	return out
}

// revision is etcd's current revision.
func (f *fleet) revision() int64 {
	f.t.Helper()
	resp, err := f.cli.Get(context.Background(), etcdPrefix+"commit")
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.Header.Revision
}

// leaderValue is what the leading process published in etcd.
func leaderName(pid int) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", host, pid)
}

// metric returns the value of an unlabelled metric p serves, or "".
func (p *proc) metric(name string) string {
	resp, err := http.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}
