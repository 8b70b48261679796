package report

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rotatord/rotatord/internal/rotate"
)

// Output formats accepted by Write.
const (
	FormatTable    = "table"
	FormatJSON     = "json"
	FormatCSV      = "csv"
	FormatMarkdown = "markdown"
)

// Formats returns the formats Write accepts, the default first.
func Formats() []string {
	return []string{FormatTable, FormatJSON, FormatCSV, FormatMarkdown, FormatHTML}
}

// Write renders the report in format:
//
//   - table: aligned columns for a terminal, human ages (87d), times in
//     RFC 3339 UTC, then a summary line and any warnings.
//   - json: the indented document of DESIGN.md §8, for tools.
//   - csv: a header row and one record per key, for spreadsheets; warnings
//     are left out so that every line parses as a record. Once an
//     inventory was listed, an empty line and the instances table (its own
//     header row) follow.
//
// Every format but csv ends with the instances section (instances.go)
// once an account's machines were listed.
//   - markdown: a GitHub-flavoured table with the summary and warnings, for
//     tickets and pull requests.
//   - html: one self-contained page for auditors, with a key-age chart; it
//     prints well (see writeHTML).
func (r *Report) Write(w io.Writer, format string) error {
	var err error
	switch format {
	case FormatTable:
		err = r.writeTable(w)
	case FormatJSON:
		err = r.writeJSON(w)
	case FormatCSV:
		err = r.writeCSV(w)
	case FormatMarkdown:
		err = r.writeMarkdown(w)
	case FormatHTML:
		err = r.writeHTML(w)
	default:
		return fmt.Errorf("write report: unknown format %q (want one of %s)", format, strings.Join(Formats(), ", "))
	}
	if err != nil {
		return fmt.Errorf("write %s report: %w", format, err)
	}
	return nil
}

// Failing reports whether the report should fail a CI or cron gate
// (-fail-on overdue): some key is overdue or failing, or some policy is
// failing even though it has no key to show it on.
func (r *Report) Failing() bool {
	for _, k := range r.Keys {
		if k.Status == StatusOverdue || k.Status == StatusFailing || exposedOverdue(k) {
			return true
		}
	}
	for _, p := range r.Policies {
		if p.Failing {
			return true
		}
	}
	return false
}

// digestLimit caps the keys a digest lists, so that a fleet-wide outage
// still fits one Slack message.
const digestLimit = 20

// Digest is the short text of the weekly Slack digest: the counts per
// status, then the overdue and failing keys by policy, key name and age.
func (r *Report) Digest() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Key compliance report, %s\n%s.\n", r.GeneratedAt.UTC().Format(time.DateOnly), r.summaryLine())
	var bad []Row
	shown := make(map[string]bool)
	for _, k := range r.Keys {
		if k.Status == StatusOverdue || k.Status == StatusFailing {
			bad = append(bad, k)
			shown[k.Policy] = true
		}
	}
	// A failing policy's active key is listed as failing or overdue; one
	// that has no active key would go unmentioned without this.
	var keyless []string
	for _, p := range r.Policies {
		if p.Failing && !shown[p.Name] {
			keyless = append(keyless, p.Name)
		}
	}
	if len(bad) == 0 && len(keyless) == 0 {
		b.WriteString("No key is overdue or failing.\n")
	}
	if len(bad) > 0 {
		b.WriteString("Overdue or failing:\n")
		for i, k := range bad {
			if i == digestLimit {
				fmt.Fprintf(&b, "• …and %d more\n", len(bad)-digestLimit)
				break
			}
			fmt.Fprintf(&b, "• %s: %s, %s, %s old\n", clean(k.Policy), clean(keyLabel(k)), k.Status, age(k))
		}
	}
	if len(keyless) > 0 {
		fmt.Fprintf(&b, "Failing with no active key: %s\n", clean(strings.Join(keyless, ", ")))
	}
	r.digestExposure(&b)
	b.WriteString(r.hostsDigest())
	if n := len(r.Warnings); n > 0 {
		fmt.Fprintf(&b, "%d warning(s): run `rotatord report` for details.\n", n)
	}
	if r.AuditHead != "" {
		fmt.Fprintf(&b, "Audit log head: %s\n", r.AuditHead)
	}
	return b.String()
}

