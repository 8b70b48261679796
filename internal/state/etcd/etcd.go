// Package etcd is the shared state backend: the buckets of the state live
// as keys under one prefix of an etcd cluster, so that several rotatord
// processes on different hosts see one journal while one of them leads.
//
// Layout, under Options.Prefix (default /rotatord/):
//
//	b/<bucket>/<key>   one record or index entry of the typed layer
//	s/<bucket>         the bucket's sequence, a decimal number
//	commit             rewritten by every committed Update: "<read revision> <writer>"
//
// Every Update is one etcd transaction. It reads at one revision R, keeps
// its writes in memory, and commits them only if the commit key was not
// rewritten after R: an optimistic compare-and-swap, retried on conflict,
// which makes Updates serializable across processes. What a process's
// Updates read and wrote stays cached while no other process commits (the
// leader is normally the only writer), so an Update reads etcd only for
// what it has not seen. Edit the state only through rotatord. Within a process,
// Updates that arrive while a commit is in flight are committed together,
// as bbolt's DB.Batch does, so many rotations share one round of consensus.
//
// With a Guard (the leader's election key and its revision), every commit
// is also conditioned on that key, in the same transaction: a deposed
// leader's write fails with state.ErrFenced and writes nothing.
//
// Only this package, etcdtest, internal/leader and the daemon's wiring
// import the etcd client.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rotatord/rotatord/internal/state"
)

// DefaultPrefix is where the state lives when Options.Prefix is empty.
const DefaultPrefix = "/rotatord/"

// DefaultMaxTxnOps is etcd's own default of --max-txn-ops: the most
// writes one etcd transaction may carry.
const DefaultMaxTxnOps = 128

// DefaultTimeout bounds one etcd request when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// maxAttempts is how often a batch is retried after losing a
// compare-and-swap to another writer before Update gives up.
const maxAttempts = 50

// pageSize is how many keys one range read of a Scan fetches.
const pageSize = 1000

// ErrConflict is returned (wrapped) when an Update lost its
// compare-and-swap maxAttempts times in a row.
var ErrConflict = errors.New("etcd state: conflicting writers")

// ErrTooLarge is returned (wrapped) when one Update writes more keys than
// one etcd transaction may carry (Options.MaxTxnOps, etcd's --max-txn-ops).
var ErrTooLarge = errors.New("etcd state: update too large for one transaction")

// Guard says which leadership every write is conditioned on.
type Guard interface {
	// Fence returns the election key this process leads with and the
	// revision at which it was created. When this process does not lead,
	// it returns an error wrapping state.ErrFenced.
	Fence() (key string, rev int64, err error)
}

// Options tune New.
type Options struct {
	// Prefix is where every key is written; default DefaultPrefix. It
	// should end in "/".
	Prefix string
	// Guard, when set, fences every write: it commits only while the
	// guard's election key still exists at its revision.
	Guard Guard
	// MaxTxnOps is the most operations one etcd transaction may carry:
	// the cluster's --max-txn-ops. Zero means DefaultMaxTxnOps.
	MaxTxnOps int
	// Timeout bounds each etcd request; zero means DefaultTimeout.
	Timeout time.Duration
	// ReadOnly refuses every Update with state.ErrReadOnly.
	ReadOnly bool
	// CloseClient makes Close close the client too.
	CloseClient bool
	// Writer names this process in the commit key ("<revision> <writer>"),
	// so that etcd's history shows who committed each Update.
	Writer string
}

