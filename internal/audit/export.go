package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// Export formats, the values of `rotatord audit export -format`.
const (
	// FormatJSONL is one JSON object per line: the canonical bytes with
	// the hmac added as the last member. It is the format to verify.
	FormatJSONL = "jsonl"
	// FormatCSV is a header of Fields and one record per entry (RFC 4180,
	// lines ending in \n), for spreadsheets. It verifies too.
	FormatCSV = "csv"
)

// ExportFormats returns the formats NewWriter accepts, the default first.
func ExportFormats() []string { return []string{FormatJSONL, FormatCSV} }

// Writer writes an export. It buffers: call Flush at the end.
type Writer struct {
	w      *bufio.Writer
	format string
	buf    []byte
}

// NewWriter returns a Writer of format (FormatJSONL or FormatCSV). A CSV
// export starts with its header, so even an empty log exports one line.
func NewWriter(w io.Writer, format string) (*Writer, error) {
	switch format {
	case FormatJSONL, FormatCSV:
	default:
		return nil, fmt.Errorf("export audit log: unknown format %q (want one of %s)", format, strings.Join(ExportFormats(), ", "))
	}
	ew := &Writer{w: bufio.NewWriterSize(w, 64<<10), format: format, buf: make([]byte, 0, 1024)}
	if format == FormatCSV {
		ew.w.WriteString(strings.Join(Fields, ",") + "\n")
	}
	return ew, nil
}

// Write writes one entry.
func (w *Writer) Write(e *Entry) error {
	if w.format == FormatJSONL {
		w.buf = appendJSONL(w.buf[:0], e)
	} else {
		w.buf = appendCSV(w.buf[:0], e)
	}
	if _, err := w.w.Write(w.buf); err != nil {
		return fmt.Errorf("export audit entry %d: %w", e.Seq, err)
	}
	return nil
}

// Flush writes what is buffered.
func (w *Writer) Flush() error {
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	return nil
}

// appendJSONL appends e's export line: its canonical bytes with the hmac
// inserted before the closing brace.
func appendJSONL(b []byte, e *Entry) []byte {
	b = e.AppendCanonical(b)
	b = append(b[:len(b)-1], `,"hmac":`...)
	b = appendString(b, e.HMAC)
	return append(b, '}', '\n')
}

// appendCSV appends e's CSV record.
func appendCSV(b []byte, e *Entry) []byte {
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, ',')
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	for _, s := range [...]string{e.Policy, e.Provider, e.Event, e.Trigger, e.KeyID, e.KeyName, e.Fingerprint, e.OldKeyID, e.OldFingerprint, e.RotationID, e.VaultPath} {
		b = appendCSVField(append(b, ','), s)
	}
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(e.VaultVersion), 10)
	for _, s := range [...]string{e.Detail, e.PrevHash, e.HMAC} {
		b = appendCSVField(append(b, ','), s)
	}
	return append(b, '\n')
}

// appendCSVField quotes s when it holds a comma, a quote or a line break,
// and copies every byte as is, so that ReadCSV gets it back exactly
// (encoding/csv's reader would turn \r\n inside a field into \n, and the
// entry would no longer verify).
func appendCSVField(b []byte, s string) []byte {
	if !strings.ContainsAny(s, ",\"\r\n") {
		return append(b, s...)
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, s[i])
	}
	return append(b, '"')
}

// ParseError is an export line (or CSV record) that is not an entry. Verify
// reports it as a break of the log at that line (ReasonMalformed).
type ParseError struct {
	Line int // 1-based line where the entry starts
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("line %d: not an audit entry: %s", e.Line, e.Msg)
}

// maxLine bounds one export line: no genuine entry comes near it, and a
// corrupt file must not make the reader hold it whole.
const maxLine = 1 << 20

