package main_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/etcdtest"
)

const fleetTTL = 2 * time.Second

var (
	maxAge   = regexp.MustCompile(`max_age: \w+`)
	leaseTTL = regexp.MustCompile(`lease_ttl: \w+`)
)

// fleetPolicies are n policies that each come due every 15 s: one
// Sesterce policy owns the account's default key, the others alternate
// between Gcore and Sesterce without the default.
func fleetPolicies(n int) []policyYAML {
	ps := make([]policyYAML, n)
	for i := range ps {
		ps[i] = policyYAML{Name: fmt.Sprintf("pol-%03d", i), Schedule: "@every 1s", MaxAge: "40s", RotateBefore: "25s", Grace: "2s",
			Gcore: i%2 == 0 && i > 0, NoDefault: i%2 == 1}
	}
	return ps
}

// TestEtcd_Failover: three rotatord processes on one etcd, 100 policies
// rotating. The leader is SIGKILLed in the middle of rotations 20 times
// and restarted each time. Each time a standby leads within lease_ttl +
// 5 s and finishes every rotation the dead leader left open; no key name
// is ever uploaded twice and no policy has two rotations open at once; at
// the end every policy holds exactly one active key whose private half is
// at its Vault path, with no orphan on the provider past the grace period.
func TestEtcd_Failover(t *testing.T) {
	kills := 20
	if testing.Short() {
		kills = 3
	}
	e := newEnv(t, cloudtest.Options{Latency: 10 * time.Millisecond})
	ps := fleetPolicies(100)
	f := newFleet(t, e, 3, ps, fleetTTL)
	for _, p := range f.procs {
		p.start()
	}
	byName := map[string]policyYAML{}
	for _, p := range ps {
		byName[p.Name] = p
	}
	var failovers []time.Duration
	resumedTotal := 0
	for i := range kills {
		// Kill the leader in the middle of rotations: some are open in the
		// journal, and it still leads (asked just before the kill).
		var old *proc
		var open []state.Rotation
		deadline := time.Now().Add(30 * time.Second)
		for old == nil || len(open) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: no leader with a rotation in flight within 30s", i)
			}
			open, old = f.openRotations(), nil
			if len(open) > 0 {
				old = f.leader(f.procs)
			}
			if old == nil {
				time.Sleep(5 * time.Millisecond) // poll interval
			}
		}
		old.kill()
		open = f.openRotations() // what the dead leader left
		killed := time.Now()
		next, _ := f.waitLeader(f.others(old), fleetTTL+5*time.Second)
		took := time.Since(killed)
		failovers = append(failovers, took)
		old.start()
		// The new leader finishes every rotation the old one left open.
		for _, r := range open {
			deadline := time.Now().Add(30 * time.Second)
			for {
				var cur state.Rotation
				_ = f.store.View(func(tx state.Tx) (err error) { cur, _, err = tx.Rotation(r.ID); return err })
				if cur.Step.Terminal() {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("kill %d: rotation %s of %s left open at step %s was not resumed within 30s", i, r.ID, r.Policy, cur.Step)
				}
				time.Sleep(20 * time.Millisecond) // poll interval
			}
			e.assertPrivateHalvesInVault(byName[r.Policy], fmt.Sprintf("kill %d", i))
		}
		resumedTotal += len(open)
		t.Logf("kill %d: %s died with %d rotation(s) open; %s led after %s", i, old.name, len(open), next.name, took.Round(time.Millisecond))
	}
	slices.Sort(failovers)
	median, maxFO := failovers[len(failovers)/2], failovers[len(failovers)-1]
	t.Logf("FIGURE failover over %d SIGKILLs (lease_ttl %s): median %s, max %s; %d open rotations resumed",
		kills, fleetTTL, median.Round(time.Millisecond), maxFO.Round(time.Millisecond), resumedTotal)
	if maxFO > fleetTTL+5*time.Second {
		t.Errorf("slowest failover %s, want within lease_ttl + 5s", maxFO)
	}
	if resumedTotal == 0 {
		t.Error("no kill left a rotation open: the test did not kill mid-rotation")
	}

	// Stop the fleet gracefully, then converge with one-shot runs (a
	// long max_age: nothing new comes due) and check DESIGN §3.
	for _, p := range f.procs {
		p.d.signal(syscall.SIGTERM)
	}
	for _, p := range f.procs {
		if code := p.d.wait(30 * time.Second); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", p.name, code)
		}
	}
	for _, p := range f.procs {
		if n := p.d.logs.count("leadership lost") - p.d.logs.count("shutting down"); n > 0 {
			t.Logf("%s (last run) lost leadership %d time(s) besides the kills; last reason: %s", p.name, n, lastLine(p.d.logs.String(), "leadership lost"))
		}
	}
	f.assertNoDuplicateUploads()
	f.assertNoOverlappingRotations(ps)
	f.converge(ps)
}

