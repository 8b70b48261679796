package sesterce

import (
	"context"
	"fmt"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud"
	"github.com/rotatord/rotatord/internal/cloud/cloudtest"
)

// The benchmarks measure the client's overhead per call (encoding,
// decoding, fingerprints, rate limiter, logging checks) against the
// contract fake on loopback. The figures are printed, not asserted.

func BenchmarkClient_List(b *testing.B) {
	srv := newFake(b)
	for i := range 50 {
		pub, _ := cloudtest.NewPublicKey(b)
		srv.AddSesterceKey(fmt.Sprintf("key-%d", i), pub, i == 0)
	}
	c := testClient(b, srv.URL(), apiKey, nil)
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
	srv := newFake(b)
	c := testClient(b, srv.URL(), apiKey, nil)
	pub, _ := cloudtest.NewPublicKey(b)
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
