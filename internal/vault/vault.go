// Package vault keeps rotatord's private keys in a HashiCorp Vault KV v2
// engine over github.com/hashicorp/vault/api: versioned writes with
// check-and-set, reads of the latest or an older version (the grace period),
// and deletion of every version. It logs in with a token or AppRole and keeps
// the token alive in the background.
//
// Errors unwrap to the sentinels of errors.go and never carry a token, a
// secret_id or a stored value.
package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/rotatord/rotatord/internal/secret"
)

// DefaultTimeout bounds one operation (with its retries) when
// Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// DefaultMaxRetries is how many times a request is retried when
// Config.MaxRetries is zero.
const DefaultMaxRetries = 2

// Config says where Vault is and how to log in. The daemon resolves the
// token_env / token_file / role_id_file / secret_id_file settings into the
// secrets here; this package reads no files and no environment variables of
// its own, except the TLS and namespace variables (VAULT_CACERT,
// VAULT_CAPATH, VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_TLS_SERVER_NAME,
// VAULT_SKIP_VERIFY, VAULT_NAMESPACE) that vault/api honours, as the vault
// CLI does.
type Config struct {
	// Address is Vault's base URL, e.g. https://vault.internal:8200.
	Address string
	// Mount is the path of the KV v2 engine, e.g. "secret".
	Mount string
	// Auth is how to obtain a token.
	Auth Auth
	// Logger receives debug traces and renewal warnings; nil discards.
	Logger *slog.Logger
	// Timeout bounds each operation, retries included; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxRetries is how many times a request that met a connection error,
	// a 429 or a 5xx other than "sealed" is retried (1 to 1.5 s apart);
	// zero means DefaultMaxRetries, a negative value disables retries.
	MaxRetries int
}

// Auth holds exactly one way to log in: Token, or AppRole.
type Auth struct {
	// Token is used as is. When renewable it is renewed in the background
	// until its max TTL; after that an operator must provide a new one.
	Token secret.Secret
	// AppRole logs in with role_id and secret_id, and logs in again
	// whenever the token it got can no longer be renewed.
	AppRole *AppRole
}

// AppRole holds AppRole credentials.
type AppRole struct {
	RoleID   secret.Secret
	SecretID secret.Secret
	// MountPath is where the AppRole auth method is enabled; empty means
	// "approle".
	MountPath string
}

// Store reads and writes secrets in one KV v2 mount. It is safe for
// concurrent use. Close stops the background token renewal.
type Store struct {
	client *api.Client
	kv     *api.KVv2
	mount  string
	log    *slog.Logger
	login  *approle.AppRoleAuth // nil with token auth
	creds  []string             // configured credentials, kept out of every error

	mu         sync.Mutex
	loginToken string // token of the latest AppRole login, kept out of errors too

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// New connects to Vault and logs in. It fails when the configuration is
// incomplete or the login is refused or impossible (unreachable, sealed);
// with a token it also fails when Vault rejects the token. It does not
// check the mount: call Check for that.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mount := strings.Trim(cfg.Mount, "/")
	s := &Store{
		client: client,
		kv:     client.KVv2(mount),
		mount:  mount,
		log:    log,
		done:   make(chan struct{}),
	}

	var auth *api.Secret
	if ar := cfg.Auth.AppRole; ar != nil {
		s.creds = []string{ar.RoleID.Reveal(), ar.SecretID.Reveal()}
		mountPath := ar.MountPath
		if mountPath == "" {
			mountPath = "approle"
		}
		s.login, err = approle.NewAppRoleAuth(ar.RoleID.Reveal(),
			&approle.SecretID{FromString: ar.SecretID.Reveal()},
			approle.WithMountPath(mountPath))
		if err != nil {
			return nil, fmt.Errorf("vault: approle: %w", err)
		}
		if auth, err = s.doLogin(ctx); err != nil {
			return nil, err
		}
	} else {
		s.creds = []string{cfg.Auth.Token.Reveal()}
		client.SetToken(cfg.Auth.Token.Reveal())
		if auth, err = s.lookupToken(ctx, cfg.Auth.Token); err != nil {
			return nil, err
		}
	}

	rctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.keepAlive(rctx, auth)
	return s, nil
}

