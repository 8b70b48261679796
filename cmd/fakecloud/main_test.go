package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// start runs fakecloud on a free port and returns its URL; the server stops
// (and must exit 0) when the test ends.
func start(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, append([]string{"-listen", "127.0.0.1:0"}, args...), pw, io.Discard, func(k string) string { return env[k] })
		_ = pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("read first line: %v (exit %d)", err, <-code)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if !ok || !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, ":0") {
		t.Fatalf("first line %q, want listening on http://127.0.0.1:<port>", line)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case c := <-code:
			if c != 0 {
				t.Errorf("exit code %d after SIGTERM-equivalent, want 0", c)
			}
		case <-time.After(10 * time.Second):
			t.Error("fakecloud did not stop")
		}
	})
	return url
}

func do(t *testing.T, method, url string, header map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

const testPub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIjxL6g1II8NsO8odvBwGKvq2Dx/h/xrvsV9b9LVIYKm demo@host"

func TestRun_AdminKeys(t *testing.T) {
	url := start(t, map[string]string{"FAKECLOUD_SESTERCE_KEY": "s-env", "FAKECLOUD_GCORE_KEY": "g-env"})
	sesterce := map[string]string{"x-api-key": "s-env"}
	gcore := map[string]string{"Authorization": "APIKey g-env"}

	if code, body := do(t, "GET", url+"/admin/healthz", nil, ""); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("healthz: %d %s", code, body)
	}
	if code, body := do(t, "GET", url+"/admin/keys", nil, ""); code != 200 || strings.Join(strings.Fields(body), "") != `{"sesterce":[],"gcore":[]}` {
		t.Errorf("empty keys view: %d %s, want empty lists", code, body)
	}
	if code, body := do(t, "POST", url+"/gpu-cloud/ssh-keys", sesterce, fmt.Sprintf(`{"name":"s1","publicKey":%q}`, testPub)); code != 201 {
		t.Fatalf("sesterce create with the env key: %d %s", code, body)
	}
	if code, body := do(t, "POST", url+"/cloud/v1/ssh_keys/12", gcore, `{"name":"g1"}`); code != 201 {
		t.Fatalf("gcore create with the env key: %d %s", code, body)
	}
	_, created := do(t, "POST", url+"/cloud/v1/ssh_keys/34", gcore, `{"name":"generated"}`)
	var gen struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal([]byte(created), &gen); err != nil || !strings.Contains(gen.PrivateKey, "OPENSSH PRIVATE KEY") {
		t.Fatalf("server-side generation returned %s", created)
	}

	code, body := do(t, "GET", url+"/admin/keys", nil, "")
	var view struct {
		Sesterce []struct {
			Name      string `json:"name"`
			PublicKey string `json:"public_key"`
		} `json:"sesterce"`
		Gcore []struct {
			Name      string `json:"name"`
			ProjectID int64  `json:"project_id"`
		} `json:"gcore"`
	}
	if err := json.Unmarshal([]byte(body), &view); code != 200 || err != nil {
		t.Fatalf("keys view: %d %v %s", code, err, body)
	}
	if len(view.Sesterce) != 1 || view.Sesterce[0].Name != "s1" || view.Sesterce[0].PublicKey != testPub {
		t.Errorf("sesterce keys %+v, want s1 with its public key", view.Sesterce)
	}
	if len(view.Gcore) != 2 || view.Gcore[0].ProjectID != 12 || view.Gcore[1].ProjectID != 34 {
		t.Errorf("gcore keys %+v, want g1 in project 12 and generated in 34", view.Gcore)
	}
	lines := strings.Split(strings.TrimSpace(gen.PrivateKey), "\n")
	for _, l := range lines[2 : len(lines)-1] {
		if strings.Contains(body, l) || strings.Contains(body, "PRIVATE") {
			t.Fatal("the keys view shows a private key")
		}
	}
}

