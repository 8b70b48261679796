package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
)

// Store is rotatord's durable state, whatever holds it: View and Update
// over a typed Tx. The rotation engine and the report see only this
// interface; Open builds one over a Backend.
type Store interface {
	// View runs fn in a read-only, consistent snapshot that does not block
	// writers. Records read in fn stay valid after it returns.
	View(fn func(tx Tx) error) error
	// Update runs fn in a read-write transaction, committed atomically.
	// fn may be called more than once (concurrent updates share a commit;
	// a backend retries a conflicting one), so it must only touch the
	// transaction: decide things before Update and record them inside it.
	// The error fn returns on its last call is returned unchanged.
	Update(fn func(tx Tx) error) error
	// Close releases the backend.
	Close() error
}

// Tx is one state transaction, read-only inside View. It must not be used
// after the function it was passed to returns.
type Tx interface {
	// PutRotation writes r under r.ID, replacing any earlier version. A
	// zero StartedAt keeps the stored one (or is set to now for a new
	// rotation) and a zero UpdatedAt is set to now, so the journal always
	// orders by start time.
	PutRotation(r Rotation) error
	// Rotation returns the rotation with the given ID and whether it exists.
	Rotation(id string) (Rotation, bool, error)
	// OpenRotations returns the rotations that are neither done nor
	// failed, oldest first: the ones a restarted engine must resume.
	OpenRotations() ([]Rotation, error)
	// OpenRotationsOf returns policy's open rotations, oldest first, without
	// reading any other policy's.
	OpenRotationsOf(policy string) ([]Rotation, error)
	// Rotations returns up to limit rotations of policy, newest first. An
	// empty policy means every policy; a limit <= 0 means no limit.
	Rotations(policy string, limit int) ([]Rotation, error)

	// PutKey writes k under its policy and key ID, replacing any earlier
	// version.
	PutKey(k KeyRecord) error
	// Key returns the record of one key and whether it exists.
	Key(policy, keyID string) (KeyRecord, bool, error)
	// Keys returns every key record of policy, deleted ones included,
	// oldest (by CreatedAt) first.
	Keys(policy string) ([]KeyRecord, error)
	// ForEachKey calls fn for every key record of every policy, in policy
	// then key ID order, stopping at the first error, which it returns. fn
	// must not write key records: collect what to change, then change it.
	ForEachKey(fn func(KeyRecord) error) error
	// DeleteKeyRecord removes a key record; an absent one is not an error.
	// A deleted key normally stays in state with status KeyDeleted for the
	// audit trail; this is for records that never should have existed.
	DeleteKeyRecord(policy, keyID string) error

	// PutPolicyStatus writes s under s.Name, replacing any earlier version.
	PutPolicyStatus(s PolicyStatus) error
	// PolicyStatus returns the named policy's status, or a zero status with
	// only Name set if none was stored: a policy never run is healthy.
	PolicyStatus(name string) (PolicyStatus, error)
	// ForEachPolicyStatus calls fn for every stored status in name order,
	// stopping at the first error, which it returns. fn must not write.
	ForEachPolicyStatus(fn func(PolicyStatus) error) error

	// Enqueue adds one outbox entry per sink for ev (a notification for
	// Slack, a POST for each webhook...) and returns the event's ID, which
	// every copy shares so that a receiver can drop a repeat. IDs of
	// entries increase, so each sink delivers in the order events
	// happened. The first attempt is due at ev.Time (now if zero).
	Enqueue(ev Event, sinks ...string) (eventID string, err error)
	// PendingOutbox returns up to limit of sink's entries whose
	// NextAttempt is not after now, oldest first. A limit <= 0 means no
	// limit.
	PendingOutbox(sink string, now time.Time, limit int) ([]OutboxEntry, error)
	// OutboxLen returns the number of undelivered entries of every sink.
	OutboxLen() (int, error)
	// AckOutbox removes a delivered entry. Acknowledging an entry that is
	// gone is not an error, so a delivery retried after a crash is harmless.
	AckOutbox(id uint64) error
	// RetryOutbox records a failed delivery: it counts the attempt, keeps
	// the error and postpones the entry to next. It returns an error
	// wrapping ErrNotFound if the entry is gone.
	RetryOutbox(id uint64, next time.Time, errMsg string) error

	// AppendAudit appends a to the audit log: it numbers it after the
	// last entry, stamps it with the current time if a.Time is zero,
	// chains it to the last entry's hash and seals it with the store's
	// audit key (ErrNoAuditKey without one). The log is append-only: no
	// API changes an entry; retention (PruneAudit) removes the oldest
	// ones and leaves a checkpoint that keeps the chain verifiable.
	AppendAudit(a AuditEntry) error
	// ForEachAudit calls fn for every audit entry in the order they were
	// appended, stopping at the first error, which it returns.
	ForEachAudit(fn func(AuditEntry) error) error
	// AuditHead returns the head of the log, "SEQ:HASH" of its last entry
	// (audit.Genesis when it is empty): what reports and digests publish
	// so that a later cut is caught.
	AuditHead() (audit.Head, error)
	// PruneAudit deletes up to limit of the oldest entries older than
	// before (limit <= 0: no limit) and appends a checkpoint entry that
	// records the head of what it deleted. It returns how many it deleted;
	// call it again while that is limit. The last entry is never pruned.
	PruneAudit(before time.Time, limit int) (int, error)

	// PutInventory replaces the stored machine listing of inv's account
	// (provider and project), instances included.
	PutInventory(inv Inventory) error
	// Inventory returns the stored listing of one account and whether
	// one is stored.
	Inventory(provider string, project int64) (Inventory, bool, error)
	// ForEachInventory calls fn for every stored listing, in provider then
	// project order, stopping at the first error, which it returns.
	ForEachInventory(fn func(Inventory) error) error
	// MarkInventoryStale records a listing attempt at `at` that failed
	// with errText without rewriting the stored instances (a small write,
	// for when the listing itself could not be stored): AttemptedAt and
	// Error are set, StaleSince when it was not. An account with no stored
	// listing gets an empty one.
	MarkInventoryStale(provider string, project int64, at time.Time, errText string) error
	// PutExposure records that a key was found exposed and announced, so
	// that the exposed event goes out once per key.
	PutExposure(x Exposure) error
	// Exposure returns the exposure mark of a policy's key and whether
	// one exists.
	Exposure(policy, keyID string) (Exposure, bool, error)
	// ForEachExposure calls fn for every exposure mark, in policy then key
	// ID order, stopping at the first error, which it returns.
	ForEachExposure(fn func(Exposure) error) error
	// HostsTx: the hosts of each policy and the pinned host keys (hosts.go).
	HostsTx
}