// assertNoDuplicateUploads: no key name was created twice, by any process:
// one trigger, one upload.
func (f *fleet) assertNoDuplicateUploads() {
	f.t.Helper()
	seen := map[string]string{}
	for _, p := range f.procs {
		// A create cut off by a kill before the fake answered made no key;
		// the next leader rightly tries again.
		created := func(r recorded) bool { return r.Method == "POST" && r.Name != "" && r.Status/100 == 2 }
		for _, r := range p.prov.since(time.Time{}, created) {
			if other, dup := seen[r.Name]; dup {
				f.t.Errorf("key %s uploaded twice (by %s and %s)", r.Name, other, p.name)
			}
			seen[r.Name] = p.name
		}
	}
	if len(seen) == 0 {
		f.t.Error("no upload recorded: the recording proxies saw nothing")
	}
}

// assertNoOverlappingRotations: a policy never had two rotations open at
// once, across all the leaders it had.
func (f *fleet) assertNoOverlappingRotations(ps []policyYAML) {
	f.t.Helper()
	_ = f.store.View(func(tx state.Tx) error {
		for _, p := range ps {
			rs, err := tx.Rotations(p.Name, 0)
			if err != nil {
				return err
			}
			slices.SortFunc(rs, func(a, b state.Rotation) int { return a.StartedAt.Compare(b.StartedAt) })
			for i := 1; i < len(rs); i++ {
				if rs[i].StartedAt.Before(rs[i-1].UpdatedAt) && !rs[i-1].Step.Terminal() {
					f.t.Errorf("%s: rotation %s started while %s was open", p.Name, rs[i].ID, rs[i-1].ID)
				}
			}
		}
		return nil
	})
}

