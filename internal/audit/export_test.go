package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// awkward returns a sealed log whose strings hold everything an export
// must carry through unchanged: separators of both formats, line breaks of
// every kind, quotes, leading and trailing spaces, empty strings, non-ASCII.
func awkward(t testing.TB, key Key) []Entry {
	t.Helper()
	c := NewChain(Genesis, key)
	var out []Entry
	for i, s := range []string{
		"", " leading and trailing ", "comma, here", `quote " here`, `""`, "cr\ronly", "lf\nonly", "crlf\r\nboth",
		"trailing crlf\r\n", "\n", "tab\tand \x01 control", "naïve ключ 🔑 \u2028", `back\slash`, "=SUM(A1)", `{"seq":1}`,
	} {
		e := entry(i)
		e.Detail, e.KeyName = s, s
		out = append(out, c.Append(e))
	}
	return out
}

func entriesEqual(a, b Entry) bool {
	at, bt := a.Time, b.Time
	a.Time, b.Time = time.Time{}, time.Time{}
	return a == b && at.Equal(bt)
}

func TestWriter_RoundTrip(t *testing.T) {
	key := testKey(t)
	log := append(chain(t, 60, key), awkward(t, key)...)
	for _, format := range ExportFormats() {
		t.Run(format, func(t *testing.T) {
			b := export(t, log, format)
			read := map[string]func(io.Reader) []Entry{
				"NewReader": func(r io.Reader) []Entry { return collect(t, NewReader(r).All()) },
				"ReadJSONL or ReadCSV": func(r io.Reader) []Entry {
					if format == FormatCSV {
						return collect(t, ReadCSV(r))
					}
					return collect(t, ReadJSONL(r))
				},
			}
			for name, fn := range read {
				got := fn(bytes.NewReader(b))
				if len(got) != len(log) {
					t.Fatalf("%s: read %d entries, want %d", name, len(got), len(log))
				}
				for i := range got {
					if !entriesEqual(got[i], log[i]) {
						t.Errorf("%s: entry %d changed:\n got %+v\nwant %+v", name, i+1, got[i], log[i])
					}
				}
			}
		})
	}
	t.Run("empty log", func(t *testing.T) {
		for _, format := range ExportFormats() {
			b := export(t, nil, format)
			if got := collect(t, NewReader(bytes.NewReader(b)).All()); len(got) != 0 {
				t.Errorf("%s: empty export read as %d entries", format, len(got))
			}
		}
		if b := export(t, nil, FormatCSV); string(b) != strings.Join(Fields, ",")+"\n" {
			t.Errorf("empty CSV export = %q, want the header", b)
		}
	})
}

func collect(t testing.TB, seq func(func(Entry, error) bool)) []Entry {
	t.Helper()
	var out []Entry
	for e, err := range seq {
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		out = append(out, e)
	}
	return out
}

// TestWriter_JSONL: each line is the entry's canonical bytes with the hmac
// added last, and plain JSON any tool reads.
func TestWriter_JSONL(t *testing.T) {
	key := testKey(t)
	log := awkward(t, key)
	lines := strings.SplitAfter(string(export(t, log, FormatJSONL)), "\n")
	if lines[len(lines)-1] != "" || len(lines)-1 != len(log) {
		t.Fatalf("%d lines for %d entries, want one line each ending in a newline", len(lines)-1, len(log))
	}
	for i, e := range log {
		canon := string(e.Canonical())
		want := canon[:len(canon)-1] + `,"hmac":"` + e.HMAC + "\"}\n"
		if lines[i] != want {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, lines[i], want)
		}
		var back Entry
		if err := json.Unmarshal([]byte(lines[i]), &back); err != nil || !entriesEqual(back, e) {
			t.Errorf("line %d through encoding/json: %+v, %v", i+1, back, err)
		}
	}
}

func TestNewWriter_UnknownFormat(t *testing.T) {
	_, err := NewWriter(io.Discard, "xml")
	if err == nil || err.Error() != `export audit log: unknown format "xml" (want one of jsonl, csv)` {
		t.Errorf("err = %v", err)
	}
}

// TestReader_Lenient: a JSONL export reformatted by a tool (whitespace,
// members reordered, escapes spelled differently) still reads, and still
// verifies, because the canonical bytes are rebuilt from the values.
func TestReader_Lenient(t *testing.T) {
	key := testKey(t)
	log := chain(t, 3, key)
	var b bytes.Buffer
	b.WriteString("\n  \n")
	for i := range log {
		m := map[string]any{}
		if err := json.Unmarshal(appendJSONL(nil, &log[i]), &m); err != nil {
			t.Fatal(err)
		}
		out, err := json.MarshalIndent(m, "", "  ") // sorted keys, \u003c escapes
		if err != nil {
			t.Fatal(err)
		}
		b.Write(bytes.ReplaceAll(out, []byte("\n"), []byte(" ")))
		b.WriteString("\r\n\n")
	}
	res, err := VerifyExport(&b, VerifyOptions{Key: key})
	if err != nil || res.Entries != 3 {
		t.Errorf("reformatted export: %+v, %v; want 3 entries verified", res, err)
	}
}

