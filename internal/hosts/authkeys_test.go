package hosts

import (
	"bytes"
	"crypto/ed25519"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// fixedLine is a deterministic ed25519 public line (no private half is
// needed to test line handling) and its fingerprint.
func fixedLine(seed byte, comment string) (line, fp string) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		panic(err)
	}
	line = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return line, ssh.FingerprintSHA256(pub)
}

// keyBody is the "type base64" part of a line.
func keyBody(line string) string {
	f := strings.Fields(line)
	return f[0] + " " + f[1]
}

func TestEdit_Apply(t *testing.T) {
	cur, curFP := fixedLine(1, "rotatord:gpu-team")
	old, oldFP := fixedLine(2, "rotatord:gpu-team")
	other, _ := fixedLine(3, "alice@laptop")
	other2, _ := fixedLine(4, "")
	curBody, oldBody := keyBody(cur), keyBody(old)
	long := strings.Repeat("x", 200_000)

	add := edit{add: cur, addFP: curFP}
	remove := edit{remove: map[string]bool{oldFP: true}}

	tests := []struct {
		name        string
		e           edit
		in, want    string
		wantAdded   bool
		wantRemoved []string
	}{
		{name: "empty file gets the line", e: add, in: "", want: cur + "\n", wantAdded: true},
		{name: "appends after a terminated last line", e: add,
			in: other + "\n", want: other + "\n" + cur + "\n", wantAdded: true},
		{name: "terminates a last line that lacked a newline", e: add,
			in: other, want: other + "\n" + cur + "\n", wantAdded: true},
		{name: "CRLF file gets a CRLF line", e: add,
			in: other + "\r\n# note\r\n", want: other + "\r\n# note\r\n" + cur + "\r\n", wantAdded: true},
		{name: "CRLF file without final newline", e: add,
			in: other + "\r\n" + other2, want: other + "\r\n" + other2 + "\r\n" + cur + "\r\n", wantAdded: true},
		{name: "present with another comment: nothing added", e: add,
			in: other + "\n" + curBody + " someone-else\n", want: other + "\n" + curBody + " someone-else\n"},
		{name: "present with options and no newline: nothing added, no byte changed", e: add,
			in:   `from="10.0.0.0/8,192.168.1.0/24",command="echo a, b" ` + curBody,
			want: `from="10.0.0.0/8,192.168.1.0/24",command="echo a, b" ` + curBody},
		{name: "present with tabs and leading blanks", e: add,
			in: "  \t" + strings.Replace(curBody, " ", "\t", 1) + "\tc\n", want: "  \t" + strings.Replace(curBody, " ", "\t", 1) + "\tc\n"},
		{name: "present as CRLF line", e: add, in: cur + "\r\n", want: cur + "\r\n"},
		{name: "cert-authority line is not the key itself", e: add,
			in: "cert-authority " + curBody + "\n", want: "cert-authority " + curBody + "\n" + cur + "\n", wantAdded: true},
		{name: "a commented-out copy does not count", e: add,
			in: "# " + cur + "\n", want: "# " + cur + "\n" + cur + "\n", wantAdded: true},
		{name: "the comment alone does not count", e: add,
			in: other2 + " rotatord:gpu-team\n", want: other2 + " rotatord:gpu-team\n" + cur + "\n", wantAdded: true},
		{name: "garbage lines are kept as they are", e: add,
			in:   "ssh-ed25519 not-base64!\n\x00\xff\xfe binary\nfrom=\"unterminated " + curBody[:20] + "\n",
			want: "ssh-ed25519 not-base64!\n\x00\xff\xfe binary\nfrom=\"unterminated " + curBody[:20] + "\n" + cur + "\n", wantAdded: true},
		{name: "a lone CR inside a line is data", e: add,
			in: other + "\rtrailing\n", want: other + "\rtrailing\n" + cur + "\n", wantAdded: true},
		{name: "very long comment line kept", e: add,
			in: other + " " + long + "\n", want: other + " " + long + "\n" + cur + "\n", wantAdded: true},

		{name: "removes the retired line only", e: remove,
			in:   "# keep\n" + other + "\n" + old + "\n\n" + other2,
			want: "# keep\n" + other + "\n\n" + other2, wantRemoved: []string{oldFP}},
		{name: "removes duplicates and option-bearing copies", e: remove,
			in:   old + "\n" + other + "\n" + `no-pty,command="echo \"hi, there\"",from="1.2.3.4" ` + oldBody + " x\n" + old + "\n",
			want: other + "\n", wantRemoved: []string{oldFP}},
		{name: "removes a retired cert-authority line too", e: remove,
			in: "cert-authority,principals=\"a b\" " + oldBody + "\n" + other + "\n", want: other + "\n", wantRemoved: []string{oldFP}},
		{name: "removes a last line without newline, keeps the previous terminator", e: remove,
			in: other + "\r\n" + old, want: other + "\r\n", wantRemoved: []string{oldFP}},
		{name: "removes a very long retired line", e: remove,
			in: oldBody + " " + long + "\n" + other + "\n", want: other + "\n", wantRemoved: []string{oldFP}},
		{name: "never by comment: same comment, other key, kept", e: remove,
			in: other2 + " rotatord:gpu-team\n", want: other2 + " rotatord:gpu-team\n"},
		{name: "a commented-out retired key is a comment", e: remove,
			in: "#" + old + "\n", want: "#" + old + "\n"},
		{name: "nothing to remove returns the input", e: remove, in: other, want: other},
		{name: "add and remove in one edit", e: edit{add: cur, addFP: curFP, remove: map[string]bool{oldFP: true}},
			in: old + "\n" + other, want: other + "\n" + cur + "\n", wantAdded: true, wantRemoved: []string{oldFP}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, added, removed := tc.e.apply([]byte(tc.in))
			if string(out) != tc.want {
				t.Errorf("got\n%q\nwant\n%q", out, tc.want)
			}
			if added != tc.wantAdded || !slices.Equal(removed, tc.wantRemoved) {
				t.Errorf("added %v removed %v, want %v %v", added, removed, tc.wantAdded, tc.wantRemoved)
			}
			// Applying the same edit again changes nothing.
			again, added, removed := tc.e.apply(out)
			if !bytes.Equal(again, out) || added || removed != nil {
				t.Errorf("not idempotent: %q added %v removed %v", again, added, removed)
			}
		})
	}
}

