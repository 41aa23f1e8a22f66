package storetest

import (
	"context"
	"strconv"
	"testing"

	"github.com/tokenstore/tokenstore/internal/store"
)

// BenchmarkGetCredential measures the hot read of the token endpoint: one
// credential by (user, provider), with enough other rows that the lookup
// goes through the index.
func BenchmarkGetCredential(b *testing.B, s store.Store) {
	ctx := context.Background()
	seed(b, s, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetCredential(ctx, "user-500", "github"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUpdateCredential measures the refresh write path: lock, fn,
// write, commit (fn does no I/O here).
func BenchmarkUpdateCredential(b *testing.B, s store.Store) {
	ctx := context.Background()
	seed(b, s, 1000)
	rt := []byte("rt-ciphertext-rotated-0123456789abcdef0123456789abcdef")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.UpdateCredential(ctx, "user-500", "github", func(c *store.Credential) (store.Outcome, error) {
			c.RefreshToken = rt
			return store.Write(), nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

func seed(b *testing.B, s store.Store, n int) {
	b.Helper()
	for i := range n {
		c := newCredential("user-"+strconv.Itoa(i), "github")
		if _, err := s.UpsertCredential(context.Background(), c); err != nil {
			b.Fatalf("seed: %v", err)
		}
	}
}