func (c Config) validate() error {
	var errs []error
	if c.Address == "" {
		errs = append(errs, errors.New("vault: address is empty"))
	}
	if strings.Trim(c.Mount, "/") == "" {
		errs = append(errs, errors.New("vault: mount is empty"))
	}
	switch ar := c.Auth.AppRole; {
	case ar != nil && !c.Auth.Token.Empty():
		errs = append(errs, errors.New("vault: auth: both a token and AppRole credentials are set; choose one"))
	case ar != nil && (ar.RoleID.Empty() || ar.SecretID.Empty()):
		errs = append(errs, errors.New("vault: auth: AppRole needs both role_id and secret_id"))
	case ar == nil && c.Auth.Token.Empty():
		errs = append(errs, errors.New("vault: auth: no token and no AppRole credentials"))
	}
	return errors.Join(errs...)
}

// maxIdleConns is how many idle connections to Vault are kept.
const maxIdleConns = 64

func newClient(cfg Config) (*api.Client, error) {
	ac := api.DefaultConfig()
	if ac.Error != nil {
		return nil, fmt.Errorf("vault: client config: %w", ac.Error)
	}
	ac.Address = cfg.Address
	ac.AgentAddress = "" // VAULT_AGENT_ADDR would take precedence over Address
	ac.Timeout = cfg.Timeout
	if ac.Timeout <= 0 {
		ac.Timeout = DefaultTimeout
	}
	switch {
	case cfg.MaxRetries == 0:
		ac.MaxRetries = DefaultMaxRetries
	case cfg.MaxRetries < 0:
		ac.MaxRetries = 0
	default:
		ac.MaxRetries = cfg.MaxRetries
	}
	ac.CheckRetry = retryPolicy
	// vault/api keeps GOMAXPROCS+1 idle connections per host; with many
	// rotations in flight the rest were closed and dialled again for every
	// request. Keep enough for the engine's concurrency.
	if tr, ok := ac.HttpClient.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = maxIdleConns
	}
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("vault: client for %s: %w", cfg.Address, err)
	}
	// NewClient picks up VAULT_TOKEN; the token comes from Config only.
	client.ClearToken()
	return client, nil
}

// retryPolicy is vault/api's, except that "sealed" is final: unsealing
// takes an operator, not 1.5 seconds, and the caller should hear it now.
func retryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
		return false, nil
	}
	return api.DefaultRetryPolicy(ctx, resp, err)
}

// Close stops the background renewal. It does not revoke the token: an
// AppRole token expires on its own, and a configured token is the
// operator's. Close is idempotent; the Store must not be used after it.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.stop()
		<-s.done
	})
}

// doLogin logs in with AppRole and installs the new token.
func (s *Store) doLogin(ctx context.Context) (*api.Secret, error) {
	// Log in from a token-less clone: an expired token in the header must
	// not get in the way of the login request.
	lc, err := s.client.Clone()
	if err != nil {
		return nil, fmt.Errorf("vault: login: clone client: %w", err)
	}
	lc.ClearToken()
	auth, err := s.login.Login(ctx, lc)
	if err != nil {
		return nil, classify(ctx, "login", "", err, s.secrets())
	}
	if auth == nil || auth.Auth == nil || auth.Auth.ClientToken == "" {
		return nil, &Error{Op: "login", Detail: "Vault answered without a client token"}
	}
	s.client.SetToken(auth.Auth.ClientToken)
	s.mu.Lock()
	s.loginToken = auth.Auth.ClientToken
	s.mu.Unlock()
	s.log.Info("vault: logged in with AppRole",
		"ttl", time.Duration(auth.Auth.LeaseDuration)*time.Second,
		"renewable", auth.Auth.Renewable)
	return auth, nil
}

