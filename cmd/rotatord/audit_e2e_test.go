package main_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// TestAudit_EndToEnd runs the real binary: rotations leave a sealed audit
// log; `audit export` writes it (0640) and `audit verify` passes it, live
// and from the file, against the head the report published; every kind of
// tampering makes verify exit 1 naming the entry; a standard-library
// Python script agrees; the HMAC key appears nowhere but Vault.
func TestAudit_EndToEnd(t *testing.T) {
	e := newEnv(t, cloudtest.Options{})
	policies := []policyYAML{{Name: "gpu"}, {Name: "infer", Gcore: true}}
	e.writeConfig(policies, "")
	for range 3 {
		if _, stderr, code := e.rotatord(nil, "rotate", "-config", e.cfgPath, "-all"); code != 0 {
			t.Fatalf("rotate: exit %d\n%s", code, stderr)
		}
	}
	out, stderr, code := e.rotatord(nil, "report", "-config", e.cfgPath, "-format", "json")
	if code != 0 {
		t.Fatalf("report: exit %d\n%s", code, stderr)
	}
	var rep struct {
		AuditHead string `json:"audit_head"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.AuditHead == "" {
		t.Fatalf("report has no audit head (%v):\n%s", err, out)
	}

	export := filepath.Join(e.dir, "audit.jsonl")
	if _, stderr, code := e.rotatord(nil, "audit", "export", "-config", e.cfgPath, "-out", export); code != 0 {
		t.Fatalf("audit export: exit %d\n%s", code, stderr)
	}
	if fi, err := os.Stat(export); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("export file: %v, mode %v; want 0640", err, fi.Mode().Perm())
	}
	lines := strings.Split(strings.TrimSuffix(mustReadFile(t, export), "\n"), "\n")
	if len(lines) < 10 {
		t.Fatalf("export has %d entries, want the rotations' many", len(lines))
	}

	verify := func(t *testing.T, content string, args ...string) (string, int) {
		t.Helper()
		path := export
		if content != "" {
			path = filepath.Join(t.TempDir(), "tampered.jsonl")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		out, stderr, code := e.rotatord(nil, append([]string{"audit", "verify", "-config", e.cfgPath, "-file", path}, args...)...)
		return out + stderr, code
	}
	t.Run("the untouched log verifies, live and exported, against the published head", func(t *testing.T) {
		if out, code := verify(t, "", "-expect-head", rep.AuditHead); code != 0 || !strings.Contains(out, "every HMAC checked") || !strings.Contains(out, "expected head is in the log") {
			t.Errorf("verify of the export: exit %d\n%s", code, out)
		}
		out, stderr, code := e.rotatord(nil, "audit", "verify", "-config", e.cfgPath, "-expect-head", rep.AuditHead)
		if code != 0 || !strings.Contains(out, "audit log OK") {
			t.Errorf("live verify without a daemon: exit %d\n%s%s", code, out, stderr)
		}
		d := e.startDaemon()
		out, stderr, code = e.rotatord(nil, "audit", "verify", "-config", e.cfgPath, "-expect-head", rep.AuditHead)
		d.signal(syscall.SIGTERM)
		d.wait(30 * time.Second)
		if code != 0 || !strings.Contains(out, "every HMAC checked") {
			t.Errorf("live verify through the daemon: exit %d\n%s%s", code, out, stderr)
		}
	})
	join := func(ls []string) string { return strings.Join(ls, "\n") + "\n" }
	k := 5 // entry seq k is line k
	for _, tc := range []struct {
		name   string
		lines  []string
		args   []string
		naming string
	}{
		{"an edited field of entry 5", func() []string {
			ls := append([]string(nil), lines...)
			ls[k-1] = strings.Replace(ls[k-1], `"policy":"`, `"policy":"x`, 1)
			return ls
		}(), nil, "seq 5"},
		{"entries 5 and 6 swapped", func() []string {
			ls := append([]string(nil), lines...)
			ls[k-1], ls[k] = ls[k], ls[k-1]
			return ls
		}(), nil, "seq 5"},
		{"entry 5 deleted", append(append([]string(nil), lines[:k-1]...), lines[k:]...), nil, "5"},
		{"the last 3 cut", lines[:len(lines)-3], []string{"-expect-head", rep.AuditHead}, "cut"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := verify(t, join(tc.lines), tc.args...)
			if code != 1 || !strings.Contains(out, "BROKEN") || !strings.Contains(out, tc.naming) {
				t.Errorf("verify: exit %d, want 1 naming %q:\n%s", code, tc.naming, out)
			}
		})
	}

	t.Run("a standard-library Python verifier agrees", func(t *testing.T) {
		python, err := exec.LookPath("python3")
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("python3 is missing")
			}
			t.Skip("python3 is missing")
		}
		data, _, err := e.store.Get(context.Background(), "rotatord/audit-key")
		if err != nil {
			t.Fatal(err)
		}
		run := func(path string, args ...string) int {
			cmd := exec.Command(python, append([]string{"../../examples/verify_audit.py", path}, args...)...)
			cmd.Env = append(os.Environ(), "AUDIT_KEY="+data["key"])
			out, _ := cmd.CombinedOutput()
			t.Logf("verify_audit.py %s: %s", filepath.Base(path), strings.TrimSpace(string(out)))
			return cmd.ProcessState.ExitCode()
		}
		if code := run(export, "-expect-head", rep.AuditHead); code != 0 {
			t.Errorf("python on the untouched export: exit %d", code)
		}
		edited := filepath.Join(t.TempDir(), "edited.jsonl")
		ls := append([]string(nil), lines...)
		ls[2] = strings.Replace(ls[2], `"trigger":"`, `"trigger":"x`, 1)
		if err := os.WriteFile(edited, []byte(join(ls)), 0o600); err != nil {
			t.Fatal(err)
		}
		if code := run(edited); code != 1 {
			t.Errorf("python on an edited export: exit %d, want 1", code)
		}
	})

	t.Run("report -out writes any format to a 0640 file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "report.html")
		if _, stderr, code := e.rotatord(nil, "report", "-config", e.cfgPath, "-format", "html", "-out", path); code != 0 {
			t.Fatalf("report -out: exit %d\n%s", code, stderr)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o640 {
			t.Fatalf("report file: %v, mode %v; want 0640", err, fi.Mode().Perm())
		}
		if html := mustReadFile(t, path); !strings.Contains(html, rep.AuditHead) || !strings.Contains(html, "<svg") {
			t.Errorf("the HTML report lacks the audit head or the chart")
		}
	})
	t.Run("the HMAC key is nowhere but Vault", func(t *testing.T) {
		data, _, err := e.store.Get(context.Background(), "rotatord/audit-key")
		if err != nil {
			t.Fatal(err)
		}
		key := data["key"]
		csvOut, _, _ := e.rotatord(nil, "audit", "export", "-config", e.cfgPath, "-format", "csv")
		table, _, _ := e.rotatord(nil, "report", "-config", e.cfgPath)
		html, _, _ := e.rotatord(nil, "report", "-config", e.cfgPath, "-format", "html")
		_, verifyLog, _ := e.rotatord([]string{"ROTATORD_LOG_LEVEL=debug"}, "audit", "verify", "-config", e.cfgPath)
		for what, text := range map[string]string{
			"state file": mustReadFile(t, e.statePath()), "jsonl export": mustReadFile(t, export), "csv export": csvOut,
			"report": table + html + out, "debug log": verifyLog,
		} {
			if strings.Contains(strings.ToLower(text), key) {
				t.Errorf("the %s holds the audit key", what)
			}
		}
	})
}

func mustReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
