package rotate_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/hosts"
	"github.com/rotatord/rotatord/internal/hosts/sshdtest"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// hostsFleet is a policy whose hosts are real OpenSSH sshd "hosts" on
// loopback, each with an authorized_keys holding lines that are not the
// policy's: another person's key, a key restricted with from=, a comment,
// and no final newline.
type hostsFleet struct {
	h      *harness
	srv    *sshdtest.Server
	p      policy.Policy
	before map[int][]byte // each host's file as written, before rotatord
	other  [][]byte       // each host's lines that are not the policy's
}

// otherLines is what a host's file holds besides the policy's keys.
func otherLines(t *testing.T, i int) []byte {
	t.Helper()
	line := func(comment string) string {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k, _ := ssh.NewPublicKey(pub)
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " " + comment
	}
	return []byte(fmt.Sprintf("# host %d: managed by the ops team\n%s\nfrom=\"10.1.0.0/16\",no-pty %s\n\n%s",
		i, line("alice@laptop"), line("deploy"), line("bob-no-final-newline")))
}

// newHostsFleet makes the policy's first key without hosts (a fleet is
// launched with the key the account holds), then writes that key into
// every host's authorized_keys among other lines, and turns hosts on.
func newHostsFleet(t *testing.T, n int) *hostsFleet {
	t.Helper()
	srv := sshdtest.Start(t, n)
	h := newHarness(t)
	f := &hostsFleet{h: h, srv: srv, p: sestercePolicy(), before: map[int][]byte{}}
	f.p.Notify.On = policy.Events()
	h.mustRun(f.p, rotate.Options{Trigger: rotate.TriggerCLI})
	first := f.current()
	var kh bytes.Buffer
	var targets []policy.HostTarget
	for i, host := range srv.Hosts() {
		other := otherLines(t, i)
		f.other = append(f.other, other)
		// The policy's key in the middle of the file, as cloud-init would
		// have put it at launch.
		content := append([]byte(first.PublicKey+"\n"), other...)
		host.WriteAuthorizedKeys(t, content, 0o600)
		f.before[i] = content
		kh.WriteString(host.KnownHostsLine() + "\n")
		targets = append(targets, policy.HostTarget{User: host.User, Addr: "127.0.0.1", Port: host.Port})
	}
	khPath := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(khPath, kh.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	f.p.Hosts = &policy.Hosts{Targets: targets, KnownHosts: khPath, AuthorizedKeys: policy.DefaultAuthorizedKeys,
		Concurrency: 8, Timeout: 20 * time.Second, Port: 22}
	return f
}

// current is the policy's current key record.
func (f *hostsFleet) current() state.KeyRecord {
	f.h.t.Helper()
	var cur state.KeyRecord
	if err := f.h.db.View(func(tx state.Tx) error {
		recs, err := tx.Keys(f.p.Name)
		cur, _ = state.Current(recs)
		return err
	}); err != nil {
		f.h.t.Fatal(err)
	}
	return cur
}

// signer is the private half Vault holds for rec (any version kept).
func (f *hostsFleet) signer(rec state.KeyRecord) ssh.Signer {
	f.h.t.Helper()
	d, err := f.h.store.GetVersion(context.Background(), f.p.VaultPath, rec.VaultVersion)
	if err != nil {
		f.h.t.Fatalf("vault version %d: %v", rec.VaultVersion, err)
	}
	s, err := ssh.ParsePrivateKey([]byte(d["private_key"]))
	if err != nil {
		f.h.t.Fatal(err)
	}
	if got := ssh.FingerprintSHA256(s.PublicKey()); got != rec.Fingerprint {
		f.h.t.Fatalf("vault version %d holds %s, want %s", rec.VaultVersion, got, rec.Fingerprint)
	}
	return s
}

func (f *hostsFleet) hostRecord(i int) state.HostRecord {
	f.h.t.Helper()
	label := hosts.Target{Addr: "127.0.0.1", Port: f.srv.Hosts()[i].Port, User: f.srv.Hosts()[i].User}.Label()
	var rec state.HostRecord
	if err := f.h.db.View(func(tx state.Tx) (err error) {
		rec, _, err = tx.Host(f.p.Name, label)
		return err
	}); err != nil {
		f.h.t.Fatal(err)
	}
	return rec
}

// keyLines returns the lines of data whose key is one of fps.
func keyLines(data []byte, fps ...string) []string {
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		for _, fp := range fps {
			if fp != "" && lineFingerprint(l) == fp {
				out = append(out, l)
			}
		}
	}
	return out
}

