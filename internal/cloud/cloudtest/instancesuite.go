package cloudtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
)

// InstanceLister is a provider client that can also list the account's
// instances (DESIGN.md §9.1). The suite declares it for itself; code that
// builds an inventory declares its own.
type InstanceLister interface {
	cloud.Provider
	ListInstances(ctx context.Context, project int64, regions []int64) ([]cloud.Instance, error)
}

// hugeInstanceBody is the FaultHuge size the instance checks send: 50 MiB.
const hugeInstanceBody = 50 << 20

// RunInstanceSuite checks that the client built by newProvider (which must
// implement InstanceLister) lists instances as DESIGN.md §9.1 and
// cloud.Instance describe: every machine once, attributed to the key it
// was provisioned with, across pages, both Gcore field generations and the
// Sesterce detail call; and that a failing region, instance or body costs
// only what failed, is reported by name, and never panics. kind is
// "sesterce" or "gcore". Every check is a parallel subtest with its own
// Server; the factory's rules are those of RunProviderSuite.
func RunInstanceSuite(t *testing.T, kind string, newProvider ProviderFactory) {
	t.Helper()
	runChecks(t, "RunInstanceSuite", kind, newProvider, instanceChecks)
}

// lister returns the client under test as an InstanceLister.
func (e *suiteEnv) lister(t *testing.T) InstanceLister {
	t.Helper()
	l, ok := e.p.(InstanceLister)
	if !ok {
		t.Fatalf("%T has no ListInstances(ctx, project, regions) ([]cloud.Instance, error)", e.p)
	}
	return l
}

// listInstances lists all regions of the check's project.
func (e *suiteEnv) listInstances(t *testing.T, ctx context.Context) ([]cloud.Instance, error) {
	t.Helper()
	return e.lister(t).ListInstances(ctx, e.project, nil)
}

// mustListInstances lists or fails the check.
func (e *suiteEnv) mustListInstances(t *testing.T, ctx context.Context) []cloud.Instance {
	t.Helper()
	insts, err := e.listInstances(t, ctx)
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	return insts
}

// wantInstances checks that got holds exactly the instances of want, once
// each, with the fields want gives them.
func wantInstances(t *testing.T, got []cloud.Instance, want []cloud.Instance) {
	t.Helper()
	byID := make(map[string]cloud.Instance, len(want))
	for _, w := range want {
		byID[w.ID] = w
	}
	seen := make(map[string]bool, len(got))
	bad := 0
	for _, g := range got {
		w, ok := byID[g.ID]
		switch {
		case !ok:
			t.Errorf("ListInstances returned %+v, which is not among the %d expected", g, len(want))
		case seen[g.ID]:
			t.Errorf("ListInstances returned instance %s (%s) twice", g.ID, g.Name)
		default:
			if !g.CreatedAt.Equal(w.CreatedAt) {
				t.Errorf("instance %s: CreatedAt %v, want %v", g.ID, g.CreatedAt, w.CreatedAt)
			}
			g.CreatedAt, w.CreatedAt = time.Time{}, time.Time{}
			if g != w && bad < 10 {
				bad++
				t.Errorf("instance %s:\n got %+v\nwant %+v", g.ID, g, w)
			}
		}
		seen[g.ID] = true
	}
	if len(seen) != len(want) {
		t.Errorf("ListInstances returned %d distinct instances, want %d", len(seen), len(want))
	}
}

// wantGcore is what a client must make of a fake Gcore instance whose
// address is addr.
func (e *suiteEnv) wantGcore(inst GcoreInstance, addr string) cloud.Instance {
	var region string
	for _, r := range e.srv.GcoreRegions() {
		if r.ID == inst.RegionID {
			region = r.Name
		}
	}
	return cloud.Instance{
		ID: inst.ID, Name: inst.Name, Status: inst.Status, Region: region, RegionID: inst.RegionID,
		ProjectID: inst.ProjectID, KeyName: inst.KeyName, Address: addr, CreatedAt: inst.CreatedAt, Kind: inst.Kind,
	}
}

// floating is the floating address LaunchGcoreInstance generates.
func floating(inst GcoreInstance) string {
	for _, a := range inst.Addresses {
		if a.Type == "floating" {
			return a.Addr
		}
	}
	return ""
}