// Reader reads an export, JSONL or CSV, whichever the input is.
type Reader struct {
	r    *bufio.Reader
	csv  bool
	line int // the line the last entry started at
	next int // the line the next read starts at
	err  error
	// ending is the line ending readLine stripped from the last line: a
	// quoted CSV field spanning lines keeps it byte for byte.
	ending []byte
	rec    [][]byte // CSV fields, reused
	fbuf   []byte
	ends   []int
	last   [numFields]string // see Entry.set
}

// NewReader returns a Reader of an export made by Writer. A first byte of
// '{' (after blank lines) means JSONL, anything else CSV.
func NewReader(r io.Reader) *Reader {
	br := bufio.NewReaderSize(r, 64<<10)
	rd := &Reader{r: br, next: 1}
	for {
		c, err := br.Peek(1)
		if err != nil || (c[0] != '\n' && c[0] != '\r' && c[0] != ' ' && c[0] != '\t') {
			rd.csv = err == nil && c[0] != '{'
			return rd
		}
		if c[0] == '\n' {
			rd.next++
		}
		_, _ = br.ReadByte()
	}
}

// Line returns the line at which the entry (or error) last returned by
// Next starts.
func (r *Reader) Line() int { return r.line }

// Next returns the next entry, io.EOF after the last, a *ParseError for a
// line that is not an entry (reading stops there), or the underlying
// reader's error.
func (r *Reader) Next() (Entry, error) {
	if r.err != nil {
		return Entry{}, r.err
	}
	var e Entry
	var err error
	if r.csv {
		e, err = r.nextCSV()
	} else {
		e, err = r.nextJSONL()
	}
	if err != nil {
		r.err = err
	}
	return e, err
}

// All returns the entries as a sequence for Verify; it ends after the
// first error.
func (r *Reader) All() iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		for {
			e, err := r.Next()
			if err == io.EOF {
				return
			}
			if !yield(e, err) || err != nil {
				return
			}
		}
	}
}

// readLine returns the next line without its line ending; io.EOF at the
// end.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.next
	line, err := r.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		long := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull && len(long) <= maxLine {
			line, err = r.r.ReadSlice('\n')
			long = append(long, line...)
		}
		if len(long) > maxLine {
			return nil, &ParseError{Line: r.line, Msg: fmt.Sprintf("longer than %d bytes", maxLine)}
		}
		line = long
	}
	if err == io.EOF && len(line) > 0 {
		err = nil
	}
	if err != nil {
		if err != io.EOF {
			err = fmt.Errorf("read audit export line %d: %w", r.line, err)
		}
		return nil, err
	}
	r.next++
	r.ending = nil
	if n := len(line); n > 0 && line[n-1] == '\n' {
		if n > 1 && line[n-2] == '\r' {
			r.ending, line = crlf, line[:n-2]
		} else {
			r.ending, line = crlf[1:], line[:n-1]
		}
	}
	return line, nil
}

var crlf = []byte("\r\n")

