package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// head is a valid config up to the policies list, for inline cases.
const head = `vault: {address: "https://vault.internal:8200"}
providers:
  - {name: sesterce-prod, type: sesterce, api_key_env: SESTERCE_API_KEY}
`

// Malformed or unusual YAML is an error with its line, never a panic and
// never a config.
func TestParse_document(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"empty file", "", []string{"x.yaml: empty config; see policies.example.yaml"}},
		{"only comments", "# nothing yet\n", []string{"x.yaml: empty config; see policies.example.yaml"}},
		{"a list instead of a mapping", "- vault\n- policies\n", []string{
			`x.yaml:1: the config must be a mapping of sections (state, vault, providers, policies, ...) (got a list)`}},
		{"two documents", head + "policies: [{name: a, provider: sesterce-prod, vault_path: a}]\n---\nstate: {path: /tmp/x}\n", []string{
			"x.yaml:5: a second YAML document; the config is a single document"}},
		{"tab indentation", "vault:\n\taddress: https://vault.internal:8200\n", []string{
			"x.yaml:2: invalid YAML: found character that cannot start any token"}},
		{"unknown anchor", head + "policies: [*nope]\n", []string{
			"x.yaml: invalid YAML: unknown anchor 'nope' referenced"}},
		{"policies not a list", head + "policies: {name: a}\n", []string{
			`x.yaml:4: policies: must be a list of policies (got a mapping)`}},
		{"a policy that is a word", head + "policies: [gpu-team]\n", []string{
			`x.yaml:4: policies: each policy must be a mapping of keys to values (got "gpu-team")`}},
		{"key as a word", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: a, key: ed25519}\n", []string{
			`x.yaml:5: policy "a": key: must be a mapping of keys to values (got "ed25519")`}},
		{"quoted number", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: a, max_failures: \"3\"}\n", []string{
			`x.yaml:5: policy "a": max_failures: must be a whole number (got "3")`}},
		{"notify.on as a word", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: a, notify: {on: failed}}\n", []string{
			`x.yaml:5: policy "a": notify.on: must be a list, such as [failed, overdue] (got "failed")`}},
		{"list for a single value", head + "policies:\n  - {name: a, provider: [sesterce-prod], vault_path: a}\n", []string{
			`x.yaml:5: policy "a": provider: must be a single value (got a list)`,
			`x.yaml:5: policy "a": provider: required: the name of one of the providers`}},
		{"a mapping that merges itself", head + "policies:\n  - &p\n    name: a\n    provider: sesterce-prod\n    vault_path: a\n    <<: *p\n", []string{
			`x.yaml:9: policy "a": <<: a mapping cannot merge itself`}},
		{"merge of a word", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: a, <<: word}\n", []string{
			`x.yaml:5: policy "a": <<: a merge key takes a mapping or a list of mappings`}},
		{"top-level x- keys hold anchors", head + "x-base: &base {provider: sesterce-prod}\nx-unused: 1\npolicies:\n  - {<<: *base, name: a, vault_path: a, providr: x}\n", []string{
			`x.yaml:7: policy "a": providr: unknown key; did you mean provider?`}},
		{"x- keys only at the top", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: a, x-note: hi}\n", []string{
			`x.yaml:5: policy "a": x-note: unknown key; expected one of name, provider, project_id, shared_in_project, schedule, max_age, rotate_before, grace_period, max_failures, key, make_default, name_prefix, vault_path, notify, window, jitter, hosts`}},
		{"vault path with dot-dot", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: ssh/../root}\n", []string{
			`x.yaml:5: policy "a": vault_path: must not contain ".." segments (got "ssh/../root")`}},
		{"socket path too long", head + "control: {socket: /run/" + strings.Repeat("s", 110) + "}\npolicies: [{name: a, provider: sesterce-prod, vault_path: a}]\n", []string{
			`x.yaml:4: control.socket: too long for a Unix socket path (115 bytes, at most 107) (got "/run/` + strings.Repeat("s", 95) + `...")`}},
		{"env name with a dollar", "vault: {address: \"https://v:8200\", auth: {token_env: $VAULT_TOKEN}}\n", []string{
			`x.yaml:1: vault.auth.token_env: write the variable's name without $, such as VAULT_TOKEN`,
			`x.yaml:1: providers: at least one provider is required`,
			`x.yaml:1: policies: at least one policy is required; there is nothing to rotate`}},
		{"empty state path", head + "policies: [{name: a, provider: sesterce-prod, vault_path: a}]\n" +
			"defaults: {}\nstate: {path: \"\"}\n", []string{
			`x.yaml:6: state.path: must not be empty; leave it out for /var/lib/rotatord/state.db`}},
		{"approle keys with token auth", "vault:\n  address: https://v:8200\n  auth: {role_id_file: /etc/r}\n" + head[strings.Index(head, "providers"):] +
			"policies: [{name: a, provider: sesterce-prod, vault_path: a}]\n", []string{
			`x.yaml:3: vault.auth.role_id_file: only used with method approle (method is token)`}},
		{"an unknown key type is the only complaint", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: a, key: {type: dsa, bits: 1024}}\n", []string{
			`x.yaml:5: policy "a": key.type: must be ed25519, rsa or ecdsa (got "dsa")`,
			`x.yaml:5: policy "a": key.bits: must be 3072 or 4096 (got "1024")`}},
		{"defaults name", head + "defaults: {name: x}\npolicies: [{name: a, provider: sesterce-prod, vault_path: a}]\n", []string{
			`x.yaml:4: defaults.name: every policy has its own name; it cannot be defaulted`}},
		{"notify channel without slack", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: a, notify: {channel: \"#x\"}}\n", []string{
			`x.yaml:5: policy "a": notify.channel: no slack section is configured, so nothing would be sent` + got("#x")}},
		{"name too long for a key name", head + "policies:\n  - {name: " + strings.Repeat("n", 240) + ", provider: sesterce-prod, vault_path: a}\n", []string{
			`x.yaml:5: policy "` + strings.Repeat("n", 240) + `": name: too long to be the key name prefix: 240 characters, at most 239 so that <name>-yyyymmddThhmmss fits the providers' 255-character key names; set a shorter name_prefix` + got(strings.Repeat("n", 240))}},
		{"long name with a short prefix", head + "policies:\n  - {name: " + strings.Repeat("n", 240) + ", name_prefix: n, provider: sesterce-prod, vault_path: a}\n", nil},
		{"zero grace period", head + "policies:\n  - {name: a, provider: sesterce-prod, vault_path: a, grace_period: 0, rotate_before: 0}\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse(strings.NewReader(tt.yaml), "x.yaml")
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if cfg == nil || len(cfg.Policies) != 1 {
					t.Fatalf("config = %+v", cfg)
				}
				return
			}
			assertErrors(t, cfg, err, tt.want)
		})
	}
}

