package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/audit"
	"github.com/rotatord/rotatord/internal/cloud"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/name, or rewrites the file with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run go test -update to accept it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestReport_Write(t *testing.T) {
	r := newFixture(t).generate(t)
	for _, format := range Formats() {
		t.Run(format, func(t *testing.T) {
			var b bytes.Buffer
			if err := r.Write(&b, format); err != nil {
				t.Fatalf("Write: %v", err)
			}
			golden(t, format+".golden", b.Bytes())
		})
	}
	t.Run("unknown format", func(t *testing.T) {
		err := r.Write(&bytes.Buffer{}, "yaml")
		if err == nil || !strings.Contains(err.Error(), `unknown format "yaml"`) {
			t.Errorf("err = %v, want one naming the format", err)
		}
	})
}

func TestReport_Digest(t *testing.T) {
	golden(t, "digest.golden", []byte(newFixture(t).generate(t).Digest()))

	t.Run("healthy", func(t *testing.T) {
		r := &Report{GeneratedAt: now, Keys: []Row{{Policy: "p", Status: StatusOK}}, Summary: map[string]int{StatusOK: 1}}
		want := "Key compliance report, 2026-05-01\n1 key: 1 ok.\nNo key is overdue or failing.\n"
		if got := r.Digest(); got != want {
			t.Errorf("Digest() = %q, want %q", got, want)
		}
	})
	t.Run("failing policy without an active key", func(t *testing.T) {
		r := &Report{GeneratedAt: now, Keys: []Row{{Policy: "p", KeyName: "p-20260101T000000", Status: StatusRetiring}},
			Policies: []PolicyInfo{{Name: "p", Failing: true}, {Name: "q"}}}
		if d := r.Digest(); !strings.Contains(d, "Failing with no active key: p\n") || strings.Contains(d, "No key is overdue") {
			t.Errorf("digest does not name the failing policy:\n%s", d)
		}
	})
	t.Run("long list is capped", func(t *testing.T) {
		r := &Report{GeneratedAt: now}
		for range digestLimit + 5 {
			r.Keys = append(r.Keys, Row{Policy: "p", KeyName: "p-20260101T000000", Status: StatusOverdue, CreatedAt: now.Add(-100 * day), AgeSeconds: 100 * 86400})
		}
		d := r.Digest()
		if n := strings.Count(d, "\n• "); n != digestLimit+1 {
			t.Errorf("digest lists %d lines, want %d keys and one \"more\" line:\n%s", n, digestLimit, d)
		}
		if !strings.Contains(d, "…and 5 more") {
			t.Errorf("digest does not say how many were left out:\n%s", d)
		}
	})
}

// TestReport_WriteJSON checks what tools rely on: the field names of
// DESIGN.md §8, null for times that do not apply, and a document that
// reads back into the same report (the CLI receives it over the socket).
func TestReport_WriteJSON(t *testing.T) {
	r := newFixture(t).generate(t)
	var b bytes.Buffer
	if err := r.Write(&b, FormatJSON); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		GeneratedAt string           `json:"generated_at"`
		Keys        []map[string]any `json:"keys"`
		Summary     map[string]int   `json:"summary"`
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("decode: %v", err)
	}
	fields := []string{"policy", "provider", "project_id", "key_id", "key_name", "fingerprint", "created_at",
		"age_seconds", "max_age_seconds", "status", "default", "last_rotation", "next_rotation"}
	for _, k := range doc.Keys {
		for _, f := range fields {
			if _, ok := k[f]; !ok {
				t.Errorf("key %v has no field %q", k["key_id"], f)
			}
		}
		if len(k) != len(fields) {
			t.Errorf("key %v has %d fields, want %d", k["key_id"], len(k), len(fields))
		}
		if k["status"] == StatusRetiring && k["next_rotation"] != nil {
			t.Errorf("retiring key: next_rotation = %v, want null", k["next_rotation"])
		}
	}
	if doc.GeneratedAt != "2026-05-01T12:00:00Z" || len(doc.Summary) != 8 {
		t.Errorf("generated_at %q, summary %v", doc.GeneratedAt, doc.Summary)
	}

	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if !slices.EqualFunc(back.Keys, r.Keys, rowEqual) || back.Failing() != r.Failing() || !slices.Equal(back.Warnings, r.Warnings) {
		t.Errorf("report changed in a JSON round trip:\n got %+v\nwant %+v", back.Keys, r.Keys)
	}
}

