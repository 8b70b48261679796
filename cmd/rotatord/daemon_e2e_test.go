package main_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
)

func TestDaemon_RotatesOnSchedule(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	p := policyYAML{Name: "fast", Schedule: "@every 2s", MaxAge: "4s", RotateBefore: "3s", Grace: "1s"}
	e.writeConfig([]policyYAML{p}, "")
	d := e.startDaemon()
	// Due 1s after creation, checked every 2s: a new key every 2-4 s.
	eventually(t, 15*time.Second, "three scheduled rotations", func() bool { return d.logs.count(`"msg":"rotated"`) >= 3 })
	eventually(t, 10*time.Second, "a retired key deleted by the sweep", func() bool {
		return d.logs.count(`"msg":"deleted retired key"`) >= 1
	})
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
	e.assertConverged(p, "after scheduled rotations")
}

func TestDaemon_SIGUSR1RotatesOncePerTriggerEvenDuringScheduledRun(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	ps := []policyYAML{{Name: "a", Schedule: "@every 2s", Grace: "10m"}, {Name: "b", Gcore: true, Schedule: "@every 2s", Grace: "10m"}}
	e.writeConfig(ps, "")
	// The first scheduled run (no key yet) uploads slowly: it is in flight
	// when SIGUSR1 arrives.
	e.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceCreate, Kind: cloudtest.FaultLatency, Delay: 1500 * time.Millisecond, Count: 1})
	d := e.startDaemon()
	eventually(t, 10*time.Second, "the scheduled rotation of a in flight", func() bool {
		st, err := control.NewClient(e.socket()).Status(context.Background())
		return err == nil && len(st.Policies) == 2 && st.Policies[0].InFlight
	})
	d.signal(syscall.SIGUSR1)
	eventually(t, 20*time.Second, "4 rotations (2 scheduled + 2 by signal)", func() bool { return d.logs.count(`"msg":"rotated"`) >= 4 })
	time.Sleep(4500 * time.Millisecond) // two more schedule ticks: keys are fresh, nothing may rotate
	if n := d.logs.count(`"msg":"rotated"`); n != 4 {
		t.Fatalf("%d rotations, want exactly 4: one per policy per trigger", n)
	}
	for _, p := range ps {
		if n := len(e.managed(p)); n != 2 {
			t.Errorf("%s: %d keys on the provider, want 2 (scheduled + signal)", p.Name, n)
		}
		e.assertConverged(p, "after SIGUSR1")
	}
}

func TestDaemon_SIGHUPReload(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	addr := freeAddr(t)
	e.writeConfig([]policyYAML{{Name: "keep"}, {Name: "drop", Gcore: true}}, "metrics: {listen: "+addr+"}\n")
	d := e.startDaemon()
	c := control.NewClient(e.socket())
	reloadGauge := func() string {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "rotatord_config_last_reload_successful ") {
				return strings.TrimPrefix(l, "rotatord_config_last_reload_successful ")
			}
		}
		return ""
	}
	names := func() string {
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, p := range st.Policies {
			n = append(n, p.Name)
		}
		return strings.Join(n, ",")
	}
	if got := names(); got != "keep,drop" {
		t.Fatalf("policies = %s", got)
	}
	good, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	// A broken file: the daemon keeps running on the old config and says why.
	broken := strings.Replace(string(good), `schedule: "@daily"`, `schedule: "* *"`, 1)
	if err := os.WriteFile(e.cfgPath, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	d.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the reload failure", func() bool {
		st, err := c.Status(context.Background())
		return err == nil && !st.LastReloadOK
	})
	st, _ := c.Status(context.Background())
	if !strings.Contains(st.LastReloadErr, "policies.yaml:") || !strings.Contains(st.LastReloadErr, `policy "keep": schedule`) {
		t.Errorf("reload error %q does not name file:line, policy and field", st.LastReloadErr)
	}
	if d.logs.count("reload failed; keeping the running config") != 1 {
		t.Error("the failed reload was not logged")
	}
	if got := names(); got != "keep,drop" {
		t.Fatalf("after a failed reload policies = %s, want the old ones", got)
	}
	if g := reloadGauge(); g != "0" {
		t.Errorf("rotatord_config_last_reload_successful = %q after a failed reload, want 0", g)
	}

	// A good file adds and removes policies without a restart.
	e.writeConfig([]policyYAML{{Name: "keep"}, {Name: "added", Gcore: true}}, "metrics: {listen: "+addr+"}\n")
	d.signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "the new policy set", func() bool { return names() == "keep,added" })
	if g := reloadGauge(); g != "1" {
		t.Errorf("rotatord_config_last_reload_successful = %q after a good reload, want 1", g)
	}
	st, _ = c.Status(context.Background())
	if !st.LastReloadOK {
		t.Errorf("last reload error still set after a good reload: %s", st.LastReloadErr)
	}
	if st.PID != d.cmd.Process.Pid {
		t.Fatal("the daemon restarted")
	}
}