// SchemaVersion is the record layout this build writes and reads. Bump it,
// and migrate in migrate, whenever buckets, keys or encodings change.
//
//	1: bbolt only; keys and the per-policy rotation index in nested buckets.
//	2: flat buckets (any backend); per-policy open index; outbox per sink.
const SchemaVersion = 2

// Bucket names. Kept short and stable: they are part of the schema.
const (
	bucketMeta        = "meta"
	bucketRotations   = "rotations"        // id -> Rotation
	bucketRotByTime   = "rotations_time"   // timeKey(started)+id
	bucketRotOpen     = "rotations_open"   // timeKey(started)+id, non-terminal only
	bucketRotByPolicy = "rotations_policy" // policy \x00 timeKey(started)+id
	bucketRotOpenPol  = "rotations_open_policy"
	bucketKeys        = "keys"        // policy \x00 keyID -> KeyRecord
	bucketPolicies    = "policies"    // name -> PolicyStatus
	bucketOutbox      = "outbox"      // be64(id) -> OutboxEntry
	bucketOutboxSink  = "outbox_sink" // sink \x00 be64(id)
	bucketAudit       = "audit"       // be64(seq) -> AuditEntry
)

// Buckets lists every bucket the typed layer uses, for backends that check
// a file is theirs and for tests that read everything stored.
func Buckets() []string {
	return []string{
		bucketMeta, bucketRotations, bucketRotByTime, bucketRotOpen, bucketRotByPolicy, bucketRotOpenPol,
		bucketKeys, bucketPolicies, bucketOutbox, bucketOutboxSink, bucketAudit,
		bucketInventory, bucketInventoryChunk, bucketExposures,
		bucketHosts, bucketHostPins,
	}
}