// Backend is state on etcd. It is safe for concurrent use.
type Backend struct {
	c         *clientv3.Client
	prefix    string
	commitKey string
	guard     Guard
	maxOps    int
	timeout   time.Duration
	readOnly  bool
	closeCli  bool
	writer    string

	// cache holds what the committer read and wrote, as of revision
	// cacheRev, the revision of this backend's last commit (0: empty). It
	// stays true while no other process commits: begin checks that the
	// commit key still has that revision. Only the committer goroutine
	// touches it; a nil value means the key is absent.
	cache    map[string][]byte
	cacheRev int64
	// lasts holds, by bucket, its last key and value as of cacheRev (key
	// "" when the bucket is empty): the first page of the reverse scans
	// that find the audit log's head.
	lasts map[string]kvPair

	calls     chan *call
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ state.Backend = (*Backend)(nil)

// New returns a backend over an open client. It starts the goroutine that
// commits Updates; Close stops it.
func New(c *clientv3.Client, opts Options) (*Backend, error) {
	if c == nil {
		return nil, errors.New("etcd state: nil client")
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	b := &Backend{
		c:         c,
		prefix:    prefix,
		commitKey: prefix + "commit",
		guard:     opts.Guard,
		maxOps:    opts.MaxTxnOps,
		timeout:   opts.Timeout,
		readOnly:  opts.ReadOnly,
		closeCli:  opts.CloseClient,
		writer:    opts.Writer,
		calls:     make(chan *call, 256),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if b.maxOps <= 0 {
		b.maxOps = DefaultMaxTxnOps
	}
	if b.timeout <= 0 {
		b.timeout = DefaultTimeout
	}
	go b.commitLoop()
	return b, nil
}

// Prefix returns the prefix every key is written under.
func (b *Backend) Prefix() string { return b.prefix }

// Client returns the etcd client the backend uses.
func (b *Backend) Client() *clientv3.Client { return b.c }

// Close stops the committer; Updates after it fail. It closes the client
// only when Options.CloseClient was set.
func (b *Backend) Close() error {
	var err error
	b.closeOnce.Do(func() {
		close(b.stop)
		<-b.done
		if b.closeCli {
			if cerr := b.c.Close(); cerr != nil && !errors.Is(cerr, context.Canceled) {
				err = fmt.Errorf("close etcd client: %w", cerr)
			}
		}
	})
	return err
}

// dataKey is the etcd key of key in bucket.
func (b *Backend) dataKey(bucket string, key []byte) string {
	return b.prefix + "b/" + bucket + "/" + string(key)
}

func (b *Backend) bucketPrefix(bucket string) string { return b.prefix + "b/" + bucket + "/" }

func (b *Backend) seqKey(bucket string) string { return b.prefix + "s/" + bucket }

func (b *Backend) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.timeout)
}

// View runs fn over a snapshot: every read is made at the revision of the
// first one.
func (b *Backend) View(fn func(state.KV) error) error {
	return fn(&txn{b: b, readOnly: true})
}

// call is one Update waiting for the committer.
type call struct {
	fn    func(state.KV) error
	fence fence
	fErr  error // the guard's answer when the Update began
	err   chan error
}

// fence is a leadership every write of a call is conditioned on.
type fence struct {
	key string
	rev int64
}

// Update runs fn in a transaction that commits atomically in one etcd Txn.
// Updates that arrive while a commit is in flight share the next one.
func (b *Backend) Update(fn func(state.KV) error) error {
	if b.readOnly {
		return fmt.Errorf("update etcd state: %w", state.ErrReadOnly)
	}
	c := &call{fn: fn, err: make(chan error, 1)}
	if b.guard != nil {
		c.fence.key, c.fence.rev, c.fErr = b.guard.Fence()
		if c.fErr != nil {
			return fmt.Errorf("update etcd state: %w", c.fErr)
		}
	}
	select {
	case b.calls <- c:
	case <-b.stop:
		return errClosed
	}
	select {
	case err := <-c.err:
		return err
	case <-b.done:
		// The committer stopped; it may have answered just before.
		select {
		case err := <-c.err:
			return err
		default:
			return errClosed
		}
	}
}

var errClosed = errors.New("update etcd state: backend closed")

// commitLoop commits Updates one batch at a time: whatever queued up
// while the previous commit was in flight.
func (b *Backend) commitLoop() {
	defer close(b.done)
	var carry []*call
	for {
		if len(carry) == 0 {
			select {
			case c := <-b.calls:
				carry = append(carry, c)
			case <-b.stop:
				b.drain()
				return
			}
		}
	more:
		for {
			select {
			case c := <-b.calls:
				carry = append(carry, c)
			default:
				break more
			}
		}
		carry = b.commitBatch(carry)
	}
}

// drain fails the Updates still queued at Close.
func (b *Backend) drain() {
	for {
		select {
		case c := <-b.calls:
			c.err <- errClosed
		default:
			return
		}
	}
}

// commitBatch runs and commits as many of calls as fit in one etcd
// transaction and returns the ones left for the next batch.
func (b *Backend) commitBatch(calls []*call) (rest []*call) {
	// Calls whose leadership is no longer the current one fail before
	// they run: they were decided by a leader that is gone.
	var cur fence
	if b.guard != nil {
		var err error
		cur.key, cur.rev, err = b.guard.Fence()
		live := calls[:0]
		for _, c := range calls {
			switch {
			case err != nil:
				c.err <- fmt.Errorf("update etcd state: %w", err)
			case c.fence != cur:
				c.err <- fmt.Errorf("update etcd state: %w: leadership %s@%d was lost before the write", state.ErrFenced, c.fence.key, c.fence.rev)
			default:
				live = append(live, c)
			}
		}
		calls = live
		if len(calls) == 0 {
			return nil
		}
	}
	for attempt := 1; ; attempt++ {
		t := &txn{b: b, writes: map[string][]byte{}}
		if err := t.begin(); err != nil {
			for _, c := range calls {
				c.err <- fmt.Errorf("update etcd state: %w", err)
			}
			return nil
		}
		var done []*call
		rest = nil
		for i, c := range calls {
			mark := len(t.undo)
			err := c.fn(t)
			if err == nil && len(t.writes)+1 > b.maxOps {
				if len(done) > 0 {
					// Commit what fits; this call runs again in the next batch.
					t.rollback(mark)
					rest = calls[i:]
					break
				}
				err = fmt.Errorf("update etcd state: %w: it writes %d keys, and one etcd transaction carries at most %d (the cluster's --max-txn-ops)", ErrTooLarge, len(t.writes)+1, b.maxOps)
			}
			if err != nil {
				t.rollback(mark)
				c.err <- err
				continue
			}
			done = append(done, c)
		}
		if len(done) == 0 {
			return rest
		}
		err := t.commit(cur)
		if errors.Is(err, errConflict) && attempt < maxAttempts {
			calls = append(done, rest...)
			time.Sleep(time.Duration(attempt) * time.Millisecond) // back off from the other writer
			continue
		}
		if errors.Is(err, errConflict) {
			err = fmt.Errorf("update etcd state: %w: lost the compare-and-swap %d times", ErrConflict, attempt)
		}
		for _, c := range done {
			c.err <- err
		}
		return rest
	}
}

// errConflict: another writer committed after this transaction's reads.
var errConflict = errors.New("conflict")

// txn is one transaction: reads at one revision, writes kept in memory.
type txn struct {
	b        *Backend
	readOnly bool
	rev      int64 // 0 until the first read fixes it
	// writes maps an etcd key to its new value; nil means deleted.
	writes map[string][]byte
	undo   []undo
	// reads are the point reads of an Update at rev, for the cache; lasts
	// the last entries its whole-bucket reverse scans found.
	reads map[string][]byte
	lasts map[string]kvPair
}

// undo restores one key of writes when a call of a batch fails.
type undo struct {
	key  string
	had  bool
	prev []byte
}

// begin fixes the revision every read of an Update is made at.
func (t *txn) begin() error {
	ctx, cancel := t.b.ctx()
	defer cancel()
	resp, err := t.b.c.Get(ctx, t.b.commitKey)
	if err != nil {
		return fmt.Errorf("read etcd revision: %w", err)
	}
	t.rev = resp.Header.Revision
	if len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != t.b.cacheRev || len(t.b.cache) > maxCache {
		// Another process committed since this one did: what it read is
		// stale.
		t.b.cache, t.b.cacheRev, t.b.lasts = map[string][]byte{}, 0, map[string]kvPair{}
	}
	t.reads, t.lasts = map[string][]byte{}, map[string]kvPair{}
	return nil
}

// maxCache bounds the committer's cache (keys); past it the cache starts
// over.
const maxCache = 200_000

func (t *txn) rollback(mark int) {
	for i := len(t.undo) - 1; i >= mark; i-- {
		u := t.undo[i]
		if u.had {
			t.writes[u.key] = u.prev
		} else {
			delete(t.writes, u.key)
		}
	}
	t.undo = t.undo[:mark]
}

func (t *txn) set(key string, value []byte) {
	prev, had := t.writes[key]
	t.undo = append(t.undo, undo{key: key, had: had, prev: prev})
	t.writes[key] = value
}

// get reads one key at the transaction's revision.
func (t *txn) get(key string) ([]byte, error) {
	if v, ok := t.writes[key]; ok {
		return v, nil
	}
	if !t.readOnly {
		if v, ok := t.b.cache[key]; ok {
			return v, nil
		}
	}
	resp, err := t.read(key)
	if err != nil {
		return nil, fmt.Errorf("etcd get: %w", err)
	}
	var v []byte
	if len(resp.Kvs) > 0 {
		v = resp.Kvs[0].Value
	}
	if t.reads != nil {
		t.reads[key] = v
	}
	return v, nil
}

// read is one range read of the transaction. The first is linearizable
// and fixes the revision; the later ones read that revision, which every
// member holds identically, so they are served by the member the client
// talks to without a round of consensus. A member that has not applied
// the revision yet answers ErrFutureRev: then the read goes linearizable.
func (t *txn) read(key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, cancel := t.b.ctx()
	defer cancel()
	if t.rev == 0 {
		resp, err := t.b.c.Get(ctx, key, opts...)
		if err == nil {
			t.rev = resp.Header.Revision
		}
		return resp, err
	}
	opts = append(opts, clientv3.WithRev(t.rev))
	resp, err := t.b.c.Get(ctx, key, append(opts, clientv3.WithSerializable())...)
	if errors.Is(err, rpctypes.ErrFutureRev) {
		resp, err = t.b.c.Get(ctx, key, opts...)
	}
	return resp, err
}

// commit writes the transaction in one etcd Txn, conditioned on nobody
// having committed since its reads and, with a guard, on leadership f.
func (t *txn) commit(f fence) error {
	ops := make([]clientv3.Op, 0, len(t.writes)+1)
	keys := make([]string, 0, len(t.writes))
	for k := range t.writes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := t.writes[k]; v == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(v)))
		}
	}
	ops = append(ops, clientv3.OpPut(t.b.commitKey, strings.TrimSpace(strconv.FormatInt(t.rev, 10)+" "+t.b.writer)))
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(t.b.commitKey), "<", t.rev+1)}
	var onFail []clientv3.Op
	if t.b.guard != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(f.key), "=", f.rev))
		onFail = append(onFail, clientv3.OpGet(f.key, clientv3.WithKeysOnly()))
	}
	ctx, cancel := t.b.ctx()
	defer cancel()
	resp, err := t.b.c.Txn(ctx).If(cmps...).Then(ops...).Else(onFail...).Commit()
	if err != nil {
		return fmt.Errorf("commit to etcd: %w", err)
	}
	if resp.Succeeded {
		// Nobody committed between this transaction's reads and its
		// commit (the compare says so): all of it holds as of the commit.
		for k, v := range t.reads {
			t.b.cache[k] = v
		}
		for k, v := range t.writes {
			t.b.cache[k] = v
		}
		for bucket, last := range t.lasts {
			t.b.lasts[bucket] = last
		}
		for k, v := range t.writes {
			t.b.moveLast(k, v)
		}
		t.b.cacheRev = resp.Header.Revision
		return nil
	}
	if t.b.guard != nil {
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 || kvs[0].CreateRevision != f.rev {
			return fmt.Errorf("commit to etcd: %w: election key %s (revision %d) is gone; another rotatord leads now, and nothing was written", state.ErrFenced, f.key, f.rev)
		}
	}
	return errConflict
}

