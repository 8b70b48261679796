package vaulttest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rotatord/rotatord/internal/vault"
	"github.com/rotatord/rotatord/internal/vault/vaulttest"
)

func TestMemory_Conformance(t *testing.T) {
	vaulttest.RunKeyStore(t, func(t *testing.T) (vaulttest.KeyStore, string) {
		return vaulttest.NewMemory(), "ssh"
	})
}

func TestMemory_Seal(t *testing.T) {
	m := vaulttest.NewMemory()
	ctx := context.Background()
	m.Seal()
	if _, err := m.Put(ctx, "ssh/k", map[string]string{"a": "b"}, -1); !errors.Is(err, vault.ErrSealed) {
		t.Fatalf("Put while sealed: %v, want vault.ErrSealed", err)
	}
	m.Unseal()
	if v, err := m.Put(ctx, "ssh/k", map[string]string{"a": "b"}, -1); err != nil || v != 1 {
		t.Fatalf("Put after Unseal = %d, %v; the sealed write must have left nothing", v, err)
	}
}
