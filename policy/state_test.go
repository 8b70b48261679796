package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The state section's mistakes, each in its own testdata/invalid file with
// the exact message `rotatord check` prints.
func TestParse_invalidState(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string
	}{
		{"etcd_no_endpoints", []string{`invalid_state/etcd_no_endpoints.yaml:5: state.etcd.endpoints: required: the cluster's client URLs, such as [https://10.0.0.1:2379]`}},
		{"etcd_with_path", []string{`invalid_state/etcd_with_path.yaml:4: state.path: only used with backend bbolt (backend is etcd) (got "/var/lib/rotatord/state.db")`}},
		{"etcd_user_without_password", []string{`invalid_state/etcd_user_without_password.yaml:6: state.etcd.username_env: needs password_env or password_file`}},
		{"etcd_lease_too_short", []string{`invalid_state/etcd_lease_too_short.yaml:6: state.etcd.lease_ttl: must be from 2s to 5m: how long a silent leader keeps leading (got "1s")`}},
		{"etcd_without_backend", []string{`invalid_state/etcd_without_backend.yaml:3: state.etcd: only used with backend etcd; add backend: etcd, or leave etcd out`}},
		{"etcd_endpoint_credentials", []string{`invalid_state/etcd_endpoint_credentials.yaml:7: state.etcd.endpoints: must not carry credentials; use username_env with password_env or password_file`}},
		{"state_unknown_backend", []string{`invalid_state/state_unknown_backend.yaml:3: state.backend: must be bbolt or etcd (got "postgres")`}},
		{"audit_retention_short", []string{`invalid_state/audit_retention_short.yaml:3: audit.retention: must be 30d or more (the default, 400d, keeps a year and a month) (got "7d")`}},
		{"etcd_cert_without_key", []string{`invalid_state/etcd_cert_without_key.yaml:6: state.etcd.tls.key_file: required with cert_file (a client certificate needs its key)`}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			cfg, err := Load(filepath.Join("testdata", "invalid_state", tc.file+".yaml"))
			for i, w := range tc.want {
				tc.want[i] = "testdata/" + w
			}
			assertErrors(t, cfg, err, tc.want)
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error quotes the password: %v", err)
			}
		})
	}
}

func TestParse_etcdState(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`
state:
  backend: etcd
  etcd:
    endpoints: ["https://10.0.0.1:2379/", "http://127.0.0.1:2379"]
    username_env: ETCD_USER
    password_file: /etc/rotatord/etcd.password
    tls: {ca_file: /etc/rotatord/ca.pem}
    lease_ttl: 15s
vault: {address: https://vault.internal:8200}
providers:
  - {name: sesterce-prod, type: sesterce, api_key_env: SESTERCE_API_KEY}
policies:
  - {name: gpu-team, provider: sesterce-prod, vault_path: ssh/sesterce/gpu-team}
`), "policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := StateConfig{Backend: BackendEtcd, Etcd: &EtcdConfig{
		Endpoints: []string{"https://10.0.0.1:2379", "http://127.0.0.1:2379"}, Prefix: DefaultEtcdPrefix,
		UsernameEnv: "ETCD_USER", PasswordFile: "/etc/rotatord/etcd.password",
		TLS: EtcdTLS{CAFile: "/etc/rotatord/ca.pem"}, LeaseTTL: 15 * time.Second,
	}}
	if !cfg.State.Equal(want) {
		t.Errorf("state = %+v %+v\nwant %+v %+v", cfg.State, cfg.State.Etcd, want, want.Etcd)
	}
	other := want
	e := *want.Etcd
	e.Endpoints = []string{"https://10.0.0.1:2379"}
	other.Etcd = &e
	if cfg.State.Equal(other) {
		t.Error("Equal ignores the endpoints")
	}
}

func TestLoad_exampleDocumentsStateKeys(t *testing.T) {
	b, err := os.ReadFile("../policies.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, keys := range [][]string{stateKeys, etcdKeys, etcdTLSKeys, auditKeys} {
		for _, k := range keys {
			if !strings.Contains(string(b), " "+k+":") {
				t.Errorf("policies.example.yaml does not show state key %s", k)
			}
		}
	}
}
