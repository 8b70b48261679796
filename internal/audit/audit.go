// Package audit makes rotatord's audit log evidence an auditor can check
// (DESIGN.md §11): every entry is chained to the one before it by a SHA-256
// hash and authenticated by an HMAC-SHA256 keyed by a secret kept in Vault,
// so an edited, reordered or removed entry breaks the chain, and a cut tail
// is caught against a head (SEQ:HASH) that reports and Slack digests print.
//
// The package is a leaf (it imports no other rotatord package) so that
// internal/state can chain entries in the same transaction that appends
// them. It provides the entry type and its canonical encoding, Seal and
// Chain for appenders, Verify (and the streaming Verifier) for auditors,
// the JSONL and CSV export writers and readers, and the HMAC key's life
// cycle in Vault (LoadKey).
//
// # Canonical encoding
//
// An entry's canonical bytes are the UTF-8 JSON object of every field but
// hmac, written exactly like this, with no whitespace anywhere:
//
//	{"seq":1,"time":"2026-05-01T12:00:00.123Z","policy":"gpu-team","provider":"sesterce-prod",
//	 "event":"rotated","trigger":"schedule","key_id":"k2","key_name":"gpu-team-20260501T120000",
//	 "fingerprint":"SHA256:…","old_key_id":"k1","old_fingerprint":"SHA256:…","rotation_id":"r1",
//	 "vault_path":"ssh/gpu-team","vault_version":3,"detail":"","prev_hash":"0000…0000"}
//
// (shown wrapped; the bytes are one line). The rules:
//
//   - Every field is present, in exactly this order: seq, time, policy,
//     provider, event, trigger, key_id, key_name, fingerprint, old_key_id,
//     old_fingerprint, rotation_id, vault_path, vault_version, detail,
//     prev_hash. An empty string is "", an absent number is 0; nothing is
//     null and nothing is left out.
//   - seq and vault_version are JSON integers in decimal, without sign (for
//     seq), leading zeros, fraction or exponent.
//   - time is a string: RFC 3339 in UTC with a "Z" suffix and nanoseconds,
//     trailing zeros of the fraction dropped and the dot dropped with them
//     (Go's time.RFC3339Nano): "2026-05-01T12:00:00Z",
//     "2026-05-01T12:00:00.5Z", "2026-05-01T12:00:00.123456789Z".
//   - Strings are JSON strings. '"' and '\' are escaped as \" and \\;
//     U+0008, U+0009, U+000A, U+000C and U+000D as \b, \t, \n, \f and \r;
//     every other character below U+0020 as \u00XX with lowercase hex;
//     everything else, '/', DEL and non-ASCII included, is written as its
//     UTF-8 bytes. (This is what JavaScript's JSON.stringify and Python's
//     json.dumps(obj, ensure_ascii=False, separators=(",", ":")) write.)
//     Seal replaces invalid UTF-8 with U+FFFD first, so every string is
//     valid UTF-8.
//   - prev_hash is the lowercase hex SHA-256 of the previous entry's
//     canonical bytes, or 64 zeros for the entry with seq 1.
//
// An entry's hash is the lowercase hex SHA-256 of its canonical bytes; its
// hmac is the lowercase hex HMAC-SHA256 of the same bytes under the audit
// key. Because prev_hash is inside the bytes, the HMAC also binds the
// entry's position. A log's head is "SEQ:HASH", the seq and hash of its last
// entry ("0:" and 64 zeros for an empty log).
//
// The JSONL export writes each entry as its canonical bytes with
// ,"hmac":"…" inserted before the closing brace, one per line; a verifier
// parses the line and re-encodes it by the rules above (it should not
// trust the line's own bytes). docs/audit-format.md says the same for
// auditors, with a worked example, and examples/verify_audit.py is a
// verifier in a few lines of Python.
//
// # Pruning and upgrades
//
// Retention pruning deletes the oldest entries and, in the same
// transaction, appends a checkpoint entry (event "checkpoint") whose detail
// starts with the head of what was pruned: the seq and hash of the last
// deleted entry. The remaining log starts at seq N+1 whose prev_hash is
// that hash, and the checkpoint, itself chained and MACed, vouches for the
// start. A state file written before chaining existed is chained once, in
// place, on upgrade, and an "upgraded" entry is appended; Verify reports
// that the entries before it were chained only then.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Event names, the values of Entry.Event. The list is open: the engine may
// record other events, and the verifier treats every event alike except
// checkpoint and upgraded.
const (
	EventRotated           = "rotated"
	EventDeleted           = "deleted"
	EventFailed            = "failed"
	EventOverdue           = "overdue"
	EventEmergency         = "emergency"
	EventExposed           = "exposed"
	EventHostUpdated       = "host_updated"
	EventReload            = "reload"
	EventKeyUploaded       = "key_uploaded"
	EventKeyMissing        = "key_missing"
	EventKeyOrphaned       = "key_orphaned"
	EventKeyAdopted        = "key_adopted"
	EventRotationAbandoned = "rotation_abandoned"
	EventRotationFailed    = "rotation_failed"
	// EventUpgraded marks the end of a log that was chained after the fact
	// when rotatord was upgraded: see NewUpgradeMarker.
	EventUpgraded = "upgraded"
	// EventCheckpoint records the head of entries deleted by retention
	// pruning: see NewCheckpoint.
	EventCheckpoint = "checkpoint"
)

