package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// errorLines splits a joined Parse error into its messages.
func errorLines(err error) []string {
	if err == nil {
		return nil
	}
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		var out []string
		for _, e := range joined.Unwrap() {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

// parseFile parses testdata/name, naming it name in messages.
func parseFile(t *testing.T, name string) (*Config, error) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Parse(f, name)
}

func assertErrors(t *testing.T, cfg *Config, err error, want []string) {
	t.Helper()
	if cfg != nil {
		t.Errorf("got a config along with errors: %+v", cfg)
	}
	got := errorLines(err)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// Each file under testdata/invalid holds one mistake (its first line says
// which); the message, line included, is what `rotatord check` prints.
func TestParse_invalid(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"api_key_both", []string{
			`invalid/api_key_both.yaml:14: provider "gcore-prod": api_key_env: set only one of api_key_env or api_key_file (api_key_file is set at line 13)`,
		}},
		{"api_key_missing", []string{
			`invalid/api_key_missing.yaml:11: provider "gcore-prod": api_key_env: one of api_key_env or api_key_file is required`,
		}},
		{"approle_missing_secret_id", []string{
			`invalid/approle_missing_secret_id.yaml:5: vault.auth.secret_id_file: required with method approle`,
		}},
		{"bad_cron", []string{
			`invalid/bad_cron.yaml:19: policy "gpu-team": schedule: invalid cron spec: expected exactly 5 fields, found 2: [* *] (got "* *")`,
		}},
		{"bad_duration", []string{
			`invalid/bad_duration.yaml:17: policy "gpu-team": max_age: invalid duration: unknown unit "mo" (use s, m, h, d or w) (got "3mo")`,
		}},
		{"bad_provider_type", []string{
			`invalid/bad_provider_type.yaml:12: provider "gcore-prod": type: must be sesterce or gcore (got "aws")`,
		}},
		{"base_url_ftp", []string{
			`invalid/base_url_ftp.yaml:13: provider "gcore-prod": base_url: must start with https:// or http:// (got "ftp://api.gcore.com")`,
		}},
		{"bool_as_word", []string{
			`invalid/bool_as_word.yaml:23: policy "inference": shared_in_project: must be true or false (got "yes")`,
		}},
		{"cron_bad_field", []string{
			`invalid/cron_bad_field.yaml:19: policy "gpu-team": schedule: invalid cron spec: end of range (60) above maximum (59): 60 (got "60 3 * * *")`,
		}},
		{"cron_never_fires", []string{
			`invalid/cron_never_fires.yaml:19: policy "gpu-team": schedule: invalid cron spec: never fires (no such date) (got "0 3 30 2 *")`,
		}},
		{"defaults_rotate_before_too_long", []string{
			`invalid/defaults_rotate_before_too_long.yaml:16: defaults.rotate_before: must be shorter than max_age (10d) (got "14d")`,
		}},
		{"defaults_vault_path", []string{
			`invalid/defaults_vault_path.yaml:15: defaults.vault_path: every policy keeps its key at its own vault_path; set it in each policy`,
		}},
		{"duplicate_policy_name", []string{
			`invalid/duplicate_policy_name.yaml:19: policy "gpu-team": name: already used by the policy at line 15 (got "gpu-team")`,
		}},
		{"duplicate_provider", []string{
			`invalid/duplicate_provider.yaml:14: provider "gcore-prod": name: already used by the provider at line 11 (got "gcore-prod")`,
		}},
		{"duplicate_vault_path", []string{
			`invalid/duplicate_vault_path.yaml:22: policy "inference": vault_path: already used by policy "gpu-team" at line 15; each policy needs its own (got "ssh/sesterce/gpu-team")`,
		}},
		{"duration_without_unit", []string{
			`invalid/duration_without_unit.yaml:17: policy "gpu-team": max_age: invalid duration: missing unit after 30 (use s, m, h, d or w) (got "30")`,
		}},
		{"ecdsa_bad_curve", []string{
			`invalid/ecdsa_bad_curve.yaml:19: policy "gpu-team": key.curve: must be p256, p384 or p521 (got "p224")`,
		}},
		{"ed25519_with_bits", []string{
			`invalid/ed25519_with_bits.yaml:21: policy "gpu-team": key.bits: only for type rsa (type is ed25519) (got "4096")`,
		}},
		{"env_holds_secret", []string{
			`invalid/env_holds_secret.yaml:10: provider "sesterce-prod": api_key_env: must be the name of an environment variable (letters, digits, _), not the secret itself`,
		}},
		{"gcore_make_default", []string{
			`invalid/gcore_make_default.yaml:23: policy "inference": make_default: Gcore has no default key: instances name their key at creation; leave make_default out (got "true")`,
		}},
		{"gcore_missing_project", []string{
			`invalid/gcore_missing_project.yaml:19: policy "inference": project_id: required for a gcore provider: the Gcore project that holds the keys`,
		}},
		{"generate_provider_rsa", []string{
			`invalid/generate_provider_rsa.yaml:25: policy "inference": key.generate: Gcore generates Ed25519 keys only; use type ed25519 or generate: local (got "provider")`,
		}},
		{"generate_provider_sesterce", []string{
			`invalid/generate_provider_sesterce.yaml:19: policy "gpu-team": key.generate: only gcore can generate keys; Sesterce takes a public key, so use generate: local (got "provider")`,
		}},
		{"grace_too_long", []string{
			`invalid/grace_too_long.yaml:19: policy "gpu-team": grace_period: must be shorter than max_age (30d) (got "30d")`,
		}},
		{"literal_api_key", []string{
			`invalid/literal_api_key.yaml:10: provider "sesterce-prod": api_key: use api_key_env: VAR or api_key_file: PATH; secrets are never written in the config`,
		}},
		{"literal_slack_webhook", []string{
			`invalid/literal_slack_webhook.yaml:5: slack.webhook_url: use webhook_url_env: VAR or webhook_url_file: PATH; secrets are never written in the config`,
		}},
		{"literal_vault_token", []string{
			`invalid/literal_vault_token.yaml:5: vault.auth.token: use token_env: VAR or token_file: PATH; secrets are never written in the config`,
		}},
		{"make_default_twice", []string{
			`invalid/make_default_twice.yaml:23: policy "training": make_default: policy "gpu-team" at line 15 already makes its keys the default on provider "sesterce-prod", and an account has one default key; set make_default: false on all but one policy`,
		}},
		{"max_age_below_rotate_before", []string{
			`invalid/max_age_below_rotate_before.yaml:17: policy "gpu-team": max_age: must be longer than rotate_before (7d by default) (got "5d")`,
			`invalid/max_age_below_rotate_before.yaml:17: policy "gpu-team": max_age: must be longer than grace_period (7d by default) (got "5d")`,
		}},
		{"max_failures_zero", []string{
			`invalid/max_failures_zero.yaml:19: policy "gpu-team": max_failures: must be 1 or more (got "0")`,
		}},
		{"metrics_listen_no_host", []string{
			`invalid/metrics_listen_no_host.yaml:5: metrics.listen: must be host:port, such as 127.0.0.1:9464 (got "9464")`,
		}},
		{"name_prefix_bad_chars", []string{
			`invalid/name_prefix_bad_chars.yaml:19: policy "gpu-team": name_prefix: must use only letters, digits, '.', '_' and '-' (got "gpu team")`,
		}},
		{"name_prefix_too_long", []string{
			`invalid/name_prefix_too_long.yaml:19: policy "gpu-team": name_prefix: too long: 240 characters, at most 239 so that <name_prefix>-yyyymmddThhmmss fits the providers' 255-character key names (got "` + strings.Repeat("k", 100) + `...")`,
		}},
		{"no_policies", []string{
			`invalid/no_policies.yaml:14: policies: at least one policy is required; there is nothing to rotate`,
		}},
		{"notify_unknown_event", []string{
			`invalid/notify_unknown_event.yaml:20: policy "gpu-team": notify.on: unknown event; events are rotated, deleted, failed, overdue, failing, recovered, exposed, host_updated, host_unreachable or host_key_changed (got "rotate")`,
		}},
		{"inventory_regions", []string{
			`invalid/inventory_regions.yaml:9: provider "sesterce-prod": regions: gcore only: Sesterce lists every instance of the account`,
			`invalid/inventory_regions.yaml:13: provider "gcore-prod": inventory: must be true or false (got "sometimes")`,
			`invalid/inventory_regions.yaml:14: provider "gcore-prod": regions: list items must be Gcore region IDs (whole numbers above 0) (got "luxembourg")`,
			`invalid/inventory_regions.yaml:14: provider "gcore-prod": regions: region listed twice (got "76")`,
		}},
		{"concurrency_zero", []string{
			`invalid/concurrency_zero.yaml:11: provider "sesterce-prod": concurrency: must be from 1 to 256 requests in flight (got "0")`,
		}},
		{"timeout_no_unit", []string{
			`invalid/timeout_no_unit.yaml:11: provider "sesterce-prod": timeout: invalid duration: missing unit after 30 (use s, m, h, d or w) (got "30")`,
		}},
		{"rate_limit_negative", []string{
			`invalid/rate_limit_negative.yaml:11: provider "sesterce-prod": rate_limit: must be 0 (the provider's default) or more requests per second (got "-1")`,
		}},
		{"repeated_key", []string{
			`invalid/repeated_key.yaml:19: policy "gpu-team": max_age: repeated key (first set at line 17)`,
		}},
		{"report_without_slack", []string{
			`invalid/report_without_slack.yaml:4: report: the digest is sent to Slack; add a slack section or leave report out`,
		}},
		{"rsa_bad_bits", []string{
			`invalid/rsa_bad_bits.yaml:19: policy "gpu-team": key.bits: must be 3072 or 4096 (got "2048")`,
		}},
		{"same_name_prefix", []string{
			`invalid/same_name_prefix.yaml:26: policy "training": name_prefix: policy "gpu-team" at line 15 already names its keys gpu-team-<time> on provider "sesterce-prod"; policies on one account need distinct prefixes (got "gpu-team")`,
		}},
		{"sesterce_project_id", []string{
			`invalid/sesterce_project_id.yaml:19: policy "gpu-team": project_id: only for gcore providers; a Sesterce key belongs to the whole account (got "1234")`,
		}},
		{"slack_token_without_channel", []string{
			`invalid/slack_token_without_channel.yaml:5: slack.channel: required with a bot token: where messages go unless a policy says otherwise`,
		}},
		{"slack_two_refs", []string{
			`invalid/slack_two_refs.yaml:6: slack.webhook_url_file: set only one of token_env, token_file, webhook_url_env or webhook_url_file (token_env is set at line 5)`,
		}},
		{"unknown_key", []string{
			`invalid/unknown_key.yaml:17: policy "gpu-team": max_agee: unknown key; did you mean max_age?`,
		}},
		{"unknown_provider", []string{
			`invalid/unknown_provider.yaml:16: policy "gpu-team": provider: no such provider is defined under providers (got "sesterce-staging")`,
		}},
		{"unknown_top_key", []string{
			`invalid/unknown_top_key.yaml:4: metric: unknown key; did you mean metrics?`,
		}},
		{"vault_address_no_scheme", []string{
			`invalid/vault_address_no_scheme.yaml:3: vault.address: must start with https:// or http:// (got "vault.internal:8200")`,
		}},
		{"vault_missing", []string{
			`invalid/vault_missing.yaml:2: vault: required; rotatord keeps every private key in Vault`,
		}},
		{"vault_path_leading_slash", []string{
			`invalid/vault_path_leading_slash.yaml:22: policy "inference": vault_path: must not start or end with /; it is relative to the mount (got "/ssh/gcore/inference")`,
		}},
		{"vault_path_missing", []string{
			`invalid/vault_path_missing.yaml:19: policy "inference": vault_path: required: where in Vault the active key is kept, such as ssh/gcore/inference`,
		}},
		{"vault_path_pending", []string{
			`invalid/vault_path_pending.yaml:22: policy "inference": vault_path: must not end in /pending; rotatord keeps the in-flight key at <vault_path>/pending (got "ssh/gcore/inference/pending")`,
		}},
		{"policy_without_name", []string{
			`invalid/policy_without_name.yaml:19: policy #2: name: required`,
		}},
		{"defaults_provider_unknown", []string{
			`invalid/defaults_provider_unknown.yaml:15: defaults.provider: no such provider is defined under providers (got "sesterce-stg")`,
		}},
		{"generate_provider_from_defaults", []string{
			`invalid/generate_provider_from_defaults.yaml:25: policy "inference": key.type: generate: provider from defaults at line 15 makes Ed25519 keys only; add generate: local to this key (got "rsa")`,
		}},
		{"window_duration_too_long", []string{
			`invalid/window_duration_too_long.yaml:21: policy "gpu-team": window.duration: longer than the shortest time between two openings (1d, from Tue 2024-01-02 10:00 UTC to Wed 2024-01-03 10:00 UTC), so one window would still be open when the next opens; at most 1d (got "36h")`,
		}},
		{"window_gap_too_long", []string{
			`invalid/window_gap_too_long.yaml:20: policy "gpu-team": window: opens as much as 7d apart (from Tue 2024-01-02 10:00 UTC to Tue 2024-01-09 10:00 UTC), longer than rotate_before (3d): a key falling due just after a window opens would pass max_age before the next one opens; make rotate_before at least 7d or open windows more often`,
		}},
		{"window_every", []string{
			`invalid/window_every.yaml:19: policy "gpu-team": window.schedule: @every counts from whenever the daemon started, so windows would open at no fixed time; use a cron spec such as "0 10 * * 2-4" (got "@every 24h")`,
		}},
		{"window_without_duration", []string{
			`invalid/window_without_duration.yaml:19: policy "gpu-team": window.duration: required: how long each window stays open, such as 6h`,
		}},
		{"window_bad_cron", []string{
			`invalid/window_bad_cron.yaml:19: policy "gpu-team": window.schedule: invalid cron spec: end of range (9) above maximum (6): 2-9 (got "0 10 * * 2-9")`,
		}},
		{"window_not_a_mapping", []string{
			`invalid/window_not_a_mapping.yaml:18: policy "gpu-team": window: must be a mapping of keys to values (got "Tue-Thu 10:00-16:00")`,
		}},
		{"defaults_window_monthly", []string{
			`invalid/defaults_window_monthly.yaml:16: defaults.window: opens as much as 31d apart (from Mon 2024-01-01 10:00 UTC to Thu 2024-02-01 10:00 UTC), longer than rotate_before (7d by default): a key falling due just after a window opens would pass max_age before the next one opens; make rotate_before at least 31d or open windows more often`,
		}},
		{"rotate_before_short_for_window", []string{
			`invalid/rotate_before_short_for_window.yaml:19: policy "gpu-team": rotate_before: must be at least 5d: the window (from defaults at line 15) opens as much as 5d apart (from Thu 2024-01-04 10:00 UTC to Tue 2024-01-09 10:00 UTC), so a key falling due just after a window opens would pass max_age before the next one opens (got "2d")`,
		}},
		{"jitter_too_long", []string{
			`invalid/jitter_too_long.yaml:19: policy "gpu-team": jitter: must be shorter than the shortest time between two runs of schedule "@every 1h" (1h), or a delayed run could start after the next one is due (got "1h")`,
		}},
		{"jitter_cron_interval", []string{
			`invalid/jitter_cron_interval.yaml:19: policy "gpu-team": jitter: must be shorter than the shortest time between two runs of schedule "0 3,4 * * *" (1h, from Mon 2024-01-01 03:00 UTC to Mon 2024-01-01 04:00 UTC), or a delayed run could start after the next one is due (got "2h")`,
		}},
		{"jitter_longer_than_window", []string{
			`invalid/jitter_longer_than_window.yaml:20: policy "gpu-team": jitter: must be shorter than window.duration (6h): a run delayed longer would find the window closed (got "7h")`,
		}},
		{"jitter_past_max_age", []string{
			`invalid/jitter_past_max_age.yaml:21: policy "gpu-team": jitter: must be at most 0: the window (from defaults at line 16) opens as much as 5d apart (from Thu 2024-01-04 10:00 UTC to Tue 2024-01-09 10:00 UTC) and rotate_before is 5d from defaults at line 15, so with a longer jitter a key falling due just after a window opens would pass max_age before the next one opens (got "1h")`,
		}},
		{"webhook_literal_url", []string{
			`invalid/webhook_literal_url.yaml:14: webhook "deploy": url: use url_env: VAR or url_file: PATH; secrets are never written in the config`,
		}},
		{"webhook_url_env_holds_url", []string{
			`invalid/webhook_url_env_holds_url.yaml:14: webhook "deploy": url_env: must be the name of an environment variable (letters, digits, _), not the secret itself`,
		}},
		{"webhook_without_secret", []string{
			`invalid/webhook_without_secret.yaml:13: webhook "deploy": secret_env: one of secret_env or secret_file is required`,
		}},
		{"webhook_unknown_event", []string{
			`invalid/webhook_unknown_event.yaml:15: webhook #1: events: unknown event; events are rotated, deleted, failed, overdue, failing, recovered, exposed, host_updated, host_unreachable, host_key_changed, reload_failed or leader_changed (got "expired")`,
		}},
		{"webhook_no_events", []string{
			`invalid/webhook_no_events.yaml:16: webhook "deploy": events: must name at least one event; leave it out for every event`,
		}},
		{"webhook_same_name", []string{
			`invalid/webhook_same_name.yaml:16: webhook #2: name: the webhook at line 13 is also called DEPLOY_HOOK_URL; set distinct names`,
		}},
		{"webhook_named_slack", []string{
			`invalid/webhook_named_slack.yaml:13: webhook "slack": name: slack is reserved for the Slack notifications' outbox; name the webhook otherwise`,
		}},
		{"webhook_insecure_word", []string{
			`invalid/webhook_insecure_word.yaml:16: webhook "deploy": insecure: must be true or false (got "yes")`,
		}},
		{"yaml_syntax", []string{
			`invalid/yaml_syntax.yaml:17: invalid YAML: did not find expected ',' or ']'`,
		}},
	}
	covered := map[string]bool{"many_mistakes": true}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			cfg, err := parseFile(t, "invalid/"+tt.file+".yaml")
			assertErrors(t, cfg, err, tt.want)
		})
	}
	files, err := filepath.Glob("testdata/invalid/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if name := strings.TrimSuffix(filepath.Base(f), ".yaml"); !covered[name] {
			t.Errorf("%s has no expected messages in this table", f)
		}
	}
}

