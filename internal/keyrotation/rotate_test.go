package keyrotation_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/keyrotation"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

var (
	oldKey = []byte("0123456789abcdef0123456789abcdef")
	newKey = []byte("fedcba9876543210fedcba9876543210")
)

// backends gives each test a fresh, migrated store on PostgreSQL and SQLite.
func backends(t *testing.T) map[string]func(t *testing.T) store.Store {
	open := func(t *testing.T, url string) store.Store {
		ctx := context.Background()
		mg, err := storeopen.NewMigrator(url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mg.Up(ctx); err != nil {
			t.Fatal(err)
		}
		mg.Close()
		st, err := storeopen.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	return map[string]func(t *testing.T) store.Store{
		"postgres": func(t *testing.T) store.Store { return open(t, pgtest.NewDatabase(t)) },
		"sqlite": func(t *testing.T) store.Store {
			return open(t, "sqlite://"+filepath.Join(t.TempDir(), "ts.db"))
		},
	}
}

func bindings(user, provider string) (crypto.Binding, crypto.Binding) {
	return crypto.Binding{Owner: user, Provider: provider, Purpose: crypto.PurposeRefreshToken},
		crypto.Binding{Owner: user, Provider: provider, Purpose: crypto.PurposeAccessToken}
}

// fill stores n credentials sealed under ring, refresh token "rt-<i>",
// access token "at-<i>" (every third without an access token).
func fill(t *testing.T, st store.Store, ring *crypto.KeyRing, n int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				user := fmt.Sprintf("user-%05d", i)
				rb, ab := bindings(user, "github")
				rt, _ := ring.Seal([]byte(fmt.Sprintf("rt-%d", i)), rb)
				var at []byte
				if i%3 != 0 {
					at, _ = ring.Seal([]byte(fmt.Sprintf("at-%d", i)), ab)
				}
				if _, err := st.UpsertCredential(ctx, store.Credential{UserID: user, Provider: "github", KeyID: ring.PrimaryKeyID(), RefreshToken: rt, AccessToken: at, State: store.StateActive}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		select {
		case work <- i:
		case err := <-errs:
			t.Fatal(err)
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// checkAll opens every credential with ring and checks its plaintexts and key.
func checkAll(t *testing.T, st store.Store, ring *crypto.KeyRing, n int, wantKey string) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		user := fmt.Sprintf("user-%05d", i)
		c, err := st.GetCredential(ctx, user, "github")
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		if wantKey != "" && c.KeyID != wantKey {
			t.Fatalf("%s: key %s, want %s", user, c.KeyID, wantKey)
		}
		rb, ab := bindings(user, "github")
		rt, err := ring.Open(c.RefreshToken, rb)
		if err != nil || string(rt) != fmt.Sprintf("rt-%d", i) {
			t.Fatalf("%s: refresh token %q, %v", user, rt, err)
		}
		if i%3 == 0 {
			if len(c.AccessToken) != 0 {
				t.Fatalf("%s: access token appeared", user)
			}
			continue
		}
		at, err := ring.Open(c.AccessToken, ab)
		if err != nil || string(at) != fmt.Sprintf("at-%d", i) {
			t.Fatalf("%s: access token %q, %v", user, at, err)
		}
		if id, _ := crypto.KeyIDOf(c.AccessToken); wantKey != "" && id != wantKey {
			t.Fatalf("%s: access token under %s", user, id)
		}
	}
}

// TestRotate10000 is the acceptance test: 10,000 rows re-encrypted,
// every token intact, and a second run finds nothing to do.
func TestRotate10000(t *testing.T) {
	const n = 10000
	for name, newStore := range backends(t) {
		t.Run(name, func(t *testing.T) {
			st := newStore(t)
			old, _ := crypto.NewKeyRing(oldKey)
			fill(t, st, old, n)

			ring, _ := crypto.NewKeyRing(newKey, oldKey)
			var reports int
			p, err := keyrotation.Rotate(context.Background(), st, ring, keyrotation.Options{
				BatchSize:  700,
				OnProgress: func(keyrotation.Progress) { reports++ },
			})
			if err != nil {
				t.Fatal(err)
			}
			if p.Total != n || p.Done != n || p.Failed != 0 {
				t.Fatalf("progress %+v, want %d done", p, n)
			}
			if reports < n/700 {
				t.Fatalf("progress reported %d times", reports)
			}
			// Only the new key is needed from now on.
			onlyNew, _ := crypto.NewKeyRing(newKey)
			checkAll(t, st, onlyNew, n, ring.PrimaryKeyID())

			p, err = keyrotation.Rotate(context.Background(), st, ring, keyrotation.Options{})
			if err != nil || p.Total != 0 || p.Done != 0 {
				t.Fatalf("second run: %+v %v, want nothing to do", p, err)
			}
		})
	}
}

// TestRotateStoppedHalfWayResumes stops a run after some batches and checks
// that nothing was lost and a second run finishes the rest.
func TestRotateStoppedHalfWayResumes(t *testing.T) {
	const n = 1000
	for name, newStore := range backends(t) {
		t.Run(name, func(t *testing.T) {
			st := newStore(t)
			old, _ := crypto.NewKeyRing(oldKey)
			fill(t, st, old, n)
			ring, _ := crypto.NewKeyRing(newKey, oldKey)

			ctx, cancel := context.WithCancel(context.Background())
			p, err := keyrotation.Rotate(ctx, st, ring, keyrotation.Options{
				BatchSize: 100,
				OnProgress: func(p keyrotation.Progress) {
					if p.Done >= 300 {
						cancel()
					}
				},
			})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("want the run to stop with context.Canceled, got %+v %v", p, err)
			}
			if p.Done < 300 || p.Done >= n {
				t.Fatalf("stopped run did %d", p.Done)
			}
			// Half rotated: both keys needed, every token intact.
			checkAll(t, st, ring, n, "")

			p2, err := keyrotation.Rotate(context.Background(), st, ring, keyrotation.Options{BatchSize: 100})
			if err != nil {
				t.Fatal(err)
			}
			if p2.Total != n-p.Done || p2.Done != p2.Total {
				t.Fatalf("resume: %+v after %d", p2, p.Done)
			}
			checkAll(t, st, ring, n, ring.PrimaryKeyID())
		})
	}
}

// TestRotateReportsUnopenableRowsAndContinues: a row sealed under a key that
// is not in CRYPTOKEY is reported and left byte-identical; the rest rotate.
func TestRotateReportsUnopenableRowsAndContinues(t *testing.T) {
	for name, newStore := range backends(t) {
		t.Run(name, func(t *testing.T) {
			st := newStore(t)
			ctx := context.Background()
			old, _ := crypto.NewKeyRing(oldKey)
			fill(t, st, old, 10)
			lost, _ := crypto.NewKeyRing([]byte("this key is not in the ring.....")) // 32 bytes
			rb, _ := bindings("orphan", "github")
			rt, _ := lost.Seal([]byte("orphan-rt"), rb)
			orphan, err := st.UpsertCredential(ctx, store.Credential{UserID: "orphan", Provider: "github", KeyID: lost.PrimaryKeyID(), RefreshToken: rt, State: store.StateActive})
			if err != nil {
				t.Fatal(err)
			}

			ring, _ := crypto.NewKeyRing(newKey, oldKey)
			var failed []string
			p, err := keyrotation.Rotate(ctx, st, ring, keyrotation.Options{OnFailure: func(c store.Credential, err error) {
				if !errors.Is(err, crypto.ErrUnknownKey) {
					t.Errorf("failure reason %v", err)
				}
				failed = append(failed, c.UserID)
			}})
			if err != nil {
				t.Fatal(err)
			}
			if p.Done != 10 || p.Failed != 1 || len(failed) != 1 || failed[0] != "orphan" {
				t.Fatalf("progress %+v, failed %v", p, failed)
			}
			after, err := st.GetCredential(ctx, "orphan", "github")
			if err != nil {
				t.Fatal(err)
			}
			if string(after.RefreshToken) != string(orphan.RefreshToken) || after.KeyID != orphan.KeyID {
				t.Fatal("the unopenable row was changed")
			}
		})
	}
}

// TestRotateDoesNotOverwriteAConcurrentRefresh: a row rewritten between the
// rotation's read and its write keeps the newer tokens.
func TestRotateDoesNotOverwriteAConcurrentRefresh(t *testing.T) {
	for name, newStore := range backends(t) {
		t.Run(name, func(t *testing.T) {
			st := newStore(t)
			ctx := context.Background()
			old, _ := crypto.NewKeyRing(oldKey)
			fill(t, st, old, 1)
			ring, _ := crypto.NewKeyRing(newKey, oldKey)
			stale, err := st.GetCredential(ctx, "user-00000", "github")
			if err != nil {
				t.Fatal(err)
			}
			// A refresh happens (under the old key, as an old replica would).
			rb, _ := bindings("user-00000", "github")
			if _, err := st.UpdateCredential(ctx, "user-00000", "github", func(c *store.Credential) (store.Outcome, error) {
				c.RefreshToken, _ = old.Seal([]byte("rt-rotated"), rb)
				c.AccessToken = nil
				return store.Write(), nil
			}); err != nil {
				t.Fatal(err)
			}
			// The rotation's write built from the stale read must be refused.
			next, err := keyrotation.Reseal(ring, stale)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.ReplaceCredentialCiphertexts(ctx, next); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("stale replace: want ErrConflict, got %v", err)
			}
			// A full run re-reads and rotates the new value.
			if _, err := keyrotation.Rotate(ctx, st, ring, keyrotation.Options{}); err != nil {
				t.Fatal(err)
			}
			c, _ := st.GetCredential(ctx, "user-00000", "github")
			pt, err := ring.Open(c.RefreshToken, rb)
			if err != nil || string(pt) != "rt-rotated" || c.KeyID != ring.PrimaryKeyID() {
				t.Fatalf("after rotation: %q %v key %s", pt, err, c.KeyID)
			}
		})
	}
}