// Triggers of the entries this package makes.
const (
	TriggerRetention = "retention"
	TriggerUpgrade   = "upgrade"
)

// ZeroHash is the prev_hash of the first entry of a log: 64 zeros.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Entry is one audit record. The JSON names are the fields of the export
// (DESIGN.md §11) and the order of the struct is the canonical order.
type Entry struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Policy   string    `json:"policy"`
	Provider string    `json:"provider"`
	// Event is what happened: one of the Event constants.
	Event string `json:"event"`
	// Trigger is who or what caused it: schedule, signal, socket, resume,
	// retention...
	Trigger     string `json:"trigger"`
	KeyID       string `json:"key_id"`
	KeyName     string `json:"key_name"`
	Fingerprint string `json:"fingerprint"`
	// OldKeyID and OldFingerprint name the key a rotation replaced.
	OldKeyID       string `json:"old_key_id"`
	OldFingerprint string `json:"old_fingerprint"`
	RotationID     string `json:"rotation_id"`
	// VaultPath and VaultVersion locate the private key written for the
	// event, relative to the mount; 0 means no version.
	VaultPath    string `json:"vault_path"`
	VaultVersion int    `json:"vault_version"`
	Detail       string `json:"detail"`
	// PrevHash is the hex SHA-256 of the previous entry's canonical bytes.
	PrevHash string `json:"prev_hash"`
	// HMAC is the hex HMAC-SHA256 of this entry's canonical bytes.
	HMAC string `json:"hmac"`
}

// Fields are the export's field names in canonical order, hmac last. They
// are the CSV header.
var Fields = []string{
	"seq", "time", "policy", "provider", "event", "trigger", "key_id", "key_name", "fingerprint",
	"old_key_id", "old_fingerprint", "rotation_id", "vault_path", "vault_version", "detail",
	"prev_hash", "hmac",
}

