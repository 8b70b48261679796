// Package keygen makes SSH key pairs and computes the encodings rotatord
// stores and compares: the OpenSSH private key PEM that goes to Vault, the
// authorized_keys line that goes to a provider, and the SHA256 and MD5
// fingerprints that ssh-keygen prints (Gcore reports MD5, people and Vault
// use SHA256).
//
// Errors from this package never carry key material: parse errors are
// reduced to a fixed reason instead of wrapping the parser's message, because
// a corrupted key can make that message quote bytes of the key.
package keygen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/rotatord/rotatord/internal/secret"
)

// Key types a Spec may name.
const (
	TypeED25519 = "ed25519"
	TypeRSA     = "rsa"
	TypeECDSA   = "ecdsa"
)

// CommentPrefix starts the comment of every key rotatord generates, so a
// human reading authorized_keys or a provider's console sees who made it.
const CommentPrefix = "rotatord:"

// ErrInvalidSpec is wrapped by every error about a Spec keygen cannot honour.
var ErrInvalidSpec = errors.New("invalid key spec")

// ErrInvalidKey is wrapped by every error about a public or private key that
// cannot be parsed or is not supported.
var ErrInvalidKey = errors.New("invalid key")

// Spec says what kind of key to make. It mirrors policy.KeySpec (keygen is a
// leaf and does not import policy): policy applies the defaults, keygen only
// accepts complete specs. Fields that do not apply to Type are ignored.
type Spec struct {
	Type  string // "ed25519" | "rsa" | "ecdsa"
	Bits  int    // rsa: 3072 | 4096
	Curve string // ecdsa: "p256" | "p384" | "p521"
}

// Key is one key pair in the encodings rotatord stores and uploads.
type Key struct {
	// Type is the SSH algorithm name: "ssh-ed25519", "ssh-rsa",
	// "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384" or "ecdsa-sha2-nistp521".
	Type string
	// PrivateKey is the private half as PEM. Generate writes the OpenSSH
	// format ("-----BEGIN OPENSSH PRIVATE KEY-----") with the comment
	// embedded, which is what ssh and ssh-keygen read.
	PrivateKey secret.Secret
	// PublicKey is the authorized_keys line without a trailing newline,
	// with the comment when there is one: "ssh-ed25519 AAAA... rotatord:gpu-team".
	PublicKey string
	// SHA256 is the fingerprint as ssh-keygen -l prints it: "SHA256:<base64>".
	SHA256 string
	// MD5 is the fingerprint as ssh-keygen -l -E md5 prints it, without the
	// "MD5:" prefix ("aa:bb:..."), which is how Gcore reports it.
	MD5 string
}

// Comment returns the comment rotatord gives the keys of a policy.
func Comment(policy string) string { return CommentPrefix + policy }

// Generate makes a new key pair of the given spec with randomness from
// crypto/rand and encodes it. The comment is embedded in the private key and
// appended to the public key line; it must fit on one line.
func Generate(spec Spec, comment string) (*Key, error) {
	if strings.ContainsAny(comment, "\r\n\x00") {
		// A newline would let the comment add lines to authorized_keys.
		return nil, fmt.Errorf("generate key: %w: comment %q spans lines", ErrInvalidSpec, comment)
	}
	priv, err := generate(spec)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		// Not expected for the three types generate makes; the message comes from
		// x/crypto's marshaller, which never quotes key bytes.
		return nil, fmt.Errorf("encode %s private key: %w", spec.Type, err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("encode %s public key: %w", spec.Type, err)
	}
	k := describe(pub, comment)
	k.PrivateKey = secret.Secret(pem.EncodeToMemory(block))
	return k, nil
}

// generate makes the raw key pair for spec.
func generate(spec Spec) (crypto.Signer, error) {
	switch spec.Type {
	case TypeED25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	case TypeRSA:
		if spec.Bits != 3072 && spec.Bits != 4096 {
			return nil, fmt.Errorf("%w: rsa bits %d, want 3072 or 4096", ErrInvalidSpec, spec.Bits)
		}
		return rsa.GenerateKey(rand.Reader, spec.Bits)
	case TypeECDSA:
		var curve elliptic.Curve
		switch spec.Curve {
		case "p256":
			curve = elliptic.P256()
		case "p384":
			curve = elliptic.P384()
		case "p521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("%w: ecdsa curve %q, want p256, p384 or p521", ErrInvalidSpec, spec.Curve)
		}
		return ecdsa.GenerateKey(curve, rand.Reader)
	default:
		return nil, fmt.Errorf("%w: key type %q, want ed25519, rsa or ecdsa", ErrInvalidSpec, spec.Type)
	}
}

