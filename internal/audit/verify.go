package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
)

// Reason says why a log failed verification.
type Reason int

// The reasons Verify gives, in the order a verifier meets them.
const (
	// ReasonMalformed: an export line (or record) is not an entry.
	ReasonMalformed Reason = iota + 1
	// ReasonMissing: a seq is skipped; the entry was deleted or moved
	// later.
	ReasonMissing
	// ReasonOrder: a seq is not above the one before it; entries were
	// reordered or duplicated.
	ReasonOrder
	// ReasonPrevHash: prev_hash is not the hash of the entry before it;
	// an entry before this one was removed, replaced or reordered, and
	// the seqs renumbered to hide it.
	ReasonPrevHash
	// ReasonHMAC: the entry's HMAC does not match its content: it was
	// edited after it was written (or the key is not this log's).
	ReasonHMAC
	// ReasonStart: the log starts after seq 1 and no checkpoint vouches
	// for the entries before it having been pruned.
	ReasonStart
	// ReasonCheckpoint: a checkpoint entry contradicts the log.
	ReasonCheckpoint
	// ReasonCut: the log ends before the expected head's seq.
	ReasonCut
	// ReasonHead: the entry at the expected head's seq has another hash.
	ReasonHead
	// ReasonHeadUnchecked: the expected head's seq was pruned (or lies
	// before an export's first entry) and no checkpoint records it, so
	// it cannot be checked.
	ReasonHeadUnchecked
)

var reasonNames = map[Reason]string{
	ReasonMalformed:     "malformed",
	ReasonMissing:       "entry missing",
	ReasonOrder:         "out of order",
	ReasonPrevHash:      "prev_hash mismatch",
	ReasonHMAC:          "hmac mismatch",
	ReasonStart:         "unexplained start",
	ReasonCheckpoint:    "bad checkpoint",
	ReasonCut:           "cut tail",
	ReasonHead:          "head mismatch",
	ReasonHeadUnchecked: "head not checkable",
}

// String is the reason's short name, e.g. "hmac mismatch".
func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason %d", int(r))
}

// ErrBroken matches every *BrokenError (errors.Is).
var ErrBroken = errors.New("audit log broken")

// BrokenError names the first entry at which a log failed verification and
// why. The CLI prints it and exits 1.
type BrokenError struct {
	Reason Reason
	// Seq is the seq of the first bad entry: the one found there, or for
	// ReasonMissing, ReasonStart and ReasonCut the first one that is
	// missing.
	Seq uint64
	// Index is the 1-based position of the entry in the input (its line
	// in a JSONL export, its record after the header in CSV); 0 when the
	// break concerns the log as a whole (a cut tail).
	Index int
	// Msg explains the break in a sentence.
	Msg string
}

func (e *BrokenError) Error() string {
	if e.Index > 0 {
		return fmt.Sprintf("audit log broken at seq %d (line %d): %s: %s", e.Seq, e.Index, e.Reason, e.Msg)
	}
	return fmt.Sprintf("audit log broken: %s: %s", e.Reason, e.Msg)
}

// Is makes errors.Is(err, ErrBroken) true.
func (e *BrokenError) Is(target error) bool { return target == ErrBroken }

// VerifyOptions says what a verification checks beyond the chain itself.
type VerifyOptions struct {
	// Key checks every entry's HMAC. The zero Key checks the hash chain
	// only, which against a published ExpectHead still proves that no
	// entry up to it changed (Result.HMACChecked says which was done).
	Key Key
	// ExpectHead is a head published earlier (in a report or digest): the
	// log must reach its seq, and its entry at that seq must have that
	// hash. nil checks nothing beyond the log itself.
	ExpectHead *Head
	// Partial accepts a log that starts after seq 1 without a checkpoint
	// vouching for the start: an export made with -since. Its first
	// entry's prev_hash is then taken on trust and reported as
	// Result.Base. A live log is never partial.
	Partial bool
}

// Result describes a log that verified.
type Result struct {
	// Entries is how many entries were read.
	Entries int
	// Base is what the first entry chains from: Genesis for a whole log,
	// the pruned head a checkpoint recorded, or (with Partial) the first
	// entry's prev_hash as found.
	Base Head
	// Head is the log's head: its last entry's seq and hash (Base when
	// the log is empty). Publish it to detect a later cut.
	Head Head
	// HMACChecked is true when every entry's HMAC was checked.
	HMACChecked bool
	// HeadChecked is true when ExpectHead was found in the log.
	HeadChecked bool
	// Checkpoints counts checkpoint entries (retention prunings).
	Checkpoints int
	// UpgradedThrough is the last seq of entries that were chained after
	// the fact, on upgrade from an unchained log (the seq before the
	// upgraded marker); 0 when the log was chained from its start.
	UpgradedThrough uint64
}

