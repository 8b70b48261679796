package cloudtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/secret"
)

// NewPublicKey returns a fresh ed25519 authorized_keys line (with a
// comment, as users upload them) and its SHA256 fingerprint.
func NewPublicKey(t testing.TB) (publicKey, fingerprint string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("encode key: %v", err)
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " suite@cloudtest"
	fp, err := cloud.Fingerprint(line)
	if err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	return line, fp
}

// AssertNoLeak fails t when any of secrets appears in an error (printed
// with %s, %+v and %#v) or in logs; what names the calls in the failure.
// Nil errors are skipped. It returns how many errors show secret.Redacted,
// so a leak test can also prove that it made a server echo a secret (a
// test whose errors never held one proves nothing about redaction).
func AssertNoLeak(t testing.TB, what string, errs []error, logs string, secrets ...string) (redacted int) {
	t.Helper()
	for _, err := range errs {
		if err == nil {
			continue
		}
		for verb, form := range map[string]string{"%s": err.Error(), "%+v": fmt.Sprintf("%+v", err), "%#v": fmt.Sprintf("%#v", err)} {
			for _, s := range secrets {
				if s != "" && strings.Contains(form, s) {
					t.Errorf("%s: a secret leaked in an error printed with %s: %s", what, verb, form)
				}
			}
		}
		if strings.Contains(err.Error(), secret.Redacted) {
			redacted++
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("%s: a secret leaked in the logs", what)
		}
	}
	return redacted
}