// describe fills in everything but the private key from the public key.
func describe(pub ssh.PublicKey, comment string) *Key {
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pub)), "\n")
	if comment != "" {
		line += " " + comment
	}
	return &Key{
		Type:      pub.Type(),
		PublicKey: line,
		SHA256:    ssh.FingerprintSHA256(pub),
		MD5:       ssh.FingerprintLegacyMD5(pub),
	}
}

// Fingerprints returns the SHA256 ("SHA256:...") and MD5 ("aa:bb:...")
// fingerprints of one authorized_keys line, such as a provider returns. The
// comment and options, if any, do not change them.
func Fingerprints(authorizedKey string) (sha256, md5 string, err error) {
	pub, err := parsePublic(authorizedKey)
	if err != nil {
		return "", "", err
	}
	return ssh.FingerprintSHA256(pub), ssh.FingerprintLegacyMD5(pub), nil
}

// parsePublic parses exactly one authorized_keys line. The error never
// quotes the input: a caller that passes a private key by mistake must not
// see it echoed in a log.
func parsePublic(line string) (ssh.PublicKey, error) {
	if strings.TrimSpace(line) == "" {
		return nil, fmt.Errorf("parse public key: %w: empty", ErrInvalidKey)
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w: not an authorized_keys line", ErrInvalidKey)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey(rest); err == nil {
		return nil, fmt.Errorf("parse public key: %w: more than one key", ErrInvalidKey)
	}
	return pub, nil
}

// ParsePrivateKey derives the public key and fingerprints from a private key
// in any unencrypted PEM form OpenSSH reads (OpenSSH, PKCS#1, PKCS#8, SEC 1),
// for example a copy read back from Vault or one a provider generated. The
// returned Key holds privateKey unchanged as its PrivateKey. Its PublicKey line has
// no comment, because x/crypto does not expose the comment embedded in an
// OpenSSH key; fingerprints do not depend on it.
//
// Errors name the PEM block type at most, never key bytes.
func ParsePrivateKey(privateKey secret.Secret) (*Key, error) {
	pub, err := parsePrivate([]byte(privateKey.Reveal()))
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	k := describe(pub, "")
	k.PrivateKey = privateKey
	return k, nil
}

// parsePrivate returns the public half derived from the private key in data.
func parsePrivate(data []byte) (ssh.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block found", ErrInvalidKey)
	}
	raw, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("%w: key is passphrase-protected; rotatord needs it unencrypted", ErrInvalidKey)
		}
		// Deliberately not wrapping err: x/crypto quotes fields read from
		// the key (curve and cipher names), which in a corrupted key can be
		// bytes of the private half.
		return nil, fmt.Errorf("%w: malformed or unsupported %s block", ErrInvalidKey, blockType(block.Type))
	}
	var signer crypto.Signer
	switch k := raw.(type) {
	case *ed25519.PrivateKey:
		signer = *k
	case ed25519.PrivateKey:
		signer = k
	case *rsa.PrivateKey:
		signer = k
	case *ecdsa.PrivateKey:
		signer = k
	default:
		return nil, fmt.Errorf("%w: unsupported algorithm %T: want ed25519, rsa or ecdsa", ErrInvalidKey, raw)
	}
	if k, ok := signer.(ed25519.PrivateKey); ok {
		// An OpenSSH ed25519 key stores its public half next to the seed and
		// x/crypto returns it as stored; recompute it so a tampered or
		// corrupted copy cannot claim another key's fingerprint.
		if !k.Equal(ed25519.NewKeyFromSeed(k.Seed())) {
			return nil, fmt.Errorf("%w: ed25519 public half does not match the private seed", ErrInvalidKey)
		}
	}
	pub, err := ssh.NewPublicKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("%w: unsupported public key", ErrInvalidKey)
	}
	return pub, nil
}

// blockType quotes a PEM block type for an error when it looks like one
// ("OPENSSH PRIVATE KEY"); anything else is data, not a label, and is not
// shown.
func blockType(t string) string {
	if t == "" || len(t) > 40 {
		return "PEM"
	}
	for _, r := range t {
		if (r < 'A' || r > 'Z') && r != ' ' && (r < '0' || r > '9') {
			return "PEM"
		}
	}
	return fmt.Sprintf("%q", t)
}