// Verifier checks entries one at a time, for callers that are handed
// entries by a callback (state.Tx.ForEachAudit). Add the entries in log
// order, then call Finish. It keeps a few hundred bytes of state whatever
// the length of the log. It is not safe for concurrent use.
type Verifier struct {
	opts VerifyOptions
	mac  *macer
	buf  []byte

	index      int // input position of the entry being checked
	firstIndex int
	started    bool
	prev       Head // the last entry's seq and hash
	first      uint64
	vouched    bool // the start is seq 1, a checkpoint's head, or Partial
	res        Result
	err        *BrokenError
}

// NewVerifier returns a Verifier for opts.
func NewVerifier(opts VerifyOptions) *Verifier {
	v := &Verifier{opts: opts, buf: make([]byte, 0, 1024)}
	if !opts.Key.IsZero() {
		v.mac = opts.Key.newMACer()
	}
	v.res.HMACChecked = v.mac != nil
	v.res.Base, v.res.Head = Genesis, Genesis
	return v
}

// Add checks the next entry. It returns a *BrokenError at the first break
// and the same error on every later call, without looking at the entry.
func (v *Verifier) Add(e Entry) error { return v.add(e, v.index+1) }

// add is Add for the entry at input position index.
func (v *Verifier) add(e Entry, index int) error {
	if v.err != nil {
		return v.err
	}
	v.index = index
	v.res.Entries++
	if e.Seq == 0 {
		return v.fail(ReasonMalformed, 0, "seq 0: seqs start at 1")
	}
	if !v.started {
		v.started, v.first, v.firstIndex = true, e.Seq, index
		v.res.Base = Head{Seq: e.Seq - 1, Hash: e.PrevHash}
		switch {
		case e.Seq == 1 && e.PrevHash != ZeroHash:
			return v.fail(ReasonPrevHash, e.Seq, "the first entry's prev_hash is %q, not 64 zeros: entries before it were removed", e.PrevHash)
		case e.Seq == 1 || v.opts.Partial:
			v.vouched = true
		}
		if x := v.opts.ExpectHead; x != nil && x.Seq == e.Seq-1 {
			if x.Hash != e.PrevHash {
				return v.fail(ReasonHead, e.Seq, "the expected head is %s but this entry chains from %s: the log was rewritten", x, v.res.Base)
			}
			v.res.HeadChecked = true
		}
	} else {
		switch want := v.prev.Seq + 1; {
		case e.Seq > want:
			what := fmt.Sprintf("entry %d is", want)
			if e.Seq > want+1 {
				what = fmt.Sprintf("entries %d-%d are", want, e.Seq-1)
			}
			return v.fail(ReasonMissing, want, "seq %d is followed by seq %d: %s missing (deleted, or moved later in the log)", v.prev.Seq, e.Seq, what)
		case e.Seq < want:
			return v.fail(ReasonOrder, e.Seq, "seq %d follows seq %d: entries were reordered or duplicated", e.Seq, v.prev.Seq)
		}
		if e.PrevHash != v.prev.Hash {
			return v.fail(ReasonPrevHash, e.Seq, "prev_hash does not match entry %d: an entry before it was removed, replaced or reordered", v.prev.Seq)
		}
	}

	v.buf = e.AppendCanonical(v.buf[:0])
	if v.mac != nil && !hmacEqual(v.mac.sumHex(v.buf), e.HMAC) {
		msg := "the entry was edited after it was written"
		if v.res.Entries == 1 {
			msg += " (or the key is not this log's key)"
		}
		return v.fail(ReasonHMAC, e.Seq, "%s", msg)
	}
	var hexSum [2 * sha256.Size]byte
	sum := sha256.Sum256(v.buf)
	hex.Encode(hexSum[:], sum[:])
	v.prev = Head{Seq: e.Seq, Hash: string(hexSum[:])}

	if x := v.opts.ExpectHead; x != nil && x.Seq == e.Seq {
		if x.Hash != v.prev.Hash {
			return v.fail(ReasonHead, e.Seq, "its hash is %s but the expected head is %s: the log was rewritten from here or earlier", v.prev.Hash, x)
		}
		v.res.HeadChecked = true
	}
	switch e.Event {
	case EventCheckpoint:
		return v.checkpoint(e)
	case EventUpgraded:
		v.res.UpgradedThrough = e.Seq - 1
	}
	return nil
}

