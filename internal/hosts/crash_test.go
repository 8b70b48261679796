package hosts

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// crashInput is what the parent hands the child process on stdin: private
// keys go through a pipe, never a file.
type crashInput struct {
	Targets    []Target
	KnownHosts string
	CurPEM     string
	CurLine    string
	OldPEM     string
}

// TestHelperConvergeProcess is not a test: TestConverge_SIGKILL runs the
// test binary as a child that executes this function, converging the hosts
// through both phases, and kills it.
func TestHelperConvergeProcess(t *testing.T) {
	if os.Getenv("ROTATORD_HOSTS_CRASH_CHILD") != "1" {
		t.Skip("run by TestConverge_SIGKILL")
	}
	var in crashInput
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		t.Fatal(err)
	}
	cur, err := ssh.ParsePrivateKey([]byte(in.CurPEM))
	if err != nil {
		t.Fatal(err)
	}
	old, err := ssh.ParsePrivateKey([]byte(in.OldPEM))
	if err != nil {
		t.Fatal(err)
	}
	keys := Keys{
		Current: Key{Signer: cur, AuthorizedKey: in.CurLine},
		Older:   []Key{{Signer: old}},
		Retired: []string{ssh.FingerprintSHA256(old.PublicKey())},
	}
	opts := Options{HostKeys: HostKeys{KnownHostsFile: in.KnownHosts}, Concurrency: 2}
	for _, remove := range []bool{false, true} {
		opts.RemoveRetired = remove
		for _, r := range ConvergeAll(context.Background(), in.Targets, keys, opts) {
			if r.Status != StatusOK {
				t.Fatalf("%s: %s: %v", r.Target.Label(), r.Status, r.Err)
			}
		}
	}
}

// TestConverge_SIGKILL kills a process converging three hosts at 40 random
// instants (uniform over the time a whole run takes). After every kill,
// every host still lets in a key whose private half rotatord holds (a fresh
// login with it succeeds), every line that is not the policy's is intact,
// the mode is 0600; the next process resumes from whatever state is left.
// At the end, one more run converges every host.
func TestConverge_SIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a process 40 times")
	}
	f := newFleet(t, 3)
	input, err := json.Marshal(crashInput{
		Targets: f.targets(), KnownHosts: knownHostsFile(t, f.hosts...),
		CurPEM: f.cur.pem, CurLine: f.cur.line, OldPEM: f.old.pem,
	})
	if err != nil {
		t.Fatal(err)
	}
	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperConvergeProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "ROTATORD_HOSTS_CRASH_CHILD=1")
		cmd.Stdin = bytes.NewReader(input)
		return cmd
	}
	reset := func() {
		for i, h := range f.hosts {
			h.WriteAuthorizedKeys(t, f.before[i], 0o600)
		}
	}

	// How long a whole run takes, to spread the kills over it.
	reset()
	start := time.Now()
	if out, err := child().CombinedOutput(); err != nil {
		t.Fatalf("a run without kill failed: %v\n%s", err, out)
	}
	span := time.Since(start)

	seen := map[string]int{}
	for i := range 40 {
		if i%4 == 0 {
			reset() // so that kills land in the add phase as well
		}
		cmd := child()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("kill %d: the run failed on its own: %v", i, err)
			}
			seen["finished before the kill"]++
		case <-time.After(rand.N(span)):
			_ = cmd.Process.Kill()
			<-done
		}
		for j := range f.hosts {
			seen[checkAfterKill(t, f, j)]++
		}
	}
	t.Logf("host states after the kills (a run takes %v): %v", span.Round(time.Millisecond), seen)

	opts := f.opts()
	opts.RemoveRetired = true
	for i, r := range ConvergeAll(context.Background(), f.targets(), f.keys(), opts) {
		wantStatus(t, r, StatusOK)
		h := f.hosts[i]
		if !slices.Equal(r.Trusts, []string{f.cur.Fingerprint}) {
			t.Errorf("%s: trusts %v after the final run", h.Addr(), r.Trusts)
		}
		assertNoDebris(t, h)
	}
}

// checkAfterKill asserts the no-lockout promise on host j and names its
// state.
func checkAfterKill(t *testing.T, f *fleet, j int) string {
	t.Helper()
	h := f.hosts[j]
	data := h.ReadAuthorizedKeys(t)
	lines := scanLines(data)
	hasCur, hasOld := hasKey(lines, f.cur.Fingerprint), hasKey(lines, f.old.Fingerprint)
	var key testKey
	switch {
	case hasCur:
		key = f.cur
	case hasOld:
		key = f.old
	default:
		t.Fatalf("%s: no key rotatord holds is left:\n%q", h.Addr(), data)
	}
	if err := h.Login(key.Signer); err != nil {
		t.Fatalf("%s: fresh login with %s: %v", h.Addr(), key.Fingerprint, err)
	}
	others := withoutLinesOf(data, f.cur.Fingerprint, f.old.Fingerprint)
	want := withoutLinesOf(f.before[j], f.cur.Fingerprint, f.old.Fingerprint)
	if !bytes.Equal(others, want) && !bytes.Equal(others, append(slices.Clone(want), '\n')) {
		t.Fatalf("%s: other lines changed:\n%q\nwant\n%q", h.Addr(), others, want)
	}
	if m := fileMode(t, h.AuthorizedKeys); m != 0o600 {
		t.Fatalf("%s: mode %o", h.Addr(), m)
	}
	switch {
	case hasCur && hasOld:
		return "both keys"
	case hasCur:
		return "current only"
	default:
		return "old only"
	}
}
