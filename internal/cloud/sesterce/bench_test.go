package sesterce

import (
	"context"
	"fmt"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// The benchmarks measure the client's overhead per call (encoding,
// decoding, fingerprints, rate limiter, logging checks) against a local
// server: this package's minimal fake, and the contract fake. The figures
// are printed, not asserted.

// benchServers returns, for each fake, its URL and a function that seeds
// a key.
func benchServers(b *testing.B) map[string]struct {
	url  string
	seed func(name, pub string, def bool)
} {
	f := newFake(b)
	ct := cloudtest.NewServer(cloudtest.Options{SesterceAPIKey: apiKey})
	b.Cleanup(ct.Close)
	return map[string]struct {
		url  string
		seed func(name, pub string, def bool)
	}{
		"httptest":  {f.srv.URL, func(n, p string, d bool) { f.add(n, p, d) }},
		"cloudtest": {ct.URL(), func(n, p string, d bool) { ct.AddSesterceKey(n, p, d) }},
	}
}

func BenchmarkClient_List(b *testing.B) {
	for name, s := range benchServers(b) {
		b.Run(name, func(b *testing.B) {
			for i := range 50 {
				s.seed(fmt.Sprintf("key-%d", i), newPublicKey(b, "bench"), i == 0)
			}
			c, _ := testClient(b, s.url, apiKey, nil)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				keys, err := c.List(ctx, 0)
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
			c, _ := testClient(b, s.url, apiKey, nil)
			pub := newPublicKey(b, "bench")
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := c.Create(ctx, 0, cloud.CreateRequest{Name: fmt.Sprintf("k-%d", i), PublicKey: pub}); err != nil {
					b.Fatalf("Create: %v", err)
				}
			}
		})
	}
}