// moveLast updates the cached last entry of k's bucket after k was set to
// v (nil: deleted).
func (b *Backend) moveLast(k string, v []byte) {
	rest, ok := strings.CutPrefix(k, b.prefix+"b/")
	if !ok {
		return
	}
	bucket, _, ok := strings.Cut(rest, "/")
	last, known := b.lasts[bucket]
	switch {
	case !ok || !known:
	case v != nil && (last.Key == nil || k >= string(last.Key)):
		b.lasts[bucket] = kvPair{Key: []byte(k), Value: v}
	case v == nil && k == string(last.Key):
		delete(b.lasts, bucket) // the one before it is not known
	}
}

func (t *txn) Get(bucket string, key []byte) ([]byte, error) {
	v, err := t.get(t.b.dataKey(bucket, key))
	if err != nil {
		return nil, fmt.Errorf("get %s/%q: %w", bucket, key, err)
	}
	if v == nil {
		return nil, nil
	}
	return slices.Clone(v), nil
}

func (t *txn) Put(bucket string, key, value []byte) error {
	if t.readOnly {
		return state.ErrReadOnly
	}
	if value == nil {
		value = []byte{}
	}
	t.set(t.b.dataKey(bucket, key), slices.Clone(value))
	return nil
}

func (t *txn) Delete(bucket string, key []byte) error {
	if t.readOnly {
		return state.ErrReadOnly
	}
	t.set(t.b.dataKey(bucket, key), nil)
	return nil
}

