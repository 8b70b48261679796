package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func runCLI(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestCheck_ExampleConfigIsValid(t *testing.T) {
	out, stderr, code := runCLI("check", "-config", "../../policies.example.yaml")
	if code != exitOK {
		t.Fatalf("check policies.example.yaml: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"OK:", "NEXT RUN (UTC)", "sesterce", "gcore"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestCheck_InvalidConfigListsEveryErrorAndExits1(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	src, err := os.ReadFile("../../policies.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(src), "max_age: 30d", "max_age: 30x", 1)
	text = strings.Replace(text, "vault_path: ssh/gcore/inference", "vault_path: ssh/sesterce/gpu-team", 1)
	if err := os.WriteFile(bad, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI("check", "-config", bad)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d", code, exitFailed)
	}
	if n := strings.Count(stderr, bad+":"); n < 2 {
		t.Errorf("want both mistakes reported with file:line, got:\n%s", stderr)
	}
	if !strings.Contains(stderr, "max_age") || !strings.Contains(stderr, "vault_path") {
		t.Errorf("errors do not name the fields:\n%s", stderr)
	}
}

func TestRun_UsageErrorsExit2WithAHint(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage:"},
		{"unknown command", []string{"rotat"}, `unknown command "rotat"`},
		{"missing config", []string{"check"}, "-config FILE is required"},
		{"unknown flag", []string{"plan", "-config", "x", "-bogus"}, "flag provided but not defined: -bogus"},
		{"rotate without target", []string{"rotate", "-config", "x"}, "give -policy NAME (repeatable) or -all"},
		{"rotate both", []string{"rotate", "-config", "x", "-all", "-policy", "a"}, "-policy and -all exclude each other"},
		{"bad report format", []string{"report", "-config", "x", "-format", "pdf"}, `unknown -format "pdf"`},
		{"bad -fail-on", []string{"report", "-config", "x", "-fail-on", "overdue,expose"}, `unknown -fail-on condition "expose" (want a comma list of exposed, overdue, stale)`},
		{"stray argument", []string{"check", "-config", "x", "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runCLI(tt.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, stderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out, _, code := runCLI("version")
	if code != 0 || out != "rotatord "+version+"\n" {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

// TestSystemdUnit_Exposure runs systemd-analyze on the shipped unit where
// it exists: the hardening must keep the exposure at 2.0 or less.
func TestSystemdUnit_Exposure(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	out, err := exec.Command(bin, "security", "--offline=true", "--no-pager", "../../systemd/rotatord.service").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Overall exposure level") {
		t.Skipf("systemd-analyze cannot run here: %v\n%s", err, out)
	}
	text := string(out)
	i := strings.Index(text, "Overall exposure level for rotatord.service: ")
	if i < 0 {
		t.Fatalf("no exposure level in:\n%s", text)
	}
	fields := strings.Fields(text[i+len("Overall exposure level for rotatord.service: "):])
	level, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	if level > 2.0 {
		t.Fatalf("exposure %.1f, want <= 2.0:\n%s", level, text)
	}
	t.Logf("systemd-analyze exposure: %.1f", level)
}
