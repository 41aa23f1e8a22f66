package storetest

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
)

// NewReplicas returns two stores on one fresh, empty, migrated database,
// each with its own connections, as two server replicas (or the server and
// a CLI) would have.
type NewReplicas func(t *testing.T) (a, b store.Store)

// RunReplicas runs the checks that need two stores on one database: the
// guarantees the contract makes across processes, which one store's
// in-process behaviour could otherwise fake.
func RunReplicas(t *testing.T, newReplicas NewReplicas) {
	t.Run("UpdateCredentialAcrossReplicas", func(t *testing.T) {
		a, b := newReplicas(t)
		testUpdateAcrossReplicas(t, a, b)
	})
	t.Run("ConsumeLinkStateAcrossReplicas", func(t *testing.T) {
		a, b := newReplicas(t)
		testConsumeAcrossReplicas(t, a, b)
	})
	t.Run("WritesVisibleAcrossReplicas", func(t *testing.T) {
		a, b := newReplicas(t)
		got := mustUpsert(t, a, newCredential("alice", "github"))
		read, err := b.GetCredential(t.Context(), "alice", "github")
		if err != nil {
			t.Fatalf("GetCredential on the other replica: %v", err)
		}
		sameCredential(t, got, read)
	})
}

func testUpdateAcrossReplicas(t *testing.T, a, b store.Store) {
	const n = 8
	c := newCredential("alice", "github")
	c.TokenType = "0"
	mustUpsert(t, a, c)

	var inside, overlaps atomic.Int32
	var wg sync.WaitGroup
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			_, err := s.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				defer inside.Add(-1)
				v, err := strconv.Atoi(c.TokenType)
				if err != nil {
					return store.Unchanged(), err
				}
				time.Sleep(10 * time.Millisecond)
				c.TokenType = strconv.Itoa(v + 1)
				return store.Write(), nil
			})
			if err != nil {
				t.Errorf("UpdateCredential: %v", err)
			}
		})
	}
	wg.Wait()
	// The committed row, as an update reads it (locked, never from a
	// cache): a wrapper may serve b's own last write for a while, which
	// would say nothing about lost updates.
	var got store.Credential
	if _, err := b.UpdateCredential(t.Context(), "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		got = *c
		return store.Unchanged(), nil
	}); err != nil {
		t.Fatal(err)
	}
	if got.TokenType != strconv.Itoa(n) {
		t.Errorf("counter = %s after %d increments split over two stores: lost updates", got.TokenType, n)
	}
	if o := overlaps.Load(); o != 0 {
		t.Errorf("fn ran concurrently %d times across stores", o)
	}
}

func testConsumeAcrossReplicas(t *testing.T, a, b store.Store) {
	for i := range 20 {
		st := "st" + strconv.Itoa(i)
		if err := a.CreateLinkState(t.Context(), newLinkState(st)); err != nil {
			t.Fatal(err)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for _, s := range []store.Store{a, b, a, b} {
			wg.Go(func() {
				_, err := s.ConsumeLinkState(t.Context(), st, base)
				switch {
				case err == nil:
					wins.Add(1)
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("ConsumeLinkState: %v", err)
				}
			})
		}
		wg.Wait()
		if w := wins.Load(); w != 1 {
			t.Fatalf("state %s consumed %d times", st, w)
		}
	}
}
