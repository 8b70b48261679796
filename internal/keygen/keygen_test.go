package keygen

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/secret"
)

// specCase is one key kind the config can ask for, with what OpenSSH calls
// it and how many bits ssh-keygen -l reports.
type specCase struct {
	name    string
	spec    Spec
	sshType string
	bits    int
}

var specCases = []specCase{
	{"ed25519", Spec{Type: "ed25519"}, "ssh-ed25519", 256},
	{"rsa-3072", Spec{Type: "rsa", Bits: 3072}, "ssh-rsa", 3072},
	{"rsa-4096", Spec{Type: "rsa", Bits: 4096}, "ssh-rsa", 4096},
	{"ecdsa-p256", Spec{Type: "ecdsa", Curve: "p256"}, "ecdsa-sha2-nistp256", 256},
	{"ecdsa-p384", Spec{Type: "ecdsa", Curve: "p384"}, "ecdsa-sha2-nistp384", 384},
	{"ecdsa-p521", Spec{Type: "ecdsa", Curve: "p521"}, "ecdsa-sha2-nistp521", 521},
}

const testComment = "rotatord:gpu-team"

var (
	keysMu sync.Mutex
	keys   = map[string]*Key{}
)

// generated returns one key per case for the whole test binary, so that the
// slow RSA-4096 generation happens once however many tests look at it.
func generated(t *testing.T, c specCase) *Key {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[c.name]; ok {
		return k
	}
	k, err := Generate(c.spec, testComment)
	if err != nil {
		t.Fatalf("Generate(%+v): %v", c.spec, err)
	}
	keys[c.name] = k
	return k
}

func TestGenerate(t *testing.T) {
	for _, c := range specCases {
		t.Run(c.name, func(t *testing.T) {
			k := generated(t, c)
			if k.Type != c.sshType {
				t.Errorf("Type = %q, want %q", k.Type, c.sshType)
			}
			privPEM := []byte(k.PrivateKey.Reveal())
			if !bytes.HasPrefix(privPEM, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n")) {
				t.Fatalf("private key is not an OpenSSH PEM: starts %q", firstLine(privPEM))
			}

			// The private key is of the size or curve that was asked for.
			raw, err := ssh.ParseRawPrivateKey(privPEM)
			if err != nil {
				t.Fatalf("ssh.ParseRawPrivateKey: %v", err)
			}
			switch key := raw.(type) {
			case *ed25519.PrivateKey:
				if c.spec.Type != "ed25519" {
					t.Errorf("got an ed25519 key for %+v", c.spec)
				}
			case *rsa.PrivateKey:
				if got := key.N.BitLen(); c.spec.Type != "rsa" || got != c.bits {
					t.Errorf("got an rsa key of %d bits for %+v", got, c.spec)
				}
			case *ecdsa.PrivateKey:
				if got := key.Curve.Params().BitSize; c.spec.Type != "ecdsa" || got != c.bits {
					t.Errorf("got an ecdsa key on a %d-bit curve for %+v", got, c.spec)
				}
			default:
				t.Fatalf("private key parses as %T", raw)
			}

			// The public line carries the comment and belongs to the private key:
			// a signature made with the private half verifies against it.
			pub, comment, _, rest, err := ssh.ParseAuthorizedKey([]byte(k.PublicKey))
			if err != nil {
				t.Fatalf("ssh.ParseAuthorizedKey(%q): %v", k.PublicKey, err)
			}
			if comment != testComment {
				t.Errorf("public key comment = %q, want %q", comment, testComment)
			}
			if len(rest) != 0 || strings.HasSuffix(k.PublicKey, "\n") {
				t.Errorf("public key line %q has trailing data", k.PublicKey)
			}
			signer, err := ssh.ParsePrivateKey(privPEM)
			if err != nil {
				t.Fatalf("ssh.ParsePrivateKey: %v", err)
			}
			msg := []byte("rotation " + c.name)
			sig, err := signer.Sign(nil, msg)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if err := pub.Verify(msg, sig); err != nil {
				t.Errorf("signature by the private key does not verify against the public line: %v", err)
			}
			if err := pub.Verify([]byte("another message"), sig); err == nil {
				t.Error("signature verifies for a message that was not signed")
			}

			if want := ssh.FingerprintSHA256(pub); k.SHA256 != want {
				t.Errorf("SHA256 = %q, want %q", k.SHA256, want)
			}
			if want := ssh.FingerprintLegacyMD5(pub); k.MD5 != want {
				t.Errorf("MD5 = %q, want %q", k.MD5, want)
			}
		})
	}
}

