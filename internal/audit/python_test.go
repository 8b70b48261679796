package audit

import (
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestVerifyAuditPy runs examples/verify_audit.py, the third-party
// verifier of docs/audit-format.md, on the exports the Go verifier checks:
// it must agree with Verify on each, which shows the canonical encoding is
// reproducible from its documentation (the log includes every character
// class the encoding escapes, and non-ASCII text).
func TestVerifyAuditPy(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 not found")
		}
		t.Skip("python3 not found")
	}
	// Resolve a version manager's shim (pyenv's costs two seconds a run)
	// to the interpreter itself.
	if out, err := exec.Command(python, "-c", "import sys; print(sys.executable)").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		python = strings.TrimSpace(string(out))
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "examples", "verify_audit.py"))
	if err != nil {
		t.Fatal(err)
	}
	key := testKey(t)
	c := NewChain(Genesis, key)
	var log []Entry
	for i := range 60 {
		log = append(log, c.Append(entry(i)))
	}
	for _, e := range awkward(t, key) {
		log = append(log, c.Append(e))
	}
	n := len(log)
	head := c.Head()
	const k = 7

	// A pruned log: entries 1-10 deleted, a checkpoint appended.
	pruned := append(slices.Clone(log[10:]), NewChain(head, key).Append(NewCheckpoint(log[9].Head(), time.Now())))

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.b64")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key.b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		entries []Entry
		args    []string
		env     string // AUDIT_KEY; "-" for none
		code    int
		out     string
	}{
		{name: "untouched", entries: log, code: 0, out: "ok: " + strconv.Itoa(n) + " entries, head " + head.String()},
		{name: "untouched, key file in base64", entries: log, args: []string{"-key-file", keyFile}, env: "-", code: 0},
		{name: "untouched, expected head", entries: log, args: []string{"-expect-head", head.String()}, code: 0},
		{name: "untouched, older published head", entries: log, args: []string{"-expect-head", log[40].Head().String()}, code: 0},
		{name: "untouched, no key", entries: log, env: "-", code: 0, out: "HMACs NOT checked"},
		{name: "pruned with a checkpoint", entries: pruned, code: 0},
		{name: "pruned without a checkpoint", entries: log[10:], code: 1, out: "the log starts at seq 11"},
		{name: "-since export", entries: log[10:], args: []string{"-partial"}, code: 0},
		{
			name: "edit entry k", code: 1, out: "line 7: seq 7: hmac mismatch",
			entries: func() []Entry { l := slices.Clone(log); l[k-1].Detail = "nothing"; return l }(),
		},
		{
			name: "edit an escaped detail", code: 1, out: "seq 61: hmac mismatch",
			entries: func() []Entry { l := slices.Clone(log); l[60].Detail += " "; return l }(),
		},
		{
			name: "swap entries k and k+1", code: 1, out: "line 7: seq 8 follows seq 6",
			entries: func() []Entry { l := slices.Clone(log); l[k-1], l[k] = l[k], l[k-1]; return l }(),
		},
		{
			name: "delete entry k", code: 1, out: "line 7: seq 8 follows seq 6",
			entries: slices.Delete(slices.Clone(log), k-1, k),
		},
		{
			name: "delete entry k, renumber, rehash", code: 1, out: "line 7: seq 7: hmac mismatch",
			entries: func() []Entry {
				l := slices.Delete(slices.Clone(log), k-1, k)
				renumber(l)
				rehash(l, k-1)
				return l
			}(),
		},
		{name: "cut the last 3, published head", entries: log[:n-3], args: []string{"-expect-head", head.String()}, code: 1, out: "the log ends at seq " + strconv.Itoa(n-3)},
		{name: "wrong key", entries: log, env: strings.Repeat("ab", 32), code: 1, out: "line 1: seq 1: hmac mismatch"},
		{name: "bad head", entries: log, args: []string{"-expect-head", "12"}, code: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".jsonl")
			if err := os.WriteFile(path, export(t, tt.entries, FormatJSONL), 0o600); err != nil {
				t.Fatal(err)
			}
			// The Go verifier's verdict on the same file.
			opts := VerifyOptions{Key: key, Partial: slices.Contains(tt.args, "-partial")}
			if i := slices.Index(tt.args, "-expect-head"); i >= 0 {
				if h, err := ParseHead(tt.args[i+1]); err == nil {
					opts.ExpectHead = &h
				}
			}
			if tt.env != "" {
				opts.Key = Key{}
				if k, err := ParseKey(tt.env); err == nil {
					opts.Key = k
				}
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			_, goErr := VerifyExport(f, opts)
			f.Close()

			cmd := exec.Command(python, append([]string{script, path}, tt.args...)...)
			cmd.Env = append(os.Environ(), "AUDIT_KEY="+key.Hex())
			switch tt.env {
			case "":
			case "-":
				cmd.Env = append(os.Environ(), "AUDIT_KEY=")
			default:
				cmd.Env = append(os.Environ(), "AUDIT_KEY="+tt.env)
			}
			out, err := cmd.CombinedOutput()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(string(out), tt.out) {
				t.Errorf("verify_audit.py exit %d, output %q; want exit %d saying %q", code, out, tt.code, tt.out)
			}
			if tt.code != 2 && (code == 0) != (goErr == nil) {
				t.Errorf("verify_audit.py exit %d but Verify says %v", code, goErr)
			}
			if strings.Contains(string(out), key.Hex()) {
				t.Error("verify_audit.py printed the key")
			}
		})
	}
}