func lineFingerprint(line string) string {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(k)
}

// withoutKeys is data without the lines of fps: what must stay byte for
// byte.
func withoutKeys(data []byte, fps ...string) []byte {
	var b bytes.Buffer
	for i, l := range strings.SplitAfter(string(data), "\n") {
		_ = i
		if len(keyLines([]byte(strings.TrimSuffix(l, "\n")), fps...)) == 0 {
			b.WriteString(l)
		}
	}
	return b.Bytes()
}

// sameLines reports whether got holds want's lines byte for byte. A last
// line without a newline gains one when a key is added after it: the line
// is the same, only terminated.
func sameLines(got, want []byte) bool {
	return bytes.Equal(got, want) || !bytes.HasSuffix(want, []byte("\n")) && bytes.Equal(got, append(want[:len(want):len(want)], '\n'))
}

// After a rotation every host trusts the new key (proven by a login with
// it alone) and still the old one; once the grace ends the old key leaves
// every host; other lines never change by a byte and the mode stays 0600.
func TestHosts_RotationReachesEveryHost(t *testing.T) {
	f := newHostsFleet(t, 20)
	old := f.current()
	res := f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	if !res.Rotated || res.Hosts == nil {
		t.Fatalf("run: rotated %v, hosts %+v", res.Rotated, res.Hosts)
	}
	cur := f.current()
	if cur.Fingerprint == old.Fingerprint {
		t.Fatal("no new key")
	}
	if got := res.Hosts.ByStatus[state.HostOK]; got != 20 || len(res.Hosts.Updated) != 20 {
		t.Fatalf("hosts after rotation: %+v", res.Hosts)
	}
	newSigner, oldSigner := f.signer(cur), f.signer(old)
	for i, host := range f.srv.Hosts() {
		data := host.ReadAuthorizedKeys(t)
		if len(keyLines(data, cur.Fingerprint)) != 1 || len(keyLines(data, old.Fingerprint)) != 1 {
			t.Errorf("host %d during grace: want the new and the old key once each:\n%s", i, data)
		}
		if got := withoutKeys(data, cur.Fingerprint, old.Fingerprint); !sameLines(got, f.other[i]) {
			t.Errorf("host %d: other lines changed:\n got %q\nwant %q", i, got, f.other[i])
		}
		if m := fileMode(t, host.AuthorizedKeys); m != 0o600 {
			t.Errorf("host %d: mode %o", i, m)
		}
		if err := host.Login(newSigner); err != nil {
			t.Errorf("host %d: login with the new key: %v", i, err)
		}
		if err := host.Login(oldSigner); err != nil {
			t.Errorf("host %d: login with the old key during its grace: %v", i, err)
		}
		rec := f.hostRecord(i)
		if rec.Status != state.HostOK || !rec.Verified || rec.HostKeyFingerprint != ssh.FingerprintSHA256(host.HostKey()) ||
			rec.LastContact.IsZero() || rec.CurrentFingerprint != cur.Fingerprint || len(rec.Trusts) != 2 {
			t.Errorf("host %d record: %+v", i, rec)
		}
	}
	if n := countKind(f.h.events(), policy.EventHostUpdated); n != 1 {
		t.Errorf("%d host_updated events for one rotation, want 1 (batched)", n)
	}

	// A run before the grace ends changes nothing.
	f.h.clock.Advance(time.Hour)
	if res := f.h.mustRun(f.p, rotate.Options{Trigger: rotate.TriggerSchedule}); len(res.Hosts.Updated) != 0 {
		t.Errorf("a run inside the grace period changed %v", res.Hosts.Updated)
	}

	// The grace ends: the sweep deletes the old key on the provider and
	// takes it off every host.
	f.h.clock.Advance(f.p.GracePeriod)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deleted, err := f.h.engine.Sweep(ctx, f.p)
	if err != nil || len(deleted) != 1 {
		t.Fatalf("sweep: %v, %v", deleted, err)
	}
	for i, host := range f.srv.Hosts() {
		data := host.ReadAuthorizedKeys(t)
		if len(keyLines(data, old.Fingerprint)) != 0 || len(keyLines(data, cur.Fingerprint)) != 1 {
			t.Errorf("host %d after grace: want only the new key:\n%s", i, data)
		}
		if got := withoutKeys(data, cur.Fingerprint); !sameLines(got, f.other[i]) {
			t.Errorf("host %d: other lines changed:\n got %q\nwant %q", i, got, f.other[i])
		}
		if m := fileMode(t, host.AuthorizedKeys); m != 0o600 {
			t.Errorf("host %d: mode %o", i, m)
		}
		if err := host.Login(oldSigner); err == nil {
			t.Errorf("host %d: the retired key still logs in", i)
		}
		if err := host.Login(newSigner); err != nil {
			t.Errorf("host %d: login with the new key: %v", i, err)
		}
		if rec := f.hostRecord(i); len(rec.Trusts) != 1 || rec.Trusts[0] != cur.Fingerprint {
			t.Errorf("host %d trusts %v", i, rec.Trusts)
		}
	}
	// An idle sweep logs in nowhere: every host is known converged.
	logs := len(f.srv.Logs())
	if !strings.Contains(f.srv.Logs(), "Accepted publickey") {
		t.Fatal("sshd logs no accepted logins; the idle check below would prove nothing")
	}
	if _, err := f.h.engine.Sweep(ctx, f.p); err != nil {
		t.Fatal(err)
	}
	if strings.Count(f.srv.Logs()[logs:], "Accepted publickey") != 0 {
		t.Error("an idle sweep logged in to converged hosts")
	}
	assertNoPrivateKeys(t, f)
}