func (r *Reader) nextJSONL() (Entry, error) {
	for {
		line, err := r.readLine()
		if err != nil {
			return Entry{}, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		e, err := parseJSONL(line, &r.last)
		if err != nil {
			return Entry{}, &ParseError{Line: r.line, Msg: err.Error()}
		}
		return e, nil
	}
}

// ReadJSONL returns the entries of a JSONL export.
func ReadJSONL(r io.Reader) iter.Seq2[Entry, error] {
	rd := &Reader{r: bufio.NewReaderSize(r, 64<<10), next: 1}
	return rd.All()
}

// ReadCSV returns the entries of a CSV export.
func ReadCSV(r io.Reader) iter.Seq2[Entry, error] {
	rd := &Reader{r: bufio.NewReaderSize(r, 64<<10), next: 1, csv: true}
	return rd.All()
}

// field indexes, in the order of Fields.
const (
	fSeq = iota
	fTime
	fPolicy
	fProvider
	fEvent
	fTrigger
	fKeyID
	fKeyName
	fFingerprint
	fOldKeyID
	fOldFingerprint
	fRotationID
	fVaultPath
	fVaultVersion
	fDetail
	fPrevHash
	fHMAC
	numFields
)

// fieldIndex maps an export field name to its index.
var fieldIndex = func() map[string]int {
	m := make(map[string]int, len(Fields))
	for i, f := range Fields {
		m[f] = i
	}
	return m
}()

// set stores the text of field i in e: v, which vs holds as a string
// already (a substring of the line, converted once: one allocation per
// entry rather than one per field). last holds the previous entry's
// strings: a value equal to one of them (policy, provider, event,
// trigger...) shares it, so that the line can be freed sooner.
func (e *Entry) set(i int, v []byte, vs string, last *[numFields]string) error {
	switch i {
	case fSeq:
		n, err := parseUint(v)
		if err != nil {
			return err
		}
		e.Seq = n
	case fVaultVersion:
		neg := len(v) > 0 && v[0] == '-'
		if neg {
			v = v[1:]
		}
		n, err := parseUint(v)
		if err != nil || n > 1<<31-1 {
			return errors.New("vault_version: not an integer")
		}
		e.VaultVersion = int(n)
		if neg {
			e.VaultVersion = -e.VaultVersion
		}
	case fTime:
		// UnmarshalText parses RFC 3339 strictly, as encoding/json does.
		var t time.Time
		if err := t.UnmarshalText(v); err != nil {
			return errors.New("time: not an RFC 3339 time")
		}
		e.Time = t.UTC()
	default:
		if vs != last[i] {
			last[i] = vs
		}
		*e.stringField(i) = last[i]
	}
	return nil
}

func (e *Entry) stringField(i int) *string {
	switch i {
	case fPolicy:
		return &e.Policy
	case fProvider:
		return &e.Provider
	case fEvent:
		return &e.Event
	case fTrigger:
		return &e.Trigger
	case fKeyID:
		return &e.KeyID
	case fKeyName:
		return &e.KeyName
	case fFingerprint:
		return &e.Fingerprint
	case fOldKeyID:
		return &e.OldKeyID
	case fOldFingerprint:
		return &e.OldFingerprint
	case fRotationID:
		return &e.RotationID
	case fVaultPath:
		return &e.VaultPath
	case fDetail:
		return &e.Detail
	case fPrevHash:
		return &e.PrevHash
	case fHMAC:
		return &e.HMAC
	}
	panic("audit: no string field " + strconv.Itoa(i))
}

// parseUint parses a JSON non-negative integer: digits, no leading zero.
func parseUint(v []byte) (uint64, error) {
	if len(v) == 0 || (len(v) > 1 && v[0] == '0') {
		return 0, errors.New("seq: not an integer")
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, errors.New("seq: not an integer")
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, errors.New("seq: out of range")
		}
		n = n*10 + d
	}
	return n, nil
}

// parseJSONL parses one export line: a flat JSON object holding every
// field of Fields exactly once and nothing else, numbers as integers and
// everything else as strings. Any JSON whitespace and member order is
// accepted; the canonical bytes are rebuilt from the values, not taken
// from the line.
func parseJSONL(b []byte, last *[numFields]string) (Entry, error) {
	if !utf8.Valid(b) {
		return Entry{}, errors.New("invalid UTF-8")
	}
	p := jsonParser{b: b, s: string(b)}
	var e Entry
	var seen [numFields]bool
	next := 0
	p.ws()
	if !p.eat('{') {
		return Entry{}, errors.New("not a JSON object")
	}
	p.ws()
	if !p.eat('}') {
		for {
			p.ws()
			key, _, err := p.str()
			if err != nil {
				return Entry{}, fmt.Errorf("member name: %w", err)
			}
			// Exports list the fields in order: try the next one first.
			i := next
			if i >= numFields || string(key) != Fields[i] {
				var ok bool
				if i, ok = fieldIndex[string(key)]; !ok {
					return Entry{}, fmt.Errorf("unknown field %.40q", key)
				}
			}
			next = i + 1
			if seen[i] {
				return Entry{}, fmt.Errorf("field %s appears twice", Fields[i])
			}
			seen[i] = true
			p.ws()
			if !p.eat(':') {
				return Entry{}, fmt.Errorf("field %s: want ':'", Fields[i])
			}
			p.ws()
			var v []byte
			var vs string
			if i == fSeq || i == fVaultVersion {
				v = p.number()
			} else if v, vs, err = p.str(); err != nil {
				return Entry{}, fmt.Errorf("field %s: %w", Fields[i], err)
			}
			if err := e.set(i, v, vs, last); err != nil {
				return Entry{}, fmt.Errorf("field %w", err)
			}
			p.ws()
			if p.eat('}') {
				break
			}
			if !p.eat(',') {
				return Entry{}, fmt.Errorf("after field %s: want ',' or '}'", Fields[i])
			}
		}
	}
	p.ws()
	if p.i != len(p.b) {
		return Entry{}, errors.New("text after the object")
	}
	for i, ok := range seen {
		if !ok {
			return Entry{}, fmt.Errorf("field %s is missing", Fields[i])
		}
	}
	return e, nil
}

