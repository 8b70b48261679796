package sesterce

import (
	"context"
	"fmt"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud"
)

// The benchmarks measure the client's overhead per call (encoding,
// decoding, fingerprints, rate limiter, logging checks) against a local
// server; the figures are printed, not asserted.

func BenchmarkClient_List(b *testing.B) {
	f := newFake(b)
	for i := range 50 {
		f.add(fmt.Sprintf("key-%d", i), newPublicKey(b, "bench"), i == 0)
	}
	c, _ := testClient(b, f.srv.URL, apiKey, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		keys, err := c.List(ctx, 0)
		if err != nil || len(keys) != 50 {
			b.Fatalf("List: %d keys, %v", len(keys), err)
		}
	}
}

func BenchmarkClient_Create(b *testing.B) {
	f := newFake(b)
	c, _ := testClient(b, f.srv.URL, apiKey, nil)
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
}