// AppendCanonical appends e's canonical bytes (see the package doc) to b.
// HMAC is not part of them. It does not allocate beyond growing b.
func (e Entry) AppendCanonical(b []byte) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","policy":`...)
	b = appendString(b, e.Policy)
	b = append(b, `,"provider":`...)
	b = appendString(b, e.Provider)
	b = append(b, `,"event":`...)
	b = appendString(b, e.Event)
	b = append(b, `,"trigger":`...)
	b = appendString(b, e.Trigger)
	b = append(b, `,"key_id":`...)
	b = appendString(b, e.KeyID)
	b = append(b, `,"key_name":`...)
	b = appendString(b, e.KeyName)
	b = append(b, `,"fingerprint":`...)
	b = appendString(b, e.Fingerprint)
	b = append(b, `,"old_key_id":`...)
	b = appendString(b, e.OldKeyID)
	b = append(b, `,"old_fingerprint":`...)
	b = appendString(b, e.OldFingerprint)
	b = append(b, `,"rotation_id":`...)
	b = appendString(b, e.RotationID)
	b = append(b, `,"vault_path":`...)
	b = appendString(b, e.VaultPath)
	b = append(b, `,"vault_version":`...)
	b = strconv.AppendInt(b, int64(e.VaultVersion), 10)
	b = append(b, `,"detail":`...)
	b = appendString(b, e.Detail)
	b = append(b, `,"prev_hash":`...)
	b = appendString(b, e.PrevHash)
	return append(b, '}')
}

// Canonical returns e's canonical bytes.
func (e Entry) Canonical() []byte { return e.AppendCanonical(make([]byte, 0, 512)) }

// Hash returns the hex SHA-256 of e's canonical bytes: what the next
// entry's prev_hash must be.
func (e Entry) Hash() string {
	var buf [512]byte
	sum := sha256.Sum256(e.AppendCanonical(buf[:0]))
	return hex.EncodeToString(sum[:])
}

// Head returns the head of a log whose last entry is e.
func (e Entry) Head() Head { return Head{Seq: e.Seq, Hash: e.Hash()} }

// shortEscapes are the two-character escapes of the canonical encoding.
var shortEscapes = [32]byte{'\b': 'b', '\t': 't', '\n': 'n', '\f': 'f', '\r': 'r'}

// appendString appends s as a canonical JSON string. Valid UTF-8 is
// assumed (Seal ensures it); invalid bytes are copied as they are, so such
// an entry simply does not verify.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case shortEscapes[c] != 0:
			b = append(b, '\\', shortEscapes[c])
		default:
			const hexDigits = "0123456789abcdef"
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Head names the end of a log: the seq of its last entry and that entry's
// hash. A head published in a report lets a later verification detect that
// entries up to it were cut or rewritten.
type Head struct {
	Seq  uint64
	Hash string
}

// Genesis is the head of an empty log, which the first entry chains from.
var Genesis = Head{Seq: 0, Hash: ZeroHash}

// String formats h as "SEQ:HASH".
func (h Head) String() string { return strconv.FormatUint(h.Seq, 10) + ":" + h.Hash }

// ErrBadHead is wrapped by ParseHead's errors.
var ErrBadHead = errors.New("want SEQ:HASH with a decimal seq and a 64-digit lowercase hex SHA-256")

// ParseHead parses "SEQ:HASH" as String formats it.
func ParseHead(s string) (Head, error) {
	seqText, hash, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return Head{}, fmt.Errorf("parse audit head %q: %w", s, ErrBadHead)
	}
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil || (len(seqText) > 1 && seqText[0] == '0') {
		return Head{}, fmt.Errorf("parse audit head %q: %w", s, ErrBadHead)
	}
	if !isHash(hash) {
		return Head{}, fmt.Errorf("parse audit head %q: %w", s, ErrBadHead)
	}
	return Head{Seq: seq, Hash: hash}, nil
}