// ParseEntry decodes one entry from a JSON object with the export's field
// names, every one present: a JSONL export line, or an entry as the state
// stores it. It uses no reflection, which makes reading a year's log for
// export or verification several times faster than encoding/json.
func ParseEntry(b []byte) (Entry, error) {
	var last [numFields]string
	return parseJSONL(b, &last)
}

// jsonParser scans the flat objects of a JSONL export.
type jsonParser struct {
	b   []byte
	s   string // b as a string
	i   int
	buf []byte
}

func (p *jsonParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// number returns the bytes of a JSON number token; set validates it.
func (p *jsonParser) number() []byte {
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		if (c < '0' || c > '9') && c != '-' && c != '+' && c != '.' && c != 'e' && c != 'E' {
			break
		}
		p.i++
	}
	return p.b[start:p.i]
}

// str returns the value of a JSON string as bytes (aliasing the line or
// an internal buffer) and as a string (a substring of the line's string,
// or a copy when the value had escapes).
func (p *jsonParser) str() ([]byte, string, error) {
	if !p.eat('"') {
		return nil, "", errors.New("want a string")
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return p.b[start : p.i-1], p.s[start : p.i-1], nil
		case c == '\\':
			v, err := p.strEscaped(start)
			if err != nil {
				return nil, "", err
			}
			return v, string(v), nil
		case c < 0x20:
			return nil, "", errors.New("control character in a string")
		}
		p.i++
	}
	return nil, "", errors.New("unterminated string")
}

// strEscaped continues str from the first backslash.
func (p *jsonParser) strEscaped(start int) ([]byte, error) {
	p.buf = append(p.buf[:0], p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return p.buf, nil
		case c < 0x20:
			return nil, errors.New("control character in a string")
		case c != '\\':
			p.buf = append(p.buf, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			break
		}
		esc := p.b[p.i+1]
		p.i += 2
		switch esc {
		case '"', '\\', '/':
			p.buf = append(p.buf, esc)
		case 'b':
			p.buf = append(p.buf, '\b')
		case 'f':
			p.buf = append(p.buf, '\f')
		case 'n':
			p.buf = append(p.buf, '\n')
		case 'r':
			p.buf = append(p.buf, '\r')
		case 't':
			p.buf = append(p.buf, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, errors.New("bad \\u escape")
			}
			if utf16.IsSurrogate(r) {
				// A pair makes one rune; a lone half becomes U+FFFD, as
				// encoding/json decodes it.
				save := p.i
				if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					p.i += 2
					if r2, ok := p.hex4(); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							p.buf = utf8.AppendRune(p.buf, d)
							continue
						}
					}
				}
				p.i = save
				r = utf8.RuneError
			}
			p.buf = utf8.AppendRune(p.buf, r)
		default:
			return nil, fmt.Errorf("bad escape \\%c", esc)
		}
	}
	return nil, errors.New("unterminated string")
}

