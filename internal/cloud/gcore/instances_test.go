package gcore

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// The listing contract (attribution, paging, both field generations,
// failing regions, bad bodies) is checked by cloudtest.RunInstanceSuite in
// conformance_test.go. What follows are Gcore's own edges.

func TestPickAddress(t *testing.T) {
	tests := []struct {
		name  string
		addrs map[string][]addressDTO
		fixed []fixedIPDTO
		want  string
	}{
		{name: "only fixed_ip_assignments, external first",
			fixed: []fixedIPDTO{{IPAddress: "10.0.0.3"}, {IPAddress: "185.1.1.1", External: true}}, want: "185.1.1.1"},
		{name: "IPv4-mapped IPv6 is IPv4", addrs: map[string][]addressDTO{"n": {{Addr: "::ffff:203.0.113.9", Type: "fixed"}, {Addr: "2001:db8::2", Type: "floating"}}},
			want: "203.0.113.9"},
		{name: "type missing counts as fixed", addrs: map[string][]addressDTO{"n": {{Addr: "10.9.9.9"}, {Addr: "198.51.100.4", Type: "floating"}}},
			want: "198.51.100.4"},
		{name: "floating in a later network still wins", addrs: map[string][]addressDTO{
			"a": {{Addr: "10.0.0.1", Type: "fixed"}}, "b": {{Addr: "198.51.100.5", Type: "FLOATING"}}}, want: "198.51.100.5"},
		{name: "nothing usable", addrs: map[string][]addressDTO{"n": {{Addr: ""}, {Addr: "host.example"}}}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickAddress(tt.addrs, tt.fixed); got != tt.want {
				t.Errorf("pickAddress = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestClient_ListInstances_countNeverReached: a region whose count is
// never reached must not page the client for ever.
func TestClient_ListInstances_countNeverReached(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		wantN int
	}{
		{name: "same page again", body: `{"count":100,"results":[{"id":"a","name":"a"},{"id":"b","name":"b"}]}`, wantN: 2},
		{name: "instances without id", body: `{"count":100,"results":[{"name":"x"},{"name":"y"}]}`, wantN: 2},
		{name: "results missing", body: `{"count":5}`, wantN: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			srv.AddGcoreRegion(1, "R1", "ACTIVE")
			srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreInstances, Kind: cloudtest.FaultReply, Status: 200, Body: tt.body})
			got, err := testClient(t, srv.URL(), apiKey, 2, nil).ListInstances(context.Background(), proj, nil)
			if err != nil {
				t.Fatalf("ListInstances: %v", err)
			}
			if len(got) != tt.wantN {
				t.Errorf("ListInstances returned %d instances, want %d", len(got), tt.wantN)
			}
			if n := srv.Requests(cloudtest.RouteGcoreInstances); n > 2 {
				t.Errorf("%d pages read, want the client to stop after at most 2", n)
			}
		})
	}
}

func TestClient_ListInstances_project(t *testing.T) {
	srv := newFake(t)
	_, err := testClient(t, srv.URL(), apiKey, 0, nil).ListInstances(context.Background(), 0, []int64{1})
	if !errors.Is(err, cloud.ErrPermanent) || !strings.Contains(err.Error(), "project") {
		t.Fatalf("ListInstances without a project = %v, want a permanent error naming the project", err)
	}
	if n := srv.Requests(cloudtest.RouteAll); n != 0 {
		t.Errorf("%d requests without a project, want none", n)
	}
}

// TestClient_ListInstances_regionList: the region list is paged too, and
// a region list that cannot be read leaves nothing to list.
func TestClient_ListInstances_regionList(t *testing.T) {
	srv := newFake(t)
	for r := int64(1); r <= 5; r++ {
		srv.LaunchGcoreInstance(proj, r, "vm", "k")
	}
	got, err := testClient(t, srv.URL(), apiKey, 2, nil).ListInstances(context.Background(), proj, nil)
	if err != nil || len(got) != 5 {
		t.Fatalf("ListInstances over 5 regions, pages of 2: %d instances, %v; want 5", len(got), err)
	}
	if n := srv.Requests(cloudtest.RouteGcoreRegions); n != 3 {
		t.Errorf("%d region list pages, want 3", n)
	}
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteGcoreRegions, Kind: cloudtest.FaultStatus, Status: 403, Message: "no access to regions"})
	got, err = testClient(t, srv.URL(), apiKey, 0, nil).ListInstances(context.Background(), proj, nil)
	if !errors.Is(err, cloud.ErrUnauthorized) || len(got) != 0 || !strings.Contains(err.Error(), "list regions") {
		t.Errorf("ListInstances with the region list refused = %d instances, %v; want none and the list regions error", len(got), err)
	}
}