func TestGenerate_FreshKeys(t *testing.T) {
	for _, spec := range []Spec{{Type: "ed25519"}, {Type: "ecdsa", Curve: "p256"}} {
		t.Run(spec.Type, func(t *testing.T) {
			a, err := Generate(spec, "a")
			if err != nil {
				t.Fatal(err)
			}
			b, err := Generate(spec, "a")
			if err != nil {
				t.Fatal(err)
			}
			if a.SHA256 == b.SHA256 || a.PrivateKey == b.PrivateKey {
				t.Errorf("two generations gave the same key %s", a.SHA256)
			}
		})
	}
}

// sshKeygen returns the path of ssh-keygen. Locally a missing binary skips
// the test; in CI (CI=true) it fails, so the comparison with OpenSSH cannot
// silently stop running.
func sshKeygen(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("ssh-keygen")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ssh-keygen not found on PATH under CI=true (install openssh-client): %v", err)
		}
		t.Skip("ssh-keygen not found on PATH; install openssh-client to compare with OpenSSH")
	}
	return path
}

func runSSHKeygen(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// listing is one line of ssh-keygen -l: "256 SHA256:... comment (ED25519)".
type listing struct {
	bits        int
	fingerprint string
	comment     string
}

func parseListing(t *testing.T, out string) listing {
	t.Helper()
	f := strings.Fields(out)
	if len(f) < 3 {
		t.Fatalf("unexpected ssh-keygen -l output %q", out)
	}
	bits, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("unexpected ssh-keygen -l output %q", out)
	}
	return listing{bits: bits, fingerprint: f[1], comment: strings.Join(f[2:len(f)-1], " ")}
}

func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGenerate_MatchesSSHKeygen(t *testing.T) {
	bin := sshKeygen(t)
	for _, c := range specCases {
		t.Run(c.name, func(t *testing.T) {
			k := generated(t, c)
			pubFile := writeFile(t, "key.pub", k.PublicKey+"\n", 0o644)

			l := parseListing(t, runSSHKeygen(t, bin, "-l", "-f", pubFile))
			if l.fingerprint != k.SHA256 {
				t.Errorf("SHA256 = %q, ssh-keygen -l says %q", k.SHA256, l.fingerprint)
			}
			if l.bits != c.bits {
				t.Errorf("ssh-keygen -l says %d bits, want %d", l.bits, c.bits)
			}
			if l.comment != testComment {
				t.Errorf("ssh-keygen -l shows comment %q, want %q", l.comment, testComment)
			}

			l = parseListing(t, runSSHKeygen(t, bin, "-l", "-E", "md5", "-f", pubFile))
			if want := "MD5:" + k.MD5; l.fingerprint != want {
				t.Errorf("MD5 = %q, ssh-keygen -l -E md5 says %q", want, l.fingerprint)
			}

			// OpenSSH reads the private key (it refuses files others can read)
			// and derives the same public key, comment included.
			privFile := writeFile(t, "key", k.PrivateKey.Reveal(), 0o600)
			if got := runSSHKeygen(t, bin, "-y", "-f", privFile); got != k.PublicKey {
				t.Errorf("ssh-keygen -y gives %q, want %q", got, k.PublicKey)
			}
		})
	}
}