func TestScanLines_Trusts(t *testing.T) {
	cur, curFP := fixedLine(1, "")
	old, oldFP := fixedLine(2, "")
	other, otherFP := fixedLine(3, "")
	data := []byte(old + "\n" + other + "\n" + "cert-authority " + cur + "\n" + cur + "\r\n" + old)
	managed := map[string]bool{curFP: true, oldFP: true}
	if got := presentAmong(scanLines(data), managed); !slices.Equal(got, []string{oldFP, curFP}) {
		t.Errorf("trusts %v, want old then current, each once, not the unmanaged key", got)
	}
	if !hasKey(scanLines(data), otherFP) || hasKey(scanLines([]byte("cert-authority "+cur)), curFP) {
		t.Error("hasKey: a plain line counts, a cert-authority line does not")
	}
	lines := scanLines(data)
	var joined []byte
	for _, l := range lines {
		joined = append(joined, data[l.start:l.end]...)
	}
	if !bytes.Equal(joined, data) || len(lines) != 5 {
		t.Errorf("lines do not cover the file exactly: %d lines", len(lines))
	}
}

// FuzzEdit_Apply checks the promise on any input: every line that is not
// removed comes out byte for byte, in order (a last line may gain the
// terminator it lacked, only when a line is appended after it); no removed
// key is left; the added key is present; a second application changes
// nothing; nothing panics.
func FuzzEdit_Apply(f *testing.F) {
	cur, curFP := fixedLine(1, "rotatord:p")
	old, oldFP := fixedLine(2, "rotatord:p")
	other, _ := fixedLine(3, "x")
	for _, seed := range []string{
		"",
		old + "\n" + other,
		other + "\r\n" + old + "\r\n",
		`from="a b,c",no-pty ` + keyBody(old) + "\n# c\n\n" + cur,
		"cert-authority " + keyBody(cur) + "\n" + old,
		"\x00\n\r\n\n" + old + old + "\n",
		strings.Replace(old, " ", "\t", -1),
	} {
		for mode := range byte(4) {
			f.Add([]byte(seed), mode)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, mode byte) {
		var e edit
		if mode&1 != 0 {
			e.add, e.addFP = cur, curFP
		}
		if mode&2 != 0 {
			e.remove = map[string]bool{oldFP: true}
		}
		out, added, removed := e.apply(in)

		// An independent split, to check the one in apply.
		var kept [][]byte
		for _, l := range bytes.SplitAfter(in, []byte("\n")) {
			if len(l) == 0 {
				continue
			}
			if fp, _ := parseLineKey(l); fp != "" && e.remove[fp] {
				continue
			}
			kept = append(kept, l)
		}
		rest := out
		for i, l := range kept {
			if !bytes.HasPrefix(rest, l) {
				t.Fatalf("kept line %d %q not found in order in output %q", i, l, out)
			}
			rest = rest[len(l):]
		}
		switch {
		case !added && len(rest) != 0:
			t.Fatalf("output has %q beyond the kept lines without an added line", rest)
		case added:
			tail := string(rest)
			tail = strings.TrimPrefix(tail, "\r\n")
			if len(tail) == len(rest) {
				tail = strings.TrimPrefix(tail, "\n")
			}
			if len(tail) != len(rest) && len(kept) > 0 && bytes.HasSuffix(kept[len(kept)-1], []byte("\n")) {
				t.Fatalf("a separator was added after a terminated line: %q", rest)
			}
			if tail != cur+"\n" && tail != cur+"\r\n" {
				t.Fatalf("appended %q, want exactly the current line", rest)
			}
		}
		for _, l := range scanLines(out) {
			if l.fp != "" && e.remove[l.fp] {
				t.Fatalf("removed key still on line %q", out[l.start:l.end])
			}
		}
		if e.add != "" && !hasKey(scanLines(out), curFP) {
			t.Fatalf("current key missing from %q", out)
		}
		if len(removed) > 0 && !e.remove[removed[0]] {
			t.Fatalf("removed %v", removed)
		}
		again, added2, removed2 := e.apply(out)
		if !bytes.Equal(again, out) || added2 || removed2 != nil {
			t.Fatalf("second application changed %q into %q", out, again)
		}
	})
}
