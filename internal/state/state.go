// Package state is rotatord's embedded store: the rotation journal, the keys
// each policy manages, per-policy health, the notification outbox and the
// audit log, all in one bbolt file.
//
// The file never holds a private key. It is protected only by its 0600 mode,
// it is copied by backups, and the design promises that private halves live
// in Vault alone; so no record type has a field for one, and every value is
// scrubbed of PEM private key blocks before it is written in case one slips
// into a free-text field such as an error message.
//
// Values are JSON so that `bbolt get` on a copy of the file is readable by an
// operator. Timestamps are stored in UTC.
package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrLocked is returned (wrapped, with the path) when another process holds
// the state file: bbolt takes an exclusive lock, so two daemons, or a CLI
// command run next to the daemon, cannot share one file.
var ErrLocked = errors.New("state file is held by another process")

// ErrSchema is returned when the state file was written with a schema this
// build does not understand, typically by a newer rotatord after a downgrade.
var ErrSchema = errors.New("unsupported state file schema")

// ErrNotFound is returned by operations on a record that does not exist.
var ErrNotFound = errors.New("not found")

// SchemaVersion is the layout version this build writes and reads. Bump it
// (and migrate in Open) whenever buckets or key encodings change.
const SchemaVersion = 1

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero: long enough to ride out a restarting daemon,
// short enough that a second daemon fails fast with ErrLocked.
const DefaultTimeout = time.Second

// Bucket names. Kept short and stable: they are part of the schema.
var (
	bucketMeta        = []byte("meta")
	bucketRotations   = []byte("rotations")        // id -> Rotation
	bucketRotByTime   = []byte("rotations_time")   // timeKey(started)+id -> nil
	bucketRotOpen     = []byte("rotations_open")   // timeKey(started)+id -> nil, non-terminal only
	bucketRotByPolicy = []byte("rotations_policy") // policy/ timeKey(started)+id -> nil
	bucketKeys        = []byte("keys")             // policy/ keyID -> KeyRecord
	bucketPolicies    = []byte("policies")         // name -> PolicyStatus
	bucketOutbox      = []byte("outbox")           // be64(id) -> OutboxEntry
	bucketAudit       = []byte("audit")            // be64(seq) -> AuditEntry

	allBuckets = [][]byte{
		bucketMeta, bucketRotations, bucketRotByTime, bucketRotOpen, bucketRotByPolicy,
		bucketKeys, bucketPolicies, bucketOutbox, bucketAudit,
	}

	keySchema = []byte("schema")
)

// Options tune Open.
type Options struct {
	// Timeout is how long to wait for the file lock before returning
	// ErrLocked. Zero means DefaultTimeout.
	Timeout time.Duration
	// ReadOnly opens the file with a shared lock for inspection; it neither
	// creates nor changes the file, and Update fails.
	ReadOnly bool
	// NoSync skips fsync on commit. For tests and benchmarks only: a crash
	// can then lose or corrupt the journal.
	NoSync bool
}

// DB is an open state file. It is safe for concurrent use; it lives for the
// whole process because bbolt holds an exclusive lock while it is open.
type DB struct {
	bolt *bolt.DB
	path string
}

// Open opens the state file at path, creating it (and its parent directory,
// mode 0700) if missing. The file is made 0600 even if it already existed
// with a wider mode, because it names every key and rotation. Open fails
// with ErrLocked when another process holds the file for longer than
// opts.Timeout, and with ErrSchema when the file has a newer schema.
func Open(path string, opts Options) (*DB, error) {
	if path == "" {
		return nil, errors.New("open state file: empty path")
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("open state file %s: create directory: %w", path, err)
		}
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  timeout,
		ReadOnly: opts.ReadOnly,
		NoSync:   opts.NoSync,
		// The hashmap freelist stays fast as the file grows and fragments
		// (etcd runs it by default); the array one degrades.
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open state file %s: %w after %s; another rotatord probably runs with this state path", path, ErrLocked, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	db := &DB{bolt: bdb, path: path}
	if !opts.ReadOnly {
		// The mode given to bbolt only applies when it creates the file;
		// an existing one keeps whatever mode it had.
		if err := os.Chmod(path, 0o600); err != nil {
			_ = bdb.Close()
			return nil, fmt.Errorf("open state file %s: restrict mode: %w", path, err)
		}
	}
	if err := db.init(opts.ReadOnly); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	return db, nil
}

