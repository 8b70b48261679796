package rotate

import (
	"context"

	"github.com/rotatord/rotatord/internal/state"
)

// KeyStore is the secret store holding private keys: a KV v2 store where
// every write makes a new version. internal/vault implements it.
//
// Paths are relative to the store's mount. Get returns an error matching
// fs.ErrNotExist (errors.Is) when the path holds no live version.
type KeyStore interface {
	// Put writes data as a new version. cas < 0 writes unconditionally;
	// cas == 0 only if the path is absent; cas == n only if the current
	// version is n.
	Put(ctx context.Context, path string, data map[string]string, cas int) (version int, err error)
	// Get reads the latest version.
	Get(ctx context.Context, path string) (data map[string]string, version int, err error)
	// GetVersion reads one version: the keys a path held before, kept
	// while their grace period lasts (and a few more, as KV v2 keeps).
	GetVersion(ctx context.Context, path string, version int) (data map[string]string, err error)
	// Delete removes every version of path; an absent path is not an error.
	Delete(ctx context.Context, path string) error
}

// Journal is the durable record of what the engine did and is doing: a
// state.Store, over bbolt or etcd. Update may run fn more than once
// (batched commits, retried conflicts), so fn must only touch the
// transaction.
type Journal interface {
	Update(fn func(tx state.Tx) error) error
	View(fn func(tx state.Tx) error) error
}
