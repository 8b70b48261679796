package hosts

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/keygen"
	"github.com/rotatord/rotatord/internal/secret"
)

// KeyFromPrivate builds a Key from a private key as Vault holds it (any
// unencrypted PEM form OpenSSH reads) and its authorized_keys line, which
// may be empty for an older key that is only used to log in. The signer
// lives in memory only. Errors never quote key bytes (see keygen).
func KeyFromPrivate(privateKey secret.Secret, authorizedKey string) (Key, error) {
	parsed, err := keygen.ParsePrivateKey(privateKey)
	if err != nil {
		return Key{}, fmt.Errorf("%w: %w", ErrInvalidKeys, err)
	}
	signer, err := ssh.ParsePrivateKey([]byte(privateKey.Reveal()))
	if err != nil {
		// keygen accepted it, so this is not expected; x/crypto's message
		// is not passed on because it can quote fields of the key.
		return Key{}, fmt.Errorf("%w: %w", ErrInvalidKeys, errors.New("parse private key: unsupported key"))
	}
	k := Key{Signer: signer, AuthorizedKey: authorizedKey, Fingerprint: parsed.SHA256}
	if authorizedKey != "" {
		if err := k.normalize(true); err != nil {
			return Key{}, fmt.Errorf("%w: %w", ErrInvalidKeys, err)
		}
	}
	return k, nil
}
