// Package bolt is the embedded state backend: one bbolt file, one process.
// It is rotatord's default: nothing else to run, and commits of concurrent
// rotations share one fsync through bbolt's DB.Batch.
//
// Each state bucket is a top-level bbolt bucket. Nothing outside this
// package imports go.etcd.io/bbolt.
package bolt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/rotatord/rotatord/internal/state"
)

// ErrLocked is returned (wrapped, with the path) when another process holds
// the state file: bbolt takes an exclusive lock, so two daemons, or a CLI
// command run next to the daemon, cannot share one file.
var ErrLocked = errors.New("state file is held by another process")

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero: long enough to ride out a restarting daemon,
// short enough that a second daemon fails fast with ErrLocked.
const DefaultTimeout = time.Second

// Options tune Open.
type Options struct {
	// Timeout is how long to wait for the file lock before returning
	// ErrLocked. Zero means DefaultTimeout.
	Timeout time.Duration
	// ReadOnly opens the file with a shared lock for inspection; it neither
	// creates nor changes the file, and Update fails with state.ErrReadOnly.
	ReadOnly bool
	// NoSync skips fsync on commit. For tests and benchmarks only: a crash
	// can then lose or corrupt the journal.
	NoSync bool
	// AuditKeys seals audit entries (OpenStore); without it the store
	// cannot append to the audit log.
	AuditKeys state.AuditKeys
}

// Backend is an open state file. It is safe for concurrent use; it lives
// for the whole process because bbolt holds an exclusive lock while it is
// open.
type Backend struct {
	db   *bolt.DB
	path string
	// writers counts the Update calls in progress.
	writers atomic.Int32
}

var _ state.Backend = (*Backend)(nil)

// Open opens the state file at path, creating it (and its parent
// directory, mode 0700) if missing. The file is made 0600 even if it
// already existed with a wider mode, because it names every key and
// rotation. Open fails with ErrLocked when another process holds the file
// for longer than opts.Timeout, and with state.ErrSchema when the file is
// somebody else's bbolt database.
func Open(path string, opts Options) (*Backend, error) {
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
	db, err := bolt.Open(path, 0o600, &bolt.Options{
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
	db.MaxBatchDelay = batchDelay
	b := &Backend{db: db, path: path}
	if !opts.ReadOnly {
		// The mode given to bbolt only applies when it creates the file; an
		// existing one keeps whatever mode it had.
		if err := os.Chmod(path, 0o600); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("open state file %s: restrict mode: %w", path, err)
		}
	}
	if err := b.check(opts.ReadOnly); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	return b, nil
}

// OpenStore opens the file at path and returns the typed store over it.
func OpenStore(path string, opts Options) (state.Store, error) {
	b, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	var sopts []state.Option
	if opts.AuditKeys != nil {
		sopts = append(sopts, state.WithAuditKeys(opts.AuditKeys))
	}
	s, err := state.Open(b, sopts...)
	if err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	return s, nil
}

// Path returns the path the file was opened with.
func (b *Backend) Path() string { return b.path }

// Close releases the file and its lock.
func (b *Backend) Close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close state file %s: %w", b.path, err)
	}
	return nil
}

// View runs fn in a read-only bbolt transaction.
func (b *Backend) View(fn func(state.KV) error) error {
	return b.db.View(func(t *bolt.Tx) error { return fn(kv{t}) })
}

// batchDelay is how long a commit waits for others to share it, when
// others are writing too (bbolt's MaxBatchDelay; its default is 10ms).
// With hundreds of rotations in flight, each batch costs two fsyncs and a
// write of the pages it touched whatever its size, and every rotation
// step already waits tens of milliseconds or more on the network.
const batchDelay = 25 * time.Millisecond

// Update runs fn in a read-write transaction. A lone writer commits at
// once. While others write too, the transaction is shared with theirs
// (bbolt's DB.Batch, waiting up to batchDelay for the batch to fill), so
// that many rotations running at once pay for one fsync instead of one
// each. If any fn of a batch fails, the batch is rolled back and the
// others retried, and the failing fn is then called again on its own.
func (b *Backend) Update(fn func(state.KV) error) error {
	if b.db.IsReadOnly() {
		return fmt.Errorf("update state file %s: %w", b.path, state.ErrReadOnly)
	}
	defer b.writers.Add(-1)
	if b.writers.Add(1) == 1 {
		return b.db.Update(func(t *bolt.Tx) error { return fn(kv{t}) })
	}
	return b.db.Batch(func(t *bolt.Tx) error { return fn(kv{t}) })
}

// meta keys this backend keeps for itself, beside the typed layer's.
var (
	bucketMeta = []byte("meta")
	keySchema  = []byte("schema")
	keyLayout  = []byte("bolt_layout")
	flatLayout = []byte("flat")
)

// nested are the buckets that schema version 1 split into one nested
// bucket per policy.
var nested = []string{"keys", "rotations_policy"}

