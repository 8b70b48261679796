// Package cloud defines what rotatord needs from a GPU cloud's SSH-key API:
// the Provider interface, the Key it returns, the Instance an inventory
// lists, and one typed error that classifies every failure so the rotation
// engine can decide between retry, fail fast and "already gone".
//
// Implementations live in their own packages (cloud/sesterce, cloud/gcore)
// and are tested against the contract fake in cloud/cloudtest.
package cloud

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/secret"
)

// Provider is one provider account's SSH-key API.
//
// project scopes every call: Gcore keys belong to a project, Sesterce ignores
// it (pass 0). Implementations are safe for concurrent use.
type Provider interface {
	// Name is the provider's name from the config (e.g. "sesterce-prod").
	Name() string
	// Type is the provider type: "sesterce" or "gcore".
	Type() string
	// Capabilities says what the API supports.
	Capabilities() Capabilities
	// List returns every key in the account (all pages).
	List(ctx context.Context, project int64) ([]Key, error)
	// Create uploads req.PublicKey under req.Name, or, when req.PublicKey is
	// empty and the provider can generate keys, asks the provider to make a
	// key pair. Create is never retried blindly: after an ambiguous failure
	// (timeout, dropped connection, 5xx) an implementation lists and matches
	// by name (and fingerprint when known) before it creates again.
	Create(ctx context.Context, project int64, req CreateRequest) (Created, error)
	// SetDefault marks the key as the account's default key. It returns an
	// error wrapping ErrUnsupported where Capabilities().DefaultKey is false.
	SetDefault(ctx context.Context, project int64, id string) error
	// Delete removes the key. A key that is already gone is an error wrapping
	// ErrNotFound; callers treat that as success.
	Delete(ctx context.Context, project int64, id string) error
}

// Capabilities says what a provider's API can do.
type Capabilities struct {
	// DefaultKey: the account has one default key that new instances get.
	DefaultKey bool
	// ServerGenerate: the provider can generate the key pair itself and
	// return the private half once.
	ServerGenerate bool
}

// Key is one SSH key as the provider holds it.
type Key struct {
	ID        string
	Name      string
	PublicKey string // authorized_keys line as stored by the provider
	// Fingerprint is the SHA256 fingerprint ("SHA256:...") computed locally
	// from PublicKey; empty when the public key does not parse.
	Fingerprint string
	Default     bool
	CreatedAt   time.Time
	ProjectID   int64
	// State is the provider's key state where it has one (Gcore: ACTIVE,
	// DELETING); empty otherwise.
	State string
}

// CreateRequest is the body of a key creation.
type CreateRequest struct {
	Name string
	// PublicKey is the authorized_keys line to upload. Empty asks the
	// provider to generate the pair (only where Capabilities().ServerGenerate).
	PublicKey string
	// SharedInProject is passed to providers that have the notion (Gcore);
	// nil keeps the provider's default.
	SharedInProject *bool
}

// Created is the result of Create.
type Created struct {
	Key
	// PrivateKey is set only when the provider generated the pair; it is
	// returned once and never again.
	PrivateKey secret.Secret
}

// Fingerprint returns the SHA256 fingerprint ("SHA256:...") of an
// authorized_keys line, as ssh-keygen -l prints it.
func Fingerprint(authorizedKey string) (string, error) {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorizedKey))
	if err != nil {
		return "", fmt.Errorf("parse public key: %w", err)
	}
	return ssh.FingerprintSHA256(pk), nil
}