// secrets lists the values that must not survive into an error message.
func (s *Store) secrets(extra ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.creds)+1+len(extra))
	out = append(out, s.creds...)
	if s.loginToken != "" {
		out = append(out, s.loginToken)
	}
	return append(out, extra...)
}

// lookupToken checks a configured token and learns whether it can be
// renewed. It returns nil when there is nothing to renew.
func (s *Store) lookupToken(ctx context.Context, token secret.Secret) (*api.Secret, error) {
	self, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, classify(ctx, "login", "", err, s.secrets())
	}
	ttl, err := self.TokenTTL()
	if err != nil {
		return nil, &Error{Op: "login", Detail: "unreadable token TTL: " + redact(err.Error(), s.secrets())}
	}
	renewable, err := self.TokenIsRenewable()
	if err != nil {
		return nil, &Error{Op: "login", Detail: "unreadable token renewability: " + redact(err.Error(), s.secrets())}
	}
	s.log.Info("vault: using the configured token", "ttl", ttl, "renewable", renewable)
	if ttl <= 0 || !renewable {
		// Root-like tokens never expire; others cannot be kept alive.
		return nil, nil
	}
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken:   token.Reveal(),
		Renewable:     true,
		LeaseDuration: int(ttl / time.Second),
	}}, nil
}

// keepAlive renews the token until Close. With AppRole it logs in again
// whenever the token reaches its max TTL or renewal fails for good; with a
// configured token it can only warn that the token will expire.
func (s *Store) keepAlive(ctx context.Context, auth *api.Secret) {
	defer close(s.done)
	lastLogin := time.Now()
	for {
		if auth != nil && auth.Auth != nil && auth.Auth.LeaseDuration <= 0 {
			// A token without TTL never expires: nothing to renew.
			<-ctx.Done()
			return
		}
		if auth != nil {
			err := s.watch(ctx, auth)
			if ctx.Err() != nil {
				return
			}
			if s.login == nil {
				attrs := []any{}
				if err != nil {
					attrs = append(attrs, "err", classify(ctx, "renew token", "", err, s.secrets()))
				}
				s.log.Warn("vault: token renewal stopped; the token will expire and must be replaced", attrs...)
				return
			}
			if err != nil {
				s.log.Warn("vault: token renewal failed; logging in again",
					"err", classify(ctx, "renew token", "", err, s.secrets()))
			} else {
				s.log.Info("vault: token reached its max TTL; logging in again")
			}
		} else if s.login == nil {
			return
		}
		// However short the tokens, do not hammer Vault with logins.
		if !sleepCtx(ctx, time.Until(lastLogin.Add(time.Second))) {
			return
		}
		auth = s.relogin(ctx)
		if auth == nil {
			return // closed
		}
		lastLogin = time.Now()
	}
}

// watch runs a LifetimeWatcher on auth until it ends or ctx is done.
func (s *Store) watch(ctx context.Context, auth *api.Secret) error {
	w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: auth})
	if err != nil {
		return err
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.DoneCh():
			return err
		case r := <-w.RenewCh():
			if r != nil && r.Secret != nil && r.Secret.Auth != nil {
				s.log.Debug("vault: token renewed",
					"ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
			}
		}
	}
}

// relogin logs in with AppRole until it succeeds, backing off from 1 s to
// 1 min; it returns nil when ctx is done.
func (s *Store) relogin(ctx context.Context) *api.Secret {
	wait := time.Second
	for {
		auth, err := s.doLogin(ctx)
		if err == nil {
			return auth
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("vault: AppRole login failed; will retry", "err", err, "retry_in", wait)
		if !sleepCtx(ctx, wait) {
			return nil
		}
		wait = min(2*wait, time.Minute)
	}
}

// sleepCtx waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
