package gcore

import (
	"context"
	"fmt"
	"testing"

	"github.com/rotatord/rotatord/internal/cloud"
)

// The benchmarks measure the client's overhead per call (encoding,
// decoding, fingerprints, paging, rate limiter) against a local server;
// the figures are printed, not asserted.

func BenchmarkClient_List(b *testing.B) {
	f := newFake(b)
	pub := newPublicKey()
	for i := range 50 {
		f.add(proj, fmt.Sprintf("key-%d", i), pub)
	}
	c, _ := testClient(b, f.srv.URL, apiKey, 0, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		keys, err := c.List(ctx, proj)
		if err != nil || len(keys) != 50 {
			b.Fatalf("List: %d keys, %v", len(keys), err)
		}
	}
}

func BenchmarkClient_Create(b *testing.B) {
	f := newFake(b)
	c, _ := testClient(b, f.srv.URL, apiKey, 0, nil)
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
}
