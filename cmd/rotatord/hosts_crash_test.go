package main_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/hosts/sshdtest"
	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/bolt"
)

// hostsEnv is an end-to-end environment whose policy converges real
// OpenSSH sshd "hosts" on loopback.
type hostsEnv struct {
	*env
	srv    *sshdtest.Server
	p      policyYAML
	kh     string
	others [][]byte
}

// writeHostsConfig writes a config with one Sesterce policy and, when
// withHosts, its hosts block naming every host of the sshd server.
func (h *hostsEnv) writeHostsConfig(withHosts bool) {
	h.t.Helper()
	e := h.env
	var b strings.Builder
	fmt.Fprintf(&b, "state: {path: %s}\ncontrol: {socket: %s}\n", e.statePath(), e.socket())
	fmt.Fprintf(&b, "vault:\n  address: %s\n  mount: secret\n  auth: {method: token, token_env: E2E_VAULT_TOKEN}\n", vaultSrv.Addr)
	fmt.Fprintf(&b, "providers:\n  - {name: sesterce-e2e, type: sesterce, base_url: %s, api_key_env: E2E_SESTERCE_KEY}\n", e.fake.URL())
	fmt.Fprintf(&b, "policies:\n  - name: %s\n    provider: sesterce-e2e\n    schedule: \"@daily\"\n    max_age: 1h\n    rotate_before: 1m\n    grace_period: %s\n    vault_path: %s/%s\n",
		h.p.Name, h.p.Grace, e.prefix, h.p.Name)
	if withHosts {
		fmt.Fprintf(&b, "    hosts:\n      known_hosts: %s\n      concurrency: 4\n      timeout: 20s\n      targets:\n", h.kh)
		for _, host := range h.srv.Hosts() {
			fmt.Fprintf(&b, "        - %s@127.0.0.1:%d\n", host.User, host.Port)
		}
	}
	if e.cfgPath == "" {
		e.cfgPath = filepath.Join(e.dir, "policies.yaml")
	}
	if err := os.WriteFile(e.cfgPath, []byte(b.String()), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// newHostsEnv starts n hosts, makes the policy's first key, puts it in
// every host's authorized_keys among other people's lines (as the fleet
// was launched with it), and turns host rotation on.
func newHostsEnv(t *testing.T, n int) *hostsEnv {
	t.Helper()
	e := newEnv(t, cloudtest.Options{})
	h := &hostsEnv{env: e, srv: sshdtest.Start(t, n), p: policyYAML{Name: "fleet", Grace: "1s"}}
	var kh bytes.Buffer
	for _, host := range h.srv.Hosts() {
		kh.WriteString(host.KnownHostsLine() + "\n")
	}
	h.kh = filepath.Join(e.dir, "known_hosts")
	if err := os.WriteFile(h.kh, kh.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	h.writeHostsConfig(false)
	if _, stderr, code := e.rotatord(nil, "run", "-config", e.cfgPath, "-once"); code != 0 {
		t.Fatalf("first run: exit %d\n%s", code, stderr)
	}
	data, _, err := e.store.Get(context.Background(), e.prefix+"/"+h.p.Name)
	if err != nil {
		t.Fatal(err)
	}
	for i, host := range h.srv.Hosts() {
		other := []byte(fmt.Sprintf("# host %d\n%s\nfrom=\"10.1.0.0/16\" %s", i, randomKeyLine(t, "alice"), randomKeyLine(t, "deploy-no-newline")))
		h.others = append(h.others, other)
		host.WriteAuthorizedKeys(t, append([]byte(data["public_key"]+"\n"), other...), 0o600)
	}
	h.writeHostsConfig(true)
	return h
}

func randomKeyLine(t *testing.T, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " " + comment
}

// vaultSigners returns every key pair Vault keeps for the policy (every
// version of <vault_path>, and the pending one) by fingerprint, and the
// current one's fingerprint.
func (h *hostsEnv) vaultSigners() (map[string]ssh.Signer, string) {
	h.t.Helper()
	ctx := context.Background()
	path := h.prefix + "/" + h.p.Name
	out := map[string]ssh.Signer{}
	add := func(d map[string]string) string {
		s, err := ssh.ParsePrivateKey([]byte(d["private_key"]))
		if err != nil {
			h.t.Fatalf("vault %s: unusable private key: %v", path, err)
		}
		fp := ssh.FingerprintSHA256(s.PublicKey())
		out[fp] = s
		return fp
	}
	var current string
	if d, v, err := h.store.Get(ctx, path); err == nil {
		current = add(d)
		for i := 1; i < v; i++ {
			if d, err := h.store.GetVersion(ctx, path, i); err == nil {
				add(d)
			}
		}
	}
	if d, _, err := h.store.Get(ctx, path+"/pending"); err == nil {
		add(d)
	}
	return out, current
}

// fileFingerprints are the fingerprints of the keys a file holds.
func fileFingerprints(data []byte) []string {
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l)); err == nil {
			out = append(out, ssh.FingerprintSHA256(k))
		}
	}
	return out
}