// converge runs rotatord -once until the retired keys are past their
// grace and swept, then checks every policy.
func (f *fleet) converge(ps []policyYAML) {
	f.t.Helper()
	cfg, err := os.ReadFile(f.procs[0].cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	final := maxAge.ReplaceAllString(string(cfg), "max_age: 24h")
	// The one-shot runs that converge are not what is under test: a long
	// lease keeps a loaded machine from deposing them mid-run.
	final = leaseTTL.ReplaceAllString(final, "lease_ttl: 10s")
	finalPath := f.procs[0].cfg + ".final.yaml"
	if err := os.WriteFile(finalPath, []byte(final), 0o600); err != nil {
		f.t.Fatal(err)
	}
	for range 3 {
		if _, stderr, code := f.e.rotatord(nil, "run", "-once", "-config", finalPath); code != 0 {
			f.t.Fatalf("run -once: exit %d\n%s", code, stderr)
		}
		time.Sleep(2100 * time.Millisecond) // the grace period of what the last run retired
	}
	if _, stderr, code := f.e.rotatord(nil, "run", "-once", "-config", finalPath); code != 0 {
		f.t.Fatalf("final sweep: exit %d\n%s", code, stderr)
	}
	if open := f.openRotations(); len(open) > 0 {
		f.t.Errorf("%d rotations still open after convergence: %+v", len(open), open[0])
	}
	for _, p := range ps {
		f.assertPolicyConverged(p)
	}
}

// assertPolicyConverged: exactly one active key record; on the provider
// exactly that key under the policy's names (no orphan past grace), the
// default where the policy makes it one; Vault holds its private half at
// <vault_path> and nothing pending.
func (f *fleet) assertPolicyConverged(p policyYAML) {
	f.t.Helper()
	e := f.e
	var active []state.KeyRecord
	_ = f.store.View(func(tx state.Tx) error {
		recs, err := tx.Keys(p.Name)
		for _, r := range recs {
			if r.Status == state.KeyActive {
				active = append(active, r)
			}
		}
		return err
	})
	if len(active) != 1 {
		f.t.Errorf("%s: %d active key records, want 1", p.Name, len(active))
		return
	}
	keys := e.managed(p)
	if len(keys) != 1 || keys[0].ID != active[0].KeyID {
		f.t.Errorf("%s: provider holds %d rotatord keys %+v, want only the active %s", p.Name, len(keys), keys, active[0].KeyID)
		return
	}
	current, _ := e.vaultFingerprints(p)
	if current != keys[0].Fingerprint {
		f.t.Errorf("%s: provider's active key %s, Vault holds %s", p.Name, keys[0].Fingerprint, current)
	}
	if _, _, err := e.store.Get(context.Background(), e.prefix+"/"+p.Name+"/pending"); err == nil {
		f.t.Errorf("%s: a pending key is left in Vault", p.Name)
	}
	if !p.Gcore && !p.NoDefault && !keys[0].Default {
		f.t.Errorf("%s: the active key is not the account's default", p.Name)
	}
}

func lastLine(logs, with string) string {
	lines := strings.Split(logs, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], with) {
			return lines[i]
		}
	}
	return ""
}

// fastPolicies come due two seconds after each rotation, so that
// rotations are always in flight.
func fastPolicies(n int) []policyYAML {
	ps := make([]policyYAML, n)
	for i := range ps {
		ps[i] = policyYAML{Name: fmt.Sprintf("fast-%02d", i), Schedule: "@every 1s", MaxAge: "6s", RotateBefore: "4s", Grace: "1s",
			Gcore: i%2 == 0 && i > 0, NoDefault: i%2 == 1}
	}
	return ps
}

