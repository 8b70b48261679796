package state

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"testing"
)

// testPEMs returns a real PKCS#8 private key and an OpenSSH-armoured one.
// (statetest.TestPEMs is the same for other packages; it imports this one.)
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
			b, err := encode(AuditEntry{Event: "x", Detail: tc.in, KeyName: "kept"})
			if err != nil {
				t.Fatal(err)
			}
			var got AuditEntry
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("scrubbed JSON does not decode: %v\n%s", err, b)
			}
			if got.Detail != tc.want || got.KeyName != "kept" || got.Event != "x" {
				t.Errorf("Detail = %q, want %q (other fields kept)", got.Detail, tc.want)
			}
		})
	}
}
