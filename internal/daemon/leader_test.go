package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/daemon"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/etcdtest"
	"github.com/rotatord/rotatord/policy"
)

// etcdConfig is e.config with the state on etcd and the socket named
// after the process, so that two apps of one test do not share it.
func (e *env) etcdConfig(c *etcdtest.Cluster, proc string, ps ...policySpec) *policy.Config {
	yaml := e.config("", ps...)
	yaml = strings.Replace(yaml, fmt.Sprintf("state: {path: %s}", filepath.Join(e.dir, "state.db")),
		fmt.Sprintf("state: {backend: etcd, etcd: {endpoints: [%s], prefix: /daemon-test/, lease_ttl: 2s}}", strings.Join(c.Endpoints(), ", ")), 1)
	yaml = strings.Replace(yaml, filepath.Join(e.dir, "ctl.sock"), filepath.Join(e.dir, proc+".sock"), 1)
	return e.parse(yaml)
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	t.Fatalf("%s: not within %s", what, within)
	return 0
}

func role(t *testing.T, app *daemon.App) control.Status {
	t.Helper()
	st, err := app.Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// TestApp_EtcdLeaderAndStandby: two rotatord processes on one etcd. One
// leads and rotates; the other reports itself a standby, names the
// leader, and refuses to rotate, naming the leader. When the leader stops,
// the standby takes over within the lease and goes on rotating.
func TestApp_EtcdLeaderAndStandby(t *testing.T) {
	c := etcdtest.Start(t, 3)
	e := newEnv(t)
	fast := policySpec{"gpu", "@every 1s", "3s", "2s", "1s"}
	ctx := context.Background()
	apps := map[string]*daemon.App{}
	for _, name := range []string{"a", "b"} {
		cfg := e.etcdConfig(c, name, fast)
		app := e.newApp(cfg, func(string) (*policy.Config, error) { return cfg, nil })
		if err := app.Start(ctx); err != nil {
			t.Fatal(err)
		}
		apps[name] = app
		if name == "a" {
			waitUntil(t, 10*time.Second, "a leads", func() bool { return role(t, app).Role == control.RoleLeader })
		}
	}
	stopped := map[string]bool{}
	t.Cleanup(func() {
		for n, app := range apps {
			if !stopped[n] {
				_ = app.Stop(context.Background())
			}
		}
	})
	a, b := apps["a"], apps["b"]
	st := role(t, b)
	if st.Role != control.RoleStandby || st.Leader == nil || st.Leader.Address != "unix:"+filepath.Join(e.dir, "a.sock") {
		t.Fatalf("b's status: role %q, leader %v; want standby naming a", st.Role, st.Leader)
	}
	if st := role(t, a); st.Leader == nil || st.Leader.Address != "unix:"+filepath.Join(e.dir, "a.sock") {
		t.Errorf("a's status names leader %v", st.Leader)
	}
	_, err := b.Rotate(ctx, control.RotateRequest{Policies: []string{"gpu"}})
	if !errors.Is(err, daemon.ErrStandby) || !strings.Contains(err.Error(), "a.sock") {
		t.Fatalf("rotate on the standby = %v, want ErrStandby naming the leader", err)
	}
	res, err := b.Reload(ctx)
	if err != nil || res.Role != control.RoleStandby || res.Leader == nil {
		t.Errorf("reload on the standby = %+v, %v; want it done, naming the leader", res, err)
	}

	// The leader rotates on schedule.
	start := time.Now()
	waitUntil(t, 15*time.Second, "the leader rotates twice", func() bool { return rotationsAfter(t, a.Store(), "gpu", start) >= 2 })

	// a stops (resigning): b leads at once and rotates on.
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped["a"] = true
	took := waitUntil(t, 3*time.Second, "b leads", func() bool { return role(t, b).Role == control.RoleLeader })
	t.Logf("b leads %s after a stopped", took)
	handed := time.Now()
	waitUntil(t, 15*time.Second, "b rotates", func() bool { return rotationsAfter(t, b.Store(), "gpu", handed) >= 1 })
	if _, err := b.Rotate(ctx, control.RotateRequest{Policies: []string{"gpu"}}); err != nil {
		t.Errorf("rotate on the new leader: %v", err)
	}

	// Every rotation ended, and the policy has exactly one active key.
	_ = b.Store().View(func(tx state.Tx) error {
		recs, err := tx.Keys("gpu")
		active := 0
		for _, r := range recs {
			if r.Status == state.KeyActive {
				active++
			}
		}
		if active != 1 {
			t.Errorf("%d active keys, want 1", active)
		}
		return err
	})
	logs := e.logs.String()
	for _, want := range []string{"leadership lost", "stopped leading"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log does not say %q", want)
		}
	}
}

// TestApp_EtcdAuth: with etcd's authentication on, the daemon logs in
// with the user named by username_env and the password in password_file,
// is confined to its prefix, and leads. A wrong password fails New with
// an error that names etcd and never the password.
func TestApp_EtcdAuth(t *testing.T) {
	c := etcdtest.Start(t, 1)
	admin := c.Client(t)
	ctx := context.Background()
	const prefix, password = "/auth-test/", "s3cret-etcd-pw"
	steps := []func() error{
		func() error { _, err := admin.RoleAdd(ctx, "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "rotatord"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "rotatord", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "rotatord", password); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "rotatord", "rotatord"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("etcd auth set-up step %d: %v", i, err)
		}
	}
	e := newEnv(t)
	pwFile := filepath.Join(e.dir, "etcd.password")
	t.Setenv("ETCD_TEST_USER", "rotatord")
	yaml := func(pw string) *policy.Config {
		if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := e.config("", policySpec{"gpu", "@daily", "30d", "7d", "1d"})
		cfg = strings.Replace(cfg, fmt.Sprintf("state: {path: %s}", filepath.Join(e.dir, "state.db")),
			fmt.Sprintf("state: {backend: etcd, etcd: {endpoints: [%s], prefix: %s, username_env: ETCD_TEST_USER, password_file: %s, lease_ttl: 2s}}",
				c.Members[0].ClientURL, prefix, pwFile), 1)
		return e.parse(cfg)
	}

	_, err := daemon.New(ctx, yaml("wrong-password"), daemon.Options{Version: "test", Keys: e.keys})
	if err == nil || !strings.Contains(err.Error(), "etcd") || strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("New with a wrong etcd password = %v; want an error naming etcd, without the password", err)
	}

	t.Logf("wrong password: %v", err)
	cfg := yaml(password)
	app := e.newApp(cfg, func(string) (*policy.Config, error) { return cfg, nil })
	if err := app.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer app.Stop(context.Background())
	waitUntil(t, 10*time.Second, "the app leads", func() bool { return role(t, app).Role == control.RoleLeader })
	if _, err := app.Rotate(ctx, control.RotateRequest{Policies: []string{"gpu"}}); err != nil {
		t.Fatalf("rotate with etcd auth: %v", err)
	}
	if strings.Contains(e.logs.String(), password) {
		t.Error("the etcd password is in the log")
	}
}
