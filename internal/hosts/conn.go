package hosts

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"golang.org/x/crypto/ssh"
)

// clientVersion names rotatord in the host's sshd log.
const clientVersion = "SSH-2.0-rotatord"

// loginError says how far a login got, so Converge can tell an unreachable
// host from a refused host key from a host that rejects every key.
type loginError struct {
	status Status
	err    error
}

func (e *loginError) Error() string { return e.err.Error() }
func (e *loginError) Unwrap() error { return e.err }

// errAllKeysOffered ends authentication when every key of a connection was
// offered; returned by the auth callback, it is how a refusal is recognised
// without parsing x/crypto's message.
var errAllKeysOffered = errors.New("every offered key was refused")

// login opens an SSH connection authenticated with the first of keys the
// host accepts, offering them one at a time in order, and returns it with
// the index of that key. A server that hangs up after too many refused keys
// (sshd's MaxAuthTries) is dialled again with the keys not yet offered.
func login(ctx context.Context, t Target, keys []Key, hk *hostKeyChecker) (*ssh.Client, int, error) {
	offset := 0
	for {
		client, offered, err := dialOnce(ctx, t, keys[offset:], hk, nil)
		if err == nil {
			return client, offset + offered - 1, nil
		}
		var le *loginError
		if errors.As(err, &le) && le.status == StatusDenied && offered > 0 && offset+offered < len(keys) && !errors.Is(err, errAllKeysOffered) {
			// Cut off mid-way with keys left: they were never offered.
			offset += offered
			continue
		}
		return nil, -1, err
	}
}

// dialOnce makes one connection offering keys in order. It returns how many
// keys were offered (the last one is the one that logged in, on success).
// With a gate, the connection does its key exchange at once but offers no
// key before the gate is closed (see startVerify).
func dialOnce(ctx context.Context, t Target, keys []Key, hk *hostKeyChecker, gate <-chan struct{}) (*ssh.Client, int, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.HostPort())
	if err != nil {
		return nil, 0, &loginError{StatusUnreachable, err}
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	// Cancelling the context (timeout, shutdown) aborts whatever the
	// connection is doing, handshake and SFTP requests alike.
	stop := context.AfterFunc(ctx, func() { conn.Close() })

	offered := 0
	authStarted := false
	var hostKeyErr error
	cfg := &ssh.ClientConfig{
		User: t.User,
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			hostKeyErr = hk.check(hostname, remote, key)
			return hostKeyErr
		},
		HostKeyAlgorithms: hk.algos,
		ClientVersion:     clientVersion,
		AuthCallback: func(ac *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
			if !authStarted && gate != nil {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			authStarted = true
			if !slices.Contains(ac.AllowedMethods, "publickey") {
				return nil, fmt.Errorf("%w: server does not accept public keys (allows %v)", ErrDenied, ac.AllowedMethods)
			}
			if offered == len(keys) {
				return nil, errAllKeysOffered
			}
			offered++
			return ssh.PublicKeys(keys[offered-1].Signer), nil
		},
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, t.HostPort(), cfg)
	if err != nil {
		stop()
		conn.Close()
		switch {
		case hostKeyErr != nil:
			var changed *HostKeyChangedError
			if errors.As(hostKeyErr, &changed) {
				return nil, offered, &loginError{StatusHostKeyChanged, hostKeyErr}
			}
			// A PinStore failure: local, retry on the next run.
			return nil, offered, &loginError{StatusStale, hostKeyErr}
		case !authStarted:
			if ctx.Err() != nil {
				err = fmt.Errorf("%w: %w", ctx.Err(), err)
			}
			return nil, offered, &loginError{StatusUnreachable, err}
		case errors.Is(err, errAllKeysOffered), errors.Is(err, ErrDenied):
			return nil, offered, &loginError{StatusDenied, fmt.Errorf("%w: offered %d key(s)", ErrDenied, offered)}
		case ctx.Err() != nil:
			return nil, offered, &loginError{StatusUnreachable, fmt.Errorf("%w: %w", ctx.Err(), err)}
		default:
			// The server hung up during authentication (MaxAuthTries) or
			// the link broke; login decides whether keys are left to offer.
			return nil, offered, &loginError{StatusDenied, fmt.Errorf("%w: %w", ErrDenied, err)}
		}
	}
	client := ssh.NewClient(c, chans, reqs)
	if offered == 0 {
		// Authenticated by "none": whatever key is in the file, this login
		// proves nothing, and a verification that proves nothing must not
		// let a retired key be removed.
		client.Close()
		stop()
		return nil, 0, &loginError{StatusUnverified, ErrNoKeyAuth}
	}
	// The connection now lives until the caller closes the client or the
	// context ends; stop stays armed for the latter.
	_ = stop
	return client, offered, nil
}

// pendingVerify is a verification login set up ahead of the edit it
// verifies. Its TCP connection and key exchange happen while the file is
// being written, and it offers the current key only once wait is called,
// after the rename: sshd reads authorized_keys when a key is offered, so
// the login still proves the file as it is after the change, and the
// verification costs two round trips instead of a whole handshake.
type pendingVerify struct {
	gate   chan struct{}
	cancel context.CancelFunc
	done   chan error
}

func startVerify(ctx context.Context, t Target, current Key, hk *hostKeyChecker) *pendingVerify {
	ctx, cancel := context.WithCancel(ctx)
	p := &pendingVerify{gate: make(chan struct{}), cancel: cancel, done: make(chan error, 1)}
	go func() {
		c, _, err := dialOnce(ctx, t, []Key{current}, hk, p.gate)
		if err == nil {
			c.Close()
		}
		p.done <- err
	}()
	return p
}

// wait lets the connection offer the current key and returns the outcome.
func (p *pendingVerify) wait() error {
	close(p.gate)
	err := <-p.done
	p.cancel()
	return err
}

// abort drops the connection unused.
func (p *pendingVerify) abort() {
	p.cancel()
	<-p.done
}
