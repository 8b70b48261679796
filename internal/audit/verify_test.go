package audit

import (
	"bytes"
	"errors"
	"io"
	"iter"
	"slices"
	"strings"
	"testing"
	"time"
)

// export writes entries in format.
func export(t testing.TB, entries []Entry, format string) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := NewWriter(&b, format)
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		if err := w.Write(&entries[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rehash is what an attacker without the key can do after changing
// entries: recompute every prev_hash from the first changed one on, so
// that the hash chain holds again. The HMACs stay as they were.
func rehash(entries []Entry, from int) {
	for i := max(from, 1); i < len(entries); i++ {
		entries[i].PrevHash = entries[i-1].Hash()
	}
}

// renumber gives the entries consecutive seqs from the first one's.
func renumber(entries []Entry) {
	for i := 1; i < len(entries); i++ {
		entries[i].Seq = entries[i-1].Seq + 1
	}
}

// TestVerify_Tamper is the evidence of issue 14: each way of tampering
// with an export breaks verification at the entry it touched, with the
// reason, and the untouched export verifies.
func TestVerify_Tamper(t *testing.T) {
	const n, k = 60, 7 // entry k is at index k-1
	key := testKey(t)
	log := chain(t, n, key)
	head := log[n-1].Head()
	headAt := func(seq int) *Head { h := log[seq-1].Head(); return &h }

	tests := []struct {
		name   string
		tamper func([]Entry) []Entry
		opts   VerifyOptions // Key defaults to key unless noKey
		noKey  bool
		reason Reason // 0: verifies
		seq    uint64 // seq the break names
		line   int    // line of the JSONL export it names; 0 for the whole log
		msg    string // part of the message
	}{
		{name: "untouched", tamper: nil},
		{name: "untouched, expected head", opts: VerifyOptions{ExpectHead: &head}},
		{name: "untouched, older published head", opts: VerifyOptions{ExpectHead: headAt(40)}},
		{
			name:   "edit the detail of entry k",
			tamper: func(l []Entry) []Entry { l[k-1].Detail = "nothing happened"; return l },
			reason: ReasonHMAC, seq: k, line: k, msg: "edited after it was written",
		},
		{
			name:   "edit the time of entry k by a second",
			tamper: func(l []Entry) []Entry { l[k-1].Time = l[k-1].Time.Add(time.Second); return l },
			reason: ReasonHMAC, seq: k, line: k,
		},
		{
			name:   "edit the escaped detail of entry 50",
			tamper: func(l []Entry) []Entry { l[49].Detail = strings.Replace(l[49].Detail, "\r\n", "\n", 1); return l },
			reason: ReasonHMAC, seq: 50, line: 50,
		},
		{
			name: "edit entry k and recompute the chain after it",
			tamper: func(l []Entry) []Entry {
				l[k-1].KeyID = "someone-elses-key"
				rehash(l, k)
				return l
			},
			reason: ReasonHMAC, seq: k, line: k,
		},
		{
			name: "edit entry k and recompute the chain, no key, published head",
			tamper: func(l []Entry) []Entry {
				l[k-1].KeyID = "someone-elses-key"
				rehash(l, k)
				return l
			},
			noKey: true, opts: VerifyOptions{ExpectHead: &head},
			reason: ReasonHead, seq: n, line: n, msg: "the expected head is " + head.String(),
		},
		{
			name:   "swap entries k and k+1",
			tamper: func(l []Entry) []Entry { l[k-1], l[k] = l[k], l[k-1]; return l },
			reason: ReasonMissing, seq: k, line: k, msg: "seq 6 is followed by seq 8: entry 7 is missing",
		},
		{
			name: "swap entries k and k+1 and renumber",
			tamper: func(l []Entry) []Entry {
				l[k-1], l[k] = l[k], l[k-1]
				renumber(l)
				return l
			},
			reason: ReasonPrevHash, seq: k, line: k, msg: "prev_hash does not match entry 6",
		},
		{
			name:   "delete entry k",
			tamper: func(l []Entry) []Entry { return slices.Delete(l, k-1, k) },
			reason: ReasonMissing, seq: k, line: k, msg: "entry 7 is missing",
		},
		{
			name:   "delete entries k to k+2",
			tamper: func(l []Entry) []Entry { return slices.Delete(l, k-1, k+2) },
			reason: ReasonMissing, seq: k, line: k, msg: "entries 7-9 are missing",
		},
		{
			name: "delete entry k and renumber",
			tamper: func(l []Entry) []Entry {
				l = slices.Delete(l, k-1, k)
				renumber(l)
				return l
			},
			reason: ReasonPrevHash, seq: k, line: k,
		},
		{
			name: "delete entry k, renumber and recompute the chain",
			tamper: func(l []Entry) []Entry {
				l = slices.Delete(l, k-1, k)
				renumber(l)
				rehash(l, k-1)
				return l
			},
			reason: ReasonHMAC, seq: k, line: k,
		},
		{
			name:   "delete the first entry",
			tamper: func(l []Entry) []Entry { return l[1:] },
			reason: ReasonStart, seq: 1, line: 1, msg: "the log starts at seq 2 and no checkpoint records that entry 1 was pruned",
		},
		{
			name:   "duplicate entry k",
			tamper: func(l []Entry) []Entry { return slices.Insert(l, k, l[k-1]) },
			reason: ReasonOrder, seq: k, line: k + 1, msg: "seq 7 follows seq 7",
		},
		{
			name:   "cut the last 3, published head",
			tamper: func(l []Entry) []Entry { return l[:n-3] },
			opts:   VerifyOptions{ExpectHead: &head},
			reason: ReasonCut, seq: n - 2,
			msg: "the log ends at seq 57, the expected head is " + head.String() + ": entries 58-60 were cut",
		},
		{
			name:   "cut the last 3, published head, no key",
			tamper: func(l []Entry) []Entry { return l[:n-3] },
			noKey:  true, opts: VerifyOptions{ExpectHead: &head},
			reason: ReasonCut, seq: n - 2,
		},
		{
			// Without a published head a cut tail is a shorter log: this
			// is why reports print the head.
			name:   "cut the last 3, no published head",
			tamper: func(l []Entry) []Entry { return l[:n-3] },
		},
		{
			name:   "cut the last one",
			tamper: func(l []Entry) []Entry { return l[:n-1] },
			opts:   VerifyOptions{ExpectHead: &head},
			reason: ReasonCut, seq: n, msg: "entry 60 was cut",
		},
		{
			name:   "append a forged entry",
			tamper: func(l []Entry) []Entry { return append(l, NewChain(head, Key{}).Append(entry(99))) },
			reason: ReasonHMAC, seq: n + 1, line: n + 1,
		},
		{
			name:   "published head from another log",
			opts:   VerifyOptions{ExpectHead: &Head{Seq: 40, Hash: strings.Repeat("ab", 32)}},
			reason: ReasonHead, seq: 40, line: 40, msg: "the log was rewritten",
		},
		{
			name:   "wrong key",
			opts:   VerifyOptions{Key: func() Key { k, _ := GenerateKey(); return k }()},
			reason: ReasonHMAC, seq: 1, line: 1, msg: "or the key is not this log's key",
		},
		{
			name:   "log emptied, published head",
			tamper: func([]Entry) []Entry { return nil },
			opts:   VerifyOptions{ExpectHead: &head},
			reason: ReasonCut, seq: 1, msg: "the log ends at seq 0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			if opts.Key.IsZero() && !tt.noKey {
				opts.Key = key
			}
			entries := slices.Clone(log)
			if tt.tamper != nil {
				entries = tt.tamper(entries)
			}
			for _, format := range ExportFormats() {
				res, err := VerifyExport(bytes.NewReader(export(t, entries, format)), opts)
				line := tt.line
				if format == FormatCSV && line > 0 {
					// The header, and a line more for each entry before
					// whose detail holds a line break.
					line++
					for _, e := range entries[:min(line-2, len(entries))] {
						line += strings.Count(e.Detail, "\n")
					}
				}
				checkBreak(t, format, err, tt.reason, tt.seq, line, tt.msg)
				if tt.reason != 0 || err != nil {
					continue
				}
				want := Result{
					Entries: len(entries), Base: Genesis, Head: entries[len(entries)-1].Head(),
					HMACChecked: !tt.noKey, HeadChecked: opts.ExpectHead != nil,
				}
				if res != want {
					t.Errorf("%s: result = %+v, want %+v", format, res, want)
				}
			}
			// The same through Verify and a plain sequence, as state
			// would feed it.
			_, err := Verify(seqOf(entries), opts)
			checkBreak(t, "sequence", err, tt.reason, tt.seq, tt.line, tt.msg)
		})
	}
}