// Scan reads the range page by page at the transaction's revision and
// merges the transaction's own writes in.
func (t *txn) Scan(bucket string, prefix []byte, reverse bool, fn func(k, v []byte) error) error {
	bp := t.b.bucketPrefix(bucket)
	start := bp + string(prefix)
	end := clientv3.GetPrefixRangeEnd(start)
	pending := t.pendingIn(start, end, reverse)
	emit := func(k string, v []byte) error {
		return fn([]byte(k[len(bp):]), v)
	}
	// flush emits the transaction's writes that sort before key (after it
	// when reverse); with key "" it emits all that are left.
	flush := func(key string) error {
		for len(pending) > 0 {
			k := pending[0]
			if key != "" && ((!reverse && k >= key) || (reverse && k <= key)) {
				return nil
			}
			pending = pending[1:]
			if v := t.writes[k]; v != nil {
				if err := emit(k, v); err != nil {
					return err
				}
			}
		}
		return nil
	}
	lo, hi := start, end
	whole := reverse && len(prefix) == 0 && !t.readOnly && t.lasts != nil
	first := true
	err := func() error {
		for {
			var kvs []kvPair
			var more bool
			var lc kvPair
			var cached bool
			if first && whole { // only the committer goroutine reads the cache
				lc, cached = t.b.lasts[bucket]
			}
			switch {
			case first && whole && cached && lc.Key == nil:
				// The bucket is empty (as of the cache).
			case first && whole && cached:
				kvs, more = []kvPair{lc}, true
			default:
				var err error
				kvs, more, err = t.page(lo, hi, reverse)
				if err != nil {
					return fmt.Errorf("scan %s/%q: %w", bucket, prefix, err)
				}
				if first && whole {
					t.lasts[bucket] = kvPair{}
					if len(kvs) > 0 {
						t.lasts[bucket] = kvs[0]
					}
				}
			}
			first = false
			for _, kv := range kvs {
				k := string(kv.Key)
				if err := flush(k); err != nil {
					return err
				}
				if len(pending) > 0 && pending[0] == k {
					pending = pending[1:]
					if v := t.writes[k]; v != nil {
						if err := emit(k, v); err != nil {
							return err
						}
					}
					continue
				}
				if err := emit(k, kv.Value); err != nil {
					return err
				}
			}
			if !more || len(kvs) == 0 {
				return flush("")
			}
			last := string(kvs[len(kvs)-1].Key)
			if reverse {
				hi = last
			} else {
				lo = last + "\x00"
			}
		}
	}()
	if errors.Is(err, state.ErrStopScan) {
		return nil
	}
	return err
}