// assertNoLockout is the promise that holds at every instant, even right
// after a SIGKILL: every host's authorized_keys holds a key whose private
// half is in Vault, and a fresh SSH login with that key alone succeeds.
// Other people's lines are all still there, and the mode is 0600. It
// returns how many hosts hold the current key.
func (h *hostsEnv) assertNoLockout(when string) (withCurrent int) {
	h.t.Helper()
	signers, current := h.vaultSigners()
	for i, host := range h.srv.Hosts() {
		data := host.ReadAuthorizedKeys(h.t)
		var loggedIn bool
		var tried []string
		for _, fp := range fileFingerprints(data) {
			s, ok := signers[fp]
			if !ok {
				continue
			}
			tried = append(tried, fp)
			if err := host.Login(s); err == nil {
				loggedIn = true
				break
			}
		}
		if !loggedIn {
			h.t.Fatalf("%s: host %d: LOCKED OUT: no key in its authorized_keys both has its private half in Vault and logs in (tried %v)\n%s", when, i, tried, data)
		}
		for _, line := range strings.Split(string(h.others[i]), "\n") {
			if !bytes.Contains(data, []byte(line)) {
				h.t.Fatalf("%s: host %d: lost the line %q", when, i, line)
			}
		}
		if fi, err := os.Stat(host.AuthorizedKeys); err != nil || fi.Mode().Perm() != 0o600 {
			h.t.Fatalf("%s: host %d: mode %v, %v", when, i, fi.Mode(), err)
		}
		for _, fp := range fileFingerprints(data) {
			if fp == current {
				withCurrent++
			}
		}
	}
	return withCurrent
}

// assertHostsConverged: after a run, every host trusts the current key
// (proven by a login with it alone) and its state record says ok.
func (h *hostsEnv) assertHostsConverged(when string) {
	h.t.Helper()
	signers, current := h.vaultSigners()
	for i, host := range h.srv.Hosts() {
		fps := fileFingerprints(host.ReadAuthorizedKeys(h.t))
		found := false
		for _, fp := range fps {
			found = found || fp == current
		}
		if !found {
			h.t.Fatalf("%s: host %d lacks the current key %s (has %v)", when, i, current, fps)
		}
		if err := host.Login(signers[current]); err != nil {
			h.t.Fatalf("%s: host %d: login with the current key: %v", when, i, err)
		}
	}
	db, err := bolt.OpenStore(h.statePath(), bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		h.t.Fatalf("%s: open state: %v", when, err)
	}
	defer db.Close()
	_ = db.View(func(tx state.Tx) error {
		recs, err := tx.Hosts(h.p.Name)
		if len(recs) != len(h.srv.Hosts()) {
			h.t.Fatalf("%s: %d host records, want %d", when, len(recs), len(h.srv.Hosts()))
		}
		for _, r := range recs {
			if r.Status != state.HostOK || r.CurrentFingerprint != current {
				h.t.Fatalf("%s: host %s recorded %s for key %s (current %s): %s", when, r.Host, r.Status, r.CurrentFingerprint, current, r.LastError)
			}
		}
		return err
	})
}