func TestParsePrivateKey(t *testing.T) {
	for _, c := range specCases {
		t.Run(c.name, func(t *testing.T) {
			want := generated(t, c)
			got, err := ParsePrivateKey(want.PrivateKey)
			if err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}
			if got.Type != want.Type || got.SHA256 != want.SHA256 || got.MD5 != want.MD5 {
				t.Errorf("ParsePrivateKey = %s %s %s, want %s %s %s",
					got.Type, got.SHA256, got.MD5, want.Type, want.SHA256, want.MD5)
			}
			if wantLine := strings.TrimSuffix(want.PublicKey, " "+testComment); got.PublicKey != wantLine {
				t.Errorf("PublicKey = %q, want %q", got.PublicKey, wantLine)
			}
			if got.PrivateKey != want.PrivateKey {
				t.Error("PrivateKey is not the input unchanged")
			}
		})
	}
}

// TestParsePrivateKey_SSHKeygenKeys reads keys that OpenSSH wrote, in each
// PEM form it writes, as a provider-generated or hand-made key would be.
func TestParsePrivateKey_SSHKeygenKeys(t *testing.T) {
	bin := sshKeygen(t)
	cases := []struct {
		name     string
		args     []string
		pemType  string
		wantType string
	}{
		{"ed25519 openssh", []string{"-t", "ed25519"}, "OPENSSH PRIVATE KEY", "ssh-ed25519"},
		{"ecdsa openssh", []string{"-t", "ecdsa", "-b", "384"}, "OPENSSH PRIVATE KEY", "ecdsa-sha2-nistp384"},
		{"ecdsa sec1", []string{"-t", "ecdsa", "-b", "256", "-m", "PEM"}, "EC PRIVATE KEY", "ecdsa-sha2-nistp256"},
		{"ecdsa pkcs8", []string{"-t", "ecdsa", "-b", "521", "-m", "PKCS8"}, "PRIVATE KEY", "ecdsa-sha2-nistp521"},
		{"rsa pkcs1", []string{"-t", "rsa", "-b", "3072", "-m", "PEM"}, "RSA PRIVATE KEY", "ssh-rsa"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			privFile := filepath.Join(t.TempDir(), "key")
			runSSHKeygen(t, bin, append([]string{"-q", "-N", "", "-C", "made-by-openssh", "-f", privFile}, c.args...)...)
			data, err := os.ReadFile(privFile)
			if err != nil {
				t.Fatal(err)
			}
			if block, _ := pem.Decode(data); block == nil || block.Type != c.pemType {
				t.Fatalf("ssh-keygen %v did not write a %s block", c.args, c.pemType)
			}
			sha := parseListing(t, runSSHKeygen(t, bin, "-l", "-f", privFile+".pub")).fingerprint
			md5 := parseListing(t, runSSHKeygen(t, bin, "-l", "-E", "md5", "-f", privFile+".pub")).fingerprint
			pubLine, err := os.ReadFile(privFile + ".pub")
			if err != nil {
				t.Fatal(err)
			}

			k, err := ParsePrivateKey(secret.Secret(data))
			if err != nil {
				t.Fatalf("ParsePrivateKey: %v", err)
			}
			if k.Type != c.wantType {
				t.Errorf("Type = %q, want %q", k.Type, c.wantType)
			}
			if k.SHA256 != sha || "MD5:"+k.MD5 != md5 {
				t.Errorf("fingerprints %s MD5:%s, ssh-keygen says %s %s", k.SHA256, k.MD5, sha, md5)
			}
			if want := strings.TrimSuffix(strings.TrimSpace(string(pubLine)), " made-by-openssh"); k.PublicKey != want {
				t.Errorf("PublicKey = %q, want %q", k.PublicKey, want)
			}
		})
	}
}

