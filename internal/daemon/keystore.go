package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rotatord/rotatord/internal/vault"
	"github.com/rotatord/rotatord/policy"
)

// openVault prepares the Vault client and tries to log in. Vault down or
// sealed does not stop start-up: the daemon serves status, reports and
// metrics, keeps trying in the background (watch), and every rotation
// fails with the Vault error, uploading nothing, until Vault is back. A
// wrong mount, refused credentials or a bad config stop start-up: no retry
// would fix them.
func (a *App) openVault(ctx context.Context, cfg *policy.Config) error {
	vc := vault.Config{Address: cfg.Vault.Address, Mount: cfg.Vault.Mount, Logger: a.log.With("component", "vault")}
	auth := cfg.Vault.Auth
	switch auth.Method {
	case policy.AuthAppRole:
		roleID, err := resolveSecret("vault approle role_id", "", auth.RoleIDFile)
		if err != nil {
			return err
		}
		secretID, err := resolveSecret("vault approle secret_id", "", auth.SecretIDFile)
		if err != nil {
			return err
		}
		vc.Auth.AppRole = &vault.AppRole{RoleID: roleID, SecretID: secretID, MountPath: auth.AppRoleMount}
	default:
		tok, err := resolveSecret("vault token", auth.TokenEnv, auth.TokenFile)
		if err != nil {
			return err
		}
		vc.Auth.Token = tok
	}
	a.vault = &keyStore{cfg: vc, log: a.log.With("component", "vault"), slots: make(chan struct{}, vaultInFlight)}
	if _, err := a.vault.connect(ctx); err != nil {
		if !transient(err) {
			return err
		}
		a.log.Warn("vault is not reachable; starting anyway, retrying in the background, rotations fail until it answers", "err", err)
	}
	return nil
}

// vaultInFlight bounds the key store requests in flight, to the idle
// connections the Vault client keeps (64, internal/vault). Rotations in
// flight are bounded per provider account, so with hundreds of accounts
// hundreds of rotations reach Vault at once: each request beyond the
// pool dialled a connection that was closed again when it went back, and
// the dials and closes cost rotatord and Vault more CPU than the requests
// themselves (make bench-rotations, README). On loopback or a LAN a Vault
// request takes a millisecond or two, so 64 at a time is not a
// bottleneck: the bound only makes requests wait for a warm connection.
const vaultInFlight = 64

// keyStore is the rotation engine's Vault: a vault.Store made at the first
// login that succeeds, whether at start, in the background (watch) or at
// the first use.
type keyStore struct {
	cfg vault.Config
	log *slog.Logger
	// slots holds one token per key store request in flight
	// (vaultInFlight).
	slots chan struct{}

	mu      sync.Mutex
	st      *vault.Store
	up      bool   // the last login or check succeeded
	lastErr string // why not, for status
}

// connect logs in unless already logged in.
func (k *keyStore) connect(ctx context.Context) (*vault.Store, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.st != nil {
		return k.st, nil
	}
	st, err := vault.New(ctx, k.cfg)
	if err != nil {
		k.up, k.lastErr = false, err.Error()
		return nil, fmt.Errorf("connect to vault: %w", err)
	}
	if err := st.Check(ctx); errors.Is(err, vault.ErrMount) {
		st.Close()
		return nil, fmt.Errorf("vault: %w", err)
	} else if err != nil {
		k.log.Warn("vault is not ready; rotations will fail until it is", "err", err)
		k.up, k.lastErr = false, err.Error()
	} else {
		k.up, k.lastErr = true, ""
	}
	k.st = st
	return st, nil
}

// Vault health probing: quick retries while down, a slow check while up.
const (
	vaultRetryMin = time.Second
	vaultRetryMax = time.Minute
	vaultCheck    = 30 * time.Second
)

// watch logs in when start-up could not, and then checks Vault now and
// then, until ctx ends: retries back off from 1s to 1m while Vault is down
// or sealed, and every change of state (up, down and why) is logged once
// and reported to setUp (the rotatord_vault_up gauge).
func (k *keyStore) watch(ctx context.Context, setUp func(bool)) {
	wait := vaultRetryMin
	wasUp, first := false, true
	for {
		up, why := k.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		if first || up != wasUp {
			if up {
				k.log.Info("vault is up")
			} else {
				k.log.Warn("vault is down; rotations fail until it is back", "err", why)
			}
			setUp(up)
			wasUp, first = up, false
		}
		next := vaultCheck
		if !up {
			next, wait = wait, min(wait*2, vaultRetryMax)
		} else {
			wait = vaultRetryMin
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// probe logs in if needed and checks that Vault answers and is unsealed.
func (k *keyStore) probe(ctx context.Context) (bool, string) {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := k.connect(pctx)
	if err == nil {
		err = st.Check(pctx)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.up, k.lastErr = false, err.Error()
	} else {
		k.up, k.lastErr = true, ""
	}
	return k.up, k.lastErr
}

// Health says whether Vault answered the last login or check, and why not.
func (k *keyStore) Health() (up bool, lastErr string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.up, k.lastErr
}

// transient reports whether a failure to connect may heal by itself.
func transient(err error) bool {
	return errors.Is(err, vault.ErrUnreachable) || errors.Is(err, vault.ErrSealed)
}

// acquire waits for a request slot (vaultInFlight), logging in first if
// needed; release gives the slot back.
func (k *keyStore) acquire(ctx context.Context) (st *vault.Store, release func(), err error) {
	select {
	case k.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("vault: wait for a request slot: %w", ctx.Err())
	}
	release = func() { <-k.slots }
	if err := ctxFence(ctx); err != nil { // a paused leader may resume here
		release()
		return nil, nil, err
	}
	if st, err = k.connect(ctx); err != nil {
		release()
		return nil, nil, err
	}
	return st, release, nil
}

func (k *keyStore) Put(ctx context.Context, path string, data map[string]string, cas int) (int, error) {
	st, release, err := k.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	return st.Put(ctx, path, data, cas)
}

func (k *keyStore) Get(ctx context.Context, path string) (map[string]string, int, error) {
	st, release, err := k.acquire(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer release()
	return st.Get(ctx, path)
}

func (k *keyStore) GetVersion(ctx context.Context, path string, version int) (map[string]string, error) {
	st, release, err := k.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	return st.GetVersion(ctx, path, version)
}

func (k *keyStore) Delete(ctx context.Context, path string) error {
	st, release, err := k.acquire(ctx)
	if err != nil {
		return err
	}
	defer release()
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