var keySchema = []byte("schema")

// SinkSlack is the outbox sink of Slack notifications.
const SinkSlack = "slack"

// ErrSchema is returned when the store was written with a schema this build
// does not understand, typically by a newer rotatord after a downgrade.
var ErrSchema = errors.New("unsupported state schema")

// ErrNotFound is returned by operations on a record that does not exist.
var ErrNotFound = errors.New("not found")

// ErrNoAuditKey is returned by AppendAudit when the store has no key to
// seal the entry with (the daemon loads it from Vault; Vault has not
// answered yet).
var ErrNoAuditKey = errors.New("no audit key to seal the entry with")

// AuditKeys gives a store the key that seals audit entries. AuditKey must
// not block: it returns the key loaded so far, or an error wrapping
// ErrNoAuditKey.
type AuditKeys interface {
	AuditKey() (audit.Key, error)
}

// StaticAuditKey is an AuditKeys that always has the key k.
type StaticAuditKey audit.Key

// AuditKey returns k.
func (k StaticAuditKey) AuditKey() (audit.Key, error) { return audit.Key(k), nil }

// Option configures Open.
type Option func(*store)

// WithAuditKeys gives the store the key that seals audit entries.
func WithAuditKeys(k AuditKeys) Option { return func(s *store) { s.keys = k } }