// checkBreak checks that err is the break wanted (or nil for reason 0) at
// the input line wanted (the position, for a sequence).
func checkBreak(t *testing.T, where string, err error, reason Reason, seq uint64, line int, msg string) {
	t.Helper()
	if reason == 0 {
		if err != nil {
			t.Errorf("%s: untouched log does not verify: %v", where, err)
		}
		return
	}
	var be *BrokenError
	if !errors.As(err, &be) || !errors.Is(err, ErrBroken) {
		t.Fatalf("%s: err = %v, want a *BrokenError", where, err)
	}
	if be.Reason != reason || be.Seq != seq || be.Index != line {
		t.Errorf("%s: broken at seq %d line %d (%v), want seq %d line %d (%v): %v", where, be.Seq, be.Index, be.Reason, seq, line, reason, err)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: error %q does not say %q", where, err, msg)
	}
}

// TestVerify_Pruned: retention pruning deletes the oldest entries and
// appends a checkpoint; the rest of the log still verifies, and deleting
// more than the checkpoint says does not.
func TestVerify_Pruned(t *testing.T) {
	key := testKey(t)
	log := chain(t, 30, key)
	cutoff := time.Date(2026, 5, 1, 15, 0, 0, 0, time.UTC)
	// prune deletes entries up to and including seq last and appends
	// the checkpoint, as state's pruning does in one transaction.
	prune := func(l []Entry, last uint64) []Entry {
		var pruned Head
		var kept []Entry
		for _, e := range l {
			if e.Seq <= last {
				pruned = e.Head()
			} else {
				kept = append(kept, e)
			}
		}
		c := NewChain(kept[len(kept)-1].Head(), key)
		return append(kept, c.Append(NewCheckpoint(pruned, cutoff)))
	}
	appendN := func(l []Entry, n int) []Entry {
		c := NewChain(l[len(l)-1].Head(), key)
		for i := range n {
			l = append(l, c.Append(entry(100+i)))
		}
		return l
	}
	once := prune(log, 10)
	twice := prune(appendN(once, 5), 20) // 21..36, checkpoints at 31 and 37
	published := log[9].Head()           // a head printed before the first pruning

	tests := []struct {
		name    string
		entries []Entry
		opts    VerifyOptions
		reason  Reason
		seq     uint64
		msg     string
		base    Head
		cps     int
	}{
		{name: "pruned once", entries: once, base: log[9].Head(), cps: 1},
		{name: "pruned twice", entries: twice, base: log[19].Head(), cps: 2},
		{name: "pruned twice, head published before the first pruning", entries: twice, opts: VerifyOptions{ExpectHead: &published}, base: log[19].Head(), cps: 2},
		{name: "pruned once, head published at the pruned seq", entries: once, opts: VerifyOptions{ExpectHead: &published}, base: log[9].Head(), cps: 1},
		{
			name: "pruned, then more deleted", entries: once[2:],
			reason: ReasonStart, seq: 1, msg: "the log starts at seq 13 and no checkpoint records that entries 1-12 were pruned",
		},
		{
			name: "pruned without a checkpoint", entries: log[10:],
			reason: ReasonStart, seq: 1, msg: "entries 1-10 were pruned",
		},
		{
			name: "checkpoint kept but entries restored", entries: append(slices.Clone(log), NewChain(log[29].Head(), key).Append(NewCheckpoint(log[9].Head(), cutoff))),
			reason: ReasonCheckpoint, seq: 31, msg: "records entries up to seq 10 as pruned, but the log still holds seq 1",
		},
		{
			name: "checkpoint of another log", entries: append(slices.Clone(log[10:]), NewChain(log[29].Head(), key).Append(NewCheckpoint(Head{10, strings.Repeat("ef", 32)}, cutoff))),
			reason: ReasonCheckpoint, seq: 31, msg: "the start of the log was replaced",
		},
		{
			name: "published head older than the pruning, not recorded", entries: twice, opts: VerifyOptions{ExpectHead: func() *Head { h := log[4].Head(); return &h }()},
			reason: ReasonHeadUnchecked, seq: 5, msg: "lies before the log's first entry (seq 21) and no checkpoint records it",
		},
		{
			name: "-since export", entries: log[15:], opts: VerifyOptions{Partial: true}, base: log[14].Head(),
		},
		{
			name: "-since export, head published before its start", entries: log[15:], opts: VerifyOptions{Partial: true, ExpectHead: &published},
			reason: ReasonHeadUnchecked, seq: 10,
		},
		{
			name: "-since export, head published at its base", entries: log[15:], opts: VerifyOptions{Partial: true, ExpectHead: func() *Head { h := log[14].Head(); return &h }()},
			base: log[14].Head(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Key = key
			res, err := VerifyExport(bytes.NewReader(export(t, tt.entries, FormatJSONL)), tt.opts)
			if tt.reason == 0 {
				if err != nil {
					t.Fatalf("pruned log does not verify: %v", err)
				}
				if res.Base != tt.base || res.Checkpoints != tt.cps || res.Head != tt.entries[len(tt.entries)-1].Head() {
					t.Errorf("result = %+v, want base %v, %d checkpoints", res, tt.base, tt.cps)
				}
				if tt.opts.ExpectHead != nil && !res.HeadChecked {
					t.Error("HeadChecked = false with an expected head")
				}
				return
			}
			var be *BrokenError
			if !errors.As(err, &be) || be.Reason != tt.reason || be.Seq != tt.seq || !strings.Contains(be.Msg, tt.msg) {
				t.Errorf("err = %v, want %v at seq %d saying %q", err, tt.reason, tt.seq, tt.msg)
			}
		})
	}
}

