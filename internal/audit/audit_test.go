package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// t0 is the time of the first test entry.
var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// testKey is a fixed key, so that failures reproduce; leak tests look for
// its hex and base64 forms.
func testKey(t testing.TB) Key {
	t.Helper()
	b := make([]byte, KeySize)
	for i := range b {
		b[i] = byte(0xa0 + i)
	}
	k, err := NewKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// entry returns the i-th (0-based) entry of a realistic log: rotations
// of a few policies with their uploads and deletions, and now and then a
// failure whose detail holds the characters the canonical encoding
// escapes.
func entry(i int) Entry {
	policies := [...]string{"gpu-team", "inference", "batch", "training"}
	providers := [...]string{"sesterce-prod", "gcore-prod", "gcore-prod", "sesterce-lab"}
	p := i % len(policies)
	rot := fmt.Sprintf("%016x", uint64(i/3)*0x9e3779b97f4a7c15)
	keyID := fmt.Sprintf("3f0b6a52-8f1c-4c9e-%04d-%012d", p, i/3+1)
	created := t0.Add(time.Duration(i) * 17 * time.Minute).Add(time.Duration(i%7) * 123456789)
	e := Entry{
		Time: created, Policy: policies[p], Provider: providers[p], Trigger: "schedule",
		KeyID: keyID, KeyName: policies[p] + "-" + created.Format("20060102T150405"),
		Fingerprint: fingerprint(keyID), RotationID: rot,
	}
	switch i % 3 {
	case 0:
		e.Event = EventKeyUploaded
	case 1:
		e.Event = EventRotated
		e.OldKeyID = fmt.Sprintf("3f0b6a52-8f1c-4c9e-%04d-%012d", p, i/3)
		e.OldFingerprint = fingerprint(e.OldKeyID)
		e.VaultPath = "ssh/" + policies[p]
		e.VaultVersion = i/3 + 1
		e.Detail = "grace period 7d"
	case 2:
		e.Event = EventDeleted
		e.KeyID = fmt.Sprintf("3f0b6a52-8f1c-4c9e-%04d-%012d", p, i/3)
	}
	if i%50 == 49 {
		e.Event, e.Trigger = EventRotationFailed, "signal"
		e.Detail = "create key: provider said: \"quota\\exceeded\"\r\n\tline 2 \x01 <b>&amp; naïve 🔑 \u2028 /end"
	}
	return e
}

func fingerprint(id string) string {
	h := sha256.Sum256([]byte(id))
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(h[:])
}

// chain returns a sealed log of n entries.
func chain(t testing.TB, n int, key Key) []Entry {
	t.Helper()
	c := NewChain(Genesis, key)
	out := make([]Entry, n)
	for i := range out {
		out[i] = c.Append(entry(i))
	}
	return out
}

func TestEntry_AppendCanonical(t *testing.T) {
	e := Entry{
		Seq: 7, Time: time.Date(2026, 5, 1, 14, 0, 0, 500000000, time.FixedZone("CEST", 7200)),
		Policy: "gpu-team", Provider: "sesterce-prod", Event: "rotated", Trigger: "schedule",
		KeyID: "k2", KeyName: "gpu-team-20260501T120000", Fingerprint: "SHA256:abc/+=",
		OldKeyID: "k1", OldFingerprint: "SHA256:old", RotationID: "r1",
		VaultPath: "ssh/gpu-team", VaultVersion: 3,
		Detail:   "a\"b\\c\b\f\n\r\t\x00\x1f\x7f</script>&é🔑\u2028",
		PrevHash: ZeroHash, HMAC: "not part of it",
	}
	want := `{"seq":7,"time":"2026-05-01T12:00:00.5Z","policy":"gpu-team","provider":"sesterce-prod",` +
		`"event":"rotated","trigger":"schedule","key_id":"k2","key_name":"gpu-team-20260501T120000",` +
		`"fingerprint":"SHA256:abc/+=","old_key_id":"k1","old_fingerprint":"SHA256:old","rotation_id":"r1",` +
		`"vault_path":"ssh/gpu-team","vault_version":3,` +
		`"detail":"a\"b\\c\b\f\n\r\t\u0000\u001f` + "\x7f</script>&é🔑\u2028" + `",` +
		`"prev_hash":"` + ZeroHash + `"}`
	if got := string(e.Canonical()); got != want {
		t.Errorf("canonical bytes:\n got %s\nwant %s", got, want)
	}

	t.Run("times", func(t *testing.T) {
		for _, tc := range []struct {
			t    time.Time
			want string
		}{
			{time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), "2026-05-01T12:00:00Z"},
			{time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC), "2026-05-01T12:00:00.123456789Z"},
			{time.Date(2026, 5, 1, 12, 0, 0, 120000000, time.UTC), "2026-05-01T12:00:00.12Z"},
			{time.Date(2026, 5, 1, 9, 0, 0, 1, time.FixedZone("", -3*3600)), "2026-05-01T12:00:00.000000001Z"},
		} {
			e := Entry{Time: tc.t}
			if got := string(e.Canonical()); !strings.Contains(got, `"time":"`+tc.want+`"`) {
				t.Errorf("time %v: canonical %s, want time %q", tc.t, got, tc.want)
			}
		}
	})
	t.Run("is JSON of every field but hmac", func(t *testing.T) {
		var m map[string]any
		d := json.NewDecoder(bytes.NewReader(e.Canonical()))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatalf("canonical bytes are not JSON: %v", err)
		}
		if len(m) != len(Fields)-1 || m["hmac"] != nil {
			t.Errorf("canonical object has %d members (hmac %v), want %d without hmac", len(m), m["hmac"], len(Fields)-1)
		}
		if m["detail"] != e.Detail {
			t.Errorf("detail decodes to %q, want %q", m["detail"], e.Detail)
		}
	})
	t.Run("zero entry", func(t *testing.T) {
		got := string((&Entry{}).Canonical())
		want := `{"seq":0,"time":"0001-01-01T00:00:00Z","policy":"","provider":"","event":"","trigger":"","key_id":"","key_name":"","fingerprint":"","old_key_id":"","old_fingerprint":"","rotation_id":"","vault_path":"","vault_version":0,"detail":"","prev_hash":""}`
		if got != want {
			t.Errorf("zero entry:\n got %s\nwant %s", got, want)
		}
	})
}