// An emergency rotation takes the old key off hosts in the same run, once
// the new key is verified there.
func TestHosts_EmergencyRemovesAtOnce(t *testing.T) {
	f := newHostsFleet(t, 3)
	old := f.current()
	// Through RunAll, as the daemon runs policies: the hosts are converged
	// after the run gave back its provider slot.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := f.h.engine.RunAll(ctx, []policy.Policy{f.p}, rotate.Options{Emergency: true, Trigger: rotate.TriggerCLI})[0]
	if res.Err != nil || res.Hosts == nil {
		t.Fatalf("RunAll: %v, hosts %+v", res.Err, res.Hosts)
	}
	cur := f.current()
	if res.Hosts.ByStatus[state.HostOK] != 3 {
		t.Fatalf("hosts: %+v", res.Hosts)
	}
	for i, host := range f.srv.Hosts() {
		data := host.ReadAuthorizedKeys(t)
		if len(keyLines(data, old.Fingerprint)) != 0 || len(keyLines(data, cur.Fingerprint)) != 1 {
			t.Errorf("host %d after an emergency rotation:\n%s", i, data)
		}
		if !sameLines(withoutKeys(data, cur.Fingerprint), f.other[i]) {
			t.Errorf("host %d: other lines changed", i)
		}
	}
}

// A host presenting another host key is refused: its file is untouched,
// its status says why, and one alert goes out however many runs see it.
func TestHosts_HostKeyChanged(t *testing.T) {
	f := newHostsFleet(t, 3)
	victim := f.srv.Hosts()[1]
	f.srv.ChangeHostKey(victim)
	f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	f.h.clock.Advance(time.Minute)
	f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	cur := f.current()
	if got := victim.ReadAuthorizedKeys(t); !bytes.Equal(got, f.before[1]) {
		t.Errorf("the host with a changed host key was edited:\n%s", got)
	}
	if rec := f.hostRecord(1); rec.Status != state.HostKeyChanged || !strings.Contains(rec.LastError, "host key changed") {
		t.Errorf("record: %+v", rec)
	}
	for _, i := range []int{0, 2} {
		if len(keyLines(f.srv.Hosts()[i].ReadAuthorizedKeys(t), cur.Fingerprint)) != 1 {
			t.Errorf("host %d did not get the new key", i)
		}
	}
	evs := f.h.events()
	if n := countKind(evs, policy.EventHostKeyChanged); n != 1 {
		t.Errorf("%d host_key_changed events over two runs, want 1", n)
	}
	for _, ev := range evs {
		if ev.Kind == policy.EventHostKeyChanged && !strings.Contains(ev.Detail, ssh.FingerprintSHA256(victim.HostKey())) {
			t.Errorf("alert does not name the presented key: %q", ev.Detail)
		}
	}
}

