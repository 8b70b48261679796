// Package deploy holds no Go code: only the tests of what ships under
// deploy/ for operators (the Prometheus alert rules and the Grafana
// dashboard), so that neither can drift from the metrics rotatord exports
// or from the runbook its alerts link.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	rulesFile     = "prometheus/rotatord.rules.yml"
	rulesTestFile = "prometheus/rotatord.rules.test.yml"
	runbookFile   = "../docs/runbook.md"
	runbookURL    = "https://github.com/rotatord/rotatord/blob/main/docs/runbook.md#"
)

// designAlerts are the alerts DESIGN.md §12 promises, plus the dead man's
// switch.
var designAlerts = []string{
	"RotatordKeyOverdue", "RotatordKeyExposed", "RotatordPolicyFailing", "RotatordReloadFailed",
	"RotatordHostsStale", "RotatordNoLeader", "RotatordAbsent",
}

// promtool returns the path of Debian's promtool. Without it the test is
// skipped locally and fails under CI=true, where the alert rules must be
// proven.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found on PATH; CI must run the alert rule tests (Debian package prometheus)")
		}
		t.Skip("promtool not found on PATH (Debian package prometheus); skipping")
	}
	return path
}

// runPromtool runs promtool in dir and fails the test with its output when
// it exits non-zero.
func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The rules parse and every unit test of rotatord.rules.test.yml passes:
// each alert fires on a series that should fire it and stays silent on
// one that should not.
func TestRules_promtool(t *testing.T) {
	out := runPromtool(t, "prometheus", "check", "rules", filepath.Base(rulesFile))
	if want := "SUCCESS: 7 rules found"; !strings.Contains(out, want) {
		t.Errorf("promtool check rules: want %q in:\n%s", want, out)
	}
	out = runPromtool(t, "prometheus", "test", "rules", filepath.Base(rulesTestFile))
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules did not report SUCCESS:\n%s", out)
	}
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func alertRules(t *testing.T) []rule {
	t.Helper()
	var rf ruleFile
	readYAML(t, rulesFile, &rf)
	var out []rule
	for _, g := range rf.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// githubAnchor is the anchor GitHub gives a Markdown heading: lower case,
// spaces to dashes, punctuation other than - and _ dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Every alert of DESIGN.md §12 is there, with a severity, a summary, a
// description and a runbook_url whose anchor is a section of
// docs/runbook.md: an on-call engineer who follows the link lands on what
// to do.
func TestRules_annotationsAndRunbook(t *testing.T) {
	text, err := os.ReadFile(runbookFile)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#{1,6} +(.+)$`).FindAllStringSubmatch(string(text), -1) {
		anchors[githubAnchor(m[1])] = true
	}
	rules := alertRules(t)
	byName := map[string]rule{}
	for _, r := range rules {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert; this file holds alerts only", r.Expr)
			continue
		}
		if _, dup := byName[r.Alert]; dup {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		byName[r.Alert] = r
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity = %q, want critical or warning", r.Alert, s)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(r.Annotations[k]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, k)
			}
		}
		url := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(url, runbookURL)
		switch {
		case !ok:
			t.Errorf("%s: runbook_url %q does not point into %s", r.Alert, url, runbookURL)
		case anchor != strings.ToLower(r.Alert):
			t.Errorf("%s: runbook_url anchor %q, want the alert's own section #%s", r.Alert, anchor, strings.ToLower(r.Alert))
		case !anchors[anchor]:
			t.Errorf("%s: docs/runbook.md has no section #%s", r.Alert, anchor)
		}
	}
	for _, name := range designAlerts {
		if _, ok := byName[name]; !ok {
			t.Errorf("alert %s of DESIGN.md §12 is missing", name)
		}
	}
	if len(byName) != len(designAlerts) {
		t.Errorf("%d alerts, want the %d of DESIGN.md §12; update designAlerts and the runbook together", len(byName), len(designAlerts))
	}
}

type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name  string `yaml:"name"`
		Cases []struct {
			Alert     string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// promtool passes a rule file whose alerts have no tests at all, so this
// makes sure each alert has a case that expects it to fire and one that
// expects silence.
func TestRules_everyAlertFiresAndStaysSilent(t *testing.T) {
	var rt ruleTests
	readYAML(t, rulesTestFile, &rt)
	if len(rt.RuleFiles) != 1 || rt.RuleFiles[0] != filepath.Base(rulesFile) {
		t.Errorf("rule_files = %v, want [%s]", rt.RuleFiles, filepath.Base(rulesFile))
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, c := range tc.Cases {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alert] = true
			} else {
				silent[c.Alert] = true
			}
		}
	}
	for _, r := range alertRules(t) {
		if !fires[r.Alert] {
			t.Errorf("%s: no test case where it fires", r.Alert)
		}
		if !silent[r.Alert] {
			t.Errorf("%s: no test case where it stays silent", r.Alert)
		}
	}
}