func TestDaemon_SIGTERMFinishesTheStepInFlight(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	p := policyYAML{Name: "slow"}
	e.writeConfig([]policyYAML{p}, "")
	d := e.startDaemon()
	e.fake.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceCreate, Kind: cloudtest.FaultLatency, Delay: 1500 * time.Millisecond, Count: 1})
	go func() {
		_, _ = control.NewClient(e.socket()).Rotate(context.Background(), control.RotateRequest{Policies: []string{"slow"}})
	}()
	eventually(t, 10*time.Second, "the upload in flight", func() bool { return e.fake.Hanging() > 0 || d.logs.count("rotation planned") > 0 })
	time.Sleep(200 * time.Millisecond)
	d.signal(syscall.SIGTERM)
	if code := d.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
	if d.logs.count(`"msg":"rotated"`) != 1 {
		t.Fatal("the rotation in flight did not complete before exit")
	}
	e.assertConverged(p, "after SIGTERM")
	if _, err := os.Stat(e.socket()); !os.IsNotExist(err) {
		t.Errorf("control socket left behind after a clean stop: %v", err)
	}
}

func TestDaemon_ControlSocket(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	ps := []policyYAML{{Name: "gpu"}, {Name: "infer", Gcore: true}}
	e.writeConfig(ps, "")
	d := e.startDaemon("ROTATORD_LOG_LEVEL=debug") // the leak check below reads every line
	fi, err := os.Stat(e.socket())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket mode %v, want a 0600 socket", fi.Mode())
	}
	out, stderr, code := e.rotatord(nil, "rotate", "-config", e.cfgPath, "-policy", "gpu")
	if code != 0 || !strings.HasPrefix(out, "gpu: rotated: gpu-") {
		t.Fatalf("rotate via socket: exit %d, out %q, err %q", code, out, stderr)
	}
	// The daemon holds the state lock: the rotation went through the socket.
	out, _, code = e.rotatord(nil, "status", "-config", e.cfgPath)
	if code != 0 {
		t.Fatalf("status: exit %d", code)
	}
	for _, want := range []string{"POLICY", "gpu ", "sesterce-e2e", "infer", "rotated"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	e.assertConverged(ps[0], "after rotate via socket")
	if _, stderr, code := e.rotatord(nil, "rotate", "-config", e.cfgPath, "-policy", "nope"); code == 0 || !strings.Contains(stderr, `unknown policy "nope"`) {
		t.Errorf("rotate of an unknown policy: exit %d, %q", code, stderr)
	}

	// plan works while the daemon holds the state file: the daemon plans.
	planOut, stderr, code := e.rotatord(nil, "plan", "-config", e.cfgPath)
	if code != 0 || !strings.Contains(planOut, "policy gpu (sesterce-e2e): key is fresh") || !strings.Contains(planOut, "policy infer (gcore-e2e): no managed key yet") {
		t.Errorf("plan through the socket: exit %d\n%s%s", code, planOut, stderr)
	}

	// Nothing secret crosses the socket or reaches the daemon's log.
	statusJSON, _, _ := e.rotatord(nil, "status", "-config", e.cfgPath, "-json")
	reportJSON, _, _ := e.rotatord(nil, "report", "-config", e.cfgPath, "-format", "json")
	data, _, err := e.store.Get(context.Background(), e.prefix+"/gpu")
	if err != nil {
		t.Fatal(err)
	}
	pemBody := strings.Split(data["private_key"], "\n")[1]
	for name, text := range map[string]string{"status": statusJSON, "report": reportJSON, "daemon log": d.logs.String()} {
		for _, secret := range []string{"PRIVATE KEY", pemBody, vaultSrv.RootToken.Reveal(), cloudtest.DefaultSesterceAPIKey.Reveal(), cloudtest.DefaultGcoreAPIKey.Reveal()} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains a secret (%.12s...)", name, secret)
			}
		}
	}
	if !strings.Contains(d.logs.String(), `"level":"DEBUG"`) {
		t.Error("the daemon did not log at debug level; the leak check saw too little")
	}
	if !strings.Contains(reportJSON, `"summary"`) || !strings.Contains(statusJSON, `"policies"`) {
		t.Errorf("status/report JSON over the socket look wrong:\n%s\n%s", statusJSON, reportJSON)
	}
}