// An unreachable host keeps its keys and is reported; the others
// converge; it converges when it is back. One alert per streak.
func TestHosts_Unreachable(t *testing.T) {
	f := newHostsFleet(t, 4)
	down := f.srv.Hosts()[2]
	f.srv.SetDown(down, true)
	old := f.current()
	res := f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	cur := f.current()
	if res.Hosts.ByStatus[state.HostOK] != 3 || res.Hosts.ByStatus[state.HostUnreachable] != 1 {
		t.Fatalf("hosts: %+v", res.Hosts)
	}
	if rec := f.hostRecord(2); rec.Status != state.HostUnreachable || rec.UnreachableSince.IsZero() || rec.NextRetry.IsZero() {
		t.Errorf("record: %+v", rec)
	}
	if got := down.ReadAuthorizedKeys(t); !bytes.Equal(got, f.before[2]) {
		t.Errorf("unreachable host's file changed")
	}
	// Still down at the next run: no second alert.
	f.h.clock.Advance(time.Minute)
	f.h.mustRun(f.p, rotate.Options{Trigger: rotate.TriggerSchedule})
	if n := countKind(f.h.events(), policy.EventHostUnreachable); n != 1 {
		t.Errorf("%d host_unreachable events for one streak, want 1", n)
	}
	// Back: the next sweep converges it (the grace is not over: both keys).
	f.srv.SetDown(down, false)
	f.h.clock.Advance(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := f.h.engine.Sweep(ctx, f.p); err != nil {
		t.Fatal(err)
	}
	data := down.ReadAuthorizedKeys(t)
	if len(keyLines(data, cur.Fingerprint)) != 1 || len(keyLines(data, old.Fingerprint)) != 1 {
		t.Errorf("host back: %s", data)
	}
	if rec := f.hostRecord(2); rec.Status != state.HostOK || !rec.UnreachableSince.IsZero() || rec.UnreachableAlerted {
		t.Errorf("record after recovery: %+v", rec)
	}
}

// A concurrent edit between rotatord's read and its rename is not
// overwritten; the next run converges the host, keeping that edit.
func TestHosts_ConcurrentEdit(t *testing.T) {
	f := newHostsFleet(t, 2)
	target := f.srv.Hosts()[0]
	extra := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHlVdm1tZXN0aWxsaGVyZWFmdGVyYWxsdGhpc3RpbWU= added-meanwhile\n"
	var once sync.Once
	f.h.engine = rotate.New(rotate.Config{
		Journal: f.h.db, Keys: f.h.store, Providers: f.h.provs, Locks: f.h.locks, Now: f.h.clock.Now,
		BackoffBase: time.Millisecond, BackoffMax: time.Millisecond,
		Sinks: []rotate.Sink{rotate.NotifySink(state.SinkSlack)},
		HostBeforeRename: func(tg hosts.Target, _ string) {
			if tg.Port != target.Port {
				return
			}
			once.Do(func() {
				fh, err := os.OpenFile(target.AuthorizedKeys, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Error(err)
					return
				}
				defer fh.Close()
				if _, err := fh.WriteString("\n" + extra); err != nil {
					t.Error(err)
				}
			})
		},
	})
	res := f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	cur := f.current()
	if res.Hosts.ByStatus[state.HostStale] != 1 || res.Hosts.ByStatus[state.HostOK] != 1 {
		t.Fatalf("hosts: %+v", res.Hosts)
	}
	data := target.ReadAuthorizedKeys(t)
	if !strings.Contains(string(data), extra) || len(keyLines(data, cur.Fingerprint)) != 0 {
		t.Fatalf("the concurrent edit was overwritten, or the key added over it:\n%s", data)
	}
	if rec := f.hostRecord(0); rec.Status != state.HostStale || !strings.Contains(rec.LastError, "changed while rotatord was editing") {
		t.Errorf("record: %+v", rec)
	}
	f.h.clock.Advance(time.Minute)
	f.h.mustRun(f.p, rotate.Options{Trigger: rotate.TriggerSchedule})
	data = target.ReadAuthorizedKeys(t)
	if !strings.Contains(string(data), extra) || len(keyLines(data, cur.Fingerprint)) != 1 {
		t.Errorf("next run: %s", data)
	}
}

// Trust on first use pins each host key in state; a later change is
// refused like a known_hosts mismatch.
func TestHosts_TrustOnFirstUse(t *testing.T) {
	f := newHostsFleet(t, 2)
	f.p.Hosts.KnownHosts, f.p.Hosts.TrustOnFirstUse = "", true
	f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	for i, host := range f.srv.Hosts() {
		var pin state.HostPin
		_ = f.h.db.View(func(tx state.Tx) (err error) { pin, _, err = tx.HostKeyPin(host.Addr()); return err })
		if pin.Fingerprint != ssh.FingerprintSHA256(host.HostKey()) {
			t.Errorf("host %d pin %+v", i, pin)
		}
	}
	f.srv.ChangeHostKey(f.srv.Hosts()[0])
	f.h.clock.Advance(time.Minute)
	before := f.srv.Hosts()[0].ReadAuthorizedKeys(t)
	f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	if rec := f.hostRecord(0); rec.Status != state.HostKeyChanged {
		t.Errorf("record: %+v", rec)
	}
	if after := f.srv.Hosts()[0].ReadAuthorizedKeys(t); !bytes.Equal(before, after) {
		t.Error("file edited despite the changed host key")
	}
}

// No private key bytes on any host, in state, in the logs or in any
// queued notification.
func assertNoPrivateKeys(t *testing.T, f *hostsFleet) {
	t.Helper()
	var bodies []string
	var recs []state.KeyRecord
	_ = f.h.db.View(func(tx state.Tx) (err error) { recs, err = tx.Keys(f.p.Name); return err })
	for _, r := range recs {
		d, err := f.h.store.GetVersion(context.Background(), f.p.VaultPath, r.VaultVersion)
		if err != nil {
			continue
		}
		bodies = append(bodies, pemLines(d["private_key"])...)
	}
	if len(bodies) == 0 {
		t.Fatal("no private key to look for")
	}
	var places []struct {
		name string
		data []byte
	}
	for i, h := range f.srv.Hosts() {
		_ = filepath.Walk(h.Home, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				b, _ := os.ReadFile(p)
				places = append(places, struct {
					name string
					data []byte
				}{fmt.Sprintf("host %d %s", i, p), b})
			}
			return nil
		})
	}
	db, _ := os.ReadFile(f.h.dbPath)
	places = append(places, struct {
		name string
		data []byte
	}{"state", db}, struct {
		name string
		data []byte
	}{"logs", []byte(f.h.logs.String())})
	var evs bytes.Buffer
	for _, e := range f.h.events() {
		fmt.Fprintf(&evs, "%+v\n", e)
	}
	places = append(places, struct {
		name string
		data []byte
	}{"outbox", evs.Bytes()})
	for _, pl := range places {
		if bytes.Contains(pl.data, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a PRIVATE KEY block", pl.name)
		}
		for _, b := range bodies {
			if bytes.Contains(pl.data, []byte(b)) {
				t.Errorf("%s holds private key bytes", pl.name)
				break
			}
		}
	}
}

