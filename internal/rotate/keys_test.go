package rotate_test

import (
	"testing"

	"github.com/rotatord/rotatord/internal/keygen"
)

// mustPub returns a fresh authorized_keys line.
func mustPub(t *testing.T) string {
	t.Helper()
	k, err := keygen.Generate(keygen.Spec{Type: keygen.TypeED25519}, "someone@laptop")
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey
}
