package vaulttest

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/rotatord/rotatord/internal/vault"
)

// KeyStore is the KV v2 surface rotatord uses: the rotation engine's
// KeyStore, which *vault.Store implements against a real server and
// Memory in memory. RunKeyStore holds both to the same contract.
type KeyStore interface {
	Put(ctx context.Context, path string, data map[string]string, cas int) (int, error)
	Get(ctx context.Context, path string) (map[string]string, int, error)
	GetVersion(ctx context.Context, path string, version int) (map[string]string, error)
	Delete(ctx context.Context, path string) error
}

var _ KeyStore = (*vault.Store)(nil)

// MaxVersions is how many versions Memory keeps per path: KV v2's default
// when the mount sets none, so the oldest version goes as Vault's does.
const MaxVersions = 10

// Memory is an in-memory KV v2 key store for fast unit tests of code that
// uses the engine's KeyStore. It passes RunKeyStore, the suite the real
// Vault server passes (internal/vault's tests run both), so a test that
// passes against it relies only on behaviour Vault has. Errors wrap the
// same sentinels as *vault.Store's (vault.ErrNotFound, which matches
// fs.ErrNotExist, vault.ErrCASMismatch, vault.ErrSealed).
//
// It is safe for concurrent use.
type Memory struct {
	mu     sync.Mutex
	paths  map[string]*memPath
	sealed bool
}

type memPath struct {
	current  int                       // the newest version number, kept after versions are dropped
	versions map[int]map[string]string // live versions
}

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{paths: make(map[string]*memPath)} }

var _ KeyStore = (*Memory)(nil)

// Seal makes every call fail as a sealed Vault answers, until Unseal.
func (m *Memory) Seal() { m.mu.Lock(); m.sealed = true; m.mu.Unlock() }

// Unseal undoes Seal.
func (m *Memory) Unseal() { m.mu.Lock(); m.sealed = false; m.mu.Unlock() }

func (m *Memory) check(ctx context.Context, op, path string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("vault: %s %s: %w", op, path, err)
	}
	if m.sealed {
		return fmt.Errorf("vault: %s %s: %w", op, path, vault.ErrSealed)
	}
	if path == "" {
		return fmt.Errorf("vault: %s: empty path", op)
	}
	return nil
}

// Put writes data as a new version. cas < 0 writes unconditionally, 0
// only if the path has no version, n only if the newest version is n.
func (m *Memory) Put(ctx context.Context, path string, data map[string]string, cas int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, "write", path); err != nil {
		return 0, err
	}
	p := m.paths[path]
	if p == nil {
		p = &memPath{versions: make(map[int]map[string]string)}
	}
	if cas >= 0 && cas != p.current {
		return 0, fmt.Errorf("vault: write %s: %w (want version %d, found %d)", path, vault.ErrCASMismatch, cas, p.current)
	}
	m.paths[path] = p
	p.current++
	p.versions[p.current] = maps.Clone(data)
	delete(p.versions, p.current-MaxVersions)
	return p.current, nil
}

// Get reads the newest version.
func (m *Memory) Get(ctx context.Context, path string) (map[string]string, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, "read", path); err != nil {
		return nil, 0, err
	}
	p := m.paths[path]
	if p == nil || p.versions[p.current] == nil {
		return nil, 0, fmt.Errorf("vault: read %s: %w", path, vault.ErrNotFound)
	}
	return maps.Clone(p.versions[p.current]), p.current, nil
}

// GetVersion reads one version.
func (m *Memory) GetVersion(ctx context.Context, path string, version int) (map[string]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	op := fmt.Sprintf("read version %d of", version)
	if err := m.check(ctx, op, path); err != nil {
		return nil, err
	}
	if version <= 0 {
		return nil, fmt.Errorf("vault: %s %s: versions start at 1", op, path)
	}
	p := m.paths[path]
	if p == nil || p.versions[version] == nil {
		return nil, fmt.Errorf("vault: %s %s: %w", op, path, vault.ErrNotFound)
	}
	return maps.Clone(p.versions[version]), nil
}

// Delete removes every version and the metadata of path.
func (m *Memory) Delete(ctx context.Context, path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, "delete", path); err != nil {
		return err
	}
	delete(m.paths, path)
	return nil
}
