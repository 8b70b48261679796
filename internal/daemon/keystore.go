package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/rotatord/rotatord/internal/vault"
)

// keyStore is the rotation engine's Vault. It logs in on first use when
// Vault could not be reached at start (down, sealed): the daemon still
// starts, serves status, reports and metrics, and every rotation fails with
// the Vault error — nothing is uploaded — until Vault is back.
type keyStore struct {
	cfg vault.Config
	log *slog.Logger

	mu sync.Mutex
	st *vault.Store
}

// connect logs in. A wrong mount, refused credentials or a bad config are
// errors a retry will not fix: they stop start-up.
func (k *keyStore) connect(ctx context.Context) (*vault.Store, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.st != nil {
		return k.st, nil
	}
	st, err := vault.New(ctx, k.cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to vault: %w", err)
	}
	if err := st.Check(ctx); errors.Is(err, vault.ErrMount) {
		st.Close()
		return nil, fmt.Errorf("vault: %w", err)
	} else if err != nil {
		k.log.Warn("vault is not ready; rotations will fail until it is", "err", err)
	}
	k.st = st
	return st, nil
}

// transient reports whether a failure to connect may heal by itself.
func transient(err error) bool {
	return errors.Is(err, vault.ErrUnreachable) || errors.Is(err, vault.ErrSealed)
}

func (k *keyStore) Put(ctx context.Context, path string, data map[string]string, cas int) (int, error) {
	st, err := k.connect(ctx)
	if err != nil {
		return 0, err
	}
	return st.Put(ctx, path, data, cas)
}

func (k *keyStore) Get(ctx context.Context, path string) (map[string]string, int, error) {
	st, err := k.connect(ctx)
	if err != nil {
		return nil, 0, err
	}
	return st.Get(ctx, path)
}

func (k *keyStore) GetVersion(ctx context.Context, path string, version int) (map[string]string, error) {
	st, err := k.connect(ctx)
	if err != nil {
		return nil, err
	}
	return st.GetVersion(ctx, path, version)
}

func (k *keyStore) Delete(ctx context.Context, path string) error {
	st, err := k.connect(ctx)
	if err != nil {
		return err
	}
	return st.Delete(ctx, path)
}

// Close stops token renewal.
func (k *keyStore) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.st != nil {
		k.st.Close()
	}
}