// pemLines are the base64 lines of a PEM block's body that are long
// enough to be unmistakable.
func pemLines(pemText string) []string {
	var out []string
	for _, l := range strings.Split(pemText, "\n") {
		if len(l) >= 24 && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}

func fileMode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// plan says per host what a run would add and remove, without logging in.
func TestHosts_Plan(t *testing.T) {
	f := newHostsFleet(t, 2)
	ctx := context.Background()
	pp, err := f.h.engine.Plan(ctx, f.p)
	if err != nil {
		t.Fatal(err)
	}
	cur := f.current()
	if len(pp.Hosts) != 2 || len(pp.Hosts[0].Add) != 1 || pp.Hosts[0].Add[0] != cur.Fingerprint || pp.Hosts[0].Detail == "" {
		t.Fatalf("never contacted hosts: %+v", pp.Hosts)
	}
	f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	old := cur
	logs := len(f.srv.Logs())
	f.h.clock.Advance(f.p.GracePeriod + time.Minute)
	pp, err = f.h.engine.Plan(ctx, f.p)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range pp.Hosts {
		if len(h.Add) != 0 || len(h.Remove) != 1 || h.Remove[0] != old.Fingerprint {
			t.Errorf("after the grace: %+v, want the old key removed", h)
		}
	}
	if strings.Contains(f.srv.Logs()[logs:], "Accepted publickey") {
		t.Error("plan logged in to a host")
	}
}

// fakeSource is a HostSource: what the instance inventory will plug in.
type fakeSource struct {
	mu    sync.Mutex
	hosts []rotate.DiscoveredHost
	err   error
}

func (s *fakeSource) Instances(context.Context, policy.Policy) ([]rotate.DiscoveredHost, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hosts, s.err
}

func (s *fakeSource) set(hs []rotate.DiscoveredHost, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts, s.err = hs, err
}

// discover: true converges the instances a HostSource finds beside the
// static targets; a failed listing forgets no host, an instance gone is
// forgotten.
func TestHosts_Discover(t *testing.T) {
	f := newHostsFleet(t, 2)
	src := &fakeSource{}
	f.h.engine = rotate.New(rotate.Config{
		Journal: f.h.db, Keys: f.h.store, Providers: f.h.provs, Locks: f.h.locks, Now: f.h.clock.Now,
		BackoffBase: time.Millisecond, BackoffMax: time.Millisecond, HostSource: src,
	})
	disc := f.srv.Hosts()[1]
	f.p.Hosts.Targets = f.p.Hosts.Targets[:1]
	f.p.Hosts.Discover, f.p.Hosts.User = true, disc.User
	src.set([]rotate.DiscoveredHost{{Address: "127.0.0.1", Port: disc.Port, InstanceID: "i-1"}}, nil)
	res := f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	if res.Hosts.Targets != 2 || res.Hosts.ByStatus[state.HostOK] != 2 {
		t.Fatalf("hosts: %+v", res.Hosts)
	}
	if rec := f.hostRecord(1); rec.Source != rotate.HostSourceDiscovered || rec.Status != state.HostOK {
		t.Errorf("discovered host record: %+v", rec)
	}
	if len(keyLines(disc.ReadAuthorizedKeys(t), f.current().Fingerprint)) != 1 {
		t.Error("the discovered host did not get the new key")
	}
	src.set(nil, fmt.Errorf("inventory down"))
	f.h.clock.Advance(time.Minute)
	f.h.mustRun(f.p, rotate.Options{Trigger: rotate.TriggerSchedule})
	if rec := f.hostRecord(1); rec.Host == "" {
		t.Error("a failed listing forgot the discovered host")
	}
	src.set(nil, nil)
	f.h.clock.Advance(time.Minute)
	f.h.mustRun(f.p, rotate.Options{Trigger: rotate.TriggerSchedule})
	if rec := f.hostRecord(1); rec.Host != "" {
		t.Errorf("an instance that is gone is still recorded: %+v", rec)
	}
}

// A host that trusts none of the keys rotatord holds is left untouched and
// recorded denied; the others converge.
func TestHosts_Denied(t *testing.T) {
	f := newHostsFleet(t, 2)
	lost := f.srv.Hosts()[1]
	lost.WriteAuthorizedKeys(t, f.other[1], 0o600)
	res := f.h.mustRun(f.p, rotate.Options{Force: true, Trigger: rotate.TriggerCLI})
	if res.Hosts.ByStatus[state.HostOK] != 1 || res.Hosts.ByStatus[state.HostDenied] != 1 {
		t.Fatalf("hosts: %+v", res.Hosts)
	}
	if got := lost.ReadAuthorizedKeys(t); !bytes.Equal(got, f.other[1]) {
		t.Errorf("the denied host's file changed:\n%s", got)
	}
	if rec := f.hostRecord(1); rec.Status != state.HostDenied || rec.ConsecutiveFailures != 1 || rec.NextRetry.IsZero() {
		t.Errorf("record: %+v", rec)
	}
}
