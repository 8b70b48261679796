package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Buckets of host rotation (DESIGN.md §9.2).
const (
	bucketHosts    = "hosts"     // policy \x00 host -> HostRecord
	bucketHostPins = "host_pins" // host:port -> HostPin
)

// HostsTx is the part of Tx about running machines: one record per host
// of a policy, and the host keys pinned on first contact.
type HostsTx interface {
	// PutHost writes h under its policy and host, replacing any earlier
	// version.
	PutHost(h HostRecord) error
	// Host returns one host's record and whether it exists.
	Host(policy, host string) (HostRecord, bool, error)
	// Hosts returns policy's host records in host order; an empty policy
	// means every policy's, in policy then host order.
	Hosts(policy string) ([]HostRecord, error)
	// DeleteHost removes a host's record (the host left the policy); an
	// absent one is not an error.
	DeleteHost(policy, host string) error

	// PinHostKey records the host key fingerprint first seen at hostport
	// (trust on first use). It refuses (ErrPinConflict) to replace a
	// different pin: a changed host key is a human's call, made with
	// UnpinHostKey.
	PinHostKey(hostport, fingerprint string, at time.Time) error
	// HostKeyPin returns the pin of hostport and whether there is one.
	HostKeyPin(hostport string) (HostPin, bool, error)
	// UnpinHostKey forgets the pin of hostport; an absent one is not an
	// error.
	UnpinHostKey(hostport string) error
}

// ErrPinConflict is returned by PinHostKey when hostport is pinned to
// another fingerprint.
var ErrPinConflict = errors.New("host is pinned to another host key")

// HostStatus is a host's state as the last convergence left it.
type HostStatus string

// Host statuses: ok, stale, unreachable and unverified are DESIGN.md
// §9.2's; the others say why a host needs a human.
const (
	HostOK             HostStatus = "ok"
	HostStale          HostStatus = "stale"
	HostUnreachable    HostStatus = "unreachable"
	HostUnverified     HostStatus = "unverified"
	HostDenied         HostStatus = "denied"
	HostKeyChanged     HostStatus = "host_key_changed"
	HostKeyUnknown     HostStatus = "host_key_unknown"
	HostNeverContacted HostStatus = "" // a host in the config rotatord has not tried yet
)

// HostRecord is what rotatord knows about one host of one policy. It holds
// fingerprints and addresses only: never key material.
type HostRecord struct {
	Policy string `json:"policy"`
	// Host names the host: "user@addr:port", the key of the record.
	Host    string `json:"host"`
	Address string `json:"address"`
	Port    int    `json:"port,omitzero"`
	User    string `json:"user"`
	// Source is "static" (hosts.targets) or "discovered".
	Source string `json:"source,omitzero"`
	// HostKeyFingerprint is the SHA256 fingerprint of the host key last
	// verified.
	HostKeyFingerprint string `json:"host_key_fingerprint,omitzero"`
	// Trusts are the policy's fingerprints authorized_keys held when last
	// read or written, in file order.
	Trusts []string `json:"trusts,omitzero"`
	// CurrentFingerprint is the policy's current key at the last attempt,
	// so a later rotation shows the host as stale without contacting it.
	CurrentFingerprint string     `json:"current_fingerprint,omitzero"`
	Status             HostStatus `json:"status,omitzero"`
	// Verified: a login with the current key alone succeeded at LastContact.
	Verified    bool      `json:"verified,omitzero"`
	LastContact time.Time `json:"last_contact,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitzero"`
	// ConsecutiveFailures counts attempts since the last success, and
	// NextRetry is when a failed host is tried again: the backoff survives
	// restarts.
	ConsecutiveFailures int       `json:"consecutive_failures,omitzero"`
	NextRetry           time.Time `json:"next_retry,omitzero"`
	// UnreachableSince starts the current streak of unreachable attempts
	// (zero when the host answered last); UnreachableAlerted records that
	// the streak's one alert was queued.
	UnreachableSince   time.Time `json:"unreachable_since,omitzero"`
	UnreachableAlerted bool      `json:"unreachable_alerted,omitzero"`
	// HostKeyAlerted is the fingerprint of the changed host key already
	// alerted, so one change is alerted once.
	HostKeyAlerted string `json:"host_key_alerted,omitzero"`
}