// isHash reports whether s is 64 lowercase hex digits.
func isHash(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Seal chains e after the log whose head is prev and authenticates it: it
// sets e.Seq to prev.Seq+1 and e.PrevHash to prev.Hash, puts e.Time in UTC
// (stamping time.Now() when it is zero), replaces invalid UTF-8 in the
// strings with U+FFFD (so that the stored entry, once through JSON, still
// has the bytes that were MACed), and sets e.HMAC. It returns the sealed
// entry and the new head.
//
// The entry must be stored exactly as returned: anything that rewrites a
// field afterwards (a scrubber, a truncation) makes it fail verification,
// so scrub before sealing.
func Seal(prev Head, e Entry, key Key) (Entry, Head) {
	var buf [512]byte
	e = prepare(prev, e)
	canon := e.AppendCanonical(buf[:0])
	e.HMAC = key.mac(canon)
	sum := sha256.Sum256(canon)
	return e, Head{Seq: e.Seq, Hash: hex.EncodeToString(sum[:])}
}

// prepare does Seal's work but the MAC.
func prepare(prev Head, e Entry) Entry {
	e.Seq = prev.Seq + 1
	e.PrevHash = prev.Hash
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	for _, s := range []*string{
		&e.Policy, &e.Provider, &e.Event, &e.Trigger, &e.KeyID, &e.KeyName, &e.Fingerprint,
		&e.OldKeyID, &e.OldFingerprint, &e.RotationID, &e.VaultPath, &e.Detail,
	} {
		if !utf8.ValidString(*s) {
			*s = strings.ToValidUTF8(*s, "\uFFFD")
		}
	}
	return e
}

// Chain seals entries one after another in memory: the upgrade of an
// unchained log, tests and benchmarks. It reuses one HMAC state, so it is
// faster than Seal in a loop, and it is not safe for concurrent use.
type Chain struct {
	head Head
	mac  *macer
	buf  []byte
}

// NewChain starts a chain after head (Genesis for a new log).
func NewChain(head Head, key Key) *Chain {
	return &Chain{head: head, mac: key.newMACer(), buf: make([]byte, 0, 512)}
}

// Append seals e after the chain's head, as Seal does, and advances the
// head.
func (c *Chain) Append(e Entry) Entry {
	e = prepare(c.head, e)
	c.buf = e.AppendCanonical(c.buf[:0])
	e.HMAC = c.mac.sum(c.buf)
	sum := sha256.Sum256(c.buf)
	c.head = Head{Seq: e.Seq, Hash: hex.EncodeToString(sum[:])}
	return e
}

// Head returns the head after the last appended entry.
func (c *Chain) Head() Head { return c.head }

// NewCheckpoint returns the entry that retention pruning appends, in the
// same transaction that deletes the entries up to and including pruned:
// its detail starts with pruned's "SEQ:HASH", which is how Verify accepts a
// log that starts at pruned.Seq+1. before is the retention cut-off, said in
// the detail for the reader.
func NewCheckpoint(pruned Head, before time.Time) Entry {
	detail := pruned.String()
	if !before.IsZero() {
		detail += " pruned entries up to seq " + strconv.FormatUint(pruned.Seq, 10) +
			" older than " + before.UTC().Format(time.RFC3339)
	}
	return Entry{Event: EventCheckpoint, Trigger: TriggerRetention, Detail: detail}
}

// CheckpointHead returns the pruned head a checkpoint entry records.
func (e Entry) CheckpointHead() (Head, error) {
	if e.Event != EventCheckpoint {
		return Head{}, fmt.Errorf("entry %d is a %q entry, not a checkpoint", e.Seq, e.Event)
	}
	text, _, _ := strings.Cut(e.Detail, " ")
	h, err := ParseHead(text)
	if err != nil {
		return Head{}, fmt.Errorf("checkpoint entry %d: detail does not start with the pruned head: %w", e.Seq, ErrBadHead)
	}
	return h, nil
}

// NewUpgradeMarker returns the entry appended after an unchained log of n
// entries was chained in place on upgrade: Verify reports that entries up
// to it carry a chain made after the fact. version is rotatord's version,
// said in the detail.
func NewUpgradeMarker(n uint64, version string) Entry {
	detail := "chained " + strconv.FormatUint(n, 10) + " existing entries on upgrade"
	if version != "" {
		detail += " to rotatord " + version
	}
	return Entry{Event: EventUpgraded, Trigger: TriggerUpgrade, Detail: detail}
}
