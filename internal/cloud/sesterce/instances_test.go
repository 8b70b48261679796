package sesterce

import (
	"context"
	"fmt"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// The listing contract (attribution, the detail call, list envelopes,
// failing details, bad bodies) is checked by cloudtest.RunInstanceSuite in
// conformance_test.go. What follows are Sesterce's own edges, in shapes the
// sources leave open (reference/instances.md §4).

// TestClient_ListInstances_goneBeforeDetail: an instance terminated
// between the list and its detail call answers 404; it is no longer there,
// so it is left out, and that is no error.
func TestClient_ListInstances_goneBeforeDetail(t *testing.T) {
	srv := newFake(t)
	pub, _ := cloudtest.NewPublicKey(t)
	k := srv.AddSesterceKey("k", pub, true)
	kept := srv.LaunchSesterceInstance("kept", k.ID)
	gone := srv.LaunchSesterceInstance("gone", k.ID)
	srv.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceInstance, Path: "/gpu-cloud/instances/" + gone.ID,
		Kind: cloudtest.FaultStatus, Status: 404, Message: "Not found"})
	got, err := testClient(t, srv.URL(), apiKey, nil).ListInstances(context.Background(), 0, nil)
	if err != nil {
		t.Fatalf("ListInstances: %v", err)
	}
	if len(got) != 1 || got[0].ID != kept.ID || got[0].KeyID != k.ID {
		t.Errorf("ListInstances = %+v, want only %s with key %s", got, kept.ID, k.ID)
	}
}

// TestClient_ListInstances_detailShapes: detail answers the sources do
// not pin down are read loosely.
func TestClient_ListInstances_detailShapes(t *testing.T) {
	pub, fp := cloudtest.NewPublicKey(t)
	tests := []struct {
		name string
		body func(id string) string
		want cloud.Instance
	}{
		{name: "wrapped in data, port as a string",
			body: func(id string) string {
				return fmt.Sprintf(`{"data":{"_id":%q,"status":"active","ip":"203.0.113.1","sshUser":"root","sshPort":"2222",`+
					`"sshKey":{"_id":"k1","name":"team","publicKey":%q}}}`, id, pub)
			},
			want: cloud.Instance{KeyID: "k1", KeyName: "team", KeyFingerprint: fp, Address: "203.0.113.1", User: "root", Port: 2222}},
		{name: "sshKey as a bare id",
			body: func(id string) string { return fmt.Sprintf(`{"_id":%q,"sshKey":"65f0000000000000000000aa"}`, id) },
			want: cloud.Instance{KeyID: "65f0000000000000000000aa", Address: "198.19.0.1", User: "ubuntu", Port: 22}},
		{name: "sshKey null, ssh fields null",
			body: func(id string) string {
				return fmt.Sprintf(`{"_id":%q,"sshKey":null,"ip":null,"sshUser":null,"sshPort":null}`, id)
			},
			want: cloud.Instance{Address: "198.19.0.1", User: "ubuntu", Port: 22}},
		{name: "id instead of _id in the key",
			body: func(id string) string {
				return fmt.Sprintf(`{"_id":%q,"sshKey":{"id":"k9","publicKey":"not a key"}}`, id)
			},
			want: cloud.Instance{KeyID: "k9", Address: "198.19.0.1", User: "ubuntu", Port: 22}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFake(t)
			inst := srv.LaunchSesterceInstance("vm", "launch-key")
			srv.Inject(cloudtest.Fault{Route: cloudtest.RouteSesterceInstance, Kind: cloudtest.FaultReply, Status: 200, Body: tt.body(inst.ID)})
			got, err := testClient(t, srv.URL(), apiKey, nil).ListInstances(context.Background(), 0, nil)
			if err != nil || len(got) != 1 {
				t.Fatalf("ListInstances = %+v, %v; want the one instance", got, err)
			}
			g := got[0]
			w := tt.want
			if g.ID != inst.ID || g.KeyID != w.KeyID || g.KeyName != w.KeyName || g.KeyFingerprint != w.KeyFingerprint ||
				g.Address != w.Address || g.User != w.User || g.Port != w.Port {
				t.Errorf("instance %+v\nwant key %q/%q/%q at %s@%s:%d", g, w.KeyID, w.KeyName, w.KeyFingerprint, w.User, w.Address, w.Port)
			}
		})
	}
}