// init checks the schema version and, when writable, creates the buckets
// and records the version of a new file. After init every bucket exists, so
// Tx methods need not handle a missing one.
func (db *DB) init(readOnly bool) error {
	check := func(tx *bolt.Tx) (found bool, err error) {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return false, nil
		}
		v := meta.Get(keySchema)
		if v == nil {
			return false, nil
		}
		n, err := strconv.Atoi(string(v))
		if err != nil {
			return true, fmt.Errorf("%w: version %q is not a number", ErrSchema, v)
		}
		if n != SchemaVersion {
			return true, fmt.Errorf("%w: version %d, this rotatord reads version %d (was the file written by a newer rotatord?)", ErrSchema, n, SchemaVersion)
		}
		return true, nil
	}
	if readOnly {
		return db.bolt.View(func(tx *bolt.Tx) error {
			found, err := check(tx)
			if err == nil && !found {
				err = fmt.Errorf("%w: no schema version: not a rotatord state file", ErrSchema)
			}
			return err
		})
	}
	return db.bolt.Update(func(tx *bolt.Tx) error {
		found, err := check(tx)
		if err != nil {
			return err
		}
		if !found {
			// A bbolt file with buckets of its own is somebody else's
			// database: refuse rather than mix ours into it.
			known := make(map[string]bool, len(allBuckets))
			for _, b := range allBuckets {
				known[string(b)] = true
			}
			if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				if !known[string(name)] {
					return fmt.Errorf("%w: no schema version and unknown bucket %q: not a rotatord state file", ErrSchema, name)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		if found {
			return nil
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
	})
}

// Close releases the file and its lock.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("close state file %s: %w", db.path, err)
	}
	return nil
}

// Path returns the path the file was opened with.
func (db *DB) Path() string { return db.path }

// Update runs fn in a read-write transaction that may be shared with other
// concurrent Update calls (bbolt's DB.Batch), so that many rotations running
// at once pay for one fsync instead of one each. The cost is a wait of up to
// 10ms for the batch to fill.
//
// fn may be called more than once: if any function in a batch returns an
// error, the batch is rolled back and the others are retried, and the
// failing fn is then called again on its own. fn must therefore only touch
// the transaction, with no side effect outside it (no network calls, no
// counters); decide things before Update and record them inside it. The
// error fn returns on its last call is returned unchanged.
func (db *DB) Update(fn func(tx *Tx) error) error {
	return db.bolt.Batch(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// UpdateNow runs fn in its own read-write transaction and commits at once,
// without waiting to share the commit. fn is called exactly once. Use it
// when latency matters more than throughput (a single CLI command, a test).
func (db *DB) UpdateNow(fn func(tx *Tx) error) error {
	return db.bolt.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// View runs fn in a read-only transaction, a consistent snapshot that does
// not block writers. Records read in fn stay valid after it returns.
func (db *DB) View(fn func(tx *Tx) error) error {
	return db.bolt.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// Stats counts the records in the file, for status output and metrics.
type Stats struct {
	// Size is the size of the data in use, in bytes.
	Size           int64
	Keys           int
	Rotations      int
	OpenRotations  int
	PolicyStatuses int
	Outbox         int
	Audit          int
}

// Stats counts what the file holds. It walks the b-tree pages without
// decoding values, so it is cheap even with many records.
func (db *DB) Stats() (Stats, error) {
	var s Stats
	err := db.bolt.View(func(tx *bolt.Tx) error {
		s.Size = tx.Size()
		s.Rotations = tx.Bucket(bucketRotations).Stats().KeyN
		s.OpenRotations = tx.Bucket(bucketRotOpen).Stats().KeyN
		s.PolicyStatuses = tx.Bucket(bucketPolicies).Stats().KeyN
		s.Outbox = tx.Bucket(bucketOutbox).Stats().KeyN
		s.Audit = tx.Bucket(bucketAudit).Stats().KeyN
		keys := tx.Bucket(bucketKeys)
		return keys.ForEachBucket(func(name []byte) error {
			s.Keys += keys.Bucket(name).Stats().KeyN
			return nil
		})
	})
	if err != nil {
		return Stats{}, fmt.Errorf("read state stats: %w", err)
	}
	return s, nil
}
