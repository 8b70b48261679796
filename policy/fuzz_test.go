package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary bytes: it must never panic, an error
// must come without a config and name the file on every line, and a config
// it accepts must hold the promises downstream code relies on.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	files = append(files, "../policies.example.yaml")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add("a: &a [*a]\n")
	f.Add("x: &x {<<: *x}\n")
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := Parse(strings.NewReader(in), "f.yaml")
		if err != nil {
			if cfg != nil {
				t.Fatalf("config returned along with %v", err)
			}
			for _, line := range errorLines(err) {
				if !strings.HasPrefix(line, "f.yaml:") {
					t.Fatalf("message without the file name: %q", line)
				}
			}
			return
		}
		if cfg == nil || len(cfg.Policies) == 0 || len(cfg.Providers) == 0 || cfg.Vault.Address == "" {
			t.Fatalf("accepted an incomplete config: %+v", cfg)
		}
		for _, p := range cfg.Policies {
			if _, ok := cfg.ProviderByName(p.Provider); !ok || p.ProviderType == "" {
				t.Fatalf("policy %q has no provider: %+v", p.Name, p)
			}
			if p.MaxAge <= 0 || p.RotateBefore >= p.MaxAge || p.GracePeriod >= p.MaxAge || p.MaxFailures < 1 {
				t.Fatalf("policy %q has impossible durations: %+v", p.Name, p)
			}
			if _, err := ParseSchedule(p.Schedule); err != nil {
				t.Fatalf("policy %q: accepted schedule is rejected: %v", p.Name, err)
			}
			if p.NamePrefix == "" || len(p.KeyName(neverFiresFrom)) > maxKeyName || p.VaultPath == "" {
				t.Fatalf("policy %q: bad names: %+v", p.Name, p)
			}
			if p.ProviderType == TypeGcore && (p.MakeDefault || p.ProjectID <= 0) {
				t.Fatalf("gcore policy %q: %+v", p.Name, p)
			}
		}
	})
}