type kvPair struct{ Key, Value []byte }

// page reads up to pageSize keys of [lo, hi).
func (t *txn) page(lo, hi string, reverse bool) ([]kvPair, bool, error) {
	order := clientv3.SortAscend
	if reverse {
		order = clientv3.SortDescend
	}
	resp, err := t.read(lo, clientv3.WithRange(hi), clientv3.WithLimit(pageSize), clientv3.WithSort(clientv3.SortByKey, order))
	if err != nil {
		return nil, false, fmt.Errorf("etcd range: %w", err)
	}
	out := make([]kvPair, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		out[i] = kvPair{kv.Key, kv.Value}
	}
	return out, resp.More, nil
}

// pendingIn returns the keys this transaction wrote in [start, end), in
// scan order.
func (t *txn) pendingIn(start, end string, reverse bool) []string {
	var ks []string
	for k := range t.writes {
		if k >= start && k < end {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	if reverse {
		slices.Reverse(ks)
	}
	return ks
}

func (t *txn) Count(bucket string, prefix []byte) (int, error) {
	start := t.b.bucketPrefix(bucket) + string(prefix)
	end := clientv3.GetPrefixRangeEnd(start)
	if len(t.pendingIn(start, end, false)) > 0 {
		n := 0
		err := t.Scan(bucket, prefix, false, func(_, _ []byte) error { n++; return nil })
		return n, err
	}
	resp, err := t.read(start, clientv3.WithRange(end), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("count %s/%q: etcd range: %w", bucket, prefix, err)
	}
	return int(resp.Count), nil
}

func (t *txn) NextSequence(bucket string) (uint64, error) {
	if t.readOnly {
		return 0, state.ErrReadOnly
	}
	k := t.b.seqKey(bucket)
	v, err := t.get(k)
	if err != nil {
		return 0, fmt.Errorf("next sequence of %s: %w", bucket, err)
	}
	var n uint64
	if len(v) > 0 {
		if n, err = strconv.ParseUint(string(v), 10, 64); err != nil {
			return 0, fmt.Errorf("next sequence of %s: stored value %q is not a number", bucket, v)
		}
	}
	n++
	t.set(k, []byte(strconv.FormatUint(n, 10)))
	return n, nil
}