// One check run shows every mistake in the file, in the order of the file.
func TestParse_manyMistakes(t *testing.T) {
	cfg, err := parseFile(t, "invalid/many_mistakes.yaml")
	assertErrors(t, cfg, err, []string{
		`invalid/many_mistakes.yaml:3: vault.address: must start with https:// or http:// (got "vault.internal:8200")`,
		`invalid/many_mistakes.yaml:5: vault.auth.token: use token_env: VAR or token_file: PATH; secrets are never written in the config`,
		`invalid/many_mistakes.yaml:10: provider "sesterce-prod": ratelimit: unknown key; did you mean rate_limit?`,
		`invalid/many_mistakes.yaml:14: policy "gpu-team": schedule: invalid cron spec: expected exactly 5 fields, found 2: [* *] (got "* *")`,
		`invalid/many_mistakes.yaml:16: policy "gpu-team": grace_period: must be shorter than max_age (30d) (got "45d")`,
		`invalid/many_mistakes.yaml:17: policy "gpu-team": vault_path: must not start or end with /; it is relative to the mount (got "/ssh/sesterce/gpu-team")`,
		`invalid/many_mistakes.yaml:19: policy "inference": provider: no such provider is defined under providers (got "gcore-prd")`,
		`invalid/many_mistakes.yaml:21: policy "inference": key.curve: only for type ecdsa (type is rsa) (got "p384")`,
	})
}

