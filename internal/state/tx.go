package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Tx is a state transaction, read-only inside View and read-write inside
// Update and UpdateNow. It must not be used after the function it was
// passed to returns.
type Tx struct {
	tx *bolt.Tx
}

// PutRotation writes r under r.ID, replacing any earlier version. A zero
// StartedAt keeps the stored one (or is set to now for a new rotation) and a
// zero UpdatedAt is set to now, so the journal always orders by start time.
func (tx *Tx) PutRotation(r Rotation) error {
	if r.ID == "" {
		return errors.New("put rotation: empty ID")
	}
	if r.Policy == "" {
		return fmt.Errorf("put rotation %q: empty policy", r.ID)
	}
	if !r.Step.valid() {
		return fmt.Errorf("put rotation %q: unknown step %q", r.ID, r.Step)
	}
	rots := tx.tx.Bucket(bucketRotations)
	id := []byte(r.ID)
	if v := rots.Get(id); v != nil {
		var old Rotation
		if err := json.Unmarshal(v, &old); err != nil {
			return fmt.Errorf("put rotation %q: decode stored version: %w", r.ID, err)
		}
		if err := tx.unindexRotation(old); err != nil {
			return fmt.Errorf("put rotation %q: %w", r.ID, err)
		}
		if r.StartedAt.IsZero() {
			r.StartedAt = old.StartedAt
		}
	}
	now := time.Now()
	if r.StartedAt.IsZero() {
		r.StartedAt = now
	}
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = now
	}
	r.normalize()
	v, err := encode(r)
	if err != nil {
		return fmt.Errorf("put rotation %q: %w", r.ID, err)
	}
	if err := rots.Put(id, v); err != nil {
		return fmt.Errorf("put rotation %q: %w", r.ID, err)
	}
	if err := tx.indexRotation(r); err != nil {
		return fmt.Errorf("put rotation %q: %w", r.ID, err)
	}
	return nil
}

// indexRotation adds r to the time, policy and (unless terminal) open
// indexes, which let OpenRotations and Rotations avoid decoding the whole
// journal.
func (tx *Tx) indexRotation(r Rotation) error {
	k := timeKey(r.StartedAt, r.ID)
	if err := tx.tx.Bucket(bucketRotByTime).Put(k, nil); err != nil {
		return fmt.Errorf("index by time: %w", err)
	}
	pb, err := tx.tx.Bucket(bucketRotByPolicy).CreateBucketIfNotExists([]byte(r.Policy))
	if err != nil {
		return fmt.Errorf("index by policy: %w", err)
	}
	if err := pb.Put(k, nil); err != nil {
		return fmt.Errorf("index by policy: %w", err)
	}
	if !r.Step.Terminal() {
		if err := tx.tx.Bucket(bucketRotOpen).Put(k, nil); err != nil {
			return fmt.Errorf("index open: %w", err)
		}
	}
	return nil
}

// unindexRotation removes the index entries of a stored version of a
// rotation before it is replaced.
func (tx *Tx) unindexRotation(r Rotation) error {
	k := timeKey(r.StartedAt, r.ID)
	if err := tx.tx.Bucket(bucketRotByTime).Delete(k); err != nil {
		return fmt.Errorf("unindex by time: %w", err)
	}
	if pb := tx.tx.Bucket(bucketRotByPolicy).Bucket([]byte(r.Policy)); pb != nil {
		if err := pb.Delete(k); err != nil {
			return fmt.Errorf("unindex by policy: %w", err)
		}
	}
	if err := tx.tx.Bucket(bucketRotOpen).Delete(k); err != nil {
		return fmt.Errorf("unindex open: %w", err)
	}
	return nil
}

// Rotation returns the rotation with the given ID and whether it exists.
func (tx *Tx) Rotation(id string) (Rotation, bool, error) {
	v := tx.tx.Bucket(bucketRotations).Get([]byte(id))
	if v == nil {
		return Rotation{}, false, nil
	}
	var r Rotation
	if err := json.Unmarshal(v, &r); err != nil {
		return Rotation{}, false, fmt.Errorf("decode rotation %q: %w", id, err)
	}
	return r, true, nil
}