// wantSesterce is what a client must make of a fake Sesterce instance
// whose detail was read (withKey) or not.
func wantSesterce(inst SesterceInstance, withKey bool) cloud.Instance {
	w := cloud.Instance{
		ID: inst.ID, Name: inst.Name, Status: inst.Status, Region: inst.Region,
		Address: inst.IP, User: inst.User, Port: inst.Port, CreatedAt: inst.CreatedAt, Kind: cloud.KindInstance,
	}
	if withKey {
		w.KeyID, w.KeyName = inst.KeyID, inst.KeyName
		w.KeyFingerprint, _ = cloud.Fingerprint(inst.KeyPublicKey)
	}
	return w
}

// wantPartial checks a listing that failed in part: an error wrapping
// class and naming every part in parts.
func wantPartial(t *testing.T, err error, class error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("ListInstances returned no error, want one naming %q", parts)
	}
	var ce *cloud.Error
	if !errors.As(err, &ce) || !errors.Is(err, class) {
		t.Errorf("ListInstances error %v: want a *cloud.Error wrapping %v", err, class)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("ListInstances error %q does not name %q", err, p)
		}
	}
}

// requestsTo counts the requests to an exact URL path.
func requestsTo(srv *Server, path string) int {
	n := 0
	for _, r := range srv.RequestLog() {
		if r.Path == path {
			n++
		}
	}
	return n
}

func gcoreInstancesPath(project, region int64) string {
	return fmt.Sprintf("/cloud/v1/instances/%d/%d", project, region)
}

// seedKeys stores n keys and returns them (Sesterce) or their names (both).
func (e *suiteEnv) seedKeys(t *testing.T, n int) []storedKey {
	var keys []storedKey
	for i := range n {
		pub, _ := NewPublicKey(t)
		keys = append(keys, e.seed(fmt.Sprintf("key-%c", 'a'+i), pub, i == 0))
	}
	return keys
}