const day = 24 * time.Hour

var allEvents = []string{"rotated", "deleted", "failed", "overdue", "failing", "recovered", "exposed", "host_updated", "host_unreachable", "host_key_changed"}

// The parsed config carries every resolved value, so nothing downstream
// applies a default again.
func TestParse_valid(t *testing.T) {
	tests := []struct {
		file string
		want *Config
	}{
		{"valid/minimal.yaml", &Config{
			File:    "valid/minimal.yaml",
			State:   StateConfig{Backend: BackendBolt, Path: "/var/lib/rotatord/state.db"},
			Control: ControlConfig{Socket: "/run/rotatord/rotatord.sock"},
			Vault: VaultConfig{Address: "https://vault.internal:8200", Mount: "secret",
				Auth: VaultAuth{Method: "token", TokenEnv: "VAULT_TOKEN"}},
			Providers: []Provider{{Name: "sesterce-prod", Type: "sesterce", BaseURL: "https://api.cloud.sesterce.com",
				APIKeyEnv: "SESTERCE_API_KEY", Line: 5}},
			Policies: []Policy{{
				Name: "gpu-team", Provider: "sesterce-prod", ProviderType: "sesterce",
				Schedule: "0 3 * * *", MaxAge: 90 * day, RotateBefore: 7 * day, GracePeriod: 7 * day, MaxFailures: 5,
				Key:         KeySpec{Type: "ed25519", Generate: "local"},
				MakeDefault: true, NamePrefix: "gpu-team", VaultPath: "ssh/sesterce/gpu-team",
				Notify: Notify{On: allEvents}, Line: 9,
			}},
		}},
		{"valid/defaults.yaml", &Config{
			File:    "valid/defaults.yaml",
			State:   StateConfig{Backend: BackendBolt, Path: "/var/lib/rotatord/state.db"},
			Control: ControlConfig{Socket: "/run/rotatord/rotatord.sock"},
			Vault: VaultConfig{Address: "https://vault.internal:8200", Mount: "kv/ssh",
				Auth: VaultAuth{Method: "token", TokenEnv: "VAULT_TOKEN"}},
			Slack: &SlackConfig{TokenFile: "/etc/rotatord/slack.token", Channel: "#ops-keys"},
			Providers: []Provider{
				{Name: "sesterce-prod", Type: "sesterce", BaseURL: "https://api.cloud.sesterce.com", APIKeyEnv: "SESTERCE_API_KEY", Line: 9},
				{Name: "gcore-prod", Type: "gcore", BaseURL: "http://127.0.0.1:8081", APIKeyFile: "/etc/rotatord/gcore.key", RateLimit: 2.5, Line: 12},
			},
			Policies: []Policy{
				{
					Name: "everything-inherited", Provider: "sesterce-prod", ProviderType: "sesterce",
					Schedule: "@daily", MaxAge: 60 * day, RotateBefore: 3 * day, GracePeriod: 36 * time.Hour, MaxFailures: 3,
					Key:         KeySpec{Type: "rsa", Bits: 4096, Generate: "local"},
					MakeDefault: true, NamePrefix: "everything-inherited", VaultPath: "ssh/a",
					Notify: Notify{Channel: "#keys", On: []string{"failed", "overdue"}}, Line: 32,
				},
				{
					Name: "gcore-ecdsa", Provider: "gcore-prod", ProviderType: "gcore", ProjectID: 77, SharedInProject: true,
					Schedule: "@daily", MaxAge: 7 * day, RotateBefore: 3 * day, GracePeriod: 36 * time.Hour, MaxFailures: 3,
					Key:        KeySpec{Type: "ecdsa", Curve: "p256", Generate: "local"},
					NamePrefix: "gcore-ecdsa", VaultPath: "ssh/b",
					Notify: Notify{Channel: "#keys", On: []string{"failed", "overdue"}}, Line: 35,
				},
				{
					Name: "own-values", Provider: "sesterce-prod", ProviderType: "sesterce",
					Schedule: "30 4 * * 1-5", MaxAge: 60 * day, RotateBefore: 3 * day, GracePeriod: 36 * time.Hour, MaxFailures: 3,
					Key:        KeySpec{Type: "rsa", Bits: 4096, Generate: "local"},
					NamePrefix: "own", VaultPath: "ssh/c",
					Notify: Notify{Channel: "#keys", On: []string{}}, Line: 41,
				},
				{
					Name: "gcore-generated", Provider: "gcore-prod", ProviderType: "gcore", ProjectID: 88,
					Schedule: "@daily", MaxAge: 60 * day, RotateBefore: 3 * day, GracePeriod: 36 * time.Hour, MaxFailures: 3,
					Key:        KeySpec{Type: "ed25519", Generate: "provider"},
					NamePrefix: "gcore-generated", VaultPath: "ssh/d",
					Notify: Notify{Channel: "#keys", On: []string{"failed", "overdue"}}, Line: 49,
				},
			},
		}},
		{"valid/approle_anchors.yaml", &Config{
			File:    "valid/approle_anchors.yaml",
			State:   StateConfig{Backend: BackendBolt, Path: "./state.db"},
			Control: ControlConfig{Socket: "rotatord.sock"},
			Metrics: MetricsConfig{Listen: ":9464"},
			Vault: VaultConfig{Address: "http://127.0.0.1:8200", Mount: "secret",
				Auth: VaultAuth{Method: "approle", RoleIDFile: "/etc/rotatord/role-id",
					SecretIDFile: "/etc/rotatord/secret-id", AppRoleMount: "rotatord-approle"}},
			Slack:  &SlackConfig{WebhookURLEnv: "SLACK_WEBHOOK_URL", Channel: "#ops"},
			Report: &ReportConfig{Schedule: "CRON_TZ=UTC 0 9 * * 1", Channel: "#ops"},
			Providers: []Provider{{Name: "gcore-prod", Type: "gcore", BaseURL: "https://api.gcore.com",
				APIKeyEnv: "GCORE_API_KEY", Line: 19}},
			Policies: []Policy{
				{
					Name: "ci-runners", Provider: "gcore-prod", ProviderType: "gcore", ProjectID: 1234, SharedInProject: true,
					Schedule: "@every 6h", MaxAge: 36 * time.Hour, RotateBefore: 12 * time.Hour, GracePeriod: 0, MaxFailures: 5,
					Key:        KeySpec{Type: "ed25519", Generate: "local"},
					NamePrefix: "ci-runners", VaultPath: "ssh/gcore/ci", Notify: Notify{On: allEvents}, Line: 30,
				},
				{
					Name: "build-farm", Provider: "gcore-prod", ProviderType: "gcore", ProjectID: 1234, SharedInProject: true,
					Schedule: "@every 6h", MaxAge: 2 * day, RotateBefore: 12 * time.Hour, GracePeriod: 0, MaxFailures: 5,
					Key:        KeySpec{Type: "ed25519", Generate: "local"},
					NamePrefix: "build-farm", VaultPath: "ssh/gcore/build", Notify: Notify{On: allEvents}, Line: 33,
				},
			},
		}},
		{"valid/window.yaml", &Config{
			File:    "valid/window.yaml",
			State:   StateConfig{Backend: BackendBolt, Path: "/var/lib/rotatord/state.db"},
			Control: ControlConfig{Socket: "/run/rotatord/rotatord.sock"},
			Vault: VaultConfig{Address: "https://vault.internal:8200", Mount: "secret",
				Auth: VaultAuth{Method: "token", TokenEnv: "VAULT_TOKEN"}},
			Providers: []Provider{{Name: "sesterce-prod", Type: "sesterce", BaseURL: "https://api.cloud.sesterce.com",
				APIKeyEnv: "SESTERCE_API_KEY", Line: 5}},
			Policies: []Policy{
				{
					Name: "inherits", Provider: "sesterce-prod", ProviderType: "sesterce",
					Schedule: "0 3 * * *", MaxAge: 90 * day, RotateBefore: 7 * day, GracePeriod: 7 * day, MaxFailures: 5,
					Key:         KeySpec{Type: "ed25519", Generate: "local"},
					MakeDefault: true, NamePrefix: "inherits", VaultPath: "ssh/a", Notify: Notify{On: allEvents},
					Window: &Window{Schedule: "0 10 * * 2-4", Duration: 6 * time.Hour}, Jitter: 10 * time.Minute, Line: 14,
				},
				{
					// A weekly window in a zone with summer time: openings
					// are 6d23h to 7d1h apart in UTC, so 7d would overlap
					// once a year, and rotate_before must cover 7d1h.
					Name: "own-window", Provider: "sesterce-prod", ProviderType: "sesterce",
					Schedule: "0 3 * * *", MaxAge: 90 * day, RotateBefore: 8 * day, GracePeriod: 7 * day, MaxFailures: 5,
					Key:        KeySpec{Type: "ed25519", Generate: "local"},
					NamePrefix: "own-window", VaultPath: "ssh/b", Notify: Notify{On: allEvents},
					Window: &Window{Schedule: "CRON_TZ=Europe/Berlin 0 22 * * 1", Duration: 6 * day}, Line: 17,
				},
			},
		}},
		{"valid/webhooks.yaml", &Config{
			File:    "valid/webhooks.yaml",
			State:   StateConfig{Backend: BackendBolt, Path: "/var/lib/rotatord/state.db"},
			Control: ControlConfig{Socket: "/run/rotatord/rotatord.sock"},
			Vault: VaultConfig{Address: "https://vault.internal:8200", Mount: "secret",
				Auth: VaultAuth{Method: "token", TokenEnv: "VAULT_TOKEN"}},
			Providers: []Provider{{Name: "sesterce-prod", Type: "sesterce", BaseURL: "https://api.cloud.sesterce.com",
				APIKeyEnv: "SESTERCE_API_KEY", Line: 5}},
			Policies: []Policy{{
				Name: "gpu-team", Provider: "sesterce-prod", ProviderType: "sesterce",
				Schedule: "0 3 * * *", MaxAge: 90 * day, RotateBefore: 7 * day, GracePeriod: 7 * day, MaxFailures: 5,
				Key:         KeySpec{Type: "ed25519", Generate: "local"},
				MakeDefault: true, NamePrefix: "gpu-team", VaultPath: "ssh/sesterce/gpu-team",
				Notify: Notify{On: allEvents}, Line: 9,
			}},
			Webhooks: []Webhook{
				{Name: "DEPLOY_HOOK_URL", URLEnv: "DEPLOY_HOOK_URL", SecretEnv: "DEPLOY_HOOK_SECRET",
					Events: append(allEvents[:len(allEvents):len(allEvents)], "reload_failed", "leader_changed"), Line: 13},
				{Name: "secrets-sync", URLFile: "/etc/rotatord/sync.url", SecretFile: "/etc/rotatord/sync.secret",
					Events: []string{"rotated", "reload_failed"}, Insecure: true, Line: 15},
				{Name: "audit-hook", URLFile: "/run/credentials/rotatord.service/audit hook.url", SecretFile: "/etc/rotatord/audit.secret",
					Events: []string{"failed"}, Line: 20},
			},
		}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			got, err := parseFile(t, tt.file)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Slack != nil && tt.want.Slack != nil && *got.Slack != *tt.want.Slack {
				t.Errorf("Slack = %+v, want %+v", *got.Slack, *tt.want.Slack)
			}
			if got.Report != nil && tt.want.Report != nil && *got.Report != *tt.want.Report {
				t.Errorf("Report = %+v, want %+v", *got.Report, *tt.want.Report)
			}
			for i := range max(len(got.Policies), len(tt.want.Policies)) {
				if i >= len(got.Policies) || i >= len(tt.want.Policies) {
					t.Errorf("got %d policies, want %d", len(got.Policies), len(tt.want.Policies))
					break
				}
				if !reflect.DeepEqual(got.Policies[i], tt.want.Policies[i]) {
					t.Errorf("policy %d:\n got %+v\nwant %+v", i, got.Policies[i], tt.want.Policies[i])
				}
			}
			if tt.want.Audit == (AuditConfig{}) {
				tt.want.Audit.Retention = DefaultAuditRetention // none of these sets it
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("config:\n got %+v\nwant %+v", *got, *tt.want)
			}
		})
	}
}

