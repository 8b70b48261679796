package audit

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
)

// KeyPath is where the HMAC key lives, relative to the KV v2 mount of the
// Vault configuration: "<mount>/rotatord/audit-key".
const KeyPath = "rotatord/audit-key"

// keyField is the field of the Vault secret that holds the key, in hex.
const keyField = "key"

// KeySize is the size of the keys GenerateKey makes, and the least NewKey
// accepts: HMAC-SHA256 gains nothing from more, and a shorter key is weaker
// than the hash.
const KeySize = 32

// redacted is what a Key shows wherever it is printed, logged or
// marshalled.
const redacted = "[REDACTED]"

// Key is the HMAC key. It redacts itself in fmt (every verb), log/slog,
// JSON and text encodings, so that printing one by accident shows
// "[REDACTED]"; only Hex returns the value. The zero Key means "no key":
// Verify then checks the chain but not the HMACs, and Seal writes an HMAC
// under the empty key, which no real key verifies.
type Key struct {
	b []byte
}

// NewKey returns a Key holding a copy of b, which must have at least
// KeySize bytes.
func NewKey(b []byte) (Key, error) {
	if len(b) < KeySize {
		return Key{}, fmt.Errorf("audit key: %d bytes, want at least %d", len(b), KeySize)
	}
	return Key{b: append([]byte(nil), b...)}, nil
}

// GenerateKey returns a new random key of KeySize bytes.
func GenerateKey() (Key, error) {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("generate audit key: %w", err)
	}
	return Key{b: b}, nil
}

// ParseKey reads a key written in hex (as Vault holds it) or in standard or
// URL-safe base64, padded or not. Its errors never quote the text.
func ParseKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil {
		return NewKey(b)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return NewKey(b)
		}
	}
	return Key{}, errors.New("audit key: neither hex nor base64")
}

// IsZero reports whether k holds no key.
func (k Key) IsZero() bool { return len(k.b) == 0 }

// Hex returns the key in hex, the form Vault holds and examples/
// verify_audit.py reads. Keep the result out of errors and logs.
func (k Key) Hex() string { return hex.EncodeToString(k.b) }

// Equal reports whether k and o are the same key, in constant time.
func (k Key) Equal(o Key) bool { return hmac.Equal(k.b, o.b) }

// String redacts the key.
func (k Key) String() string { return redacted }

// GoString redacts the key for %#v.
func (k Key) GoString() string { return redacted }

// Format redacts the key for every fmt verb, %x and %d included, which
// would otherwise print the bytes of the struct's field.
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue redacts the key in log/slog output.
func (k Key) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON redacts the key in JSON.
func (k Key) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText redacts the key for encoders that use
// encoding.TextMarshaler.
func (k Key) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// mac returns the hex HMAC-SHA256 of b.
func (k Key) mac(b []byte) string {
	h := hmac.New(sha256.New, k.b)
	h.Write(b)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}

// macer reuses one HMAC state across entries: hmac.New costs more than
// hashing a typical entry.
type macer struct {
	h      hash.Hash
	digest [sha256.Size]byte
	hex    [2 * sha256.Size]byte
}

func (k Key) newMACer() *macer { return &macer{h: hmac.New(sha256.New, k.b)} }

// sum returns the hex HMAC of b.
func (m *macer) sum(b []byte) string {
	hexSum := m.sumHex(b)
	return string(hexSum)
}

// sumHex returns the hex HMAC of b in a buffer the next call overwrites.
func (m *macer) sumHex(b []byte) []byte {
	m.h.Reset()
	m.h.Write(b)
	hex.Encode(m.hex[:], m.h.Sum(m.digest[:0]))
	return m.hex[:]
}

// KeyStore is the part of the Vault KV v2 store the key needs, in the shape
// of rotate.KeyStore (internal/vault implements both). Paths are relative
// to the mount. Get returns an error matching fs.ErrNotExist (errors.Is)
// when the path holds no live version. Put with cas == 0 writes only if the
// path is absent.
type KeyStore interface {
	Get(ctx context.Context, path string) (data map[string]string, version int, err error)
	Put(ctx context.Context, path string, data map[string]string, cas int) (version int, err error)
}

// LoadKey returns the audit key at KeyPath, creating it on first use. The
// creation is a check-and-set write that succeeds only if the path is still
// absent, so two rotatord processes starting at once (the daemon and a CLI
// command, or two nodes) agree on one key: the one that loses the race
// reads the winner's.
//
// The key is never written anywhere but Vault; callers keep it in memory
// (KeyCache does). Errors name the path, never the key.
func LoadKey(ctx context.Context, ks KeyStore) (Key, error) {
	k, err := readKey(ctx, ks)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, err = GenerateKey()
	if err != nil {
		return Key{}, err
	}
	if _, putErr := ks.Put(ctx, KeyPath, map[string]string{keyField: k.Hex()}, 0); putErr != nil {
		// Most likely another process created the key between our read
		// and our write (a CAS mismatch): use that one. If it is still
		// absent, the write failed for another reason, which is the one
		// to report.
		winner, err := readKey(ctx, ks)
		if err == nil {
			return winner, nil
		}
		return Key{}, fmt.Errorf("create audit key at %s: %w", KeyPath, putErr)
	}
	return k, nil
}

// readKey reads and parses the key at KeyPath.
func readKey(ctx context.Context, ks KeyStore) (Key, error) {
	data, _, err := ks.Get(ctx, KeyPath)
	if err != nil {
		return Key{}, fmt.Errorf("read audit key at %s: %w", KeyPath, err)
	}
	text, ok := data[keyField]
	if !ok {
		return Key{}, fmt.Errorf("read audit key at %s: the secret has no %q field", KeyPath, keyField)
	}
	b, err := hex.DecodeString(text)
	if err != nil {
		return Key{}, fmt.Errorf("read audit key at %s: field %q is not hex", KeyPath, keyField)
	}
	k, err := NewKey(b)
	if err != nil {
		return Key{}, fmt.Errorf("read audit key at %s: %w", KeyPath, err)
	}
	return k, nil
}

// KeyCache loads the key from Vault on first use and keeps it in memory for
// the life of the process. A failed load is not cached: the next call tries
// again, so a Vault outage at startup does not stick.
type KeyCache struct {
	Store KeyStore

	mu  sync.Mutex
	key Key
}

// Key returns the cached key, loading it with LoadKey the first time.
func (c *KeyCache) Key(ctx context.Context) (Key, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.key.IsZero() {
		return c.key, nil
	}
	k, err := LoadKey(ctx, c.Store)
	if err != nil {
		return Key{}, err
	}
	c.key = k
	return k, nil
}
