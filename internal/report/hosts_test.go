package report

import (
	"bytes"
	"encoding/json"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/policy"
)

// hostsFixture is the report fixture with hosts on gpu-team: one per
// status the report can give.
func hostsFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	gpu := &f.cfg.Policies[0]
	gpu.Hosts = &policy.Hosts{Targets: []policy.HostTarget{
		{User: "ubuntu", Addr: "10.0.0.1", Port: 22}, // ok: current + retiring (grace not over)
		{User: "ubuntu", Addr: "10.0.0.2", Port: 22}, // ok in its record, but holds a deleted key: stale
		{User: "ubuntu", Addr: "10.0.0.3", Port: 22}, // ok in its record, lacks the current key: stale
		{User: "ubuntu", Addr: "10.0.0.4", Port: 22}, // unreachable
		{User: "ubuntu", Addr: "10.0.0.5", Port: 22}, // host key changed: unverified
		{User: "ubuntu", Addr: "10.0.0.6", Port: 22}, // never contacted: unverified
	}, KnownHosts: "/etc/rotatord/known_hosts"}
	cur, ret, del := fingerprint(idOK), fingerprint(idRetiring), fingerprint(idDeleted)
	recs := []state.HostRecord{
		{Host: "ubuntu@10.0.0.1:22", Status: state.HostOK, Trusts: []string{ret, cur}, LastContact: now.Add(-day), HostKeyFingerprint: "SHA256:hk1"},
		{Host: "ubuntu@10.0.0.2:22", Status: state.HostOK, Trusts: []string{cur, del}, LastContact: now.Add(-day)},
		{Host: "ubuntu@10.0.0.3:22", Status: state.HostOK, Trusts: []string{ret}, LastContact: now.Add(-day)},
		{Host: "ubuntu@10.0.0.4:22", Status: state.HostUnreachable, Trusts: []string{ret}},
		{Host: "ubuntu@10.0.0.5:22", Status: state.HostKeyChanged, LastError: "host key changed " + privateKeyText},
		// Discovered, so listed though not a static target.
		{Host: "root@10.9.0.1:22", Status: state.HostOK, Trusts: []string{cur}, Source: "discovered", LastContact: now},
		// Left the static targets: not listed.
		{Host: "ubuntu@10.0.0.99:22", Status: state.HostOK, Source: "static"},
	}
	if err := f.db.Update(func(tx state.Tx) error {
		for _, r := range recs {
			r.Policy = "gpu-team"
			if err := tx.PutHost(r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestReport_Hosts(t *testing.T) {
	f := hostsFixture(t)
	r := f.generate(t)
	want := []struct{ host, status, detail string }{
		{"ubuntu@10.0.0.1:22", HostOK, ""},
		{"ubuntu@10.0.0.2:22", HostStale, "retired_key_present"},
		{"ubuntu@10.0.0.3:22", HostStale, "missing_current_key"},
		{"ubuntu@10.0.0.4:22", HostUnreachable, ""},
		{"ubuntu@10.0.0.5:22", HostUnverified, "host_key_changed"},
		{"ubuntu@10.0.0.6:22", HostUnverified, "never_contacted"},
		{"root@10.9.0.1:22", HostOK, ""},
	}
	if len(r.Hosts) != len(want) {
		t.Fatalf("got %d hosts, want %d: %+v", len(r.Hosts), len(want), r.Hosts)
	}
	for i, w := range want {
		h := r.Hosts[i]
		if h.Host != w.host || h.Status != w.status || h.Detail != w.detail || h.Policy != "gpu-team" {
			t.Errorf("host %d = %s %s %s, want %s %s %s", i, h.Host, h.Status, h.Detail, w.host, w.status, w.detail)
		}
	}
	if got := r.Hosts[0].Trusts; len(got) != 2 || got[0].KeyStatus != "retiring" || got[1].KeyStatus != "active" || got[1].Fingerprint != fingerprint(idOK) {
		t.Errorf("trusts = %+v", got)
	}
	if r.HostsSummary[HostOK] != 2 || r.HostsSummary[HostStale] != 2 || r.HostsSummary[HostUnreachable] != 1 || r.HostsSummary[HostUnverified] != 2 {
		t.Errorf("summary = %v", r.HostsSummary)
	}
	if got := r.Tripped([]string{"overdue", "stale"}); !strings.Contains(strings.Join(got, ","), "stale") {
		t.Errorf("stale gate not tripped: %v", got)
	}

	for _, format := range Formats() {
		var b bytes.Buffer
		if err := r.Write(&b, format); err != nil {
			t.Fatal(err)
		}
		out := html.UnescapeString(strings.ReplaceAll(b.String(), "\\_", "_"))
		for _, s := range []string{"ubuntu@10.0.0.5:22", "host_key_changed", fingerprint(idRetiring)} {
			if !strings.Contains(out, s) {
				t.Errorf("%s report lacks %q", format, s)
			}
		}
		if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, "10.0.0.99") {
			t.Errorf("%s report shows key material or a host no longer targeted", format)
		}
	}
	var doc struct {
		Hosts []struct {
			Host   string `json:"host"`
			Status string `json:"status"`
			Trusts []struct {
				Fingerprint string `json:"fingerprint"`
				KeyStatus   string `json:"key_status"`
			} `json:"trusts"`
			LastContact *string `json:"last_contact"`
		} `json:"hosts"`
		HostsSummary map[string]int `json:"hosts_summary"`
	}
	var b bytes.Buffer
	_ = r.Write(&b, FormatJSON)
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("json: %v\n%s", err, b.String())
	}
	if len(doc.Hosts) != 7 || doc.Hosts[5].LastContact != nil || doc.Hosts[0].Trusts[1].KeyStatus != "active" || doc.HostsSummary["stale"] != 2 {
		t.Errorf("json hosts = %+v", doc)
	}
	if d := r.Digest(); !strings.Contains(d, "hosts: 2 ok, 2 stale, 1 unreachable, 2 unverified") || !strings.Contains(d, "ubuntu@10.0.0.4:22 (gpu-team): unreachable") {
		t.Errorf("digest:\n%s", d)
	}
}

// Without hosts nothing changes: no section, no gate trip, no series.
func TestReport_NoHosts(t *testing.T) {
	r := newFixture(t).generate(t)
	if r.Hosts != nil || r.HostsSummary != nil || r.HostsStale() {
		t.Errorf("hosts without any hosts block: %+v %v", r.Hosts, r.HostsSummary)
	}
}

func TestCollector_Hosts(t *testing.T) {
	f := hostsFixture(t)
	c := NewCollector(func() (*Report, error) { return f.generate(t), nil })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "rotatord_hosts" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[labels["policy"]+"/"+labels["status"]] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{"gpu-team/ok": 2, "gpu-team/stale": 2, "gpu-team/unreachable": 1, "gpu-team/unverified": 2}
	if len(got) != len(want) {
		t.Errorf("rotatord_hosts = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("rotatord_hosts{%s} = %v, want %v", k, got[k], v)
		}
	}
}

// The hosts section renders in a real browser: one row per host with its
// status and the fingerprints it trusts, and no network request.
func TestReport_HostsHTMLInBrowser(t *testing.T) {
	bin := chromium(t)
	r := hostsFixture(t).generate(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, []byte(writeHTML(t, r)), 0o600); err != nil {
		t.Fatal(err)
	}
	netLog := filepath.Join(dir, "net.json")
	dom := string(runChromium(t, bin, page, "--dump-dom", "--log-net-log="+netLog))
	if n := len(regexp.MustCompile(`<tr class="(ok|stale|unreachable|unverified)"><td><code>`).FindAllString(dom, -1)); n != len(r.Hosts) {
		t.Errorf("rendered hosts table has %d rows, want %d", n, len(r.Hosts))
	}
	for _, want := range []string{`<section id="hosts">`, "hosts: 2 ok, 2 stale, 1 unreachable, 2 unverified",
		"<code>ubuntu@10.0.0.5:22</code>", "host_key_changed", fingerprint(idRetiring)} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM has no %q", want)
		}
	}
	if reqs := pageRequests(t, netLog); len(reqs) != 0 {
		t.Errorf("the page made network requests: %q", reqs)
	}
}
