package cloud_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
	"github.com/rotatord/rotatord/internal/cloud/gcore"
	"github.com/rotatord/rotatord/internal/cloud/httpapi"
	"github.com/rotatord/rotatord/internal/cloud/sesterce"
	"github.com/rotatord/rotatord/internal/secret"
)

// BenchmarkListInstances lists the inventory issue 11 sizes: 3 Gcore
// regions of 1,200 instances (two pages each) and 200 Sesterce instances
// (one list, 200 detail calls), 3,800 in all, from the contract fake on
// loopback with no client-side rate limit, so the figure is the client's
// and the fake's work, not the provider's pace. It reports instances/s
// beside ns/op; the fake's JSON encoding is part of the figure.
func BenchmarkListInstances(b *testing.B) {
	const (
		gcoreKey    secret.Secret = "bench-gcore-key-0123456789"
		sesterceKey secret.Secret = "bench-sesterce-key-0123456789"
		project                   = 1
		perRegion                 = 1200
		sesterceN                 = 200
		total                     = 3*perRegion + sesterceN
	)
	srv := cloudtest.NewServer(cloudtest.Options{GcoreAPIKey: gcoreKey, SesterceAPIKey: sesterceKey})
	b.Cleanup(srv.Close)
	var keyIDs []string
	for i := range 3 {
		pub, _ := cloudtest.NewPublicKey(b)
		keyIDs = append(keyIDs, srv.AddSesterceKey(fmt.Sprintf("key-%d", i), pub, i == 0).ID)
	}
	wantKey := map[string]string{} // instance ID -> key name (Gcore) or key ID (Sesterce)
	for r := int64(1); r <= 3; r++ {
		for i := range perRegion {
			var opts []cloudtest.InstanceOption
			if i%2 == 0 {
				opts = append(opts, cloudtest.OldFieldNames())
			}
			inst := srv.LaunchGcoreInstance(project, r, fmt.Sprintf("gpu-%d-%04d", r, i), fmt.Sprintf("key-%d", i%3), opts...)
			wantKey[inst.ID] = inst.KeyName
		}
	}
	for i := range sesterceN {
		inst := srv.LaunchSesterceInstance(fmt.Sprintf("s-%03d", i), keyIDs[i%3])
		wantKey[inst.ID] = inst.KeyID
	}
	cfg := func(name string, key secret.Secret) httpapi.Config {
		return httpapi.Config{Name: name, BaseURL: srv.URL(), APIKey: key, RateLimit: -1, Timeout: 30 * time.Second, UserAgent: "rotatord/bench"}
	}
	gc, err := gcore.New(cfg("gcore-bench", gcoreKey))
	if err != nil {
		b.Fatal(err)
	}
	sc, err := sesterce.New(cfg("sesterce-bench", sesterceKey))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	list := func() []cloud.Instance {
		g, err := gc.ListInstances(ctx, project, nil)
		if err != nil {
			b.Fatalf("gcore ListInstances: %v", err)
		}
		s, err := sc.ListInstances(ctx, 0, nil)
		if err != nil {
			b.Fatalf("sesterce ListInstances: %v", err)
		}
		return append(g, s...)
	}
	// Once, in full: every instance once, with the key it was launched with.
	got := list()
	seen := map[string]bool{}
	for _, inst := range got {
		key := inst.KeyName
		if inst.KeyID != "" {
			key = inst.KeyID
		}
		if want, ok := wantKey[inst.ID]; !ok || seen[inst.ID] || key != want {
			b.Fatalf("instance %s (%s): key %q, want %q (known %v, seen before %v)", inst.ID, inst.Name, key, want, ok, seen[inst.ID])
		}
		seen[inst.ID] = true
	}
	if len(seen) != total {
		b.Fatalf("listed %d instances, want %d", len(seen), total)
	}

	b.ReportAllocs()
	for b.Loop() {
		if n := len(list()); n != total {
			b.Fatalf("listed %d instances, want %d", n, total)
		}
	}
	b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "instances/s")
}