// HostPin is a host key pinned on first contact.
type HostPin struct {
	HostPort    string    `json:"hostport"`
	Fingerprint string    `json:"fingerprint"`
	PinnedAt    time.Time `json:"pinned_at,omitzero"`
}

func (h *HostRecord) normalize() {
	h.LastContact, h.LastAttempt, h.LastSuccess = utc(h.LastContact), utc(h.LastAttempt), utc(h.LastSuccess)
	h.NextRetry, h.UnreachableSince = utc(h.NextRetry), utc(h.UnreachableSince)
}

func (t *tx) PutHost(h HostRecord) error {
	if h.Policy == "" || h.Host == "" {
		return fmt.Errorf("put host %q/%q: policy and host are required", h.Policy, h.Host)
	}
	h.normalize()
	v, err := encode(h)
	if err != nil {
		return fmt.Errorf("put host %s/%s: %w", h.Policy, h.Host, err)
	}
	if err := t.kv.Put(bucketHosts, policyKey(h.Policy, []byte(h.Host)), v); err != nil {
		return fmt.Errorf("put host %s/%s: %w", h.Policy, h.Host, err)
	}
	return nil
}

func (t *tx) Host(policy, host string) (HostRecord, bool, error) {
	v, err := t.kv.Get(bucketHosts, policyKey(policy, []byte(host)))
	if err != nil {
		return HostRecord{}, false, fmt.Errorf("read host %s/%s: %w", policy, host, err)
	}
	if v == nil {
		return HostRecord{}, false, nil
	}
	var h HostRecord
	if err := json.Unmarshal(v, &h); err != nil {
		return HostRecord{}, false, fmt.Errorf("decode host %s/%s: %w", policy, host, err)
	}
	return h, true, nil
}

func (t *tx) Hosts(policy string) ([]HostRecord, error) {
	var prefix []byte
	if policy != "" {
		prefix = policyKey(policy, nil)
	}
	var out []HostRecord
	err := t.kv.Scan(bucketHosts, prefix, false, func(k, v []byte) error {
		var h HostRecord
		if err := json.Unmarshal(v, &h); err != nil {
			p, host := splitPolicyKey(k)
			return fmt.Errorf("decode host %s/%s: %w", p, host, err)
		}
		out = append(out, h)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read hosts: %w", err)
	}
	return out, nil
}

func (t *tx) DeleteHost(policy, host string) error {
	if err := t.kv.Delete(bucketHosts, policyKey(policy, []byte(host))); err != nil {
		return fmt.Errorf("delete host %s/%s: %w", policy, host, err)
	}
	return nil
}

func (t *tx) PinHostKey(hostport, fingerprint string, at time.Time) error {
	if hostport == "" || fingerprint == "" {
		return errors.New("pin host key: host and fingerprint are required")
	}
	old, ok, err := t.HostKeyPin(hostport)
	if err != nil {
		return err
	}
	if ok {
		if old.Fingerprint != fingerprint {
			return fmt.Errorf("pin host key of %s: %w %s", hostport, ErrPinConflict, old.Fingerprint)
		}
		return nil
	}
	v, err := encode(HostPin{HostPort: hostport, Fingerprint: fingerprint, PinnedAt: utc(at)})
	if err != nil {
		return fmt.Errorf("pin host key of %s: %w", hostport, err)
	}
	if err := t.kv.Put(bucketHostPins, []byte(hostport), v); err != nil {
		return fmt.Errorf("pin host key of %s: %w", hostport, err)
	}
	return nil
}

func (t *tx) HostKeyPin(hostport string) (HostPin, bool, error) {
	v, err := t.kv.Get(bucketHostPins, []byte(hostport))
	if err != nil {
		return HostPin{}, false, fmt.Errorf("read host key pin of %s: %w", hostport, err)
	}
	if v == nil {
		return HostPin{}, false, nil
	}
	var p HostPin
	if err := json.Unmarshal(v, &p); err != nil {
		return HostPin{}, false, fmt.Errorf("decode host key pin of %s: %w", hostport, err)
	}
	return p, true, nil
}

func (t *tx) UnpinHostKey(hostport string) error {
	if err := t.kv.Delete(bucketHostPins, []byte(hostport)); err != nil {
		return fmt.Errorf("unpin host key of %s: %w", hostport, err)
	}
	return nil
}