// summaryLine is "9 keys: 2 ok, 1 due, ..." with only the statuses present.
func (r *Report) summaryLine() string {
	parts := make([]string, 0, len(statuses))
	for _, s := range statuses {
		if n := r.Summary[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	line := fmt.Sprintf("%d key", len(r.Keys))
	if len(r.Keys) != 1 {
		line += "s"
	}
	if len(parts) > 0 {
		line += ": " + strings.Join(parts, ", ")
	}
	return line
}

// MarshalJSON writes the row as Write does, with zero times as null rather
// than Go's year 1, which tools would take for a real date. Unmarshalling
// needs no counterpart: time.Time reads null as the zero time.
func (r Row) MarshalJSON() ([]byte, error) { return appendRowJSON(nil, r), nil }

// columns of the human formats: what an operator scans first on the left,
// the long identifiers on the right where a narrow terminal cuts them.
var columns = []struct {
	table, markdown string
	cell            func(Row) string
}{
	{"POLICY", "Policy", func(k Row) string { return k.Policy }},
	{"PROVIDER", "Provider", func(k Row) string { return k.Provider }},
	{"PROJECT", "Project", func(k Row) string { return project(k.ProjectID) }},
	{"KEY_NAME", "Key name", func(k Row) string { return k.KeyName }},
	{"STATUS", "Status", func(k Row) string { return k.Status }},
	{"AGE", "Age", age},
	{"MAX_AGE", "Max age", func(k Row) string { return ageOf(k.MaxAgeSeconds) }},
	{"DEFAULT", "Default", func(k Row) string { return yesNo(k.Default) }},
	{"CREATED", "Created", func(k Row) string { return stamp(k.CreatedAt) }},
	{"LAST_ROTATION", "Last rotation", func(k Row) string { return stamp(k.LastRotation) }},
	{"NEXT_ROTATION", "Next rotation", func(k Row) string { return stamp(k.NextRotation) }},
	{"KEY_ID", "Key ID", func(k Row) string { return k.KeyID }},
	{"FINGERPRINT", "Fingerprint", func(k Row) string { return k.Fingerprint }},
}

func (r *Report) writeTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	cells := make([]string, len(columns))
	for i, c := range columns {
		cells[i] = c.table
	}
	if _, err := io.WriteString(tw, strings.Join(cells, "\t")+"\n"); err != nil {
		return err
	}
	for _, k := range r.Keys {
		for i, c := range columns {
			cells[i] = orDash(clean(c.cell(k)))
		}
		if _, err := io.WriteString(tw, strings.Join(cells, "\t")+"\n"); err != nil {
			return err
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := r.writeHostsTable(w); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s (generated %s)\n", r.summaryLine(), stamp(r.GeneratedAt))
	if r.AuditHead != "" {
		fmt.Fprintf(&b, "audit log head: %s\n", r.AuditHead)
	}
	for _, m := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", clean(m))
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	return r.writeInstancesTable(w)
}

// writeJSON streams the document row by row. It writes exactly what
// json.Encoder with a two-space indent would make of the Report, but that
// encoder builds the whole document, then an indented copy, in memory
// (it tripled the peak heap of a 100,000-key report); this holds one row.
func (r *Report) writeJSON(w io.Writer) error {
	bw := bufio.NewWriter(w)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// value writes v indented as a member of the top-level object, without
	// the encoder's trailing newline.
	value := func(prefix string, v any) error {
		buf.Reset()
		enc.SetIndent(prefix, "  ")
		if err := enc.Encode(v); err != nil {
			return err
		}
		_, err := bw.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
		return err
	}
	member := func(name string, v any, last bool) error {
		bw.WriteString("  \"" + name + "\": ")
		if err := value("  ", v); err != nil {
			return err
		}
		if last {
			bw.WriteString("\n")
		} else {
			bw.WriteString(",\n")
		}
		return nil
	}
	bw.WriteString("{\n")
	if err := member("generated_at", r.GeneratedAt, false); err != nil {
		return err
	}
	if r.Keys == nil {
		bw.WriteString("  \"keys\": null,\n")
	} else if len(r.Keys) == 0 {
		bw.WriteString("  \"keys\": [],\n")
	} else {
		bw.WriteString("  \"keys\": [")
		var row []byte
		for i, k := range r.Keys {
			if i > 0 {
				bw.WriteString(",")
			}
			row = appendRowJSON(append(row[:0], "\n    "...), k)
			if _, err := bw.Write(row); err != nil {
				return err
			}
		}
		bw.WriteString("\n  ],\n")
	}
	if len(r.Hosts) > 0 {
		if err := member("hosts", r.Hosts, false); err != nil {
			return err
		}
		if err := member("hosts_summary", r.HostsSummary, false); err != nil {
			return err
		}
	}
	if err := member("summary", r.Summary, false); err != nil {
		return err
	}
	if err := member("policies", r.Policies, false); err != nil {
		return err
	}
	if len(r.Warnings) > 0 {
		if err := member("warnings", r.Warnings, false); err != nil {
			return err
		}
	}
	if r.AuditHead != "" {
		if err := member("audit_head", r.AuditHead, false); err != nil {
			return err
		}
	}
	if err := member("instances", r.Instances, false); err != nil {
		return err
	}
	if err := member("instance_summary", r.InstanceSummary, false); err != nil {
		return err
	}
	if err := member("inventory", r.Inventory, true); err != nil {
		return err
	}
	bw.WriteString("}\n")
	return bw.Flush()
}

// appendRowJSON appends k as encoding/json would indent it at the depth of
// a report row, without reflection: rows are almost the whole document,
// and this halves the cost of writing 100,000 of them.
func appendRowJSON(b []byte, k Row) []byte {
	const in = "\n      "
	b = append(b, "{"+in+`"policy": `...)
	b = appendJSONString(b, k.Policy)
	b = append(b, ","+in+`"provider": `...)
	b = appendJSONString(b, k.Provider)
	b = append(b, ","+in+`"project_id": `...)
	b = strconv.AppendInt(b, k.ProjectID, 10)
	b = append(b, ","+in+`"key_id": `...)
	b = appendJSONString(b, k.KeyID)
	b = append(b, ","+in+`"key_name": `...)
	b = appendJSONString(b, k.KeyName)
	b = append(b, ","+in+`"fingerprint": `...)
	b = appendJSONString(b, k.Fingerprint)
	b = append(b, ","+in+`"created_at": `...)
	b = appendJSONTime(b, k.CreatedAt)
	b = append(b, ","+in+`"age_seconds": `...)
	b = strconv.AppendInt(b, k.AgeSeconds, 10)
	b = append(b, ","+in+`"max_age_seconds": `...)
	b = strconv.AppendInt(b, k.MaxAgeSeconds, 10)
	b = append(b, ","+in+`"status": `...)
	b = appendJSONString(b, k.Status)
	b = append(b, ","+in+`"default": `...)
	b = strconv.AppendBool(b, k.Default)
	b = append(b, ","+in+`"last_rotation": `...)
	b = appendJSONTime(b, k.LastRotation)
	b = append(b, ","+in+`"next_rotation": `...)
	b = appendJSONTime(b, k.NextRotation)
	return append(b, "\n    }"...)
}

// appendJSONString quotes s. Plain printable ASCII, which is what names,
// IDs and fingerprints are, is copied as is; anything else goes through
// encoding/json so that its escaping rules are applied exactly.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSONTime writes t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds), or null for the zero time; see Row.MarshalJSON.
func appendJSONTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func (r *Report) writeCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{
		"policy", "provider", "project_id", "key_id", "key_name", "fingerprint", "created_at",
		"age_seconds", "max_age_seconds", "status", "default", "last_rotation", "next_rotation", "audit_head",
	}); err != nil {
		return err
	}
	for _, k := range r.Keys {
		if err := cw.Write([]string{
			k.Policy, k.Provider, strconv.FormatInt(k.ProjectID, 10), k.KeyID, k.KeyName, k.Fingerprint,
			stamp(k.CreatedAt), strconv.FormatInt(k.AgeSeconds, 10), strconv.FormatInt(k.MaxAgeSeconds, 10),
			k.Status, strconv.FormatBool(k.Default), stamp(k.LastRotation), stamp(k.NextRotation), r.AuditHead,
		}); err != nil {
			return err
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	if err := r.writeInstancesCSV(w); err != nil {
		return err
	}
	return r.writeHostsCSV(w)
}

func (r *Report) writeMarkdown(w io.Writer) error {
	rows := make([][]string, 0, len(r.Keys)+1)
	head := make([]string, len(columns))
	for i, c := range columns {
		head[i] = c.markdown
	}
	rows = append(rows, head)
	for _, k := range r.Keys {
		cells := make([]string, len(columns))
		for i, c := range columns {
			v := clean(c.cell(k))
			switch {
			case v == "":
			case c.table == "KEY_ID" || c.table == "FINGERPRINT":
				// Backslash escapes are literal inside a code span; only
				// the pipe, which GFM splits cells on first, needs one.
				v = "`" + mdCode(v) + "`"
			default:
				v = mdEscape(v)
			}
			if c.table == "STATUS" && (k.Status == StatusOverdue || k.Status == StatusFailing) {
				v = "**" + v + "**"
			}
			cells[i] = v
		}
		rows = append(rows, cells)
	}
	width := make([]int, len(columns))
	for _, row := range rows {
		for i, v := range row {
			width[i] = max(width[i], utf8.RuneCountInString(v), 3)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Key compliance report\n\nGenerated %s.\n\n", stamp(r.GeneratedAt))
	line := func(cells []string) {
		b.WriteString("|")
		for i, v := range cells {
			b.WriteString(" " + v + strings.Repeat(" ", width[i]-utf8.RuneCountInString(v)) + " |")
		}
		b.WriteString("\n")
	}
	line(rows[0])
	rule := make([]string, len(columns))
	for i := range rule {
		rule[i] = strings.Repeat("-", width[i])
	}
	line(rule)
	for _, row := range rows[1:] {
		line(row)
	}
	fmt.Fprintf(&b, "\n**%s**\n", r.summaryLine())
	b.WriteString(r.hostsMarkdown())
	if r.AuditHead != "" {
		fmt.Fprintf(&b, "\nAudit log head: `%s`\n", r.AuditHead)
	}
	if len(r.Warnings) > 0 {
		b.WriteString("\n## Warnings\n\n")
		for _, m := range r.Warnings {
			fmt.Fprintf(&b, "- %s\n", mdEscape(clean(m)))
		}
	}
	r.writeInstancesMarkdown(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

func keyLabel(k Row) string {
	if k.KeyName != "" {
		return k.KeyName
	}
	return k.KeyID
}

func age(k Row) string {
	if k.CreatedAt.IsZero() {
		return ""
	}
	return rotate.FormatAge(time.Duration(k.AgeSeconds) * time.Second)
}

func ageOf(secs int64) string {
	if secs == 0 {
		return ""
	}
	return rotate.FormatAge(time.Duration(secs) * time.Second)
}

func project(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clean replaces control characters, which an unmanaged key's name (chosen
// by whoever uploaded it) could use to break a table or send escape
// sequences to the operator's terminal.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// mdEscape keeps cell text from closing the cell or turning into markup.
var mdEscape = strings.NewReplacer(`|`, `\|`, "`", "\\`", `*`, `\*`, `_`, `\_`, `<`, `&lt;`).Replace

// mdCode prepares text for a code span inside a table cell.
var mdCode = strings.NewReplacer(`|`, `\|`, "`", "'").Replace