func TestRun_AdminFaults(t *testing.T) {
	url := start(t, nil)
	sesterce := map[string]string{"x-api-key": "fake-sesterce-key"}

	rules := `[{"route":"GET /gpu-cloud/ssh-keys","kind":"status","status":502,"count":1},{"route":"*","kind":"latency","delay":"1ms"}]`
	if code, body := do(t, "POST", url+"/admin/faults", nil, rules); code != 200 || !strings.Contains(body, `"status": 502`) {
		t.Fatalf("set faults: %d %s", code, body)
	}
	if code, body := do(t, "GET", url+"/gpu-cloud/ssh-keys", sesterce, ""); code != 502 {
		t.Errorf("first list after the rule: %d %s, want 502", code, body)
	}
	if code, body := do(t, "GET", url+"/gpu-cloud/ssh-keys", sesterce, ""); code != 200 {
		t.Errorf("second list: %d %s, want 200 once the count is spent", code, body)
	}
	if code, body := do(t, "GET", url+"/admin/faults", nil, ""); code != 200 || strings.Contains(body, "502") || !strings.Contains(body, "latency") {
		t.Errorf("rules in force: %d %s, want only the latency rule", code, body)
	}
	for _, bad := range []string{`{"route":"*"}`, `[{"route":"*","kind":"explode"}]`, `[{"route":"*","kind":"drop","typo":1}]`} {
		if code, body := do(t, "POST", url+"/admin/faults", nil, bad); code != 400 || !strings.Contains(body, "error") {
			t.Errorf("set faults %s: %d %s, want 400 with an error", bad, code, body)
		}
	}
	if code, body := do(t, "POST", url+"/admin/faults", nil, `[]`); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("clear faults: %d %s", code, body)
	}
	if code, body := do(t, "GET", url+"/admin/requests", nil, ""); code != 200 || !strings.Contains(body, `"GET /gpu-cloud/ssh-keys": 2`) {
		t.Errorf("request counts: %d %s, want 2 sesterce lists", code, body)
	}
}

func TestRun_FlagFaults(t *testing.T) {
	url := start(t, nil, "-sesterce-key", "flag-key", "-error-rate", "1", "-error-status", "500")
	code, body := do(t, "GET", url+"/gpu-cloud/ssh-keys", map[string]string{"x-api-key": "flag-key"}, "")
	if code != 500 || !strings.Contains(body, `"statusCode":500`) {
		t.Errorf("with -error-rate 1: %d %s, want a Sesterce-shaped 500", code, body)
	}
	if code, body := do(t, "GET", url+"/admin/faults-met", nil, ""); code != 200 || !strings.Contains(body, `"status": 1`) {
		t.Errorf("faults met: %d %s, want one status fault", code, body)
	}
}

func TestRun_HangReleasedOnStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"-listen", "127.0.0.1:0", "-hang-rate", "1"}, pw, io.Discard, func(string) string { return "" })
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimPrefix(strings.TrimSpace(line), "listening on ")
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(url + "/gpu-cloud/ssh-keys")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	// Wait until the request is held, then stop: the hung request must not
	// keep the process alive.
	for {
		_, body := do(t, "GET", url+"/admin/requests", nil, "")
		if strings.Contains(body, `"GET /gpu-cloud/ssh-keys": 1`) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d, want 0", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fakecloud did not stop while a request hung")
	}
	<-done
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr bool
		check   func(t *testing.T, c config)
	}{
		{name: "env keys", env: map[string]string{"FAKECLOUD_SESTERCE_KEY": "s", "FAKECLOUD_GCORE_KEY": "g"}, check: func(t *testing.T, c config) {
			if c.sesterceKey.Reveal() != "s" || c.gcoreKey.Reveal() != "g" {
				t.Errorf("keys %q %q, want the env values", c.sesterceKey.Reveal(), c.gcoreKey.Reveal())
			}
		}},
		{name: "sesterce accounts from env", env: map[string]string{"FAKECLOUD_SESTERCE_KEY": "s0,s1,s2"}, check: func(t *testing.T, c config) {
			if c.sesterceKey.Reveal() != "s0" || len(c.moreSesterce) != 2 || c.moreSesterce[1].Reveal() != "s2" {
				t.Errorf("sesterce keys %q + %d more, want s0 + [s1 s2]", c.sesterceKey.Reveal(), len(c.moreSesterce))
			}
		}},
		{name: "sesterce accounts from flags", args: []string{"-sesterce-key", "f0", "-sesterce-key", "f1"}, env: map[string]string{"FAKECLOUD_SESTERCE_KEY": "e0,e1,e2"}, check: func(t *testing.T, c config) {
			if c.sesterceKey.Reveal() != "f0" || len(c.moreSesterce) != 1 || c.moreSesterce[0].Reveal() != "f1" {
				t.Errorf("sesterce keys %q + %d more, want f0 + [f1]", c.sesterceKey.Reveal(), len(c.moreSesterce))
			}
		}},
		{name: "repeated sesterce key", env: map[string]string{"FAKECLOUD_SESTERCE_KEY": "s0,s1,s0"}, wantErr: true},
		{name: "empty sesterce key", env: map[string]string{"FAKECLOUD_SESTERCE_KEY": "s0,,s1"}, wantErr: true},
		{name: "flag beats env", args: []string{"-gcore-key", "flag"}, env: map[string]string{"FAKECLOUD_GCORE_KEY": "env"}, check: func(t *testing.T, c config) {
			if c.gcoreKey.Reveal() != "flag" {
				t.Errorf("gcore key %q, want flag", c.gcoreKey.Reveal())
			}
		}},
		{name: "rates become rules in order", args: []string{"-error-rate", "0.1", "-rate-limit-rate", "0.05", "-hang-rate", "0.01", "-retry-after", "3s"}, check: func(t *testing.T, c config) {
			fs := c.faults()
			if len(fs) != 3 || fs[0].Kind != "status" || fs[0].Status != 503 || fs[1].Kind != "rate_limit" || fs[1].RetryAfter != 3*time.Second || fs[2].Kind != "hang" || fs[2].Rate != 0.01 {
				t.Errorf("faults %+v", fs)
			}
		}},
		{name: "no rates no rules", check: func(t *testing.T, c config) {
			if fs := c.faults(); len(fs) != 0 {
				t.Errorf("faults %+v, want none", fs)
			}
		}},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, io.Discard, func(k string) string { return tt.env[k] })
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFlags() error = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestRun_InvalidRate(t *testing.T) {
	if code := run(t.Context(), []string{"-listen", "127.0.0.1:0", "-error-rate", "2"}, io.Discard, io.Discard, func(string) string { return "" }); code != 2 {
		t.Errorf("exit code %d for -error-rate 2, want 2", code)
	}
}