func (p *jsonParser) hex4() (rune, bool) {
	if p.i+4 > len(p.b) {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	p.i += 4
	return r, true
}

// nextCSV reads the next CSV record; the first call reads and checks the
// header.
func (r *Reader) nextCSV() (Entry, error) {
	if r.rec == nil {
		rec, err := r.readRecord()
		if err == io.EOF {
			return Entry{}, &ParseError{Line: r.line, Msg: "empty CSV export: no header"}
		}
		if err != nil {
			return Entry{}, err
		}
		if len(rec) != numFields {
			return Entry{}, &ParseError{Line: r.line, Msg: "the CSV header is not " + strings.Join(Fields, ",")}
		}
		for i, f := range rec {
			if string(f) != Fields[i] {
				return Entry{}, &ParseError{Line: r.line, Msg: "the CSV header is not " + strings.Join(Fields, ",")}
			}
		}
	}
	for {
		rec, err := r.readRecord()
		if err != nil {
			return Entry{}, err
		}
		if len(rec) == 1 && len(rec[0]) == 0 {
			continue // a blank line
		}
		if len(rec) != numFields {
			return Entry{}, &ParseError{Line: r.line, Msg: fmt.Sprintf("%d fields, want %d", len(rec), numFields)}
		}
		var e Entry
		all := string(r.fbuf) // the record's fields, end to end
		start := 0
		for i, v := range rec {
			if !utf8.Valid(v) {
				return Entry{}, &ParseError{Line: r.line, Msg: "field " + Fields[i] + ": invalid UTF-8"}
			}
			vs := all[start : start+len(v)]
			start += len(v)
			if err := e.set(i, v, vs, &r.last); err != nil {
				return Entry{}, &ParseError{Line: r.line, Msg: "field " + err.Error()}
			}
		}
		return e, nil
	}
}

// readRecord reads one RFC 4180 record. Fields are returned exactly as
// written, carriage returns and line feeds inside quotes included; a record
// ends at \n or \r\n outside quotes.
func (r *Reader) readRecord() ([][]byte, error) {
	line, err := r.readLine()
	if err != nil {
		return nil, err
	}
	r.rec = r.rec[:0]
	r.fbuf = r.fbuf[:0]
	ends := r.ends[:0] // end of each field in fbuf
	i := 0
	for {
		if i < len(line) && line[i] == '"' {
			i++
			for {
				j := bytes.IndexByte(line[i:], '"')
				if j < 0 {
					// The field goes on past this line: the line break
					// (whichever it was) is part of it.
					r.fbuf = append(r.fbuf, line[i:]...)
					r.fbuf = append(r.fbuf, r.ending...)
					if len(r.fbuf) > maxLine {
						return nil, &ParseError{Line: r.line, Msg: fmt.Sprintf("longer than %d bytes", maxLine)}
					}
					start := r.line
					if line, err = r.readLine(); err != nil {
						if err == io.EOF {
							err = &ParseError{Line: start, Msg: "unterminated quoted field"}
						}
						return nil, err
					}
					r.line = start
					i = 0
					continue
				}
				r.fbuf = append(r.fbuf, line[i:i+j]...)
				i += j + 1
				if i < len(line) && line[i] == '"' {
					r.fbuf = append(r.fbuf, '"')
					i++
					continue
				}
				break
			}
			if i < len(line) && line[i] != ',' {
				return nil, &ParseError{Line: r.line, Msg: "text after a quoted field"}
			}
		} else {
			j := bytes.IndexByte(line[i:], ',')
			if j < 0 {
				j = len(line) - i
			}
			if bytes.IndexByte(line[i:i+j], '"') >= 0 {
				return nil, &ParseError{Line: r.line, Msg: "quote inside an unquoted field"}
			}
			r.fbuf = append(r.fbuf, line[i:i+j]...)
			i += j
		}
		ends = append(ends, len(r.fbuf))
		if i >= len(line) {
			break
		}
		i++ // the comma
	}
	r.ends = ends
	start := 0
	for _, end := range ends {
		r.rec = append(r.rec, r.fbuf[start:end])
		start = end
	}
	return r.rec, nil
}