// Open returns the typed Store over b. It checks the schema version and,
// when b is writable, records it in a new store or migrates an older one.
func Open(b Backend, opts ...Option) (Store, error) {
	s := &store{b: b}
	for _, o := range opts {
		o(s)
	}
	var version int
	err := b.View(func(kv KV) (err error) {
		version, err = schemaVersion(kv)
		return err
	})
	if err != nil {
		return nil, err
	}
	if version == SchemaVersion {
		return s, nil
	}
	if version > SchemaVersion {
		return nil, fmt.Errorf("%w: version %d, this rotatord reads version %d (was it written by a newer rotatord?)", ErrSchema, version, SchemaVersion)
	}
	err = b.Update(func(kv KV) error {
		v, err := schemaVersion(kv)
		if err != nil || v == SchemaVersion {
			return err
		}
		if err := migrate(kv, v); err != nil {
			return fmt.Errorf("migrate state from schema %d: %w", v, err)
		}
		return kv.Put(bucketMeta, keySchema, []byte(strconv.Itoa(SchemaVersion)))
	})
	if errors.Is(err, ErrReadOnly) {
		if version == 0 {
			return nil, fmt.Errorf("%w: no schema version: not a rotatord state store", ErrSchema)
		}
		return nil, fmt.Errorf("%w: version %d needs a migration, which a read-only open cannot do; run rotatord once", ErrSchema, version)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// schemaVersion reads the stored version; 0 means none (a new store).
func schemaVersion(kv KV) (int, error) {
	v, err := kv.Get(bucketMeta, keySchema)
	if err != nil || v == nil {
		return 0, err
	}
	n, err := strconv.Atoi(string(v))
	if err != nil {
		return 0, fmt.Errorf("%w: version %q is not a number", ErrSchema, v)
	}
	return n, nil
}

// migrate brings a store at schema from up to SchemaVersion. A backend
// has already put its own layout in order (bolt flattens its version 1
// nested buckets before the typed layer looks).
func migrate(kv KV, from int) error {
	if from == 0 {
		return nil // a new store
	}
	if from < 2 {
		// Open rotations gain a per-policy index, and the outbox a per-sink
		// one: every entry written before there were sinks is Slack's.
		var open []Rotation
		err := kv.Scan(bucketRotOpen, nil, false, func(k, _ []byte) error {
			r, err := indexedRotation(kv, k)
			open = append(open, r)
			return err
		})
		if err != nil {
			return err
		}
		for _, r := range open {
			if err := kv.Put(bucketRotOpenPol, policyKey(r.Policy, timeKey(r.StartedAt, r.ID)), []byte{}); err != nil {
				return err
			}
		}
		var entries []OutboxEntry
		err = kv.Scan(bucketOutbox, nil, false, func(k, v []byte) error {
			var e OutboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode outbox entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			entries = append(entries, e)
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Sink == "" {
				e.Sink = SinkSlack
			}
			if err := putOutbox(kv, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// store is the typed layer over a Backend.
type store struct {
	b    Backend
	keys AuditKeys // nil: the store cannot append audit entries
}

func (s *store) View(fn func(Tx) error) error {
	return s.b.View(func(kv KV) error { return fn(&tx{kv: kv, s: s}) })
}

func (s *store) Update(fn func(Tx) error) error {
	return s.b.Update(func(kv KV) error { return fn(&tx{kv: kv, s: s}) })
}

func (s *store) Close() error { return s.b.Close() }

// tx implements Tx over one backend transaction.
type tx struct {
	kv KV
	s  *store
}

var _ Tx = (*tx)(nil)

func (t *tx) PutRotation(r Rotation) error {
	if r.ID == "" {
		return errors.New("put rotation: empty ID")
	}
	if r.Policy == "" {
		return fmt.Errorf("put rotation %q: empty policy", r.ID)
	}
	if !r.Step.valid() {
		return fmt.Errorf("put rotation %q: unknown step %q", r.ID, r.Step)
	}
	old, found, err := t.rotationIndexed(r.ID)
	if err != nil {
		return fmt.Errorf("put rotation %q: %w", r.ID, err)
	}
	if found && r.StartedAt.IsZero() {
		r.StartedAt = old.StartedAt
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
	if err := t.kv.Put(bucketRotations, []byte(r.ID), v); err != nil {
		return fmt.Errorf("put rotation %q: %w", r.ID, err)
	}
	if err := t.reindexRotation(old, found, r); err != nil {
		return fmt.Errorf("put rotation %q: %w", r.ID, err)
	}
	return nil
}

// storedIndexes holds the fields of a stored rotation that its index
// entries derive from.
type storedIndexes struct {
	Policy    string    `json:"policy"`
	Step      Step      `json:"step"`
	StartedAt time.Time `json:"started_at"`
}

// rotationIndexed reads only what PutRotation needs of the stored version
// of rotation id: a journal step rewrites the rotation several times per
// rotation, and decoding the whole record each time was a tenth of
// rotatord's CPU per rotation (make bench-rotations).
func (t *tx) rotationIndexed(id string) (Rotation, bool, error) {
	v, err := t.kv.Get(bucketRotations, []byte(id))
	if err != nil {
		return Rotation{}, false, fmt.Errorf("read rotation %q: %w", id, err)
	}
	if v == nil {
		return Rotation{}, false, nil
	}
	var ir storedIndexes
	if err := json.Unmarshal(v, &ir); err != nil {
		return Rotation{}, false, fmt.Errorf("decode rotation %q: %w", id, err)
	}
	return Rotation{ID: id, Policy: ir.Policy, Step: ir.Step, StartedAt: ir.StartedAt}, true, nil
}

// reindexRotation moves the index entries of old (the stored version, when
// found) to those of r. A step of the same rotation keeps its time and
// policy entries: only the open ones change, when it finishes (or is
// reopened).
func (t *tx) reindexRotation(old Rotation, found bool, r Rotation) error {
	if !found || old.Policy != r.Policy || !old.StartedAt.Equal(r.StartedAt) {
		if found {
			if err := t.unindexRotation(old); err != nil {
				return err
			}
		}
		return t.indexRotation(r)
	}
	wasOpen, isOpen := !old.Step.Terminal(), !r.Step.Terminal()
	if wasOpen == isOpen {
		return nil
	}
	for _, ix := range rotationIndexes(r, true)[2:] { // the open entries
		var err error
		if isOpen {
			err = t.kv.Put(ix.bucket, ix.key, []byte{})
		} else {
			err = t.kv.Delete(ix.bucket, ix.key)
		}
		if err != nil {
			return fmt.Errorf("index %s: %w", ix.bucket, err)
		}
	}
	return nil
}

// indexRotation adds r to the time, policy and (unless terminal) open
// indexes, which let OpenRotations and Rotations avoid decoding the whole
// journal.
func (t *tx) indexRotation(r Rotation) error {
	for _, ix := range rotationIndexes(r, !r.Step.Terminal()) {
		if err := t.kv.Put(ix.bucket, ix.key, []byte{}); err != nil {
			return fmt.Errorf("index %s: %w", ix.bucket, err)
		}
	}
	return nil
}

// unindexRotation removes the index entries of a stored version of a
// rotation before it is replaced.
func (t *tx) unindexRotation(r Rotation) error {
	for _, ix := range rotationIndexes(r, true) {
		if err := t.kv.Delete(ix.bucket, ix.key); err != nil {
			return fmt.Errorf("unindex %s: %w", ix.bucket, err)
		}
	}
	return nil
}

// indexEntry is one key of an index bucket.
type indexEntry struct {
	bucket string
	key    []byte
}

// rotationIndexes are the index entries of r: by time and by policy, and,
// when open is set, the open ones too.
func rotationIndexes(r Rotation, open bool) []indexEntry {
	k := timeKey(r.StartedAt, r.ID)
	ix := []indexEntry{{bucketRotByTime, k}, {bucketRotByPolicy, policyKey(r.Policy, k)}}
	if open {
		ix = append(ix, indexEntry{bucketRotOpen, k}, indexEntry{bucketRotOpenPol, policyKey(r.Policy, k)})
	}
	return ix
}

func (t *tx) Rotation(id string) (Rotation, bool, error) {
	v, err := t.kv.Get(bucketRotations, []byte(id))
	if err != nil {
		return Rotation{}, false, fmt.Errorf("read rotation %q: %w", id, err)
	}
	if v == nil {
		return Rotation{}, false, nil
	}
	var r Rotation
	if err := json.Unmarshal(v, &r); err != nil {
		return Rotation{}, false, fmt.Errorf("decode rotation %q: %w", id, err)
	}
	return r, true, nil
}

func (t *tx) OpenRotations() ([]Rotation, error) {
	return t.rotationsIn(bucketRotOpen, nil, false, 0)
}

func (t *tx) OpenRotationsOf(policy string) ([]Rotation, error) {
	return t.rotationsIn(bucketRotOpenPol, policyKey(policy, nil), false, 0)
}

func (t *tx) Rotations(policy string, limit int) ([]Rotation, error) {
	if policy == "" {
		return t.rotationsIn(bucketRotByTime, nil, true, limit)
	}
	return t.rotationsIn(bucketRotByPolicy, policyKey(policy, nil), true, limit)
}

// rotationsIn loads the rotations an index points to, in index order.
func (t *tx) rotationsIn(bucket string, prefix []byte, reverse bool, limit int) ([]Rotation, error) {
	var keys [][]byte
	err := t.kv.Scan(bucket, prefix, reverse, func(k, _ []byte) error {
		if limit > 0 && len(keys) >= limit {
			return ErrStopScan
		}
		keys = append(keys, slices.Clone(k[len(prefix):]))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read rotation index %s: %w", bucket, err)
	}
	out := make([]Rotation, 0, len(keys))
	for _, k := range keys {
		r, err := indexedRotation(t.kv, k)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// indexedRotation loads the rotation a time key points to.
func indexedRotation(kv KV, k []byte) (Rotation, error) {
	if len(k) <= 8 {
		return Rotation{}, fmt.Errorf("read rotation index: malformed key %x", k)
	}
	id := string(k[8:])
	v, err := kv.Get(bucketRotations, []byte(id))
	if err != nil {
		return Rotation{}, fmt.Errorf("read rotation %q: %w", id, err)
	}
	if v == nil {
		return Rotation{}, fmt.Errorf("read rotation %q: in index but %w", id, ErrNotFound)
	}
	var r Rotation
	if err := json.Unmarshal(v, &r); err != nil {
		return Rotation{}, fmt.Errorf("decode rotation %q: %w", id, err)
	}
	return r, nil
}

func (t *tx) PutKey(k KeyRecord) error {
	if k.Policy == "" || k.KeyID == "" {
		return fmt.Errorf("put key %q/%q: policy and key ID are required", k.Policy, k.KeyID)
	}
	k.normalize()
	v, err := encode(k)
	if err != nil {
		return fmt.Errorf("put key %s/%s: %w", k.Policy, k.KeyID, err)
	}
	if err := t.kv.Put(bucketKeys, policyKey(k.Policy, []byte(k.KeyID)), v); err != nil {
		return fmt.Errorf("put key %s/%s: %w", k.Policy, k.KeyID, err)
	}
	return nil
}

func (t *tx) Key(policy, keyID string) (KeyRecord, bool, error) {
	v, err := t.kv.Get(bucketKeys, policyKey(policy, []byte(keyID)))
	if err != nil {
		return KeyRecord{}, false, fmt.Errorf("read key %s/%s: %w", policy, keyID, err)
	}
	if v == nil {
		return KeyRecord{}, false, nil
	}
	var k KeyRecord
	if err := json.Unmarshal(v, &k); err != nil {
		return KeyRecord{}, false, fmt.Errorf("decode key %s/%s: %w", policy, keyID, err)
	}
	return k, true, nil
}

func (t *tx) Keys(policy string) ([]KeyRecord, error) {
	var out []KeyRecord
	err := t.scanKeys(policyKey(policy, nil), func(k KeyRecord) error {
		out = append(out, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b KeyRecord) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func (t *tx) ForEachKey(fn func(KeyRecord) error) error {
	return t.scanKeys(nil, fn)
}

func (t *tx) scanKeys(prefix []byte, fn func(KeyRecord) error) error {
	return t.kv.Scan(bucketKeys, prefix, false, func(k, v []byte) error {
		var rec KeyRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			policy, id := splitPolicyKey(k)
			return fmt.Errorf("decode key %s/%s: %w", policy, id, err)
		}
		return fn(rec)
	})
}

func (t *tx) DeleteKeyRecord(policy, keyID string) error {
	if err := t.kv.Delete(bucketKeys, policyKey(policy, []byte(keyID))); err != nil {
		return fmt.Errorf("delete key %s/%s: %w", policy, keyID, err)
	}
	return nil
}

func (t *tx) PutPolicyStatus(s PolicyStatus) error {
	if s.Name == "" {
		return errors.New("put policy status: empty name")
	}
	s.normalize()
	v, err := encode(s)
	if err != nil {
		return fmt.Errorf("put policy status %q: %w", s.Name, err)
	}
	if err := t.kv.Put(bucketPolicies, []byte(s.Name), v); err != nil {
		return fmt.Errorf("put policy status %q: %w", s.Name, err)
	}
	return nil
}

func (t *tx) PolicyStatus(name string) (PolicyStatus, error) {
	v, err := t.kv.Get(bucketPolicies, []byte(name))
	if err != nil {
		return PolicyStatus{}, fmt.Errorf("read policy status %q: %w", name, err)
	}
	if v == nil {
		return PolicyStatus{Name: name}, nil
	}
	var s PolicyStatus
	if err := json.Unmarshal(v, &s); err != nil {
		return PolicyStatus{}, fmt.Errorf("decode policy status %q: %w", name, err)
	}
	return s, nil
}

func (t *tx) ForEachPolicyStatus(fn func(PolicyStatus) error) error {
	return t.kv.Scan(bucketPolicies, nil, false, func(name, v []byte) error {
		var s PolicyStatus
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("decode policy status %q: %w", name, err)
		}
		return fn(s)
	})
}

func (t *tx) Enqueue(ev Event, sinks ...string) (string, error) {
	if len(sinks) == 0 {
		return "", fmt.Errorf("enqueue %s event: no sink", ev.Kind)
	}
	now := time.Now().UTC()
	if ev.Time.IsZero() {
		ev.Time = now
	}
	ev.normalize()
	for _, sink := range sinks {
		if sink == "" {
			return "", fmt.Errorf("enqueue %s event: empty sink name", ev.Kind)
		}
		id, err := t.kv.NextSequence(bucketOutbox)
		if err != nil {
			return "", fmt.Errorf("enqueue %s event: %w", ev.Kind, err)
		}
		if ev.ID == "" {
			// The first entry's number names the event for every sink.
			ev.ID = "ev-" + strconv.FormatUint(id, 10)
		}
		e := OutboxEntry{ID: id, Sink: sink, Event: ev, NextAttempt: ev.Time, CreatedAt: now}
		if err := putOutbox(t.kv, e); err != nil {
			return "", fmt.Errorf("enqueue %s event: %w", ev.Kind, err)
		}
	}
	return ev.ID, nil
}

func putOutbox(kv KV, e OutboxEntry) error {
	v, err := encode(e)
	if err != nil {
		return err
	}
	if err := kv.Put(bucketOutbox, u64Key(e.ID), v); err != nil {
		return err
	}
	return kv.Put(bucketOutboxSink, policyKey(e.Sink, u64Key(e.ID)), []byte{})
}

func (t *tx) PendingOutbox(sink string, now time.Time, limit int) ([]OutboxEntry, error) {
	prefix := policyKey(sink, nil)
	var ids [][]byte
	if err := t.kv.Scan(bucketOutboxSink, prefix, false, func(k, _ []byte) error {
		ids = append(ids, slices.Clone(k[len(prefix):]))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read outbox of %s: %w", sink, err)
	}
	var out []OutboxEntry
	for _, id := range ids {
		if limit > 0 && len(out) >= limit {
			break
		}
		e, ok, err := t.outboxEntry(id)
		if err != nil {
			return nil, err
		}
		if ok && !e.NextAttempt.After(now) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (t *tx) outboxEntry(k []byte) (OutboxEntry, bool, error) {
	if len(k) != 8 {
		return OutboxEntry{}, false, fmt.Errorf("read outbox: malformed key %x", k)
	}
	id := binary.BigEndian.Uint64(k)
	v, err := t.kv.Get(bucketOutbox, k)
	if err != nil {
		return OutboxEntry{}, false, fmt.Errorf("read outbox entry %d: %w", id, err)
	}
	if v == nil {
		return OutboxEntry{}, false, nil
	}
	var e OutboxEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return OutboxEntry{}, false, fmt.Errorf("decode outbox entry %d: %w", id, err)
	}
	return e, true, nil
}

func (t *tx) OutboxLen() (int, error) {
	n, err := t.kv.Count(bucketOutbox, nil)
	if err != nil {
		return 0, fmt.Errorf("count outbox: %w", err)
	}
	return n, nil
}

func (t *tx) AckOutbox(id uint64) error {
	e, ok, err := t.outboxEntry(u64Key(id))
	if err != nil || !ok {
		return err
	}
	if err := t.kv.Delete(bucketOutboxSink, policyKey(e.Sink, u64Key(id))); err != nil {
		return fmt.Errorf("ack outbox entry %d: %w", id, err)
	}
	if err := t.kv.Delete(bucketOutbox, u64Key(id)); err != nil {
		return fmt.Errorf("ack outbox entry %d: %w", id, err)
	}
	return nil
}

func (t *tx) RetryOutbox(id uint64, next time.Time, errMsg string) error {
	e, ok, err := t.outboxEntry(u64Key(id))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("retry outbox entry %d: %w", id, ErrNotFound)
	}
	e.Attempts++
	e.NextAttempt = utc(next)
	e.LastError = errMsg
	if err := putOutbox(t.kv, e); err != nil {
		return fmt.Errorf("retry outbox entry %d: %w", id, err)
	}
	return nil
}

// policyKey is a key under a policy (or a sink): name, a NUL, then rest.
// Names never hold a NUL (the config allows letters, digits, '.', '_' and
// '-'), so one policy's keys are exactly those with its prefix and sort
// together, in rest order.
func policyKey(name string, rest []byte) []byte {
	k := make([]byte, 0, len(name)+1+len(rest))
	k = append(k, name...)
	k = append(k, 0)
	return append(k, rest...)
}

// splitPolicyKey undoes policyKey, for messages.
func splitPolicyKey(k []byte) (name, rest string) {
	for i, c := range k {
		if c == 0 {
			return string(k[:i]), string(k[i+1:])
		}
	}
	return string(k), ""
}

// u64Key encodes an ID big-endian so that byte order is numeric order.
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
