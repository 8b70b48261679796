package hosts

import (
	"bytes"
	"strings"

	"golang.org/x/crypto/ssh"
)

// This file is the pure half of the package: reading an authorized_keys file
// as lines and splicing lines in and out. It never reorders, rewrites or
// normalises a line it does not own; the only bytes it may add to a line it
// keeps are the line terminator of a last line that had none, when a line is
// appended after it.

// keyLine is one line of an authorized_keys file, as byte offsets into the
// file so that a kept line is copied back exactly as it was read.
type keyLine struct {
	start, end int // data[start:end] is the line including its terminator, if any
	// fp is the SHA256 fingerprint of the key the line carries, or "" when
	// the line carries none (blank, comment, garbage).
	fp string
	// certAuthority marks a line with the cert-authority option: it trusts
	// certificates signed by the key, not the key itself, so it never counts
	// as the key being present, but it does go when the key is retired.
	certAuthority bool
}

// terminated reports whether the line ends with a newline.
func (l keyLine) terminated(data []byte) bool {
	return l.end > l.start && data[l.end-1] == '\n'
}

// scanLines splits data into lines at '\n' and identifies the key each line
// carries. Options (from="...", command="...", no-pty, ...) and comments are
// parsed by x/crypto's authorized_keys parser, which handles quoted option
// values with spaces and commas; a line it cannot parse is kept as opaque
// bytes. It never panics, whatever the input.
func scanLines(data []byte) []keyLine {
	var lines []keyLine
	for start := 0; start < len(data); {
		end := len(data)
		if i := bytes.IndexByte(data[start:], '\n'); i >= 0 {
			end = start + i + 1
		}
		l := keyLine{start: start, end: end}
		l.fp, l.certAuthority = parseLineKey(data[start:end])
		lines = append(lines, l)
		start = end
	}
	return lines
}

// parseLineKey returns the fingerprint of the key on one line, and whether
// the line marks it as a certificate authority.
func parseLineKey(line []byte) (fp string, certAuthority bool) {
	body := bytes.TrimSpace(line) // also drops the '\r' of a CRLF line
	if len(body) == 0 || body[0] == '#' {
		return "", false
	}
	pub, _, options, _, err := ssh.ParseAuthorizedKey(body)
	if err != nil {
		return "", false
	}
	for _, o := range options {
		// sshd compares option names case-insensitively.
		if strings.EqualFold(o, "cert-authority") {
			certAuthority = true
		}
	}
	return ssh.FingerprintSHA256(pub), certAuthority
}

// hasKey reports whether a line that lets fp log in directly is present.
func hasKey(lines []keyLine, fp string) bool {
	for _, l := range lines {
		if l.fp == fp && !l.certAuthority {
			return true
		}
	}
	return false
}

// presentAmong returns the fingerprints of set that appear on a login line,
// in file order, each once.
func presentAmong(lines []keyLine, set map[string]bool) []string {
	var out []string
	seen := map[string]bool{}
	for _, l := range lines {
		if l.fp == "" || l.certAuthority || !set[l.fp] || seen[l.fp] {
			continue
		}
		seen[l.fp] = true
		out = append(out, l.fp)
	}
	return out
}

// edit is one change to an authorized_keys file.
type edit struct {
	// add is the line appended (without terminator) when no line lets addFP
	// log in; "" adds nothing.
	add   string
	addFP string
	// remove lists the fingerprints whose lines go, whatever their options.
	remove map[string]bool
}

// apply returns data with e applied, whether a line was added, and the
// distinct fingerprints removed in file order. When nothing changes it
// returns data itself. Every line that is not removed is copied byte for
// byte; an added line goes at the end, after a terminator appended to a last
// line that had none, and ends with the file's own line ending (CRLF when its
// lines end so, else LF).
func (e edit) apply(data []byte) (out []byte, added bool, removed []string) {
	lines := scanLines(data)
	seen := map[string]bool{}
	for _, l := range lines {
		if l.fp != "" && e.remove[l.fp] && !seen[l.fp] {
			seen[l.fp] = true
			removed = append(removed, l.fp)
		}
	}
	added = e.add != "" && !hasKey(lines, e.addFP)
	if !added && len(removed) == 0 {
		return data, false, nil
	}

	out = make([]byte, 0, len(data)+len(e.add)+2)
	for _, l := range lines {
		if l.fp != "" && e.remove[l.fp] {
			continue
		}
		out = append(out, data[l.start:l.end]...)
	}
	if added {
		eol := lineEnding(data, lines)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, eol...)
		}
		out = append(out, e.add...)
		out = append(out, eol...)
	}
	return out, added, removed
}

// lineEnding is the terminator of the file's last terminated line: "\r\n"
// for a file written on Windows, "\n" otherwise.
func lineEnding(data []byte, lines []keyLine) string {
	for i := len(lines) - 1; i >= 0; i-- {
		l := lines[i]
		if !l.terminated(data) {
			continue
		}
		if l.end-l.start >= 2 && data[l.end-2] == '\r' {
			return "\r\n"
		}
		return "\n"
	}
	return "\n"
}
