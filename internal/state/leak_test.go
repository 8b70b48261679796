package state

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testPEMs returns a real PKCS#8 private key and an OpenSSH-armoured one,
// as a provider response or a careless error message could carry them.
func testPEMs(t *testing.T) (pkcs8, openssh string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	body := make([]byte, 300)
	_, _ = rand.Read(body)
	openssh = string(pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: body}))
	return pkcs8, openssh
}

// pemBody is the base64 payload of a PEM block: the part that must not
// survive anywhere, even if the armour lines were stripped.
func pemBody(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[1]
}

// TestState_NoPrivateKeyInFile is the guard behind the promise that bbolt
// never holds a private key: it writes every record type the way the engine
// does, including error texts that quote key material, and then greps the
// raw file.
func TestState_NoPrivateKeyInFile(t *testing.T) {
	pkcs8, openssh := testPEMs(t)
	path := filepath.Join(t.TempDir(), "state.db")
	db := openTest(t, path)
	gcoreBody := `{"id":"k1","private_key":"` + strings.ReplaceAll(openssh, "\n", `\n`) + `"}`
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutRotation(Rotation{
			ID: "rot-1", Policy: "inference", Step: StepFailed,
			PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake inference",
			Error:     "create key: gcore: unexpected response: " + gcoreBody,
		}); err != nil {
			return err
		}
		if err := tx.PutKey(KeyRecord{Policy: "inference", KeyID: "k1", Status: KeyActive, Fingerprint: "SHA256:x"}); err != nil {
			return err
		}
		if err := tx.PutPolicyStatus(PolicyStatus{Name: "inference", LastError: "store pending: " + pkcs8}); err != nil {
			return err
		}
		// A truncated message: the END line without its BEGIN.
		if _, err := tx.Enqueue(Event{Kind: EventFailed, Policy: "inference", Error: "..." + pkcs8[len(pkcs8)/2:]}); err != nil {
			return err
		}
		return tx.AppendAudit(AuditEntry{Action: "failed", Detail: pkcs8[:len(pkcs8)/2]})
	})

	t.Run("raw file", func(t *testing.T) {
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, leak := range []string{"PRIVATE KEY", pemBody(pkcs8), pemBody(openssh)} {
			if bytes.Contains(raw, []byte(leak)) {
				t.Errorf("state file contains %q", leak)
			}
		}
	})
	t.Run("context around the key is kept", func(t *testing.T) {
		db = openTest(t, path)
		mustView(t, db, func(tx *Tx) error {
			r, _, err := tx.Rotation("rot-1")
			want := `create key: gcore: unexpected response: {"id":"k1","private_key":"[redacted key material]\n"}`
			if r.Error != want {
				t.Errorf("stored error = %q\nwant %q", r.Error, want)
			}
			return err
		})
	})
}

func TestScrubPrivateKeys(t *testing.T) {
	pkcs8, openssh := testPEMs(t)
	for _, tc := range []struct {
		name string
		in   string
		want string
	}{
		{"no key is untouched", "upload: 403 API key invalid", "upload: 403 API key invalid"},
		{"whole block keeps context", "before " + pkcs8 + "after", "before [redacted key material]\nafter"},
		{"two blocks", openssh + "|" + pkcs8, "[redacted key material]\n|[redacted key material]\n"},
		{"block cut short", "got: " + openssh[:60], "got: [redacted key material]"},
		{"fragment without BEGIN", "tail " + pkcs8[40:], "[redacted key material]"},
		{"quotes and escapes around", `msg "` + pkcs8 + `" \ end`, `msg "[redacted key material]` + "\n" + `" \ end`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encode(AuditEntry{Action: "x", Detail: tc.in, KeyName: "kept"})
			if err != nil {
				t.Fatal(err)
			}
			var got AuditEntry
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("scrubbed JSON does not decode: %v\n%s", err, b)
			}
			if got.Detail != tc.want || got.KeyName != "kept" || got.Action != "x" {
				t.Errorf("Detail = %q, want %q (other fields kept)", got.Detail, tc.want)
			}
		})
	}
}
