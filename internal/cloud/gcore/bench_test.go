package gcore

import (
	"context"
	"fmt"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// The benchmarks measure the client's overhead per call (encoding,
// decoding, fingerprints, paging, rate limiter) against a local server:
// this package's minimal fake, and the contract fake. The figures are
// printed, not asserted.

func benchServers(b *testing.B) map[string]struct {
	url  string
	seed func(name, pub string)
} {
	f := newFake(b)
	ct := cloudtest.NewServer(cloudtest.Options{GcoreAPIKey: apiKey})
	b.Cleanup(ct.Close)
	return map[string]struct {
		url  string
		seed func(name, pub string)
	}{
		"httptest":  {f.srv.URL, func(n, p string) { f.add(proj, n, p) }},
		"cloudtest": {ct.URL(), func(n, p string) { ct.AddGcoreKey(proj, n, p) }},
	}
}

func BenchmarkClient_List(b *testing.B) {
	for name, s := range benchServers(b) {
		b.Run(name, func(b *testing.B) {
			pub := newPublicKey()
			for i := range 50 {
				s.seed(fmt.Sprintf("key-%d", i), pub)
			}
			c, _ := testClient(b, s.url, apiKey, 0, nil)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				keys, err := c.List(ctx, proj)
				if err != nil || len(keys) != 50 {
					b.Fatalf("List: %d keys, %v", len(keys), err)
				}
			}
		})
	}
}

func BenchmarkClient_Create(b *testing.B) {
	for name, s := range benchServers(b) {
		b.Run(name, func(b *testing.B) {
			c, _ := testClient(b, s.url, apiKey, 0, nil)
			pub := newPublicKey()
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := c.Create(ctx, proj, cloud.CreateRequest{Name: fmt.Sprintf("k-%d", i), PublicKey: pub}); err != nil {
					b.Fatalf("Create: %v", err)
				}
			}
		})
	}
}