// waitOpen polls until a rotation is open in the journal.
func (f *fleet) waitOpen(within time.Duration) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for len(f.openRotations()) == 0 {
		if time.Now().After(deadline) {
			f.t.Fatalf("no rotation in flight within %s", within)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// TestEtcd_Fencing: the leader is stopped (SIGSTOP) in the middle of
// rotations for longer than its lease; the standby takes over and
// rotates. When the old leader continues (SIGCONT) it finds out on its
// own clock that it no longer leads: it commits nothing to etcd (the
// commit key's history names only the new leader), sends no request to
// the provider and none to Vault's key paths, and says why it stepped
// down. Afterwards every policy converges.
func TestEtcd_Fencing(t *testing.T) {
	e := newEnv(t, cloudtest.Options{Latency: 20 * time.Millisecond})
	ps := fastPolicies(20)
	f := newFleet(t, e, 2, ps, fleetTTL)
	old, next := f.procs[0], f.procs[1]
	old.start()
	f.waitLeader([]*proc{old}, 20*time.Second)
	next.start()
	f.waitOpen(30 * time.Second)
	if l := f.leader(f.procs); l != old {
		t.Fatalf("leader before the stop is %v, want %s", l, old.name)
	}
	old.d.signal(syscall.SIGSTOP)
	stopped := time.Now()
	f.waitLeader([]*proc{next}, fleetTTL+5*time.Second)
	t.Logf("%s leads %s after %s was stopped", next.name, time.Since(stopped).Round(time.Millisecond), old.name)
	// The new leader works: it creates keys (resuming what the old one
	// left, and rotating on schedule).
	eventually(t, 20*time.Second, "the new leader to create keys", func() bool {
		return len(next.prov.since(stopped, func(r recorded) bool { return r.Method == "POST" && r.Status/100 == 2 })) >= 3
	})
	// Well past the old leader's lease.
	if wait := time.Until(stopped.Add(fleetTTL + time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	rev := f.revision()
	cont := time.Now()
	old.d.signal(syscall.SIGCONT)
	eventually(t, 5*time.Second, "the old leader to step down", func() bool { return old.d.logs.count("leadership lost") > 0 })
	// Leave it time to misbehave: the new leader keeps rotating meanwhile.
	time.Sleep(3 * time.Second)
	reason := lastLine(old.d.logs.String(), "leadership lost")
	t.Logf("old leader: %s", reason)
	if !strings.Contains(reason, "lease") {
		t.Errorf("the old leader's log does not say it lost its lease: %s", reason)
	}
	if calls := old.prov.since(cont, nil); len(calls) > 0 {
		t.Errorf("the deposed leader made %d provider call(s) after SIGCONT, first %+v", len(calls), calls[0])
	}
	keyPaths := func(r recorded) bool { return strings.Contains(r.Path, "/"+e.prefix+"/") }
	if calls := old.vault.since(cont, keyPaths); len(calls) > 0 {
		t.Errorf("the deposed leader made %d Vault key call(s) after SIGCONT, first %+v", len(calls), calls[0])
	}
	writers := f.commitWriters(rev)
	if len(writers) == 0 {
		t.Error("no commit at all after SIGCONT: the new leader stopped working?")
	}
	for _, w := range writers {
		if w != leaderName(next.pid) {
			t.Errorf("a state commit after SIGCONT by %q, want only the new leader %q", w, leaderName(next.pid))
			break
		}
	}
	t.Logf("after SIGCONT: %d state commits, all by the new leader; the old one made 0 provider and 0 Vault key calls", len(writers))
	if st, err := old.status(); err != nil || st.Role != "standby" || st.Leader == nil || !strings.Contains(st.Leader.Name, fmt.Sprint(next.pid)) {
		t.Errorf("old leader's status: role %q leader %v (%v); want standby naming %s", st.Role, st.Leader, err, next.name)
	}
	for _, p := range f.procs {
		p.d.signal(syscall.SIGTERM)
		p.d.wait(30 * time.Second)
	}
	f.assertNoDuplicateUploads()
	f.converge(ps)
}

// etcdLeader returns the member that is etcd's own raft leader.
func (f *fleet) etcdLeader() *etcdtest.Member {
	f.t.Helper()
	for _, m := range f.etcd.Members {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := f.cli.Status(ctx, m.ClientURL)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return m
		}
	}
	f.t.Fatal("no etcd member leads")
	return nil
}

// creates counts the keys a process created since t0.
func (p *proc) creates(t0 time.Time) int {
	return len(p.prov.since(t0, func(r recorded) bool { return r.Method == "POST" && r.Status/100 == 2 }))
}

// TestEtcd_Faults: etcd itself fails under a running fleet. One member
// down (etcd's own raft leader) changes nothing: the rotatord leader
// keeps leading and rotating. Two members down (quorum lost): within
// lease_ttl the leader stops acting (no provider call after that) and
// says why. When quorum returns, a leader is elected again, the
// rotations left open are finished, and every policy converges.
func TestEtcd_Faults(t *testing.T) {
	e := newEnv(t, cloudtest.Options{Latency: 10 * time.Millisecond})
	ps := fastPolicies(10)
	// etcd elects a new raft leader within about one election timeout (1s
	// by default), and a lease must outlive that: 5s does, 2s may not.
	const ttl = 5 * time.Second
	f := newFleet(t, e, 2, ps, ttl)
	for _, p := range f.procs {
		p.start()
	}
	lead, _ := f.waitLeader(f.procs, 20*time.Second)
	f.waitOpen(30 * time.Second)

	// One member down: etcd's raft leader, the hardest one.
	lost := lead.d.logs.count("leadership lost")
	down := f.etcdLeader()
	down.Kill()
	killed := time.Now()
	eventually(t, 20*time.Second, "rotations to go on with one etcd member down", func() bool { return lead.creates(killed) >= 5 })
	time.Sleep(2 * ttl) // long enough for a lease to lapse, had it been hurt
	if n := lead.d.logs.count("leadership lost"); n != lost {
		t.Fatalf("the leader lost leadership with one etcd member down: %s", lastLine(lead.d.logs.String(), "leadership lost"))
	}
	if l := f.leader(f.procs); l != lead {
		t.Fatalf("leader changed from %s to %v with one etcd member down", lead.name, l)
	}
	t.Logf("one etcd member (the raft leader) down: %s kept leading, %d keys created meanwhile", lead.name, lead.creates(killed))
	f.etcd.Restart(t, down)
	f.etcd.WaitHealthy(t, 30*time.Second)

	// Quorum lost: two of three members down.
	f.waitOpen(30 * time.Second)
	var gone []*etcdtest.Member
	for _, m := range f.etcd.Members[:2] {
		m.Kill()
		gone = append(gone, m)
	}
	quorumLost := time.Now()
	eventually(t, ttl+2*time.Second, "the leader to step down without quorum", func() bool { return lead.d.logs.count("leadership lost") > lost })
	stepped := time.Since(quorumLost)
	t.Logf("quorum lost: %s stepped down after %s: %s", lead.name, stepped.Round(time.Millisecond), lastLine(lead.d.logs.String(), "leadership lost"))
	if stepped > ttl+500*time.Millisecond {
		t.Errorf("the leader stepped down %s after quorum was lost, want within lease_ttl (%s)", stepped, ttl)
	}
	time.Sleep(2 * ttl)
	for _, p := range f.procs {
		if calls := p.prov.since(quorumLost.Add(ttl), nil); len(calls) > 0 {
			t.Errorf("%s made %d provider call(s) more than lease_ttl after quorum was lost, first %+v", p.name, len(calls), calls[0])
		}
	}
	for _, m := range gone {
		f.etcd.Restart(t, m)
	}
	f.etcd.WaitHealthy(t, 30*time.Second)
	back := time.Now()
	open := f.openRotations()
	next, took := f.waitLeader(f.procs, 30*time.Second)
	t.Logf("quorum back: %s leads after %s, %d rotation(s) were left open", next.name, took.Round(time.Millisecond), len(open))
	for _, r := range open {
		eventually(t, 30*time.Second, "rotation "+r.ID+" to be resumed", func() bool {
			var cur state.Rotation
			_ = f.store.View(func(tx state.Tx) (err error) { cur, _, err = tx.Rotation(r.ID); return err })
			return cur.Step.Terminal()
		})
	}
	eventually(t, 20*time.Second, "rotations to go on after quorum is back", func() bool { return next.creates(back) >= 3 })
	for _, p := range f.procs {
		p.d.signal(syscall.SIGTERM)
		p.d.wait(30 * time.Second)
	}
	f.assertNoDuplicateUploads()
	f.converge(ps)
}

// TestEtcd_StandbyAnswers: what an operator sees of two processes on one
// etcd. `status` on the standby names its role and the leader with its
// address; `rotate` (and SIGUSR1) on the standby refuses and names the
// leader; `reload` on the standby reloads and names the leader; `report`
// on the standby shows the keys the leader just made; /metrics says
// rotatord_leader 1 on the leader and 0 on the standby; Slack hears
// leader_changed when the leader starts and again when the standby takes
// over.
func TestEtcd_StandbyAnswers(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	hook := &webhook{}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	ps := []policyYAML{{Name: "gpu"}, {Name: "infer", Gcore: true}}
	e.writeConfig(ps, "") // newFleet rewrites it; the slack section is added below
	f := newFleet(t, e, 2, ps, fleetTTL)
	f.env = []string{"E2E_WEBHOOK=" + srv.URL + "/services/T000/B000/secretpart"}
	for _, p := range f.procs {
		cfg, _ := os.ReadFile(p.cfg)
		if err := os.WriteFile(p.cfg, append(cfg, []byte("slack: {webhook_url_env: E2E_WEBHOOK}\n")...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lead, stand := f.procs[0], f.procs[1]
	lead.start()
	f.waitLeader([]*proc{lead}, 20*time.Second)
	stand.start()
	leaderAddr := "http://" + lead.metrics

	out, stderr, code := e.rotatord(f.env, "status", "-config", stand.cfg)
	if code != 0 || !strings.Contains(out, "role: standby; leader: "+leaderName(lead.pid)+" at "+leaderAddr) {
		t.Errorf("status on the standby (exit %d):\n%s%s\nwant it to name its role and the leader %s at %s", code, out, stderr, leaderName(lead.pid), leaderAddr)
	}
	out, _, _ = e.rotatord(f.env, "status", "-config", lead.cfg)
	if !strings.Contains(out, "role: leader") {
		t.Errorf("status on the leader:\n%s", out)
	}
	t.Logf("status on the standby:\n%s", out)
	out, stderr, code = e.rotatord(f.env, "rotate", "-config", stand.cfg, "-all")
	t.Logf("rotate on the standby: exit %d: %s%s", code, out, stderr)
	if code == 0 || !strings.Contains(out+stderr, "standby") || !strings.Contains(out+stderr, leaderAddr) {
		t.Errorf("rotate on the standby: exit %d\n%s%s\nwant a refusal naming the leader at %s", code, out, stderr, leaderAddr)
	}
	out, stderr, code = e.rotatord(f.env, "reload", "-config", stand.cfg)
	t.Logf("reload on the standby: %s", out)
	if code != 0 || !strings.Contains(out, "standby") || !strings.Contains(out, leaderAddr) {
		t.Errorf("reload on the standby: exit %d\n%s%s\nwant it done, naming the leader", code, out, stderr)
	}
	// The leader rotates; the standby reports the new keys from etcd.
	if out, stderr, code := e.rotatord(f.env, "rotate", "-config", lead.cfg, "-all"); code != 0 {
		t.Fatalf("rotate on the leader: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = e.rotatord(f.env, "report", "-config", stand.cfg, "-format", "csv")
	for _, p := range ps {
		if code != 0 || !strings.Contains(out, "\n"+p.Name+",") {
			t.Errorf("report on the standby (exit %d) has no row of %s:\n%s%s", code, p.Name, out, stderr)
		}
	}
	stand.d.signal(syscall.SIGUSR1)
	eventually(t, 10*time.Second, "SIGUSR1 on the standby to be refused, naming the leader", func() bool {
		l := lastLine(stand.d.logs.String(), "SIGUSR1: no rotation")
		return strings.Contains(l, "standby") && strings.Contains(l, leaderAddr)
	})
	eventually(t, 10*time.Second, "rotatord_leader 1 on the leader, 0 on the standby", func() bool {
		return lead.metric("rotatord_leader") == "1" && stand.metric("rotatord_leader") == "0"
	})
	eventually(t, 10*time.Second, "Slack to hear the first leader", func() bool { return hook.count("leader changed") >= 1 })
	if hook.count(leaderName(lead.pid)) == 0 {
		t.Errorf("the leader_changed message does not name the leader %s:\n%s", leaderName(lead.pid), hook.all())
	}

	lead.d.signal(syscall.SIGTERM)
	lead.d.wait(30 * time.Second)
	f.waitLeader([]*proc{stand}, 2*time.Second) // it resigned: no lease to wait out
	eventually(t, 10*time.Second, "Slack to hear the new leader", func() bool { return hook.count(leaderName(stand.pid)) >= 1 })
	eventually(t, 10*time.Second, "rotatord_leader 1 on the new leader", func() bool { return stand.metric("rotatord_leader") == "1" })
	if !strings.Contains(stand.d.logs.String(), "leading: resuming open rotations") {
		t.Error("the new leader's log does not say it leads")
	}
}