// TestVerify_Upgraded: an unchained log chained in place on upgrade, with
// its marker, verifies and says which entries were chained after the fact.
func TestVerify_Upgraded(t *testing.T) {
	key := testKey(t)
	c := NewChain(Genesis, key)
	var log []Entry
	for i := range 12 {
		old := entry(i)
		old.Seq = uint64(i + 1) // the seq it had in the unchained log
		log = append(log, c.Append(old))
	}
	log = append(log, c.Append(NewUpgradeMarker(12, "v1.4.0")), c.Append(entry(50)))
	res, err := Verify(seqOf(log), VerifyOptions{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if res.UpgradedThrough != 12 || res.Entries != 14 {
		t.Errorf("result = %+v, want 14 entries, upgraded through 12", res)
	}
}

// TestVerify_ReadErrors: a line that is not an entry breaks the log there;
// an I/O error is returned as is, since it says nothing about tampering.
func TestVerify_ReadErrors(t *testing.T) {
	key := testKey(t)
	b := export(t, chain(t, 5, key), FormatJSONL)
	lines := bytes.SplitAfter(b, []byte("\n"))
	lines[2] = append(lines[2][:40:40], '\n')
	_, err := VerifyExport(bytes.NewReader(bytes.Join(lines, nil)), VerifyOptions{Key: key})
	var be *BrokenError
	if !errors.As(err, &be) || be.Reason != ReasonMalformed || be.Index != 3 || be.Seq != 3 {
		t.Errorf("truncated line 3: err = %v, want malformed at line 3, seq 3", err)
	}

	ioErr := errors.New("disk on fire")
	_, err = VerifyExport(io.MultiReader(bytes.NewReader(b[:100]), errReader{ioErr}), VerifyOptions{Key: key})
	if !errors.Is(err, ioErr) || errors.Is(err, ErrBroken) {
		t.Errorf("read error: err = %v, want the I/O error, not a break", err)
	}
	seq := func(yield func(Entry, error) bool) { yield(Entry{}, ioErr) }
	if _, err := Verify(seq, VerifyOptions{}); !errors.Is(err, ioErr) || errors.Is(err, ErrBroken) {
		t.Errorf("Verify of a failing sequence: err = %v, want the I/O error", err)
	}

	t.Run("verifier is sticky", func(t *testing.T) {
		v := NewVerifier(VerifyOptions{Key: key})
		log := chain(t, 3, key)
		if err := v.Add(log[0]); err != nil {
			t.Fatal(err)
		}
		first := v.Add(log[2])
		if first == nil {
			t.Fatal("seq 1 then seq 3: no error")
		}
		if err := v.Add(log[1]); err != first {
			t.Errorf("later Add = %v, want the first break %v", err, first)
		}
		if _, err := v.Finish(); err != first {
			t.Errorf("Finish = %v, want the first break %v", err, first)
		}
	})
	t.Run("empty log", func(t *testing.T) {
		res, err := Verify(seqOf([]Entry(nil)), VerifyOptions{Key: key})
		if err != nil || res.Head != Genesis || res.Entries != 0 {
			t.Errorf("empty log: %+v, %v; want head %v", res, err, Genesis)
		}
	})
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// seqOf is entries as Verify takes them.
func seqOf(entries []Entry) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		for _, e := range entries {
			if !yield(e, nil) {
				return
			}
		}
	}
}
