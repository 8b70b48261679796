package cloudtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

type gcoreInstancePage struct {
	Count   int              `json:"count"`
	Results []map[string]any `json:"results"`
}

func TestServer_GcoreRegions(t *testing.T) {
	s := newTestServer(t)
	for i := range 105 {
		s.AddGcoreRegion(int64(i+1), fmt.Sprintf("R%d", i+1), "ACTIVE")
	}
	s.AddGcoreRegion(3, "Renamed", "MAINTENANCE")
	if resp, b := mustCall(t, s, "GET", "/cloud/v1/regions", nil, ""); resp.StatusCode != 401 {
		t.Errorf("regions without a key: %d %s, want 401", resp.StatusCode, b)
	}
	_, b := mustCall(t, s, "GET", "/cloud/v1/regions", gcoreAuth, "")
	page := decode[gcoreInstancePage](t, b)
	if page.Count != 105 || len(page.Results) != 100 {
		t.Fatalf("regions: count %d, %d results; want 105 and the default limit of 100", page.Count, len(page.Results))
	}
	if r := page.Results[2]; r["display_name"] != "Renamed" || r["state"] != "MAINTENANCE" || r["id"] != 3.0 {
		t.Errorf("region 3 = %v, want it renamed and in MAINTENANCE", r)
	}
	_, b = mustCall(t, s, "GET", "/cloud/v1/regions?limit=10&offset=100", gcoreAuth, "")
	if page := decode[gcoreInstancePage](t, b); len(page.Results) != 5 {
		t.Errorf("regions offset 100: %d results, want 5", len(page.Results))
	}
}

