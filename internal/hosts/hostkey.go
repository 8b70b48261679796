package hosts

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// tofuHostKeyAlgos is the fixed preference used for hosts not in known_hosts.
// A pin is one fingerprint, so the algorithm negotiated with a host must not
// depend on anything that can drift between runs (such as x/crypto's
// default order): with a fixed order, a host that keeps its host keys always
// presents the same one. The order is OpenSSH's own preference.
var tofuHostKeyAlgos = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

// probeKey is a public key no host has (the all-zero ed25519 point is not a
// key anyone can hold). Checking it against known_hosts fails with a
// *knownhosts.KeyError that lists every key known for the host.
var probeKey, _ = ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))

// hostKeyChecker verifies the host keys of one Converge call. It remembers
// the first key it accepted, so every later connection of the call (the
// verification logins) must see the same key.
type hostKeyChecker struct {
	mu       sync.Mutex // a verification login may run beside an edit
	ctx      context.Context
	hostport string
	known    ssh.HostKeyCallback // nil: the host is not in known_hosts
	want     []string            // fingerprints known_hosts has for the host
	algos    []string            // host key algorithms to negotiate
	pins     PinStore            // nil: no trust on first use
	accepted string              // fingerprint accepted earlier in this call
	// contacted is when a host key was first accepted in this call.
	contacted time.Time
}

// newHostKeyChecker prepares the checks for one host. It fails when neither
// a known_hosts file nor a PinStore is configured, when the known_hosts
// file cannot be read, or when the host is in neither.
func newHostKeyChecker(ctx context.Context, t Target, hk HostKeys) (*hostKeyChecker, error) {
	c := &hostKeyChecker{ctx: ctx, hostport: t.HostPort(), pins: hk.Pins, algos: tofuHostKeyAlgos}
	if hk.KnownHostsFile == "" && hk.Pins == nil {
		return nil, ErrNoHostKeyPolicy
	}
	if hk.KnownHostsFile != "" {
		cb, err := knownhosts.New(hk.KnownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("read known_hosts: %w", err)
		}
		// The remote address only matters when no host name is given; ours
		// always is.
		var keyErr *knownhosts.KeyError
		if err := cb(c.hostport, &net.TCPAddr{IP: net.IPv4zero}, probeKey); errors.As(err, &keyErr) && len(keyErr.Want) > 0 {
			c.known = cb
			c.algos = nil
			for _, k := range keyErr.Want {
				c.want = append(c.want, ssh.FingerprintSHA256(k.Key))
				for _, a := range algorithmsFor(k.Key.Type()) {
					if !slices.Contains(c.algos, a) {
						c.algos = append(c.algos, a)
					}
				}
			}
			if len(c.algos) == 0 {
				return nil, fmt.Errorf("read known_hosts: no supported key type for %s", c.hostport)
			}
		}
	}
	if c.known == nil && c.pins == nil {
		return nil, fmt.Errorf("%w: %s is not in %s", ErrHostKeyUnknown, c.hostport, hk.KnownHostsFile)
	}
	return c, nil
}

// algorithmsFor lists the host key algorithms that make a server present a
// key of the given type, so that a host whose known_hosts entry is ed25519
// is not asked for its RSA key (which would look like a changed key).
func algorithmsFor(keyType string) []string {
	switch keyType {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return []string{keyType}
	default:
		return nil
	}
}

// check is the ssh.HostKeyCallback.
func (c *hostKeyChecker) check(hostname string, remote net.Addr, key ssh.PublicKey) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.verify(hostname, remote, key)
	if err == nil && c.contacted.IsZero() {
		c.contacted = time.Now()
	}
	return err
}

// seen returns the accepted host key and when it was first accepted.
func (c *hostKeyChecker) seen() (string, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accepted, c.contacted
}

func (c *hostKeyChecker) verify(hostname string, remote net.Addr, key ssh.PublicKey) error {
	got := ssh.FingerprintSHA256(key)
	if c.accepted != "" {
		if got != c.accepted {
			return &HostKeyChangedError{Host: c.hostport, Want: []string{c.accepted}, Got: got}
		}
		return nil
	}
	if c.known != nil {
		err := c.known(hostname, remote, key)
		var keyErr *knownhosts.KeyError
		var revoked *knownhosts.RevokedError
		switch {
		case err == nil:
		case errors.As(err, &keyErr):
			return &HostKeyChangedError{Host: c.hostport, Want: c.want, Got: got}
		case errors.As(err, &revoked):
			return &HostKeyChangedError{Host: c.hostport, Want: c.want, Got: got + " (revoked)"}
		default:
			return fmt.Errorf("check known_hosts: %w", err)
		}
		c.accepted = got
		return nil
	}
	pinned, ok, err := c.pins.Pinned(c.ctx, c.hostport)
	if err != nil {
		return fmt.Errorf("read host key pin: %w", err)
	}
	if ok && pinned != got {
		return &HostKeyChangedError{Host: c.hostport, Want: []string{pinned}, Got: got}
	}
	if !ok {
		if err := c.pins.Pin(c.ctx, c.hostport, got); err != nil {
			return fmt.Errorf("pin host key: %w", err)
		}
	}
	c.accepted = got
	return nil
}