func TestGenerate_BadSpec(t *testing.T) {
	cases := []struct {
		name    string
		spec    Spec
		comment string
		want    string // the offending value as the error must show it
	}{
		{"unknown type", Spec{Type: "dsa"}, "c", `"dsa"`},
		{"empty type", Spec{}, "c", `""`},
		{"upper-case type", Spec{Type: "ED25519"}, "c", `"ED25519"`},
		{"rsa 2048", Spec{Type: "rsa", Bits: 2048}, "c", "2048"},
		{"rsa no bits", Spec{Type: "rsa"}, "c", "bits 0"},
		{"ecdsa p224", Spec{Type: "ecdsa", Curve: "p224"}, "c", `"p224"`},
		{"ecdsa no curve", Spec{Type: "ecdsa"}, "c", `curve ""`},
		{"comment with newline", Spec{Type: "ed25519"}, "x\nssh-rsa AAAA evil", `"x\nssh-rsa AAAA evil"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := Generate(c.spec, c.comment)
			if err == nil {
				t.Fatalf("Generate(%+v) made a %s key, want an error", c.spec, k.Type)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("error %q does not wrap ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name %s", err, c.want)
			}
		})
	}
}

func TestFingerprints(t *testing.T) {
	// Reference values from ssh-keygen -l and -l -E md5 (OpenSSH 9.2) for the
	// example key of Gcore's API reference.
	const (
		keyBody = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIjxL6g1II8NsO8odvBwGKvq2Dx/h/xrvsV9b9LVIYKm"
		wantSHA = "SHA256:8+r6nb5uLviuzs1foM96p7MlQNOSWJwQar/9G63DCEY"
		wantMD5 = "29:0d:82:af:a9:64:48:31:9a:4b:67:8e:5c:1f:f5:08"
	)
	cases := []struct{ name, line string }{
		{"with comment", keyBody + " my-username@my-hostname"},
		{"no comment", keyBody},
		{"trailing newline", keyBody + " c\n"},
		{"options", `no-pty,from="10.0.0.1" ` + keyBody + " c"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sha, md5, err := Fingerprints(c.line)
			if err != nil {
				t.Fatalf("Fingerprints(%q): %v", c.line, err)
			}
			if sha != wantSHA || md5 != wantMD5 {
				t.Errorf("Fingerprints(%q) = %s %s, want %s %s", c.line, sha, md5, wantSHA, wantMD5)
			}
		})
	}

	t.Run("generated keys", func(t *testing.T) {
		for _, c := range specCases[:1] {
			k := generated(t, c)
			sha, md5, err := Fingerprints(k.PublicKey)
			if err != nil || sha != k.SHA256 || md5 != k.MD5 {
				t.Errorf("Fingerprints(%q) = %s %s %v, want %s %s", k.PublicKey, sha, md5, err, k.SHA256, k.MD5)
			}
		}
	})
}

func TestFingerprints_Errors(t *testing.T) {
	k := generated(t, specCases[0])
	cases := []struct{ name, line string }{
		{"empty", ""},
		{"blank", "  \n"},
		{"garbage", "not a key"},
		{"bad base64", "ssh-ed25519 AAAA!!!!"},
		{"two keys", k.PublicKey + "\n" + k.PublicKey},
		{"private key by mistake", k.PrivateKey.Reveal()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sha, _, err := Fingerprints(c.line)
			if err == nil {
				t.Fatalf("Fingerprints(%q) = %s, want an error", c.line, sha)
			}
			if !errors.Is(err, ErrInvalidKey) {
				t.Errorf("error %q does not wrap ErrInvalidKey", err)
			}
			assertNoKeyMaterial(t, err.Error(), k.PrivateKey.Reveal())
		})
	}
}

func TestComment(t *testing.T) {
	if got := Comment("gpu-team"); got != "rotatord:gpu-team" {
		t.Errorf(`Comment("gpu-team") = %q, want "rotatord:gpu-team"`, got)
	}
}

// corrupt returns the OpenSSH PEM of k with its decoded body changed by
// edit, re-encoded so that the PEM framing stays valid and the parser gets
// as far as the key fields.
func corrupt(t *testing.T, k *Key, edit func([]byte) []byte) string {
	t.Helper()
	block, _ := pem.Decode([]byte(k.PrivateKey.Reveal()))
	if block == nil {
		t.Fatal("generated key is not PEM")
	}
	body := edit(bytes.Clone(block.Bytes))
	return string(pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: body}))
}

func TestParsePrivateKey_Errors(t *testing.T) {
	ed := generated(t, specCases[0])
	ec := generated(t, specCases[3])
	rs := generated(t, specCases[1])
	// marker stands where x/crypto reads the curve name inside the private
	// section: its "unhandled elliptic curve" error quotes it, so a key whose
	// fields are shifted by corruption would quote private bytes.
	const marker = "PRIVBYTE"
	lines := strings.Split(strings.TrimSpace(ed.PrivateKey.Reveal()), "\n")
	cases := []struct {
		name   string
		pem    string
		source *Key
		want   string
	}{
		{"empty", "", ed, "no PEM block"},
		{"not pem", "hello", ed, "no PEM block"},
		{"body without armour", strings.Join(lines[1:len(lines)-1], "\n"), ed, "no PEM block"},
		{"public key", ed.PublicKey, ed, "no PEM block"},
		{"truncated", strings.Join(lines[:len(lines)-2], "\n") + "\n" + lines[len(lines)-1] + "\n", ed, "malformed"},
		{"unknown block type", strings.Replace(ed.PrivateKey.Reveal(), "OPENSSH PRIVATE KEY", "SECRET STUFF", 2), ed, `"SECRET STUFF"`},
		{"check bytes differ", corrupt(t, ed, func(b []byte) []byte {
			// The two check integers open the private section, which is the
			// last string of the body; change the second one.
			priv := len(b) - privateSectionLen(t, b)
			b[priv+4] ^= 0xff
			return b
		}), ed, "malformed"},
		{"ed25519 public half swapped", corrupt(t, ed, func(b []byte) []byte {
			// The private section holds pub (32) then seed||pub (64); change
			// the copy of pub that follows the seed.
			i := bytes.LastIndex(b, []byte(testComment)) - 4 - 32
			b[i] ^= 0x01
			return b
		}), ed, "does not match"},
		{"curve name replaced", corrupt(t, ec, func(b []byte) []byte {
			i := bytes.LastIndex(b, []byte("nistp256"))
			copy(b[i:], marker)
			return b
		}), ec, "malformed"},
		{"rsa modulus flipped", corrupt(t, rs, func(b []byte) []byte {
			priv := len(b) - privateSectionLen(t, b)
			b[priv+40] ^= 0x10
			return b
		}), rs, "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := ParsePrivateKey(secret.Secret(c.pem))
			if err == nil {
				t.Fatalf("ParsePrivateKey gave %s, want an error", k.SHA256)
			}
			if !errors.Is(err, ErrInvalidKey) {
				t.Errorf("error %q does not wrap ErrInvalidKey", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			assertNoKeyMaterial(t, err.Error(), c.pem)
			assertNoKeyMaterial(t, err.Error(), c.source.PrivateKey.Reveal())
			if strings.Contains(err.Error(), marker) {
				t.Errorf("error %q quotes bytes from inside the key", err)
			}
		})
	}

	t.Run("passphrase-protected", func(t *testing.T) {
		bin := sshKeygen(t)
		privFile := filepath.Join(t.TempDir(), "key")
		runSSHKeygen(t, bin, "-q", "-t", "ed25519", "-N", "hunter2", "-f", privFile)
		data, err := os.ReadFile(privFile)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParsePrivateKey(secret.Secret(data))
		if err == nil || !strings.Contains(err.Error(), "passphrase") {
			t.Fatalf("ParsePrivateKey of an encrypted key: error %v, want one about the passphrase", err)
		}
		assertNoKeyMaterial(t, err.Error(), string(data))
	})
}

// privateSectionLen returns the length of the last length-prefixed string of
// an openssh-key-v1 body, which is the private section.
func privateSectionLen(t *testing.T, body []byte) int {
	t.Helper()
	// Walk: magic, cipher, kdf, kdf options, key count, public key, private.
	i := len("openssh-key-v1\x00")
	str := func() int {
		n := int(body[i])<<24 | int(body[i+1])<<16 | int(body[i+2])<<8 | int(body[i+3])
		i += 4 + n
		return n
	}
	str()
	str()
	str()
	i += 4
	str()
	n := str()
	if i != len(body) {
		t.Fatalf("unexpected openssh-key-v1 layout")
	}
	return n
}

// assertNoKeyMaterial fails if out contains any 12-character run of a PEM
// body line (base64), or any 8-byte run of the key's secret numbers (ed25519
// seed, RSA D, P and Q, ECDSA D) raw, hex, base64 or Go-quoted, which is how
// a parser or a careless %v would show them.
func assertNoKeyMaterial(t *testing.T, out, pemText string) {
	t.Helper()
	const window = 12
	for _, line := range strings.Split(pemText, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "-----") {
			continue
		}
		for i := 0; i+window <= len(line); i++ {
			if strings.Contains(out, line[i:i+window]) {
				t.Fatalf("output %q contains key text %q", out, line[i:i+window])
			}
		}
	}
	for _, part := range secretParts(pemText) {
		for i := 0; i+8 <= len(part); i++ {
			chunk := part[i : i+8]
			quoted := strconv.Quote(string(chunk))
			for _, form := range []string{
				string(chunk),
				hex.EncodeToString(chunk),
				base64.StdEncoding.EncodeToString(chunk),
				quoted[1 : len(quoted)-1],
			} {
				if strings.Contains(out, form) {
					t.Fatalf("output %q contains secret key bytes", out)
				}
			}
		}
	}
}

// secretParts returns the secret numbers of an unencrypted private key, or
// nothing when pemText is not one.
func secretParts(pemText string) [][]byte {
	raw, err := ssh.ParseRawPrivateKey([]byte(pemText))
	if err != nil {
		return nil
	}
	switch k := raw.(type) {
	case *ed25519.PrivateKey:
		return [][]byte{k.Seed()}
	case *rsa.PrivateKey:
		return [][]byte{k.D.Bytes(), k.Primes[0].Bytes(), k.Primes[1].Bytes()}
	case *ecdsa.PrivateKey:
		d, _ := k.Bytes()
		return [][]byte{d}
	}
	return nil
}

func TestKey_NeverPrintsPrivateKey(t *testing.T) {
	gen := generated(t, specCases[0])
	// Only PrivateKey is secret; blank the public line so that its base64
	// cannot be mistaken for private key text by assertNoKeyMaterial.
	k := &Key{Type: gen.Type, PrivateKey: gen.PrivateKey, SHA256: gen.SHA256, MD5: gen.MD5}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("made", "key", k)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("made", "key", *k)
	j, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{
		fmt.Sprintf("%v %+v %#v %s", k, *k, *k, *k),
		logs.String(),
		string(j),
	} {
		assertNoKeyMaterial(t, out, k.PrivateKey.Reveal())
		if strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("output shows the private key PEM: %s", out)
		}
	}
	if !strings.Contains(string(j), k.SHA256) {
		t.Errorf("JSON %s lost the public fields", j)
	}
}

func BenchmarkGenerate(b *testing.B) {
	for _, c := range specCases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := Generate(c.spec, testComment); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParsePrivateKey(b *testing.B) {
	k, err := Generate(Spec{Type: "ed25519"}, testComment)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ParsePrivateKey(k.PrivateKey); err != nil {
			b.Fatal(err)
		}
	}
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(line)
}