func TestServer_GcoreInstances(t *testing.T) {
	s := newTestServer(t)
	created := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	vm := s.LaunchGcoreInstance(1, 76, "vm", "team-key", CreatedAt(created), InRegion("Luxembourg"))
	old := s.LaunchGcoreInstance(1, 76, "vm-old", "", OldFieldNames())
	bm := s.LaunchGcoreInstance(1, 76, "bm", "team-key", BareMetal())
	s.LaunchGcoreInstance(2, 76, "other-project", "k")
	for i := range 25 {
		s.LaunchGcoreInstance(1, 77, fmt.Sprintf("many-%02d", i), "k")
	}

	if r := s.GcoreRegions(); len(r) != 2 || r[0] != (GcoreRegion{ID: 76, Name: "Luxembourg", State: "ACTIVE"}) {
		t.Errorf("regions added by launches: %+v", r)
	}
	_, b := mustCall(t, s, "GET", "/cloud/v1/instances/1/76", gcoreAuth, "")
	page := decode[gcoreInstancePage](t, b)
	if page.Count != 2 || len(page.Results) != 2 {
		t.Fatalf("instances of project 1 region 76: %s, want vm and vm-old", b)
	}
	got := page.Results[0]
	if got["id"] != vm.ID || got["name"] != "vm" || got["ssh_key_name"] != "team-key" || got["created_at"] != "2025-03-04T05:06:07Z" ||
		got["region"] != "Luxembourg" || got["region_id"] != 76.0 || got["project_id"] != 1.0 || got["status"] != "ACTIVE" {
		t.Errorf("new-generation instance %v", got)
	}
	addrs, _ := json.Marshal(got["addresses"])
	for _, a := range vm.Addresses {
		if !strings.Contains(string(addrs), fmt.Sprintf(`"addr":%q`, a.Addr)) {
			t.Errorf("addresses %s lack %s", addrs, a.Addr)
		}
	}
	if fixed, _ := got["fixed_ip_assignments"].([]any); len(fixed) != 2 {
		t.Errorf("fixed_ip_assignments %v, want the two fixed addresses", got["fixed_ip_assignments"])
	}
	gotOld := page.Results[1]
	if gotOld["instance_id"] != old.ID || gotOld["instance_name"] != "vm-old" || gotOld["keypair_name"] != nil || gotOld["instance_created"] == nil {
		t.Errorf("old-generation instance %v", gotOld)
	}
	for _, k := range []string{"id", "name", "created_at", "ssh_key_name"} {
		if _, ok := gotOld[k]; ok {
			t.Errorf("old-generation instance carries new field %q", k)
		}
	}
	if _, b := mustCall(t, s, "GET", "/cloud/v1/bminstances/1/76", gcoreAuth, ""); !strings.Contains(string(b), bm.ID) || strings.Contains(string(b), vm.ID) {
		t.Errorf("bare metal of region 76: %s, want only %s", b, bm.ID)
	}
	_, b = mustCall(t, s, "GET", "/cloud/v1/instances/1/77", gcoreAuth, "")
	if page := decode[gcoreInstancePage](t, b); page.Count != 25 || len(page.Results) != 10 {
		t.Errorf("default page: count %d, %d results; want 25 and 10", page.Count, len(page.Results))
	}
	_, b = mustCall(t, s, "GET", "/cloud/v1/instances/1/77?limit=1000&offset=20", gcoreAuth, "")
	if page := decode[gcoreInstancePage](t, b); len(page.Results) != 5 || page.Results[0]["name"] != "many-20" {
		t.Errorf("offset 20: %s", b)
	}
	for path, want := range map[string]int{
		"/cloud/v1/instances/1/99":            404,
		"/cloud/v1/instances/1/abc":           400,
		"/cloud/v1/instances/1/76?limit=1001": 400,
	} {
		if resp, b := mustCall(t, s, "GET", path, gcoreAuth, ""); resp.StatusCode != want {
			t.Errorf("GET %s: %d %s, want %d", path, resp.StatusCode, b, want)
		}
	}
	if !s.TerminateInstance(vm.ID) || s.TerminateInstance(vm.ID) {
		t.Error("TerminateInstance: want true once, then false")
	}
	if _, b := mustCall(t, s, "GET", "/cloud/v1/instances/1/76", gcoreAuth, ""); strings.Contains(string(b), vm.ID) {
		t.Errorf("terminated instance still listed: %s", b)
	}

	s2 := newTestServer(t, func(o *Options) { o.GcoreOldInstanceFields = true })
	s2.LaunchGcoreInstance(1, 1, "x", "k")
	if _, b := mustCall(t, s2, "GET", "/cloud/v1/instances/1/1", gcoreAuth, ""); !strings.Contains(string(b), `"keypair_name":"k"`) {
		t.Errorf("server-wide old fields: %s", b)
	}
}

