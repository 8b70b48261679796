package policy

import (
	"reflect"
	"testing"
	"time"
)

// Each file under testdata/invalid/hosts_* holds mistakes in a hosts block;
// the messages, lines included, are what `rotatord check` prints.
func TestParse_hostsInvalid(t *testing.T) {
	tests := []struct {
		file string
		want []string
	}{
		{"hosts_no_host_key_check", []string{
			`invalid_hosts/hosts_no_host_key_check.yaml:13: policy "gpu-team": hosts.known_hosts: required unless trust_on_first_use: true; rotatord never logs in to a host whose host key it cannot check`,
		}},
		{"hosts_bad_target", []string{
			`invalid_hosts/hosts_bad_target.yaml:16: policy "gpu-team": hosts.targets[0]: port must be a number from 1 to 65535 (got "10.0.0.5:70000")`,
			`invalid_hosts/hosts_bad_target.yaml:17: policy "gpu-team": hosts.targets[1]: no host (got "ubuntu@")`,
			`invalid_hosts/hosts_bad_target.yaml:18: policy "gpu-team": hosts.targets[2]: brackets hold an IPv6 address only (got "[10.0.0.6]:22")`,
			`invalid_hosts/hosts_bad_target.yaml:20: policy "gpu-team": hosts.targets[4]: same host as the target at line 19 (got "10.0.0.7:22")`,
			`invalid_hosts/hosts_bad_target.yaml:21: policy "gpu-team": hosts.targets[5]: invalid host (got "host name")`,
		}},
		{"hosts_no_user", []string{
			`invalid_hosts/hosts_no_user.yaml:14: policy "gpu-team": hosts.targets[0]: no user: write user@host or set hosts.user (got "10.0.0.6:2222")`,
		}},
		{"hosts_nothing", []string{
			`invalid_hosts/hosts_nothing.yaml:13: policy "gpu-team": hosts.targets: required unless discover: true: the hosts to keep converged, such as [ubuntu@10.0.0.5, "10.0.0.6:2222"]`,
			`invalid_hosts/hosts_nothing.yaml:14: policy "gpu-team": hosts.port: must be a port number from 1 to 65535 (got "0")`,
			`invalid_hosts/hosts_nothing.yaml:15: policy "gpu-team": hosts.concurrency: must be from 1 to 1024 (got "0")`,
			`invalid_hosts/hosts_nothing.yaml:16: policy "gpu-team": hosts.timeout: must be from 1s to 10m (got "0s")`,
			`invalid_hosts/hosts_nothing.yaml:17: policy "gpu-team": hosts.authorized_keys: must not contain ".." (got "../../etc/shadow")`,
			`invalid_hosts/hosts_nothing.yaml:18: policy "gpu-team": hosts.retries: unknown key; expected one of discover, targets, user, port, known_hosts, trust_on_first_use, authorized_keys, concurrency, timeout`,
		}},
		{"hosts_discover_no_inventory", []string{
			`invalid_hosts/hosts_discover_no_inventory.yaml:13: policy "gpu-team": hosts.discover: provider "sesterce-prod" has inventory: false, so no machine would be discovered; drop discover or turn the inventory on`,
		}},
		{"hosts_discover_gcore_no_user", []string{
			`invalid_hosts/hosts_discover_gcore_no_user.yaml:13: policy "inference": hosts.user: required with discover on a gcore provider: Gcore does not say which user logs in to an instance`,
		}},
		{"hosts_not_a_mapping", []string{
			`invalid_hosts/hosts_not_a_mapping.yaml:12: policy "gpu-team": hosts: must be a mapping of keys to values (got a list)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			cfg, err := parseFile(t, "invalid_hosts/"+tt.file+".yaml")
			assertErrors(t, cfg, err, tt.want)
		})
	}
}

func TestParse_hosts(t *testing.T) {
	cfg, err := parseFile(t, "valid/hosts.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	gpu, _ := cfg.PolicyByName("gpu-team")
	want := &Hosts{
		Targets: []HostTarget{
			{User: "ubuntu", Addr: "10.0.0.5", Port: 2022, Line: 22},
			{User: "ops", Addr: "10.0.0.6", Port: 2222, Line: 22},
			{User: "ops", Addr: "fe80::1", Port: 2200, Line: 22},
			{User: "admin", Addr: "fe80::2", Port: 2022, Line: 22},
			{User: "ops", Addr: "build.internal", Port: 2022, Line: 22},
		},
		User: "ops", Port: 2022, KnownHosts: "/etc/rotatord/known_hosts",
		AuthorizedKeys: "/home/ops/.ssh/authorized_keys2", Concurrency: 4, Timeout: 10 * time.Second, Line: 21,
	}
	if !reflect.DeepEqual(gpu.Hosts, want) {
		t.Errorf("gpu-team hosts:\n got %+v\nwant %+v", gpu.Hosts, want)
	}
	if got := gpu.Hosts.Targets[2].String(); got != "ops@[fe80::1]:2200" {
		t.Errorf("String = %q", got)
	}
	inf, _ := cfg.PolicyByName("inference")
	wantInf := &Hosts{Discover: true, TrustOnFirstUse: true, User: "root", Port: 22, AuthorizedKeys: ".ssh/authorized_keys",
		Concurrency: 16, Timeout: 30 * time.Second, Line: 13}
	if !reflect.DeepEqual(inf.Hosts, wantInf) {
		t.Errorf("inference hosts (from defaults):\n got %+v\nwant %+v", inf.Hosts, wantInf)
	}
	if !reflect.DeepEqual(inf.Notify.On, allEvents) {
		t.Errorf("default notify.on = %v, want every event including the host ones", inf.Notify.On)
	}
}

func TestParseHostTarget(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    HostTarget
		wantErr string
	}{
		{in: "10.0.0.5", want: HostTarget{User: "u", Addr: "10.0.0.5", Port: 22}},
		{in: "a@h.example:2222", want: HostTarget{User: "a", Addr: "h.example", Port: 2222}},
		{in: "[::1]:22", want: HostTarget{User: "u", Addr: "::1", Port: 22}},
		{in: "::1", want: HostTarget{User: "u", Addr: "::1", Port: 22}},
		{in: "h:", wantErr: "empty port after ':'"},
		{in: "[::1", wantErr: "unclosed '[' around an IPv6 address"},
		{in: "a b@h", wantErr: "invalid user before '@'"},
		{in: "-oProxyCommand=x", wantErr: "invalid host"},
		{in: "1:2:3", wantErr: "invalid host; write an IPv6 address with a port as [addr]:port"},
	} {
		got, err := ParseHostTarget(tc.in, "u", 0)
		switch {
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("%q: err = %v, want %q", tc.in, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("%q = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// The reference config shows a hosts block that parses to what its
// comments say.
func TestLoad_exampleHosts(t *testing.T) {
	cfg, err := Load("../policies.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	gpu, _ := cfg.PolicyByName("gpu-team")
	h := gpu.Hosts
	if h == nil || len(h.Targets) != 2 || h.Targets[1].String() != "ubuntu@10.0.0.6:2222" || h.KnownHosts != "/etc/rotatord/known_hosts" ||
		h.Concurrency != 16 || h.Timeout != 30*time.Second || h.AuthorizedKeys != ".ssh/authorized_keys" || h.TrustOnFirstUse || h.Discover {
		t.Errorf("gpu-team hosts = %+v", h)
	}
	if inf, _ := cfg.PolicyByName("inference"); inf.Hosts != nil {
		t.Errorf("inference has hosts %+v; the example sets none", inf.Hosts)
	}
}