// TestCrash_HostConvergence SIGKILLs the real binary at 40+ random instants
// while it rotates the key of a policy with 10 hosts and converges them
// (adding each new key, then taking keys whose 1s grace ended off). After
// every kill no host is locked out; after every restart every host
// converges.
func TestCrash_HostConvergence(t *testing.T) {
	n := 44
	if testing.Short() {
		n = 8
	}
	h := newHostsEnv(t, 10)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ROTATORD_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set ROTATORD_CRASH_SEED to replay)", seed)
	rng := mrand.New(mrand.NewPCG(seed, seed))

	// The fastest of three whole runs bounds the kill instants, so that a
	// loaded machine still lands most kills before the run ends.
	window := time.Hour
	for range 3 {
		time.Sleep(1100 * time.Millisecond)
		start := time.Now()
		if _, stderr, code := h.rotatord(nil, "rotate", "-config", h.cfgPath, "-all"); code != 0 {
			t.Fatalf("timing run: exit %d\n%s", code, stderr)
		}
		window = min(window, time.Since(start))
		h.assertHostsConverged("timing run")
	}
	t.Logf("one rotate -all with 10 hosts takes %v here: kills land within it", window.Round(time.Millisecond))

	var logs strings.Builder // everything the binary wrote, for the leak check
	kills, midHosts := 0, 0
	for i := range n {
		time.Sleep(1100 * time.Millisecond) // the previous key's grace is over: removals happen too
		cmd := exec.Command(rotatordBin, "rotate", "-config", h.cfgPath, "-all")
		cmd.Env = h.environ()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(window))))
		_ = cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			kills++
		}
		logs.Write(stderr.Bytes())
		when := "after random SIGKILL #" + strconv.Itoa(i)
		if got := h.assertNoLockout(when); got > 0 && got < len(h.srv.Hosts()) {
			midHosts++ // some hosts had the new key, others not: killed mid-convergence
		}
		_, stderr2, code := h.rotatord(nil, "run", "-config", h.cfgPath, "-once")
		logs.WriteString(stderr2)
		if code != 0 {
			t.Fatalf("restart %s: exit %d\n%s", when, code, stderr2)
		}
		h.assertNoLockout("restart " + when)
		h.assertHostsConverged("restart " + when)
	}
	t.Logf("%d of %d runs were killed before finishing, %d of them while hosts were half converged", kills, n, midHosts)
	h.assertNoPrivateKeyBytes(logs.String())
	if kills < n/2 || midHosts < n/10 {
		t.Errorf("only %d kills, %d mid-convergence, of %d: the kill window misses host convergence", kills, midHosts, n)
	}
}

// assertNoPrivateKeyBytes: no line of any private key Vault holds for the
// policy is on a host, in the state file or in what the binary logged.
func (h *hostsEnv) assertNoPrivateKeyBytes(logs string) {
	h.t.Helper()
	ctx := context.Background()
	path := h.prefix + "/" + h.p.Name
	var lines []string
	if _, v, err := h.store.Get(ctx, path); err == nil {
		for i := 1; i <= v; i++ {
			if d, err := h.store.GetVersion(ctx, path, i); err == nil {
				for _, l := range strings.Split(d["private_key"], "\n") {
					if len(l) >= 24 && !strings.HasPrefix(l, "-----") {
						lines = append(lines, l)
					}
				}
			}
		}
	}
	if len(lines) == 0 {
		h.t.Fatal("no private key to look for")
	}
	places := map[string]string{"logs": logs}
	db, _ := os.ReadFile(h.statePath())
	places["state"] = string(db)
	for i, host := range h.srv.Hosts() {
		_ = filepath.Walk(host.Home, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				b, _ := os.ReadFile(p)
				places[fmt.Sprintf("host %d %s", i, p)] = string(b)
			}
			return nil
		})
	}
	for name, text := range places {
		if strings.Contains(text, "PRIVATE KEY") {
			h.t.Errorf("%s holds a PRIVATE KEY block", name)
		}
		for _, l := range lines {
			if strings.Contains(text, l) {
				h.t.Errorf("%s holds private key bytes", name)
				break
			}
		}
	}
}