var instanceChecks = []suiteCheck{
	{name: "InstancesEmptyAccount", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		if insts := e.mustListInstances(t, suiteCtx(t)); len(insts) != 0 {
			t.Errorf("ListInstances on an empty account returned %+v", insts)
		}
	}},

	{name: "InstancesAttributed", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		// 3 regions of 1,200 instances each (more than one page), a third
		// of them in the old field generation, three keys in turn.
		e.start(t)
		keys := e.seedKeys(t, 3)
		var want []cloud.Instance
		for r := int64(1); r <= 3; r++ {
			e.srv.AddGcoreRegion(r, fmt.Sprintf("Region-%d", r), "ACTIVE")
			for i := range 1200 {
				var opts []InstanceOption
				if i%3 == 0 {
					opts = append(opts, OldFieldNames())
				}
				inst := e.srv.LaunchGcoreInstance(e.project, r, fmt.Sprintf("gpu-%d-%04d", r, i), keys[i%3].Name, opts...)
				want = append(want, e.wantGcore(inst, floating(inst)))
			}
		}
		e.srv.LaunchGcoreInstance(e.project+1, 1, "other-project", keys[0].Name)
		wantInstances(t, e.mustListInstances(t, suiteCtx(t)), want)
		for r := int64(1); r <= 3; r++ {
			if n := requestsTo(e.srv, gcoreInstancesPath(e.project, r)); n < 2 {
				t.Errorf("region %d: %d page requests for 1,200 instances, want more than one page", r, n)
			}
		}
	}},

	{name: "InstancesAttributed", only: "sesterce", run: func(t *testing.T, e *suiteEnv) {
		// 200 instances launched with three keys; each one's key is only
		// in its detail.
		e.start(t)
		keys := e.seedKeys(t, 3)
		var want []cloud.Instance
		for i := range 200 {
			inst := e.srv.LaunchSesterceInstance(fmt.Sprintf("gpu-%03d", i), keys[i%3].ID)
			want = append(want, wantSesterce(inst, true))
		}
		wantInstances(t, e.mustListInstances(t, suiteCtx(t)), want)
		if l, d := e.srv.Requests(RouteSesterceInstances), e.srv.Requests(RouteSesterceInstance); l != 1 || d != 200 {
			t.Errorf("%d list and %d detail requests, want 1 and 200 (one detail per active instance)", l, d)
		}
	}},

	{name: "InstancesPaging", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		var want []cloud.Instance
		for i := range 2500 {
			inst := e.srv.LaunchGcoreInstance(e.project, 7, fmt.Sprintf("node-%04d", i), "paged")
			want = append(want, e.wantGcore(inst, floating(inst)))
		}
		wantInstances(t, e.mustListInstances(t, suiteCtx(t)), want)
		var offsets []string
		for _, r := range e.srv.RequestLog() {
			if r.Path == gcoreInstancesPath(e.project, 7) {
				offsets = append(offsets, r.Query)
			}
		}
		if len(offsets) < 3 {
			t.Errorf("2,500 instances read in %d pages (%q), want at least 3 (the limit is at most 1,000)", len(offsets), offsets)
		}
	}},

	{name: "InstancesBothFieldGenerations", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		for _, serverWide := range []bool{false, true} {
			t.Run(fmt.Sprintf("server-wide=%v", serverWide), func(t *testing.T) {
				e := &suiteEnv{kind: e.kind, newProvider: e.newProvider}
				e.start(t, func(o *Options) { o.GcoreOldInstanceFields = serverWide })
				created := time.Date(2024, 11, 5, 6, 7, 8, 0, time.UTC)
				var want []cloud.Instance
				for i, old := range []bool{false, true, false, true} {
					opts := []InstanceOption{CreatedAt(created.Add(time.Duration(i) * time.Hour))}
					if old {
						opts = append(opts, OldFieldNames())
					}
					inst := e.srv.LaunchGcoreInstance(e.project, 1, fmt.Sprintf("gen-%d", i), fmt.Sprintf("key-%d", i), opts...)
					want = append(want, e.wantGcore(inst, floating(inst)))
				}
				wantInstances(t, e.mustListInstances(t, suiteCtx(t)), want)
			})
		}
	}},

	{name: "InstancesBareMetal", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		vm := e.srv.LaunchGcoreInstance(e.project, 1, "vm", "k1")
		bm := e.srv.LaunchGcoreInstance(e.project, 1, "bm", "k2", BareMetal())
		bmOld := e.srv.LaunchGcoreInstance(e.project, 2, "bm-old", "k1", BareMetal(), OldFieldNames())
		wantInstances(t, e.mustListInstances(t, suiteCtx(t)), []cloud.Instance{
			e.wantGcore(vm, floating(vm)), e.wantGcore(bm, floating(bm)), e.wantGcore(bmOld, floating(bmOld)),
		})
	}},

	{name: "InstancesRegions", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		e.srv.AddGcoreRegion(1, "Luxembourg", "ACTIVE")
		e.srv.AddGcoreRegion(2, "Frankfurt", "ACTIVE")
		e.srv.AddGcoreRegion(3, "Old-Region", "INACTIVE")
		a := e.srv.LaunchGcoreInstance(e.project, 1, "a", "k")
		b := e.srv.LaunchGcoreInstance(e.project, 2, "b", "k")
		c := e.srv.LaunchGcoreInstance(e.project, 3, "c", "k")
		ctx := suiteCtx(t)
		t.Run("active regions by default", func(t *testing.T) {
			wantInstances(t, e.mustListInstances(t, ctx), []cloud.Instance{e.wantGcore(a, floating(a)), e.wantGcore(b, floating(b))})
			if n := requestsTo(e.srv, gcoreInstancesPath(e.project, 3)); n != 0 {
				t.Errorf("%d requests to the INACTIVE region's instances, want none", n)
			}
		})
		t.Run("configured regions", func(t *testing.T) {
			before := e.srv.Requests(RouteGcoreRegions)
			got, err := e.lister(t).ListInstances(ctx, e.project, []int64{3, 1, 3})
			if err != nil {
				t.Fatalf("ListInstances(regions 3, 1, 3): %v", err)
			}
			want := []cloud.Instance{e.wantGcore(a, floating(a)), e.wantGcore(c, floating(c))}
			// Without the region list the name comes from the instance.
			wantInstances(t, got, want)
			if n := e.srv.Requests(RouteGcoreRegions) - before; n != 0 {
				t.Errorf("%d region list requests with regions configured, want none", n)
			}
		})
	}},

	{name: "InstancesAddress", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		fixed := func(network, addr string, external bool) GcoreAddress {
			return GcoreAddress{Network: network, Addr: addr, Type: "fixed", External: external}
		}
		cases := []struct {
			name  string
			addrs []GcoreAddress
			want  string
		}{
			{"floating before fixed", []GcoreAddress{fixed("a-net", "10.0.0.17", false), {Network: "z-net", Addr: "92.38.157.215", Type: "floating"}}, "92.38.157.215"},
			{"external fixed before private", []GcoreAddress{fixed("a-net", "10.0.0.5", false), fixed("b-net", "185.10.10.10", true)}, "185.10.10.10"},
			{"first fixed by network name", []GcoreAddress{fixed("net-b", "10.0.0.2", false), fixed("net-a", "10.0.0.1", false)}, "10.0.0.1"},
			{"IPv4 before IPv6", []GcoreAddress{{Network: "a", Addr: "2001:db8::1", Type: "floating"}, fixed("b", "10.1.1.1", false)}, "10.1.1.1"},
			{"IPv6 only", []GcoreAddress{fixed("v6", "2001:db8::5", false)}, "2001:db8::5"},
			{"no addresses", nil, ""},
			{"unparseable address skipped", []GcoreAddress{{Network: "a", Addr: "not-an-ip", Type: "floating"}, fixed("b", "10.2.2.2", false)}, "10.2.2.2"},
		}
		var want []cloud.Instance
		for _, c := range cases {
			inst := e.srv.LaunchGcoreInstance(e.project, 1, c.name, "k", WithAddresses(c.addrs...))
			want = append(want, e.wantGcore(inst, c.want))
		}
		wantInstances(t, e.mustListInstances(t, suiteCtx(t)), want)
	}},

	{name: "InstancesWithoutKey", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		plain := e.srv.LaunchGcoreInstance(e.project, 1, "password-login", "")
		old := e.srv.LaunchGcoreInstance(e.project, 1, "password-login-old", "", OldFieldNames())
		wantInstances(t, e.mustListInstances(t, suiteCtx(t)), []cloud.Instance{e.wantGcore(plain, floating(plain)), e.wantGcore(old, floating(old))})
	}},

	{name: "InstancesDetail", only: "sesterce", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		keys := e.seedKeys(t, 2)
		active := e.srv.LaunchSesterceInstance("active", keys[0].ID, WithSSH("203.0.113.7", "root", 2222), InRegion("US-EAST-2"))
		pending := e.srv.LaunchSesterceInstance("pending", keys[1].ID, WithStatus("pending"))
		gone := e.srv.LaunchSesterceInstance("gone", keys[0].ID)
		e.srv.TerminateInstance(gone.ID)
		// The key this machine was launched with was deleted since: the
		// machine still has it, and the detail still names it.
		orphanPub, _ := NewPublicKey(t)
		orphanKey := e.seed("deleted-later", orphanPub, false)
		orphan := e.srv.LaunchSesterceInstance("orphan", orphanKey.ID, WithSSH("", "", 0))
		if err := e.p.Delete(suiteCtx(t), e.project, orphanKey.ID); err != nil {
			t.Fatalf("Delete key: %v", err)
		}
		unknownKey := e.srv.LaunchSesterceInstance("unknown-key", newHexID())
		got := e.mustListInstances(t, suiteCtx(t))
		wantInstances(t, got, []cloud.Instance{
			wantSesterce(active, true), wantSesterce(pending, false), wantSesterce(orphan, true), wantSesterce(unknownKey, true),
		})
		details := map[string]int{}
		for _, r := range e.srv.RequestLog() {
			if r.Route == RouteSesterceInstance {
				details[strings.TrimPrefix(r.Path, "/gpu-cloud/instances/")]++
			}
		}
		for _, inst := range []SesterceInstance{active, orphan, unknownKey} {
			if details[inst.ID] != 1 {
				t.Errorf("instance %s: %d detail requests, want 1", inst.Name, details[inst.ID])
			}
		}
		for _, inst := range []SesterceInstance{pending, gone} {
			if details[inst.ID] != 0 {
				t.Errorf("instance %s (%s): %d detail requests, want none (only active instances are read)", inst.Name, inst.Status, details[inst.ID])
			}
		}
	}},

	{name: "InstancesListEnvelope", only: "sesterce", run: func(t *testing.T, e *suiteEnv) {
		for _, env := range []string{"instances", "data"} {
			t.Run(env, func(t *testing.T) {
				e := &suiteEnv{kind: e.kind, newProvider: e.newProvider}
				e.start(t, func(o *Options) { o.SesterceInstancesEnvelope = env })
				k := e.seedKeys(t, 1)[0]
				inst := e.srv.LaunchSesterceInstance("wrapped", k.ID)
				wantInstances(t, e.mustListInstances(t, suiteCtx(t)), []cloud.Instance{wantSesterce(inst, true)})
			})
		}
	}},

	{name: "InstancesUnknownFields", run: func(t *testing.T, e *suiteEnv) {
		e.start(t, func(o *Options) {
			o.ExtraKeyFields = map[string]any{"labels": map[string]any{"team": []any{1, nil}}, "x_future": 4.5, "tags": nil}
		})
		var want cloud.Instance
		if e.sesterce() {
			want = wantSesterce(e.srv.LaunchSesterceInstance("extra", e.seedKeys(t, 1)[0].ID), true)
		} else {
			inst := e.srv.LaunchGcoreInstance(e.project, 1, "extra", "k")
			want = e.wantGcore(inst, floating(inst))
		}
		wantInstances(t, e.mustListInstances(t, suiteCtx(t)), []cloud.Instance{want})
	}},

	{name: "InstancesRegionFails", only: "gcore", run: func(t *testing.T, e *suiteEnv) {
		// One region answers 500 to every attempt: the other regions'
		// instances come back, with an error naming the failed region.
		e.start(t)
		var want []cloud.Instance
		for r := int64(1); r <= 3; r++ {
			e.srv.AddGcoreRegion(r, fmt.Sprintf("Region-%d", r), "ACTIVE")
			for i := range 10 {
				inst := e.srv.LaunchGcoreInstance(e.project, r, fmt.Sprintf("r%d-%d", r, i), "k")
				if r != 2 {
					want = append(want, e.wantGcore(inst, floating(inst)))
				}
			}
		}
		e.srv.Inject(Fault{Route: RouteGcoreInstances, Path: gcoreInstancesPath(e.project, 2), Kind: FaultStatus, Status: 500, Message: "region down"})
		got, err := e.listInstances(t, suiteCtx(t))
		wantPartial(t, err, cloud.ErrTransient, "region 2", "region down")
		wantInstances(t, got, want)
		if n := requestsTo(e.srv, gcoreInstancesPath(e.project, 2)); n < 2 {
			t.Errorf("%d requests to the failing region, want it retried", n)
		}
	}},

	{name: "InstancesDetailFails", only: "sesterce", run: func(t *testing.T, e *suiteEnv) {
		// One detail call fails every attempt: that instance is returned
		// without its key, the others with theirs, and the error names it.
		e.start(t)
		k := e.seedKeys(t, 1)[0]
		var want []cloud.Instance
		var bad SesterceInstance
		for i := range 5 {
			inst := e.srv.LaunchSesterceInstance(fmt.Sprintf("gpu-%d", i), k.ID)
			if i == 2 {
				bad = inst
				want = append(want, wantSesterce(inst, false))
				continue
			}
			want = append(want, wantSesterce(inst, true))
		}
		e.srv.Inject(Fault{Route: RouteSesterceInstance, Path: "/gpu-cloud/instances/" + bad.ID, Kind: FaultStatus, Status: 502})
		got, err := e.listInstances(t, suiteCtx(t))
		wantPartial(t, err, cloud.ErrTransient, "instance "+bad.ID)
		wantInstances(t, got, want)
	}},

	{name: "InstancesMalformed", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		if e.sesterce() {
			k := e.seedKeys(t, 1)[0]
			e.srv.LaunchSesterceInstance("a", k.ID)
			b := e.srv.LaunchSesterceInstance("b", k.ID)
			t.Run("list", func(t *testing.T) {
				e.srv.Inject(Fault{Route: RouteSesterceInstances, Kind: FaultMalformed, Count: 10})
				got, err := e.listInstances(t, suiteCtx(t))
				wantPartial(t, err, cloud.ErrTransient, "decode")
				if len(got) != 0 {
					t.Errorf("an undecodable list returned %d instances", len(got))
				}
				e.srv.ClearFaults()
			})
			t.Run("detail", func(t *testing.T) {
				e.srv.Inject(Fault{Route: RouteSesterceInstance, Path: "/gpu-cloud/instances/" + b.ID, Kind: FaultMalformed})
				got, err := e.listInstances(t, suiteCtx(t))
				wantPartial(t, err, cloud.ErrTransient, "instance "+b.ID)
				if len(got) != 2 {
					t.Errorf("with one undecodable detail, %d instances returned, want both", len(got))
				}
			})
			return
		}
		e.srv.LaunchGcoreInstance(e.project, 1, "fine", "k")
		e.srv.LaunchGcoreInstance(e.project, 2, "truncated", "k")
		e.srv.Inject(Fault{Route: RouteGcoreInstances, Path: gcoreInstancesPath(e.project, 2), Kind: FaultMalformed})
		got, err := e.listInstances(t, suiteCtx(t))
		wantPartial(t, err, cloud.ErrTransient, "region 2", "decode")
		if len(got) != 1 || got[0].Name != "fine" {
			t.Errorf("with region 2 undecodable, ListInstances returned %+v, want region 1's instance", got)
		}
	}},

	{name: "InstancesWrongShapes", run: func(t *testing.T, e *suiteEnv) {
		// Valid JSON of the wrong shape: a client must report it, never
		// panic on it, and keep what it can read.
		e.start(t)
		route, path := RouteSesterceInstances, ""
		bodies := map[string]string{
			"object without a list":   `{"total":3}`,
			"list of numbers":         `[1,2,3]`,
			"string":                  `"instances"`,
			"wrong field types":       `[{"_id":7,"name":["x"],"status":{"a":1},"sshPort":"twenty-two"}]`,
			"null":                    `null`,
			"wrapped list not a list": `{"data":{"_id":"x"}}`,
		}
		if !e.sesterce() {
			e.srv.LaunchGcoreInstance(e.project, 1, "kept", "k")
			e.srv.LaunchGcoreInstance(e.project, 2, "bad", "k")
			route, path = RouteGcoreInstances, gcoreInstancesPath(e.project, 2)
			bodies = map[string]string{
				"results not a list":  `{"count":1,"results":{"id":"x"}}`,
				"count not a number":  `{"count":"many","results":[]}`,
				"wrong field types":   `{"count":1,"results":[{"id":7,"name":["x"],"addresses":"none","region_id":"r"}]}`,
				"list at top level":   `[{"id":"x"}]`,
				"null":                `null`,
				"addresses malformed": `{"count":1,"results":[{"id":"y","addresses":{"n":[{"addr":5}]}}]}`,
			}
		}
		for name, body := range bodies {
			t.Run(name, func(t *testing.T) {
				e.srv.ClearFaults()
				e.srv.Inject(Fault{Route: route, Path: path, Kind: FaultReply, Status: 200, Body: body})
				got, err := e.listInstances(t, suiteCtx(t))
				if name == "null" && e.sesterce() {
					// null decodes as an empty list: nothing to report.
					if err != nil || len(got) != 0 {
						t.Errorf("null list: %d instances, %v; want none and no error", len(got), err)
					}
					return
				}
				if err == nil {
					t.Fatalf("body %s: ListInstances returned %+v and no error", body, got)
				}
				if !e.sesterce() && (len(got) != 1 || got[0].Name != "kept") {
					t.Errorf("body %s in region 2: returned %+v, want region 1's instance kept", body, got)
				}
			})
		}
	}},

	{name: "InstancesHugeBody", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		route := pick(e.sesterce(), RouteSesterceInstances, RouteGcoreInstances)
		if !e.sesterce() {
			e.srv.LaunchGcoreInstance(e.project, 1, "a", "k")
		}
		e.srv.Inject(Fault{Route: route, Kind: FaultHuge, Size: hugeInstanceBody})
		got, err := e.listInstances(t, suiteCtx(t))
		if err == nil {
			t.Fatalf("a %d-byte body: ListInstances returned %d instances and no error", hugeInstanceBody, len(got))
		}
		msg := strings.ToLower(err.Error())
		if !strings.Contains(msg, "limit") && !strings.Contains(msg, "too large") && !strings.Contains(msg, "exceeds") {
			t.Errorf("a %d-byte body: error %q does not name the size limit", hugeInstanceBody, err)
		}
	}},

	{name: "InstancesServerErrorStorm", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		route := pick(e.sesterce(), RouteSesterceInstances, RouteGcoreInstances)
		if !e.sesterce() {
			e.srv.LaunchGcoreInstance(e.project, 1, "a", "k")
		}
		e.srv.Inject(Fault{Route: route, Kind: FaultStatus, Status: 503})
		got, err := e.listInstances(t, suiteCtx(t))
		wantPartial(t, err, cloud.ErrTransient, "503")
		if len(got) != 0 {
			t.Errorf("every listing failed, yet %d instances were returned", len(got))
		}
		if n := e.srv.Requests(route); n < 2 {
			t.Errorf("%d requests during a 5xx storm, want retries", n)
		}
	}},

	{name: "InstancesRetried", run: func(t *testing.T, e *suiteEnv) {
		// A 429 and a dropped connection on the way: retried, nothing lost.
		e.start(t)
		var want []cloud.Instance
		if e.sesterce() {
			k := e.seedKeys(t, 1)[0]
			for i := range 3 {
				want = append(want, wantSesterce(e.srv.LaunchSesterceInstance(fmt.Sprintf("s%d", i), k.ID), true))
			}
			e.srv.Inject(Fault{Route: RouteSesterceInstances, Kind: FaultRateLimit, Count: 1})
			e.srv.Inject(Fault{Route: RouteSesterceInstance, Kind: FaultDrop, Count: 1})
		} else {
			for i := range 3 {
				inst := e.srv.LaunchGcoreInstance(e.project, 1, fmt.Sprintf("g%d", i), "k")
				want = append(want, e.wantGcore(inst, floating(inst)))
			}
			e.srv.Inject(Fault{Route: RouteGcoreRegions, Kind: FaultRateLimit, Count: 1})
			e.srv.Inject(Fault{Route: RouteGcoreInstances, Kind: FaultDrop, Count: 1})
		}
		wantInstances(t, e.mustListInstances(t, suiteCtx(t)), want)
	}},

	{name: "InstancesWrongAPIKey", run: func(t *testing.T, e *suiteEnv) {
		e.start(t)
		if e.sesterce() {
			e.srv.LaunchSesterceInstance("a", newHexID())
		} else {
			e.srv.LaunchGcoreInstance(e.project, 1, "a", "k")
		}
		for name, key := range map[string]string{"wrong": suiteWrongKey.Reveal(), "unknown": suiteSesterceUnknownKey.Reveal()} {
			if name == "unknown" && !e.sesterce() {
				continue
			}
			bad := e.client(t, suiteSesterceUnknownKey)
			if name == "wrong" {
				bad = e.client(t, suiteWrongKey)
			}
			l, ok := bad.(InstanceLister)
			if !ok {
				t.Fatalf("%T has no ListInstances", bad)
			}
			got, err := l.ListInstances(suiteCtx(t), e.project, nil)
			if !errors.Is(err, cloud.ErrUnauthorized) || len(got) != 0 {
				t.Errorf("ListInstances with the %s API key = %d instances, %v; want none and cloud.ErrUnauthorized", name, len(got), err)
			}
			AssertNoLeak(t, "ListInstances with the "+name+" key", []error{err}, "", key, e.validKey().Reveal())
		}
		for _, route := range Routes {
			if n := e.srv.Requests(route); n > 2 {
				t.Errorf("%d requests to %s with bad API keys, want at most 1 each (auth failures are not retried)", n, route)
			}
		}
	}},
}