// TestAppendString_MatchesEncodingJSON: for every string encoding/json
// writes the same way (it differs only in escaping <, >, &, U+2028 and
// U+2029 for HTML, which SetEscapeHTML(false) turns off but for the last
// two), the canonical string is its output.
func TestAppendString_MatchesEncodingJSON(t *testing.T) {
	var all strings.Builder
	for r := rune(0); r < 0x80; r++ {
		all.WriteRune(r)
	}
	for _, s := range []string{"", "plain", all.String(), "é ключ 🔑 \U0010FFFF", `\"\\"`} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(s); err != nil {
			t.Fatal(err)
		}
		want := strings.TrimSuffix(buf.String(), "\n")
		if got := string(appendString(nil, s)); got != want {
			t.Errorf("appendString(%q):\n got %s\nwant %s", s, got, want)
		}
	}
}

func TestParseHead(t *testing.T) {
	hash := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in      string
		want    Head
		wantErr bool
	}{
		{"100:" + hash, Head{100, hash}, false},
		{" 0:" + ZeroHash + "\n", Genesis, false},
		{"18446744073709551615:" + hash, Head{1<<64 - 1, hash}, false},
		{hash, Head{}, true},
		{"100:" + strings.ToUpper(hash), Head{}, true},
		{"100:" + hash[:63], Head{}, true},
		{"100:" + hash + "0", Head{}, true},
		{"-1:" + hash, Head{}, true},
		{"0100:" + hash, Head{}, true},
		{"1e3:" + hash, Head{}, true},
		{":" + hash, Head{}, true},
		{"", Head{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseHead(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseHead(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == nil && got.String() != strings.TrimSpace(tt.in) {
				t.Errorf("String() = %q, want %q", got.String(), strings.TrimSpace(tt.in))
			}
		})
	}
}

func TestSeal(t *testing.T) {
	key := testKey(t)
	prev := Head{Seq: 41, Hash: strings.Repeat("ab", 32)}
	in := entry(1)
	in.Seq, in.PrevHash, in.HMAC = 999, "forged", "forged"
	in.Time = time.Date(2026, 5, 1, 14, 0, 0, 0, time.FixedZone("CEST", 7200))
	in.KeyName = "bad \xff\xfe utf8"
	e, head := Seal(prev, in, key)

	if e.Seq != 42 || e.PrevHash != prev.Hash {
		t.Errorf("seq %d prev_hash %s, want 42 and the previous head's hash", e.Seq, e.PrevHash)
	}
	if e.Time.Location() != time.UTC || !e.Time.Equal(in.Time) {
		t.Errorf("time = %v, want %v in UTC", e.Time, in.Time)
	}
	if e.KeyName != "bad \uFFFD utf8" {
		t.Errorf("key_name = %q, want invalid UTF-8 replaced", e.KeyName)
	}
	m := hmac.New(sha256.New, key.b)
	m.Write(e.Canonical())
	if want := hex.EncodeToString(m.Sum(nil)); e.HMAC != want {
		t.Errorf("hmac = %s, want HMAC-SHA256 of the canonical bytes %s", e.HMAC, want)
	}
	sum := sha256.Sum256(e.Canonical())
	if want := (Head{42, hex.EncodeToString(sum[:])}); head != want || e.Head() != want {
		t.Errorf("head = %v (entry's %v), want %v", head, e.Head(), want)
	}
	// What state stores is the entry through encoding/json: it must come
	// back with the same canonical bytes.
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back Entry
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Canonical(), e.Canonical()) || back.HMAC != e.HMAC {
		t.Errorf("entry changed in a JSON round trip:\n got %s\nwant %s", back.Canonical(), e.Canonical())
	}

	t.Run("stamps a zero time", func(t *testing.T) {
		before := time.Now()
		e, _ := Seal(Genesis, Entry{Event: EventReload}, key)
		if e.Time.Before(before) || e.Time.After(time.Now()) || e.Time.Location() != time.UTC {
			t.Errorf("time = %v, want now in UTC", e.Time)
		}
	})
	t.Run("Chain seals as Seal does", func(t *testing.T) {
		c := NewChain(prev, key)
		h := prev
		for i := range 5 {
			var want Entry
			want, h = Seal(h, entry(i), key)
			if got := c.Append(entry(i)); got != want {
				t.Fatalf("entry %d: Chain.Append = %+v, Seal = %+v", i, got, want)
			}
			if c.Head() != h {
				t.Fatalf("entry %d: Chain.Head = %v, want %v", i, c.Head(), h)
			}
		}
	})
}