// check refuses somebody else's bbolt file and, when writable, flattens a
// version 1 file's nested buckets into the layout the typed layer reads:
// policy, NUL, key.
func (b *Backend) check(readOnly bool) error {
	var foreign string
	var mustFlatten bool
	err := b.db.View(func(t *bolt.Tx) error {
		meta := t.Bucket(bucketMeta)
		hasSchema := meta != nil && meta.Get(keySchema) != nil
		known := state.Buckets()
		if err := t.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if !hasSchema && !slices.Contains(known, string(name)) && foreign == "" {
				foreign = string(name)
			}
			return nil
		}); err != nil {
			return err
		}
		mustFlatten = hasSchema && !bytes.Equal(meta.Get(keyLayout), flatLayout) && hasNested(t)
		return nil
	})
	switch {
	case err != nil:
		return err
	case foreign != "":
		return fmt.Errorf("%w: no schema version and unknown bucket %q: not a rotatord state file", state.ErrSchema, foreign)
	case !mustFlatten:
		return nil
	case readOnly:
		return fmt.Errorf("%w: the file has the layout of an older rotatord; run rotatord once to upgrade it", state.ErrSchema)
	}
	return b.db.Update(flatten)
}

func hasNested(t *bolt.Tx) bool {
	for _, name := range nested {
		bk := t.Bucket([]byte(name))
		if bk == nil {
			continue
		}
		c := bk.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if v == nil {
				return true
			}
		}
	}
	return false
}

// flatten moves every nested bucket's keys up into its parent as
// name + NUL + key, in one transaction.
func flatten(t *bolt.Tx) error {
	for _, name := range nested {
		parent := t.Bucket([]byte(name))
		if parent == nil {
			continue
		}
		var subs [][]byte
		if err := parent.ForEachBucket(func(k []byte) error {
			subs = append(subs, slices.Clone(k))
			return nil
		}); err != nil {
			return err
		}
		for _, sub := range subs {
			type pair struct{ k, v []byte }
			var pairs []pair
			if err := parent.Bucket(sub).ForEach(func(k, v []byte) error {
				pairs = append(pairs, pair{slices.Clone(k), slices.Clone(v)})
				return nil
			}); err != nil {
				return err
			}
			if err := parent.DeleteBucket(sub); err != nil {
				return fmt.Errorf("flatten %s/%s: %w", name, sub, err)
			}
			for _, p := range pairs {
				key := append(append(slices.Clone(sub), 0), p.k...)
				if p.v == nil {
					p.v = []byte{}
				}
				if err := parent.Put(key, p.v); err != nil {
					return fmt.Errorf("flatten %s/%s: %w", name, sub, err)
				}
			}
		}
	}
	meta, err := t.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	return meta.Put(keyLayout, flatLayout)
}

// kv is one bbolt transaction seen through state.KV. A bucket is created
// at its first write; reading one that does not exist yet finds nothing.
type kv struct{ t *bolt.Tx }

func (k kv) bucket(name string) *bolt.Bucket { return k.t.Bucket([]byte(name)) }

func (k kv) writable(name string) (*bolt.Bucket, error) {
	if !k.t.Writable() {
		return nil, state.ErrReadOnly
	}
	b, err := k.t.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	return b, nil
}

func (k kv) Get(bucket string, key []byte) ([]byte, error) {
	b := k.bucket(bucket)
	if b == nil {
		return nil, nil
	}
	v := b.Get(key)
	if v == nil {
		return nil, nil
	}
	// bbolt's bytes live in the memory map: the caller may keep them
	// after the transaction.
	return slices.Clone(v), nil
}

func (k kv) Put(bucket string, key, value []byte) error {
	b, err := k.writable(bucket)
	if err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	return b.Put(key, value)
}

func (k kv) Delete(bucket string, key []byte) error {
	if !k.t.Writable() {
		return state.ErrReadOnly
	}
	b := k.bucket(bucket)
	if b == nil {
		return nil
	}
	return b.Delete(key)
}

func (k kv) Scan(bucket string, prefix []byte, reverse bool, fn func(k, v []byte) error) error {
	b := k.bucket(bucket)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var key, val []byte
	if reverse {
		key, val = seekLast(c, prefix)
	} else {
		key, val = c.Seek(prefix)
	}
	for ; key != nil && bytes.HasPrefix(key, prefix); key, val = step(c, reverse) {
		if val == nil {
			continue // a nested bucket: not a record
		}
		if err := fn(key, val); err != nil {
			if errors.Is(err, state.ErrStopScan) {
				return nil
			}
			return err
		}
	}
	return nil
}

func step(c *bolt.Cursor, reverse bool) ([]byte, []byte) {
	if reverse {
		return c.Prev()
	}
	return c.Next()
}

// seekLast positions c on the last key with prefix, if any.
func seekLast(c *bolt.Cursor, prefix []byte) ([]byte, []byte) {
	if end := successor(prefix); end != nil {
		if k, _ := c.Seek(end); k != nil {
			return c.Prev()
		}
	}
	return c.Last()
}

// successor returns the smallest key greater than every key with prefix,
// or nil when there is none (an empty prefix, or all 0xff bytes).
func successor(prefix []byte) []byte {
	end := slices.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func (k kv) Count(bucket string, prefix []byte) (int, error) {
	b := k.bucket(bucket)
	if b == nil {
		return 0, nil
	}
	if len(prefix) == 0 {
		return b.Stats().KeyN, nil
	}
	n := 0
	c := b.Cursor()
	for key, _ := c.Seek(prefix); key != nil && bytes.HasPrefix(key, prefix); key, _ = c.Next() {
		n++
	}
	return n, nil
}

func (k kv) NextSequence(bucket string) (uint64, error) {
	b, err := k.writable(bucket)
	if err != nil {
		return 0, err
	}
	return b.NextSequence()
}
