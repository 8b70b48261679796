package state

import "errors"

// Backend is a storage engine under the Store: named buckets of byte keys
// kept in byte order, read in consistent snapshots and written in atomic
// transactions. The typed records, their indexes and their encoding are
// written once, in this package, over the KV a backend hands out; a backend
// only moves bytes. internal/state/bolt (one embedded file, the default) and
// internal/state/etcd (several rotatord processes, one leader) implement it,
// and both pass the same conformance suite (statetest.Run).
type Backend interface {
	// View runs fn over a read-only, consistent snapshot. fn must not keep
	// the KV, or the slices it returns, after it returns.
	View(fn func(KV) error) error
	// Update runs fn in a read-write transaction and commits what it wrote
	// atomically: all of it or, when fn or the commit fails, none of it.
	// fn may be called more than once (concurrent updates share a commit,
	// a conflicting commit is retried), so it must touch only the KV and
	// have no other side effect. The error fn returns on its last call is
	// returned unchanged; a commit that fails wraps the backend's error.
	Update(fn func(KV) error) error
	// Close releases the backend.
	Close() error
}

// KV is one transaction's view of the buckets. Reads see the
// transaction's own earlier writes. Bucket names are the short constants
// of this package; keys may hold any bytes.
type KV interface {
	// Get returns the value of key, or nil when it is absent.
	Get(bucket string, key []byte) ([]byte, error)
	// Put sets key to value. It fails in a read-only transaction.
	Put(bucket string, key, value []byte) error
	// Delete removes key; an absent key is not an error.
	Delete(bucket string, key []byte) error
	// Scan calls fn for each key of bucket that starts with prefix (every
	// key when prefix is empty), in ascending byte order, or descending
	// when reverse is set, until fn returns an error. ErrStopScan ends the
	// scan early and Scan returns nil. fn must not write to the bucket it
	// scans; k and v are valid only during the call.
	Scan(bucket string, prefix []byte, reverse bool, fn func(k, v []byte) error) error
	// Count returns how many keys of bucket start with prefix.
	Count(bucket string, prefix []byte) (int, error)
	// NextSequence returns the bucket's next sequence number: 1 for the
	// first call on a new bucket, then one more than the last committed or
	// returned in this transaction. Numbers of a transaction that did not
	// commit may be handed out again.
	NextSequence(bucket string) (uint64, error)
}

// ErrStopScan, returned by a Scan callback, ends the scan without error.
var ErrStopScan = errors.New("stop scan")

// ErrReadOnly is returned by writes in a read-only transaction or store.
var ErrReadOnly = errors.New("state is read-only")