// checkpoint checks a checkpoint entry against the start of the log.
func (v *Verifier) checkpoint(e Entry) error {
	v.res.Checkpoints++
	h, err := e.CheckpointHead()
	if err != nil {
		return v.fail(ReasonCheckpoint, e.Seq, "%v", err)
	}
	base := v.res.Base
	switch {
	case h.Seq >= v.first:
		return v.fail(ReasonCheckpoint, e.Seq, "it records entries up to seq %d as pruned, but the log still holds seq %d", h.Seq, v.first)
	case h.Seq == base.Seq && h.Hash != base.Hash:
		return v.fail(ReasonCheckpoint, e.Seq, "it records the pruned head %s but the log's first entry chains from %s: the start of the log was replaced", h, base)
	case h.Seq == base.Seq:
		v.vouched = true
	}
	// An older checkpoint (h.Seq < base.Seq) recorded an earlier
	// pruning; it can still settle an expected head that old.
	if x := v.opts.ExpectHead; x != nil && x.Seq == h.Seq && h.Seq < base.Seq {
		if x.Hash != h.Hash {
			return v.fail(ReasonHead, e.Seq, "it records the pruned head %s but the expected head is %s: the log was rewritten before it was pruned", h, x)
		}
		v.res.HeadChecked = true
	}
	return nil
}

// Malformed records that the input's next entry could not be read, which
// breaks the log there. err is the reader's error (a *ParseError).
func (v *Verifier) Malformed(err error) error { return v.malformed(err, v.index+1) }

func (v *Verifier) malformed(err error, index int) error {
	if v.err != nil {
		return v.err
	}
	v.index = index
	return v.fail(ReasonMalformed, v.prev.Seq+1, "%v", err)
}

// Finish checks what only the end of the log can show: a cut tail against
// ExpectHead and a start no checkpoint vouched for (the checkpoint comes
// after the entries it vouches for, so a log both cut at the start and
// broken further on reports the later break). It returns the Result,
// and the first break (a *BrokenError) if there was one.
func (v *Verifier) Finish() (Result, error) {
	if v.err != nil {
		return v.res, v.err
	}
	if v.started {
		v.res.Head = v.prev
		if !v.vouched {
			v.index = v.firstIndex
			what := "entry 1 was"
			if v.first > 2 {
				what = fmt.Sprintf("entries 1-%d were", v.first-1)
			}
			return v.res, v.fail(ReasonStart, 1, "the log starts at seq %d and no checkpoint records that %s pruned: they were removed", v.first, what)
		}
	}
	last := v.res.Head.Seq
	if x := v.opts.ExpectHead; x != nil && !v.res.HeadChecked {
		v.index = 0
		if x.Seq > last {
			what := fmt.Sprintf("entry %d was", x.Seq)
			if x.Seq > last+1 {
				what = fmt.Sprintf("entries %d-%d were", last+1, x.Seq)
			}
			return v.res, v.fail(ReasonCut, last+1, "the log ends at seq %d, the expected head is %s: %s cut", last, x, what)
		}
		return v.res, v.fail(ReasonHeadUnchecked, x.Seq, "the expected head %s lies before the log's first entry (seq %d) and no checkpoint records it", x, v.first)
	}
	return v.res, nil
}

// fail records the first break.
func (v *Verifier) fail(r Reason, seq uint64, format string, args ...any) error {
	v.err = &BrokenError{Reason: r, Seq: seq, Index: v.index, Msg: fmt.Sprintf(format, args...)}
	return v.err
}

// hmacEqual compares a computed hex HMAC with the entry's in constant time.
func hmacEqual(sum []byte, got string) bool {
	if len(got) != len(sum) {
		return false
	}
	var diff byte
	for i := range sum {
		diff |= sum[i] ^ got[i]
	}
	return diff == 0
}

// Verify checks a whole log: every entry's seq follows the one before,
// its prev_hash is that entry's hash and (given a key) its HMAC holds; the
// log starts at seq 1 or where a checkpoint says pruning left it; and it
// reaches opts.ExpectHead with the same hash. It returns a *BrokenError
// (matching ErrBroken) for the first bad entry, or the reader's error when
// the input could not be read at all.
//
// entries is what ReadExport, ReadJSONL or ReadCSV return, or any sequence
// of entries in log order; an error it yields that is a *ParseError breaks
// the log at that line, and any other error stops verification and is
// returned as is (an I/O error is not evidence of tampering).
func Verify(entries iter.Seq2[Entry, error], opts VerifyOptions) (Result, error) {
	v := NewVerifier(opts)
	for e, err := range entries {
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				return v.res, err
			}
			return v.res, v.Malformed(err)
		}
		if err := v.Add(e); err != nil {
			return v.res, err
		}
	}
	return v.Finish()
}

// VerifyExport verifies an export (JSONL or CSV, as NewReader detects) read
// from r, as Verify does; a *BrokenError's Index is then the line of the
// export where the bad entry starts.
func VerifyExport(r io.Reader, opts VerifyOptions) (Result, error) {
	rd := NewReader(r)
	v := NewVerifier(opts)
	for {
		e, err := rd.Next()
		if err == io.EOF {
			return v.Finish()
		}
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				return v.res, v.malformed(err, pe.Line)
			}
			return v.res, err
		}
		if err := v.add(e, rd.Line()); err != nil {
			return v.res, err
		}
	}
}