// The annotated reference at the repository root must stay a valid config
// that means what its comments say.
func TestLoad_example(t *testing.T) {
	cfg, err := Load("../policies.example.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.File != "../policies.example.yaml" {
		t.Errorf("File = %q", cfg.File)
	}
	if cfg.Metrics.Listen != "127.0.0.1:9464" || cfg.Vault.Auth.TokenEnv != "VAULT_TOKEN" || cfg.Vault.Mount != "secret" {
		t.Errorf("sections = %+v %+v", cfg.Metrics, cfg.Vault)
	}
	if cfg.Report == nil || cfg.Report.Schedule != "0 9 * * 1" || cfg.Report.Channel != "#compliance" {
		t.Errorf("Report = %+v", cfg.Report)
	}
	gpu, ok := cfg.PolicyByName("gpu-team")
	if !ok {
		t.Fatal("no policy gpu-team")
	}
	if gpu.ProviderType != TypeSesterce || gpu.MaxAge != 30*day || gpu.RotateBefore != 7*day || !gpu.MakeDefault ||
		gpu.NamePrefix != "gpu-team" || gpu.Notify.Channel != "#gpu-ops" || len(gpu.Notify.On) != 4 {
		t.Errorf("gpu-team = %+v", gpu)
	}
	if gpu.Window == nil || *gpu.Window != (Window{Schedule: "0 10 * * 2-4", Duration: 6 * time.Hour}) || gpu.Jitter != 10*time.Minute {
		t.Errorf("gpu-team window %+v, jitter %v", gpu.Window, gpu.Jitter)
	}
	inf, ok := cfg.PolicyByName("inference")
	if !ok {
		t.Fatal("no policy inference")
	}
	if inf.ProviderType != TypeGcore || inf.ProjectID != 1234 || !inf.SharedInProject || inf.MakeDefault ||
		inf.MaxAge != 90*day || inf.Schedule != "0 3 * * *" || inf.Key != (KeySpec{Type: "ed25519", Generate: "local"}) ||
		!reflect.DeepEqual(inf.Notify.On, allEvents) || inf.Window != nil || inf.Jitter != 0 {
		t.Errorf("inference = %+v", inf)
	}
	if want := []Webhook{{Name: "deploy-pipeline", URLEnv: "DEPLOY_HOOK_URL", SecretEnv: "DEPLOY_HOOK_SECRET",
		Events: []string{"rotated", "deleted", "failed"}, Line: len(strings.Split(exampleUntil(t, "  - name: deploy-pipeline"), "\n"))}}; !reflect.DeepEqual(cfg.Webhooks, want) {
		t.Errorf("Webhooks = %+v, want %+v", cfg.Webhooks, want)
	}
	gcore, ok := cfg.ProviderByName("gcore-prod")
	if !ok || gcore.APIKeyFile != "/etc/rotatord/gcore.key" || gcore.BaseURL != "https://api.gcore.com" {
		t.Errorf("gcore-prod = %+v", gcore)
	}
}

func TestLoad_missingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want not exist", err)
	}
	if want := "open config: open testdata/does-not-exist.yaml: no such file or directory"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}

// policies.example.yaml is the reference: every key the parser knows is
// shown there, set or commented out.
func TestLoad_exampleDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../policies.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, keys := range [][]string{topKeys, vaultKeys, authKeys, slackKeys, reportKeys, providerKeys, policyKeys, keySpecKeys, notifyKeys, windowKeys, webhookKeys, hostsKeys,
		{"path", "socket", "listen"}} {
		for _, k := range keys {
			if !strings.Contains(text, " "+k+":") && !strings.Contains(text, "\n"+k+":") {
				t.Errorf("policies.example.yaml does not show %s", k)
			}
		}
	}
}

// exampleUntil returns policies.example.yaml up to the line that starts
// with prefix, that line included.
func exampleUntil(t *testing.T, prefix string) string {
	t.Helper()
	b, err := os.ReadFile("../policies.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i := strings.Index(text, "\n"+prefix)
	if i < 0 {
		t.Fatalf("policies.example.yaml has no line %q", prefix)
	}
	return text[:i+1+len(prefix)]
}