// OpenRotations returns the rotations that are neither done nor failed,
// oldest first: the ones a restarted engine must resume.
func (tx *Tx) OpenRotations() ([]Rotation, error) {
	var out []Rotation
	c := tx.tx.Bucket(bucketRotOpen).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		r, err := tx.indexedRotation(k)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// OpenRotationsOf returns policy's rotations that are neither done nor
// failed, oldest first. It walks the policy's index and decodes only the
// open ones, so a run of one policy does not pay for every other policy's
// rotations in flight.
func (tx *Tx) OpenRotationsOf(policy string) ([]Rotation, error) {
	pb := tx.tx.Bucket(bucketRotByPolicy).Bucket([]byte(policy))
	if pb == nil {
		return nil, nil
	}
	open := tx.tx.Bucket(bucketRotOpen)
	var out []Rotation
	c := pb.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if open.Get(k) == nil {
			continue
		}
		r, err := tx.indexedRotation(k)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Rotations returns up to limit rotations of policy, newest first. An empty
// policy means every policy; a limit <= 0 means no limit.
func (tx *Tx) Rotations(policy string, limit int) ([]Rotation, error) {
	idx := tx.tx.Bucket(bucketRotByTime)
	if policy != "" {
		idx = tx.tx.Bucket(bucketRotByPolicy).Bucket([]byte(policy))
		if idx == nil {
			return nil, nil
		}
	}
	var out []Rotation
	c := idx.Cursor()
	for k, _ := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, _ = c.Prev() {
		r, err := tx.indexedRotation(k)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// indexedRotation loads the rotation an index key points to.
func (tx *Tx) indexedRotation(k []byte) (Rotation, error) {
	if len(k) <= 8 {
		return Rotation{}, fmt.Errorf("read rotation index: malformed key %x", k)
	}
	id := string(k[8:])
	r, ok, err := tx.Rotation(id)
	if err != nil {
		return Rotation{}, err
	}
	if !ok {
		return Rotation{}, fmt.Errorf("read rotation %q: in index but %w", id, ErrNotFound)
	}
	return r, nil
}

// PutKey writes k under its policy and key ID, replacing any earlier
// version.
func (tx *Tx) PutKey(k KeyRecord) error {
	if k.Policy == "" || k.KeyID == "" {
		return fmt.Errorf("put key %q/%q: policy and key ID are required", k.Policy, k.KeyID)
	}
	pb, err := tx.tx.Bucket(bucketKeys).CreateBucketIfNotExists([]byte(k.Policy))
	if err != nil {
		return fmt.Errorf("put key %s/%s: %w", k.Policy, k.KeyID, err)
	}
	k.normalize()
	v, err := encode(k)
	if err != nil {
		return fmt.Errorf("put key %s/%s: %w", k.Policy, k.KeyID, err)
	}
	if err := pb.Put([]byte(k.KeyID), v); err != nil {
		return fmt.Errorf("put key %s/%s: %w", k.Policy, k.KeyID, err)
	}
	return nil
}

// Key returns the record of one key and whether it exists.
func (tx *Tx) Key(policy, keyID string) (KeyRecord, bool, error) {
	pb := tx.tx.Bucket(bucketKeys).Bucket([]byte(policy))
	if pb == nil {
		return KeyRecord{}, false, nil
	}
	v := pb.Get([]byte(keyID))
	if v == nil {
		return KeyRecord{}, false, nil
	}
	var k KeyRecord
	if err := json.Unmarshal(v, &k); err != nil {
		return KeyRecord{}, false, fmt.Errorf("decode key %s/%s: %w", policy, keyID, err)
	}
	return k, true, nil
}

// Keys returns every key record of policy, deleted ones included, oldest
// (by CreatedAt) first.
func (tx *Tx) Keys(policy string) ([]KeyRecord, error) {
	pb := tx.tx.Bucket(bucketKeys).Bucket([]byte(policy))
	if pb == nil {
		return nil, nil
	}
	var out []KeyRecord
	err := pb.ForEach(func(id, v []byte) error {
		var k KeyRecord
		if err := json.Unmarshal(v, &k); err != nil {
			return fmt.Errorf("decode key %s/%s: %w", policy, id, err)
		}
		out = append(out, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b KeyRecord) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// ForEachKey calls fn for every key record of every policy, in policy then
// key ID order, stopping at the first error, which it returns. fn must not
// call PutKey or DeleteKeyRecord (bbolt forbids changing a bucket while it
// is iterated): collect what to change, then change it after ForEachKey.
func (tx *Tx) ForEachKey(fn func(KeyRecord) error) error {
	keys := tx.tx.Bucket(bucketKeys)
	return keys.ForEachBucket(func(policy []byte) error {
		return keys.Bucket(policy).ForEach(func(id, v []byte) error {
			var k KeyRecord
			if err := json.Unmarshal(v, &k); err != nil {
				return fmt.Errorf("decode key %s/%s: %w", policy, id, err)
			}
			return fn(k)
		})
	})
}

// DeleteKeyRecord removes a key record. Deleting one that does not exist is
// not an error. Normally a deleted key stays in state with Status
// KeyDeleted for the audit trail; this is for records that never should
// have existed.
func (tx *Tx) DeleteKeyRecord(policy, keyID string) error {
	pb := tx.tx.Bucket(bucketKeys).Bucket([]byte(policy))
	if pb == nil {
		return nil
	}
	if err := pb.Delete([]byte(keyID)); err != nil {
		return fmt.Errorf("delete key %s/%s: %w", policy, keyID, err)
	}
	return nil
}

// PutPolicyStatus writes s under s.Name, replacing any earlier version.
func (tx *Tx) PutPolicyStatus(s PolicyStatus) error {
	if s.Name == "" {
		return errors.New("put policy status: empty name")
	}
	s.normalize()
	v, err := encode(s)
	if err != nil {
		return fmt.Errorf("put policy status %q: %w", s.Name, err)
	}
	if err := tx.tx.Bucket(bucketPolicies).Put([]byte(s.Name), v); err != nil {
		return fmt.Errorf("put policy status %q: %w", s.Name, err)
	}
	return nil
}

// PolicyStatus returns the status of the named policy, or a zero status
// with only Name set if none was stored: a policy never run is healthy.
func (tx *Tx) PolicyStatus(name string) (PolicyStatus, error) {
	v := tx.tx.Bucket(bucketPolicies).Get([]byte(name))
	if v == nil {
		return PolicyStatus{Name: name}, nil
	}
	var s PolicyStatus
	if err := json.Unmarshal(v, &s); err != nil {
		return PolicyStatus{}, fmt.Errorf("decode policy status %q: %w", name, err)
	}
	return s, nil
}

// ForEachPolicyStatus calls fn for every stored policy status in name
// order, stopping at the first error, which it returns. fn must not call
// PutPolicyStatus.
func (tx *Tx) ForEachPolicyStatus(fn func(PolicyStatus) error) error {
	return tx.tx.Bucket(bucketPolicies).ForEach(func(name, v []byte) error {
		var s PolicyStatus
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("decode policy status %q: %w", name, err)
		}
		return fn(s)
	})
}

// Enqueue adds ev to the outbox and returns its ID. IDs increase, so the
// outbox delivers in the order events happened. The first delivery attempt
// is due at ev.Time (now if zero).
func (tx *Tx) Enqueue(ev Event) (uint64, error) {
	b := tx.tx.Bucket(bucketOutbox)
	id, err := b.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("enqueue %s event: %w", ev.Kind, err)
	}
	now := time.Now().UTC()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.normalize()
	e := OutboxEntry{ID: id, Event: ev, NextAttempt: ev.Time, CreatedAt: now}
	if err := tx.putOutbox(e); err != nil {
		return 0, fmt.Errorf("enqueue %s event: %w", ev.Kind, err)
	}
	return id, nil
}

func (tx *Tx) putOutbox(e OutboxEntry) error {
	v, err := encode(e)
	if err != nil {
		return err
	}
	return tx.tx.Bucket(bucketOutbox).Put(u64Key(e.ID), v)
}

// PendingOutbox returns up to limit entries whose NextAttempt is not after
// now, oldest first. A limit <= 0 means no limit.
func (tx *Tx) PendingOutbox(now time.Time, limit int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	c := tx.tx.Bucket(bucketOutbox).Cursor()
	for k, v := c.First(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
		var e OutboxEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("decode outbox entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if !e.NextAttempt.After(now) {
			out = append(out, e)
		}
	}
	return out, nil
}

// OutboxLen returns the number of undelivered entries.
func (tx *Tx) OutboxLen() (int, error) {
	return tx.tx.Bucket(bucketOutbox).Stats().KeyN, nil
}

// AckOutbox removes a delivered entry. Acknowledging an entry that is gone
// is not an error, so a delivery retried after a crash is harmless.
func (tx *Tx) AckOutbox(id uint64) error {
	if err := tx.tx.Bucket(bucketOutbox).Delete(u64Key(id)); err != nil {
		return fmt.Errorf("ack outbox entry %d: %w", id, err)
	}
	return nil
}

// RetryOutbox records a failed delivery: it counts the attempt, keeps the
// error and postpones the entry to next. It returns ErrNotFound if the
// entry is gone.
func (tx *Tx) RetryOutbox(id uint64, next time.Time, errMsg string) error {
	b := tx.tx.Bucket(bucketOutbox)
	v := b.Get(u64Key(id))
	if v == nil {
		return fmt.Errorf("retry outbox entry %d: %w", id, ErrNotFound)
	}
	var e OutboxEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return fmt.Errorf("decode outbox entry %d: %w", id, err)
	}
	e.Attempts++
	e.NextAttempt = utc(next)
	e.LastError = errMsg
	if err := tx.putOutbox(e); err != nil {
		return fmt.Errorf("retry outbox entry %d: %w", id, err)
	}
	return nil
}

// AppendAudit appends a to the audit log, numbering it with the next
// sequence number and stamping it with the current time if a.Time is zero.
// The log is append-only: there is no API to change or delete an entry.
func (tx *Tx) AppendAudit(a AuditEntry) error {
	b := tx.tx.Bucket(bucketAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("append audit %s: %w", a.Action, err)
	}
	a.Seq = seq
	if a.Time.IsZero() {
		a.Time = time.Now()
	}
	a.Time = a.Time.UTC()
	v, err := encode(a)
	if err != nil {
		return fmt.Errorf("append audit %s: %w", a.Action, err)
	}
	if err := b.Put(u64Key(seq), v); err != nil {
		return fmt.Errorf("append audit %s: %w", a.Action, err)
	}
	return nil
}

// ForEachAudit calls fn for every audit entry in the order they were
// appended, stopping at the first error, which it returns.
func (tx *Tx) ForEachAudit(fn func(AuditEntry) error) error {
	return tx.tx.Bucket(bucketAudit).ForEach(func(k, v []byte) error {
		var a AuditEntry
		if err := json.Unmarshal(v, &a); err != nil {
			return fmt.Errorf("decode audit entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		return fn(a)
	})
}

// u64Key encodes an ID big-endian so that bbolt's byte order is numeric
// order.
func u64Key(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}

// timeKey is an index key that sorts by t, then by id. The sign bit is
// flipped so that times before 1970 still sort first.
func timeKey(t time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), uint64(t.UnixNano())^(1<<63))
	return append(k, id...)
}

// encode marshals a record for storage, scrubbing private key material.
func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return scrubPrivateKeys(b), nil
}