func TestDaemon_MetricsShowEveryManagedKey(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	addr := freeAddr(t)
	ps := []policyYAML{{Name: "gpu"}, {Name: "infer", Gcore: true}}
	e.writeConfig(ps, "metrics: {listen: "+addr+"}\n")
	e.startDaemon()
	if _, stderr, code := e.rotatord(nil, "rotate", "-config", e.cfgPath, "-all"); code != 0 {
		t.Fatalf("rotate: %s", stderr)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, p := range ps {
		k := e.assertConverged(p, "metrics")
		want := `rotatord_key_age_seconds{key_id="` + k.ID + `",policy="` + p.Name + `"`
		if !strings.Contains(text, want) {
			t.Errorf("no age gauge for %s's key %s in /metrics", p.Name, k.ID)
		}
		if !strings.Contains(text, `rotatord_rotations_total{policy="`+p.Name+`",result="rotated"} 1`) {
			t.Errorf("no rotation counter for %s", p.Name)
		}
	}
	for _, want := range []string{"rotatord_config_last_reload_successful 1", "rotatord_keys{status=\"ok\"} 2", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(text, "PRIVATE KEY") || strings.Contains(text, vaultSrv.RootToken.Reveal()) {
		t.Error("/metrics leaks a secret")
	}
	hz, err := http.Get("http://" + addr + "/healthz")
	if err != nil || hz.StatusCode != 200 {
		t.Fatalf("/healthz: %v %v", err, hz)
	}
	hz.Body.Close()
}

func TestDaemon_StateFileIsPrivate(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	e.writeConfig([]policyYAML{{Name: "gpu"}}, "")
	if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
		t.Fatal(stderr)
	}
	fi, err := os.Stat(e.statePath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	db, err := bolt.OpenStore(e.statePath(), bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
}

func TestDaemon_MissingVaultMountIsAConfigError(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	e.writeConfig([]policyYAML{{Name: "gpu"}}, "")
	cfg, _ := os.ReadFile(e.cfgPath)
	if err := os.WriteFile(e.cfgPath, []byte(strings.Replace(string(cfg), "mount: secret", "mount: nosuch", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once")
	if code != 1 || !strings.Contains(stderr, "not a KV v2 mount") {
		t.Fatalf("run with a missing mount: exit %d, stderr %q; want exit 1 naming the mount problem", code, stderr)
	}
	if len(e.fake.SesterceKeys()) != 0 {
		t.Fatal("keys were uploaded although Vault could not store them")
	}
}

func TestReport_FailOnOverdueExits3(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	e.fake.AddSesterceKey("alice-laptop", mustPublicKey(t), false)
	e.writeConfig([]policyYAML{{Name: "gpu", MaxAge: "3s", RotateBefore: "1s", Grace: "1s"}, {Name: "infer", Gcore: true}}, "")
	if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
		t.Fatal(stderr)
	}
	out, stderr, code := e.rotatord(nil, "report", "-config", e.cfgPath, "-fail-on", "overdue")
	if code != 0 {
		t.Fatalf("fresh keys: report exit %d\n%s%s", code, out, stderr)
	}
	for _, want := range []string{"gpu-", "infer-", "alice-laptop", "unmanaged", "ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	time.Sleep(3100 * time.Millisecond) // gpu's key passes its 3s max_age
	out, _, code = e.rotatord(nil, "report", "-config", e.cfgPath, "-format", "csv", "-fail-on", "overdue")
	if code != 3 {
		t.Fatalf("overdue key: report exit %d, want 3\n%s", code, out)
	}
	if !strings.Contains(out, ",overdue,") {
		t.Errorf("csv report does not mark the key overdue:\n%s", out)
	}
}

func TestDaemon_NoSlackQueuesNothing(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	e.writeConfig([]policyYAML{{Name: "gpu"}}, "")
	for i := 0; i < 2; i++ {
		if _, stderr, code := e.rotatord(nil, "rotate", "-config", e.cfgPath, "-all"); code != 0 {
			t.Fatal(stderr)
		}
	}
	db, err := bolt.OpenStore(e.statePath(), bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx state.Tx) error {
		n, err := tx.OutboxLen()
		if n != 0 {
			t.Errorf("%d notifications queued with no Slack configured; the outbox would grow forever", n)
		}
		audits := 0
		_ = tx.ForEachAudit(func(state.AuditEntry) error { audits++; return nil })
		if audits < 2 {
			t.Errorf("%d audit records, want the rotations audited", audits)
		}
		return err
	})
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestDaemon_StartsWhileVaultIsDown(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	e.writeConfig([]policyYAML{{Name: "gpu"}}, "")
	dead := "http://" + freeAddr(t) // nothing listens there
	cfg, _ := os.ReadFile(e.cfgPath)
	if err := os.WriteFile(e.cfgPath, []byte(strings.Replace(string(cfg), vaultSrv.Addr, dead, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := e.startDaemon()
	if !strings.Contains(d.logs.String(), "vault is not reachable; starting anyway") {
		t.Errorf("no warning that Vault is down:\n%s", d.logs.String())
	}
	out, _, code := e.rotatord(nil, "rotate", "-config", e.cfgPath, "-policy", "gpu")
	if code != 1 || !strings.Contains(out, "gpu: FAILED") || !strings.Contains(out, "vault unreachable") {
		t.Fatalf("rotate with Vault down: exit %d, %q; want a failure that says Vault is unreachable", code, out)
	}
	if n := len(e.fake.SesterceKeys()); n != 0 {
		t.Fatalf("%d keys uploaded while Vault was down, want 0", n)
	}
	if _, _, code := e.rotatord(nil, "status", "-config", e.cfgPath); code != 0 {
		t.Fatal("status does not work while Vault is down")
	}
}
