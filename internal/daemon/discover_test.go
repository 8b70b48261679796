package daemon_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/hosts/sshdtest"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
)

// TestApp_DiscoverConvergesListedMachines: with hosts.discover and no
// static target, the machines the inventory attributed to the policy (two
// real sshd hosts, listed by Sesterce with their ip, sshUser and sshPort)
// get the new key after a rotation, through the daemon's default host
// source: the stored listing.
func TestApp_DiscoverConvergesListedMachines(t *testing.T) {
	srv := sshdtest.Start(t, 2)
	e := newEnv(t)
	var kh strings.Builder
	for _, h := range srv.Hosts() {
		kh.WriteString(h.KnownHostsLine() + "\n")
	}
	khPath := filepath.Join(e.dir, "known_hosts")
	if err := os.WriteFile(khPath, []byte(kh.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := e.config("", policySpec{"gpu", "@daily", "30d", "1d", "0s"}) +
		fmt.Sprintf("    hosts: {discover: true, known_hosts: %s, timeout: 20s}\n", khPath)
	yaml = strings.Replace(yaml, "vault_path: ssh/test/gpu}\n    hosts:", "vault_path: ssh/test/gpu,\n    hosts:", 1)
	yaml = strings.Replace(yaml, "timeout: 20s}\n", "timeout: 20s}}\n", 1)
	cfg := e.parse(yaml)
	app := e.newApp(cfg, nil)
	t.Cleanup(func() { _ = app.Close() })
	ctx := context.Background()

	// The first key; machines launched with it (cloud-init put it in
	// their authorized_keys); a run lists them.
	app.RunOnce(ctx)
	first := currentKey(t, app.Store(), "gpu")
	for i, h := range srv.Hosts() {
		h.WriteAuthorizedKeys(t, []byte(first.PublicKey+"\n"), 0o600)
		e.fake.LaunchSesterceInstance(fmt.Sprintf("box-%d", i), first.KeyID, cloudtest.WithSSH("127.0.0.1", h.User, h.Port))
	}
	app.RunOnce(ctx)

	if _, err := app.RotatePolicies(ctx, []string{"gpu"}, false, rotate.TriggerSocket); err != nil {
		t.Fatal(err)
	}
	cur := currentKey(t, app.Store(), "gpu")
	if cur.KeyID == first.KeyID {
		t.Fatal("not rotated")
	}
	for i, h := range srv.Hosts() {
		data := string(h.ReadAuthorizedKeys(t))
		if !strings.Contains(data, strings.TrimSpace(cur.PublicKey)) {
			t.Errorf("host %d (discovered from the inventory) lacks the new key:\n%s\n%s", i, data, e.logs.String())
		}
	}

	// The grace period ends: the first key leaves the provider and the
	// hosts. The machines were provisioned with it, but it no longer
	// opens them: they are not exposed.
	app.RunOnce(ctx)
	for i, h := range srv.Hosts() {
		if data := string(h.ReadAuthorizedKeys(t)); strings.Contains(data, strings.TrimSpace(first.PublicKey)) {
			t.Fatalf("host %d still trusts the first key after its grace period:\n%s\n%s", i, data, e.logs.String())
		}
	}
	rep, err := app.BuildReport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Exposed() || len(rep.Instances) != 2 {
		t.Errorf("machines whose old key host rotation removed: exposed %v, instances %+v", rep.Exposed(), rep.Instances)
	}
	for _, in := range rep.Instances {
		if in.KeyStatus != "current" || in.KeyID != first.KeyID {
			t.Errorf("machine %s provisioned with %s: key status %s, want current (the key was replaced on it)", in.Name, in.KeyID, in.KeyStatus)
		}
	}
}

func currentKey(t *testing.T, st state.Store, name string) state.KeyRecord {
	t.Helper()
	var cur state.KeyRecord
	if err := st.View(func(tx state.Tx) error {
		recs, err := tx.Keys(name)
		cur, _ = state.Current(recs)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return cur
}