func TestRun_AdminInstances(t *testing.T) {
	url := start(t, nil)
	sesterce := map[string]string{"x-api-key": "fake-sesterce-key"}
	gcore := map[string]string{"Authorization": "APIKey fake-gcore-key"}

	if code, body := do(t, "GET", url+"/admin/instances", nil, ""); code != 200 || strings.Join(strings.Fields(body), "") != `{"gcore":[],"sesterce":[]}` {
		t.Errorf("empty instances view: %d %s", code, body)
	}
	code, body := do(t, "POST", url+"/gpu-cloud/ssh-keys", sesterce, fmt.Sprintf(`{"name":"team","publicKey":%q}`, testPub))
	if code != 201 {
		t.Fatalf("create sesterce key: %d %s", code, body)
	}
	var key struct {
		ID string `json:"_id"`
	}
	_ = json.Unmarshal([]byte(body), &key)

	launch := func(req string) (int, map[string]any) {
		t.Helper()
		code, body := do(t, "POST", url+"/admin/instances", nil, req)
		var v map[string]any
		_ = json.Unmarshal([]byte(body), &v)
		return code, v
	}
	code, s1 := launch(`{"provider":"sesterce","name":"s1","key_name":"team","address":"203.0.113.9","user":"root","port":2222}`)
	if code != 201 || s1["key_id"] != key.ID || s1["ip"] != "203.0.113.9" || s1["user"] != "root" || s1["port"] != 2222.0 {
		t.Fatalf("launch sesterce by key name: %d %v, want key %s resolved and the ssh fields", code, s1, key.ID)
	}
	code, g1 := launch(`{"provider":"gcore","project":12,"region":76,"region_name":"Luxembourg","name":"g1","key_name":"gpu-key","address":"198.51.100.7"}`)
	if code != 201 || g1["key_name"] != "gpu-key" || g1["region_id"] != 76.0 {
		t.Fatalf("launch gcore: %d %v", code, g1)
	}
	if code, g2 := launch(`{"provider":"gcore","project":12,"region":77,"name":"g2","key_name":"gpu-key","bare_metal":true,"old_fields":true}`); code != 201 || g2["kind"] != "baremetal" {
		t.Fatalf("launch gcore bare metal: %d %v", code, g2)
	}

	// The provider APIs serve what the admin API launched.
	if code, body := do(t, "GET", url+"/gpu-cloud/instances/"+s1["id"].(string), sesterce, ""); code != 200 ||
		!strings.Contains(body, `"sshKey":{"_id":"`+key.ID) || !strings.Contains(body, `"sshPort":2222`) {
		t.Errorf("sesterce detail: %d %s, want the launch key and port", code, body)
	}
	if code, body := do(t, "GET", url+"/cloud/v1/instances/12/76", gcore, ""); code != 200 ||
		!strings.Contains(body, `"ssh_key_name":"gpu-key"`) || !strings.Contains(body, `"addr":"198.51.100.7","type":"floating"`) {
		t.Errorf("gcore instances: %d %s", code, body)
	}
	if code, body := do(t, "GET", url+"/cloud/v1/bminstances/12/77", gcore, ""); code != 200 || !strings.Contains(body, `"keypair_name":"gpu-key"`) {
		t.Errorf("gcore bare metal in old field names: %d %s", code, body)
	}
	if code, body := do(t, "GET", url+"/cloud/v1/regions", gcore, ""); code != 200 || !strings.Contains(body, `"display_name":"Luxembourg"`) {
		t.Errorf("regions: %d %s", code, body)
	}

	for _, bad := range []string{
		`{"provider":"aws","name":"x"}`,
		`{"provider":"gcore","name":"x","project":1}`,
		`{"provider":"gcore","name":"x","project":1,"region":1,"key_id":"nope"}`,
		`{"provider":"gcore","name":"x","project":1,"region":1,"user":"root"}`,
		`{"provider":"sesterce","name":"x","key_name":"no-such-key"}`,
		`{"provider":"sesterce","name":"x","region":3}`,
		`{"provider":"sesterce","key_id":"k"}`,
		`{"provider":"sesterce","name":"x","typo":1}`,
	} {
		if code, body := do(t, "POST", url+"/admin/instances", nil, bad); code != 400 || !strings.Contains(body, "error") {
			t.Errorf("launch %s: %d %s, want 400 with an error", bad, code, body)
		}
	}

	if code, body := do(t, "DELETE", url+"/admin/instances/"+g1["id"].(string), nil, ""); code != 204 {
		t.Errorf("terminate g1: %d %s", code, body)
	}
	if code, body := do(t, "DELETE", url+"/admin/instances/"+g1["id"].(string), nil, ""); code != 404 {
		t.Errorf("terminate g1 again: %d %s, want 404", code, body)
	}
	if code, body := do(t, "DELETE", url+"/admin/instances/"+s1["id"].(string), nil, ""); code != 204 {
		t.Errorf("terminate s1: %d %s", code, body)
	}
	code, body = do(t, "GET", url+"/admin/instances", nil, "")
	var view struct {
		Gcore    []struct{ Name string } `json:"gcore"`
		Sesterce []struct{ Status string }
	}
	if err := json.Unmarshal([]byte(body), &view); code != 200 || err != nil || len(view.Gcore) != 1 || view.Gcore[0].Name != "g2" ||
		len(view.Sesterce) != 1 || view.Sesterce[0].Status != "deleted" {
		t.Errorf("instances after terminating g1 and s1: %d %s, want g2, and s1 deleted", code, body)
	}
	if code, body := do(t, "POST", url+"/admin/regions", nil, `{"id":80,"name":"Old","state":"INACTIVE"}`); code != 200 || !strings.Contains(body, "INACTIVE") {
		t.Errorf("add region: %d %s", code, body)
	}
	if code, body := do(t, "POST", url+"/admin/regions", nil, `{"name":"no id"}`); code != 400 {
		t.Errorf("add region without id: %d %s, want 400", code, body)
	}
}

