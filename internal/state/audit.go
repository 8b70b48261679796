package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
)

// The audit log is a bucket of entries by seq (big-endian), each sealed by
// audit.Seal: chained to its predecessor's hash and MACed with the key in
// Vault. Logs written before the chain existed are chained in place, once,
// by the first append that has a key (with an "upgraded" marker entry).

func (t *tx) AppendAudit(a AuditEntry) error {
	if err := t.appendAudit(a); err != nil {
		return fmt.Errorf("append audit %s: %w", a.Event, err)
	}
	return nil
}

func (t *tx) appendAudit(a AuditEntry) error {
	key, err := t.auditKey()
	if err != nil {
		return err
	}
	head, err := t.chainedHead(key)
	if err != nil {
		return err
	}
	// Scrub before sealing: a sealed entry must be stored byte for byte.
	if a, err = scrubEntry(a); err != nil {
		return err
	}
	sealed, _ := audit.Seal(head, a, key)
	return t.putAudit(sealed)
}

func (t *tx) auditKey() (audit.Key, error) {
	if t.s == nil || t.s.keys == nil {
		return audit.Key{}, ErrNoAuditKey
	}
	return t.s.keys.AuditKey()
}

// chainedHead returns the head to append after, chaining an older
// unchained log first.
func (t *tx) chainedHead(key audit.Key) (audit.Head, error) {
	last, ok, err := t.lastAudit()
	switch {
	case err != nil:
		return audit.Head{}, err
	case !ok:
		return audit.Genesis, nil
	case last.HMAC != "":
		return last.Head(), nil
	}
	return t.upgradeAudit(key)
}

// upgradeAudit chains a log written before entries were chained: every
// entry is sealed in seq order, in place, and an "upgraded" marker entry
// says so, in one transaction.
func (t *tx) upgradeAudit(key audit.Key) (audit.Head, error) {
	var old []AuditEntry
	if err := t.ForEachAudit(func(e AuditEntry) error { old = append(old, e); return nil }); err != nil {
		return audit.Head{}, err
	}
	c := audit.NewChain(audit.Genesis, key)
	for _, e := range old {
		if err := t.kv.Delete(bucketAudit, u64Key(e.Seq)); err != nil {
			return audit.Head{}, err
		}
		e, err := scrubEntry(e)
		if err != nil {
			return audit.Head{}, err
		}
		if err := t.putAudit(c.Append(e)); err != nil {
			return audit.Head{}, err
		}
	}
	if err := t.putAudit(c.Append(audit.NewUpgradeMarker(uint64(len(old)), ""))); err != nil {
		return audit.Head{}, err
	}
	return c.Head(), nil
}

func (t *tx) putAudit(e AuditEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit entry %d: %w", e.Seq, err)
	}
	return t.kv.Put(bucketAudit, u64Key(e.Seq), v)
}

// lastAudit returns the newest entry.
func (t *tx) lastAudit() (AuditEntry, bool, error) {
	var last AuditEntry
	found := false
	err := t.kv.Scan(bucketAudit, nil, true, func(k, v []byte) error {
		e, err := decodeAudit(k, v)
		last, found = e, true
		if err != nil {
			return err
		}
		return ErrStopScan
	})
	return last, found, err
}

func (t *tx) ForEachAudit(fn func(AuditEntry) error) error {
	return t.kv.Scan(bucketAudit, nil, false, func(k, v []byte) error {
		e, err := decodeAudit(k, v)
		if err != nil {
			return err
		}
		return fn(e)
	})
}

func (t *tx) AuditHead() (audit.Head, error) {
	last, ok, err := t.lastAudit()
	if err != nil || !ok {
		return audit.Genesis, err
	}
	if last.HMAC == "" {
		// Not chained yet (a log from before the chain, until the first
		// append with a key): there is no head to publish.
		return audit.Head{}, nil
	}
	return last.Head(), nil
}

func (t *tx) PruneAudit(before time.Time, limit int) (int, error) {
	key, err := t.auditKey()
	if err != nil {
		return 0, fmt.Errorf("prune audit: %w", err)
	}
	head, err := t.chainedHead(key)
	if err != nil {
		return 0, fmt.Errorf("prune audit: %w", err)
	}
	var doomed []AuditEntry
	err = t.kv.Scan(bucketAudit, nil, false, func(k, v []byte) error {
		e, err := decodeAudit(k, v)
		if err != nil {
			return err
		}
		if !e.Time.Before(before) || e.Seq == head.Seq || (limit > 0 && len(doomed) >= limit) {
			return ErrStopScan
		}
		doomed = append(doomed, e)
		return nil
	})
	if err != nil || len(doomed) == 0 {
		return 0, err
	}
	for _, e := range doomed {
		if err := t.kv.Delete(bucketAudit, u64Key(e.Seq)); err != nil {
			return 0, fmt.Errorf("prune audit: %w", err)
		}
	}
	cp, _ := audit.Seal(head, audit.NewCheckpoint(doomed[len(doomed)-1].Head(), before), key)
	if err := t.putAudit(cp); err != nil {
		return 0, fmt.Errorf("prune audit: %w", err)
	}
	return len(doomed), nil
}

// storedAudit decodes an entry as stored, including the names entries had
// before the chain (action and actor, now event and trigger).
type storedAudit struct {
	audit.Entry
	Action string `json:"action"`
	Actor  string `json:"actor"`
}

func decodeAudit(k, v []byte) (AuditEntry, error) {
	if e, err := audit.ParseEntry(v); err == nil {
		return e, nil
	}
	// An entry from before the chain (other field names), or a damaged
	// one: encoding/json says which.
	var s storedAudit
	if err := json.Unmarshal(v, &s); err != nil {
		return AuditEntry{}, fmt.Errorf("decode audit entry %d: %w", binary.BigEndian.Uint64(k), err)
	}
	if s.Event == "" {
		s.Event = s.Action
	}
	if s.Trigger == "" {
		s.Trigger = s.Actor
	}
	return s.Entry, nil
}

// scrubEntry removes private key material from e's text the way every
// stored record is scrubbed, before it is sealed.
func scrubEntry(e AuditEntry) (AuditEntry, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return e, err
	}
	if clean := scrubPrivateKeys(b); !bytes.Equal(clean, b) {
		var out AuditEntry
		if err := json.Unmarshal(clean, &out); err != nil {
			return e, errors.Join(errors.New("scrub audit entry"), err)
		}
		return out, nil
	}
	return e, nil
}