func TestServer_SesterceInstances(t *testing.T) {
	s := newTestServer(t)
	pub, _ := testPublicKey(t)
	k := s.AddSesterceKey("team", pub, true)
	a := s.LaunchSesterceInstance("a", k.ID, WithSSH("203.0.113.5", "root", 2222))
	b := s.LaunchSesterceInstance("b", "unknown-key", WithSSH("", "", 0), WithStatus("pending"))

	resp, body := mustCall(t, s, "GET", "/gpu-cloud/instances", sesterceAuth, "")
	list := decode[[]map[string]any](t, body)
	if resp.StatusCode != 200 || len(list) != 2 {
		t.Fatalf("list: %d %s", resp.StatusCode, body)
	}
	if list[0]["_id"] != a.ID || list[0]["ip"] != "203.0.113.5" || list[0]["sshUser"] != "root" || list[0]["sshPort"] != 2222.0 || list[0]["sshKey"] != nil {
		t.Errorf("list item %v, want ip/user/port and no key", list[0])
	}
	if list[1]["ip"] != nil || list[1]["sshPort"] != nil || list[1]["status"] != "pending" {
		t.Errorf("list item %v, want null ip and port, pending", list[1])
	}
	// Deleting the key does not change what the instance was launched with.
	if resp, _ := mustCall(t, s, "DELETE", "/gpu-cloud/ssh-keys/"+k.ID, sesterceAuth, ""); resp.StatusCode != 200 {
		t.Fatalf("delete key: %d", resp.StatusCode)
	}
	_, body = mustCall(t, s, "GET", "/gpu-cloud/instances/"+a.ID, sesterceAuth, "")
	detail := decode[map[string]any](t, body)
	key, _ := detail["sshKey"].(map[string]any)
	if key["_id"] != k.ID || key["name"] != "team" || key["publicKey"] != pub {
		t.Errorf("detail sshKey %v, want the launch key %s as it was", detail["sshKey"], k.ID)
	}
	_, body = mustCall(t, s, "GET", "/gpu-cloud/instances/"+b.ID, sesterceAuth, "")
	if key, _ := decode[map[string]any](t, body)["sshKey"].(map[string]any); key["_id"] != "unknown-key" || key["name"] != nil {
		t.Errorf("detail of an instance launched with an unknown key: %s", body)
	}
	if resp, body := mustCall(t, s, "GET", "/gpu-cloud/instances/"+newHexID(), sesterceAuth, ""); resp.StatusCode != 404 {
		t.Errorf("unknown instance: %d %s, want 404", resp.StatusCode, body)
	}
	if resp, body := mustCall(t, s, "GET", "/gpu-cloud/instances", map[string]string{"x-api-key": testUnknownKey}, ""); resp.StatusCode != 404 ||
		!strings.Contains(string(body), "API key not found") {
		t.Errorf("list with an unknown key: %d %s, want 404 API key not found", resp.StatusCode, body)
	}
	if !s.TerminateInstance(a.ID) || s.TerminateInstance(a.ID) {
		t.Error("TerminateInstance: want true once, then false")
	}
	_, body = mustCall(t, s, "GET", "/gpu-cloud/instances", sesterceAuth, "")
	if got := decode[[]map[string]any](t, body)[0]; got["status"] != "deleted" || got["deletedAt"] == nil {
		t.Errorf("terminated instance listed as %v, want status deleted with deletedAt", got)
	}

	wrapped := newTestServer(t, func(o *Options) { o.SesterceInstancesEnvelope = "data" })
	wrapped.LaunchSesterceInstance("w", "k")
	_, body = mustCall(t, wrapped, "GET", "/gpu-cloud/instances", sesterceAuth, "")
	if got := decode[map[string]json.RawMessage](t, body); len(got["data"]) == 0 {
		t.Errorf("envelope data: %s", body)
	}
}

func TestServer_InjectPathAndSize(t *testing.T) {
	s := newTestServer(t)
	s.LaunchGcoreInstance(1, 1, "a", "k")
	s.LaunchGcoreInstance(1, 2, "b", "k")
	s.Inject(Fault{Route: RouteGcoreInstances, Path: "/cloud/v1/instances/1/2", Kind: FaultStatus, Status: 500})
	s.Inject(Fault{Route: RouteSesterceInstances, Kind: FaultHuge, Size: 1 << 20})
	if resp, _ := mustCall(t, s, "GET", "/cloud/v1/instances/1/1", gcoreAuth, ""); resp.StatusCode != 200 {
		t.Errorf("region 1: %d, want 200 (the rule names region 2's path)", resp.StatusCode)
	}
	if resp, _ := mustCall(t, s, "GET", "/cloud/v1/instances/1/2", gcoreAuth, ""); resp.StatusCode != 500 {
		t.Errorf("region 2: %d, want 500", resp.StatusCode)
	}
	resp, b := mustCall(t, s, "GET", "/gpu-cloud/instances", sesterceAuth, "")
	if resp.StatusCode != 200 || len(b) != 1<<20 || b[0] != '[' || !json.Valid(b) {
		t.Errorf("huge instance list: %d, %d bytes starting %q, want 1 MiB of a valid JSON array", resp.StatusCode, len(b), b[:1])
	}
}