func TestReader_Malformed(t *testing.T) {
	key := testKey(t)
	good := string(appendJSONL(nil, &chain(t, 1, key)[0]))
	good = strings.TrimSuffix(good, "\n")
	replace := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("fixture has no %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	header := strings.Join(Fields, ",")
	csvGood := strings.TrimPrefix(string(export(t, chain(t, 1, key), FormatCSV)), header+"\n")
	tests := []struct {
		name, input string
		line        int
		msg         string
	}{
		{"array", good + "\n[1,2]", 2, "not a JSON object"},
		{"unknown field", replace(`{"seq":1,`, `{"seq":1,"extra":"x",`), 1, `unknown field "extra"`},
		{"field twice", replace(`"policy":`, `"policy":"a","policy":`), 1, "field policy appears twice"},
		{"field missing", replace(`"policy":"gpu-team",`, ""), 1, "field policy is missing"},
		{"field name case", replace(`"policy":`, `"Policy":`), 1, `unknown field "Policy"`},
		{"seq as a float", replace(`{"seq":1,`, `{"seq":1.0,`), 1, "seq: not an integer"},
		{"seq with a leading zero", replace(`{"seq":1,`, `{"seq":01,`), 1, "seq: not an integer"},
		{"seq negative", replace(`{"seq":1,`, `{"seq":-1,`), 1, "seq: not an integer"},
		{"seq as a string", replace(`{"seq":1,`, `{"seq":"1",`), 1, "seq: not an integer"},
		{"seq too large", replace(`{"seq":1,`, `{"seq":18446744073709551616,`), 1, "seq: out of range"},
		{"null string", replace(`"detail":"`, `"detail":null,"x":"`), 1, "field detail: want a string"},
		{"time not RFC 3339", replace(`"time":"2026-05-01T12:00:00Z"`, `"time":"May 1, 2026"`), 1, "time: not an RFC 3339 time"},
		{"raw control character", replace(`"policy":"gpu-team"`, "\"policy\":\"gpu\tteam\""), 1, "control character"},
		{"bad escape", replace(`"policy":"gpu-team"`, `"policy":"gpu\qteam"`), 1, `bad escape \q`},
		{"bad unicode escape", replace(`"policy":"gpu-team"`, `"policy":"gpu\u12"`), 1, `bad \u escape`},
		{"invalid UTF-8", replace(`"policy":"gpu-team"`, "\"policy\":\"gpu\xffteam\""), 1, "invalid UTF-8"},
		{"text after the object", good + ` {}`, 1, "text after the object"},
		{"unterminated", good[:len(good)-10], 1, "unterminated string"},
		{"second line", good + "\n\n" + good[:20], 3, "line 3"},
		{"line too long", `{"detail":"` + strings.Repeat("x", maxLine+100) + `"}`, 1, "longer than 1048576 bytes"},
		{"CSV header", "seq,time\n" + csvGood, 1, "the CSV header is not seq,time,policy"},
		{"CSV short record", header + "\n1,2,3\n", 2, "3 fields, want 17"},
		{"CSV unterminated quote", header + "\n" + strings.Replace(csvGood, ",schedule,", `,"schedule,`, 1), 2, "unterminated quoted field"},
		{"CSV quote inside a field", header + "\n" + strings.Replace(csvGood, ",schedule,", `,sche"dule,`, 1), 2, "quote inside an unquoted field"},
		{"CSV text after a quote", header + "\n" + strings.Replace(csvGood, ",schedule,", `,"sched"ule,`, 1), 2, "text after a quoted field"},
		{"CSV bad number", header + "\n" + strings.Replace(csvGood, "1,", "x,", 1), 2, "seq: not an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.input))
			var err error
			for {
				if _, err = r.Next(); err != nil {
					break
				}
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line != tt.line || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err = %v, want a parse error at line %d saying %q", err, tt.line, tt.msg)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long; it must not quote the input", len(err.Error()))
			}
			if _, again := r.Next(); again != err {
				t.Errorf("Next after an error = %v, want the same error", again)
			}
		})
	}
}

// FuzzParseJSONL: whatever line the export reader accepts, encoding/json
// reads the same entry from it; and it never panics.
func FuzzParseJSONL(f *testing.F) {
	key := testKey(f)
	for _, e := range awkward(f, key) {
		f.Add(appendJSONL(nil, &e))
	}
	f.Add([]byte(`{"seq":1,"detail":"\ud83d\ude00 \ud800 \u00e9"}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var last [numFields]string
		got, err := parseJSONL(line, &last)
		if err != nil {
			return
		}
		var want Entry
		if err := json.Unmarshal(line, &want); err != nil {
			t.Fatalf("parseJSONL accepted %q, encoding/json did not: %v", line, err)
		}
		if !entriesEqual(got, want) {
			t.Fatalf("%q:\nparseJSONL    %+v\nencoding/json %+v", line, got, want)
		}
	})
}