// TestReport_WriteJSONStreams: the streamed document is byte for byte what
// encoding/json makes of the Report, whatever its shape.
func TestReport_WriteJSONStreams(t *testing.T) {
	full := newFixture(t).generate(t)
	tests := []struct {
		name string
		r    *Report
	}{
		{"fixture", full},
		{"zero report", &Report{}},
		{"no keys", &Report{GeneratedAt: now, Keys: []Row{}, Summary: map[string]int{"ok": 0}}},
		{"one key, no warnings", &Report{GeneratedAt: now, Keys: full.Keys[:1], Summary: full.Summary, Policies: full.Policies}},
		{"html in names", &Report{GeneratedAt: now, Keys: []Row{{KeyName: "<a&b>", Status: StatusUnmanaged}}, Warnings: []string{"x < y"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetIndent("", "  ")
			if err := enc.Encode(tt.r); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := tt.r.Write(&got, FormatJSON); err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Errorf("streamed JSON differs from encoding/json:\n--- got\n%s\n--- want\n%s", got.String(), want.String())
			}
		})
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "gpu-team-20260101T000000", "SHA256:ab+/c=", `quote " and \\`, "<script>&", "tab\tnl\n\x00\x1f\x7f",
		"naïve ключ 🔑", "line\u2028sep", "bad \xff utf8",
	} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("appendJSONString(%q) = %s, want %s", s, got, want)
		}
	}
	ts := time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.FixedZone("CEST", 7200))
	want, _ := json.Marshal(ts.UTC())
	if got := appendJSONTime(nil, ts); string(got) != string(want) {
		t.Errorf("appendJSONTime = %s, want %s", got, want)
	}
}

func rowEqual(a, b Row) bool {
	eq := func(x, y time.Time) bool { return x.Equal(y) }
	a2, b2 := a, b
	a2.CreatedAt, a2.LastRotation, a2.NextRotation = time.Time{}, time.Time{}, time.Time{}
	b2.CreatedAt, b2.LastRotation, b2.NextRotation = time.Time{}, time.Time{}, time.Time{}
	return a2 == b2 && eq(a.CreatedAt, b.CreatedAt) && eq(a.LastRotation, b.LastRotation) && eq(a.NextRotation, b.NextRotation)
}

func TestReport_WriteCSV(t *testing.T) {
	r := newFixture(t).generate(t)
	var b bytes.Buffer
	if err := r.Write(&b, FormatCSV); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatalf("output is not CSV: %v", err)
	}
	if len(recs) != len(r.Keys)+1 {
		t.Errorf("%d records, want a header and %d keys", len(recs), len(r.Keys))
	}
	if got := strings.Join(recs[0], ","); got != "policy,provider,project_id,key_id,key_name,fingerprint,created_at,age_seconds,max_age_seconds,status,default,last_rotation,next_rotation,audit_head" {
		t.Errorf("header = %s", got)
	}
	// Every record carries the head, so a file handed on alone still has it.
	if _, err := audit.ParseHead(recs[1][13]); err != nil || recs[1][13] != r.AuditHead {
		t.Errorf("audit_head cell = %q, want the report's head %q", recs[1][13], r.AuditHead)
	}
}

// TestReport_WriteHostileNames: key names on a provider account are chosen
// by whoever uploaded the key; they must not break a table's layout, a
// Markdown table's cells, or send escape sequences to a terminal.
func TestReport_WriteHostileNames(t *testing.T) {
	f := newFixture(t)
	p := f.providers["sesterce-prod"].(*fakeProvider)
	p.keys[0] = append(p.keys[0], cloud.Key{ID: "evil", Name: "x\x1b[31m|`*bold*`\ty\nz", CreatedAt: now.Add(-day)})
	r := f.generate(t)

	var table bytes.Buffer
	if err := r.Write(&table, FormatTable); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(table.String(), "\x1b\t") {
		t.Errorf("table output carries control characters:\n%q", table.String())
	}
	// header, keys, blank, summary, audit head, warnings
	if got, want := strings.Count(table.String(), "\n"), len(r.Keys)+2+len(r.Warnings)+2; got != want {
		t.Errorf("table has %d lines, want %d (a name broke a line)", got, want)
	}

	var md bytes.Buffer
	if err := r.Write(&md, FormatMarkdown); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(md.String(), "\n") {
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		unescaped := strings.Count(line, "|") - strings.Count(line, `\|`)
		if unescaped != len(columns)+1 {
			t.Errorf("markdown row has %d cell separators, want %d: %s", unescaped, len(columns)+1, line)
		}
	}
}

// TestReport_WriteLeaksNoKeyMaterial: records and listings carry public
// keys and state carries an error quoting a private key; no format may
// print either.
func TestReport_WriteLeaksNoKeyMaterial(t *testing.T) {
	f := newFixture(t)
	p := f.providers["gcore-prod"].(*fakeProvider)
	p.err = &cloud.Error{Provider: "gcore-prod", Op: "list", Status: 500, Message: "echo: " + privateKeyText, Class: cloud.ErrTransient}
	for name, r := range map[string]*Report{"listed": newFixture(t).generate(t), "list error": f.generate(t)} {
		outputs := map[string]string{"digest": r.Digest()}
		for _, format := range Formats() {
			var b bytes.Buffer
			if err := r.Write(&b, format); err != nil {
				t.Fatal(err)
			}
			outputs[format] = b.String()
		}
		for format, out := range outputs {
			for _, bad := range []string{"PRIVATE KEY", pubKeyPrefix, "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"} {
				if strings.Contains(out, bad) {
					t.Errorf("%s: %s output contains %q", name, format, bad)
				}
			}
		}
	}
	r := f.generate(t)
	if !slices.ContainsFunc(r.Warnings, func(w string) bool { return strings.Contains(w, "withheld") }) {
		t.Errorf("warnings = %q, want the gcore error withheld", r.Warnings)
	}
}
