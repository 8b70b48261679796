package hosts

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/hosts/sshdtest"
	"github.com/rotatord/rotatord/internal/keygen"
)

// testKey is a generated key pair with everything a test needs to look for
// it on a host.
type testKey struct {
	Key
	pem  string // the private key, to prove it never reaches a host
	line string // public line
}

func newTestKey(t testing.TB, spec keygen.Spec, comment string) testKey {
	t.Helper()
	k, err := keygen.Generate(spec, comment)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey([]byte(k.PrivateKey.Reveal()))
	if err != nil {
		t.Fatal(err)
	}
	return testKey{
		Key:  Key{Signer: signer, AuthorizedKey: k.PublicKey, Fingerprint: k.SHA256},
		pem:  k.PrivateKey.Reveal(),
		line: k.PublicKey,
	}
}

func ed25519Key(t testing.TB, comment string) testKey {
	return newTestKey(t, keygen.Spec{Type: keygen.TypeED25519}, comment)
}

// privateBodies returns the base64 lines of a PEM private key, each long
// enough to be unmistakable.
func privateBodies(pemText string) []string {
	var out []string
	for _, l := range strings.Split(pemText, "\n") {
		if len(l) >= 40 && !strings.HasPrefix(l, "-----") {
			out = append(out, l)
		}
	}
	return out
}

// assertNoPrivateKey fails when data holds a PEM marker or any line of the
// given private keys.
func assertNoPrivateKey(t testing.TB, where string, data []byte, keys ...testKey) {
	t.Helper()
	if bytes.Contains(data, []byte("PRIVATE KEY")) {
		t.Errorf("%s: contains a PEM private key marker", where)
	}
	for _, k := range keys {
		for _, body := range privateBodies(k.pem) {
			if bytes.Contains(data, []byte(body)) {
				t.Errorf("%s: contains private key bytes of %s", where, k.Fingerprint)
			}
		}
	}
}

// memPins is a PinStore in memory.
type memPins struct {
	mu   sync.Mutex
	pins map[string]string
	errs error
}

func newMemPins() *memPins { return &memPins{pins: map[string]string{}} }

func (m *memPins) Pinned(_ context.Context, hostport string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fp, ok := m.pins[hostport]
	return fp, ok, m.errs
}

func (m *memPins) Pin(_ context.Context, hostport, fp string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.errs != nil {
		return m.errs
	}
	m.pins[hostport] = fp
	return nil
}

func (m *memPins) get(hostport string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pins[hostport]
}

// unrelatedContent is an authorized_keys file someone else maintains, with
// the policy's key old in the middle: other people's keys, an option line
// with a quoted comma and space, a comment, a blank line, a tab, and no
// final newline.
func unrelatedContent(t testing.TB, i int, others []testKey, old testKey) []byte {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "# host %d: managed by hand, do not sort\n", i)
	fmt.Fprintf(&b, "%s alice@laptop\n", others[0].line)
	fmt.Fprintf(&b, "from=\"10.0.0.0/8,192.168.%d.0/24\",command=\"echo hi, there\",no-pty %s backup\n", i%250, others[1].line)
	b.WriteString("\n")
	fmt.Fprintf(&b, "%s\n", old.line)
	fmt.Fprintf(&b, "%s\tbob with tab", others[2].line) // no final newline
	return []byte(b.String())
}

// withoutLinesOf returns data without the lines carrying any of fps, to
// compare "every other byte".
func withoutLinesOf(data []byte, fps ...string) []byte {
	drop := map[string]bool{}
	for _, fp := range fps {
		drop[fp] = true
	}
	var out []byte
	for _, l := range scanLines(data) {
		if l.fp != "" && drop[l.fp] {
			continue
		}
		out = append(out, data[l.start:l.end]...)
	}
	return out
}

// knownHostsFile writes a known_hosts file with the given hosts' lines.
func knownHostsFile(t testing.TB, hs ...*sshdtest.Host) string {
	t.Helper()
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(h.KnownHostsLine() + "\n")
	}
	p := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func targetOf(h *sshdtest.Host) Target {
	return Target{Addr: "127.0.0.1", Port: h.Port, User: h.User}
}

func fileMode(t testing.TB, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}