// A document whose aliases expand far beyond its size is refused quickly
// instead of walked.
func TestParse_aliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString(head)
	b.WriteString("x-on: &on [" + strings.Repeat("rotated, ", 2000) + "failed]\n")
	b.WriteString("x-p: &p {name: a, provider: sesterce-prod, vault_path: a, notify: {on: *on}}\n")
	b.WriteString("policies: [" + strings.Repeat("*p, ", 2000) + "*p]\n")
	_, err := Parse(strings.NewReader(b.String()), "x.yaml")
	if want := "x.yaml: config too large once its aliases are expanded"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

// Secrets written in the wrong place are reported without being repeated:
// the message ends up in logs, in Slack and on the terminal.
func TestParse_secretsNeverInErrors(t *testing.T) {
	const secret = "sk-live-4f9a8c7e6d5bSECRET"
	tests := []struct {
		name string
		yaml string
	}{
		{"literal api key", "providers: [{name: p, type: sesterce, api_key: " + secret + "}]\n"},
		{"secret as env name", "providers: [{name: p, type: sesterce, api_key_env: " + secret + "}]\n"},
		{"secret in base_url", "providers: [{name: p, type: sesterce, api_key_env: K, base_url: \"https://u:" + secret + "@api\"}]\n"},
		{"literal vault token", "vault: {address: \"https://v:8200\", auth: {token: " + secret + "}}\n"},
		{"vault token as env name", "vault: {address: \"https://v:8200\", auth: {token_env: " + secret + "}}\n"},
		{"token in vault address", "vault: {address: \"https://" + secret + "@v:8200\"}\n"},
		{"literal role and secret ids", "vault: {address: \"https://v:8200\", auth: {method: approle, role_id: " + secret + ", secret_id: " + secret + "}}\n"},
		{"literal slack token", "slack: {token: " + secret + ", channel: x}\n"},
		{"literal slack webhook", "slack: {webhook_url: \"https://hooks.slack.com/" + secret + "\"}\n"},
		{"webhook as env name", "slack: {webhook_url_env: \"https://hooks.slack.com/" + secret + "\"}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.yaml), "x.yaml")
			if err == nil {
				t.Fatal("Parse accepted a secret in the config")
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("the secret leaked into the error:\n%v", err)
			}
		})
	}
}

func TestPolicy_KeyName(t *testing.T) {
	p := Policy{NamePrefix: "gpu-team"}
	at := time.Date(2025, 3, 9, 4, 5, 6, 0, time.FixedZone("CET", 3600))
	if got, want := p.KeyName(at), "gpu-team-20250309T030506"; got != want {
		t.Errorf("KeyName = %q, want %q (UTC)", got, want)
	}
	long := Policy{NamePrefix: strings.Repeat("k", maxNamePrefix)}
	if n := len(long.KeyName(at)); n != 255 {
		t.Errorf("longest allowed prefix gives a %d-character name, want 255", n)
	}
}

func ExamplePolicy_KeyName() {
	p := Policy{NamePrefix: "inference"}
	fmt.Println(p.KeyName(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)))
	// Output: inference-20250102T030405
}