// TestRun_SesterceAccounts: two Sesterce keys are two accounts; a key made
// by one is not listed by the other, and /admin/keys says whose it is.
func TestRun_SesterceAccounts(t *testing.T) {
	url := start(t, map[string]string{"FAKECLOUD_SESTERCE_KEY": "acct-a,acct-b"})
	if code, body := do(t, "POST", url+"/gpu-cloud/ssh-keys", map[string]string{"x-api-key": "acct-b"}, fmt.Sprintf(`{"name":"b1","publicKey":%q}`, testPub)); code != 201 {
		t.Fatalf("create with the second key: %d %s", code, body)
	}
	for key, want := range map[string]int{"acct-a": 0, "acct-b": 1} {
		code, body := do(t, "GET", url+"/gpu-cloud/ssh-keys", map[string]string{"x-api-key": key}, "")
		var keys []map[string]any
		if err := json.Unmarshal([]byte(body), &keys); code != 200 || err != nil || len(keys) != want {
			t.Errorf("list with %s: %d %s, want %d keys", key, code, body, want)
		}
	}
	_, body := do(t, "GET", url+"/admin/keys", nil, "")
	var view struct {
		Sesterce []struct {
			Account int    `json:"account"`
			Name    string `json:"name"`
		} `json:"sesterce"`
	}
	if err := json.Unmarshal([]byte(body), &view); err != nil || len(view.Sesterce) != 1 || view.Sesterce[0].Account != 1 {
		t.Errorf("admin keys %s, want b1 in account 1", body)
	}
	if strings.Contains(body, "acct-") {
		t.Error("the keys view shows an API key")
	}
}