func TestNewCheckpoint(t *testing.T) {
	pruned := Head{Seq: 100, Hash: strings.Repeat("cd", 32)}
	e := NewCheckpoint(pruned, time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC))
	if want := pruned.String() + " pruned entries up to seq 100 older than 2025-04-01T00:00:00Z"; e.Detail != want || e.Event != EventCheckpoint {
		t.Errorf("checkpoint = %+v, want detail %q", e, want)
	}
	if h, err := e.CheckpointHead(); err != nil || h != pruned {
		t.Errorf("CheckpointHead() = %v, %v; want %v", h, err, pruned)
	}
	bad := Entry{Seq: 5, Event: EventCheckpoint, Detail: "pruned some"}
	if _, err := bad.CheckpointHead(); err == nil || !strings.Contains(err.Error(), "checkpoint entry 5") {
		t.Errorf("CheckpointHead of a bad detail: err = %v", err)
	}
	if _, err := entry(0).CheckpointHead(); err == nil {
		t.Error("CheckpointHead of an upload entry: no error")
	}
	if m := NewUpgradeMarker(57, "v1.4.0"); m.Event != EventUpgraded || m.Detail != "chained 57 existing entries on upgrade to rotatord v1.4.0" {
		t.Errorf("upgrade marker = %+v", m)
	}
}
