package cached_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/cached"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/postgres"
	"github.com/tokenstore/tokenstore/internal/store/sqlite"
	"github.com/tokenstore/tokenstore/internal/store/storetest"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

func migrate(tb testing.TB, url string) {
	tb.Helper()
	m, err := storeopen.NewMigrator(url)
	if err != nil {
		tb.Fatalf("NewMigrator: %v", err)
	}
	defer m.Close()
	if _, err := m.Up(context.Background()); err != nil {
		tb.Fatalf("migrate up: %v", err)
	}
}

// sqliteFile returns the path of a new, migrated SQLite database file.
func sqliteFile(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "tokenstore.db")
	migrate(tb, "sqlite://"+path)
	return path
}

func openSQLite(tb testing.TB, path string) store.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		tb.Fatalf("sqlite.Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// pgSchema returns the URL of a new, migrated schema in the database at dbURL.
func pgSchema(tb testing.TB, dbURL string) string {
	tb.Helper()
	url := pgtest.NewSchema(tb, dbURL)
	migrate(tb, url)
	return url
}

func openPostgres(tb testing.TB, url string) store.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), url)
	if err != nil {
		tb.Fatalf("postgres.Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// The cache passes the suite every backend passes, over each backend: with
// the cache between them, a caller cannot tell its own writes from an
// uncached store's.
func TestConformanceSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return cached.New(openSQLite(t, sqliteFile(t)), cached.Options{})
	})
}

func TestConformancePostgres(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return cached.New(openPostgres(t, pgSchema(t, dbURL)), cached.Options{})
	})
}

// The cross-store checks, with a cache on each replica: the row lock and
// the single consumption of a link state hold through it, and a row linked
// through one replica is found at once through the other ("not found" is
// not cached).
func TestConformanceReplicasSQLite(t *testing.T) {
	storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
		path := sqliteFile(t)
		return cached.New(openSQLite(t, path), cached.Options{}), cached.New(openSQLite(t, path), cached.Options{})
	})
}

func TestConformanceReplicasPostgres(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
		url := pgSchema(t, dbURL)
		return cached.New(openPostgres(t, url), cached.Options{}), cached.New(openPostgres(t, url), cached.Options{})
	})
}

// counting counts the hot path's reads on their way to the database.
type counting struct {
	store.Store
	creds, sessions, grants int
}

func (s *counting) GetCredential(ctx context.Context, userID, provider string) (store.Credential, error) {
	s.creds++
	return s.Store.GetCredential(ctx, userID, provider)
}

func (s *counting) GetSession(ctx context.Context, id string, now time.Time) (store.Session, error) {
	s.sessions++
	return s.Store.GetSession(ctx, id, now)
}

func (s *counting) FindUsableGrant(ctx context.Context, userID, provider, ns, name, uid string, now time.Time) (store.Grant, error) {
	s.grants++
	return s.Store.FindUsableGrant(ctx, userID, provider, ns, name, uid, now)
}

// replicas are two cached stores on one database, as two replicas of
// serve have, each with its own clock and a count of the reads that reach
// the database; other is the database seen without a cache (another
// replica's writes, or the CLI's).
type replicas struct {
	a, b         *cached.Store
	ca, cb       *counting
	clockA, clkB *testutil.Clock
	other        store.Store
}

const ttl = time.Second

func newReplicas(t *testing.T) *replicas {
	path := sqliteFile(t)
	start := time.Now()
	r := &replicas{clockA: testutil.NewClock(start), clkB: testutil.NewClock(start), other: openSQLite(t, path)}
	r.ca, r.cb = &counting{Store: openSQLite(t, path)}, &counting{Store: openSQLite(t, path)}
	r.a = cached.New(r.ca, cached.Options{TTL: ttl, Now: r.clockA.Now})
	r.b = cached.New(r.cb, cached.Options{TTL: ttl, Now: r.clkB.Now})
	return r
}

func credential(user, provider, at string) store.Credential {
	return store.Credential{UserID: user, Provider: provider, KeyID: "k1", RefreshToken: []byte("rt"), AccessToken: []byte(at), TokenType: "Bearer"}
}

func mustGet(t *testing.T, s store.Store, user, provider string) store.Credential {
	t.Helper()
	c, err := s.GetCredential(t.Context(), user, provider)
	if err != nil {
		t.Fatalf("GetCredential: %v", err)
	}
	return c
}

// TestCredentials: reads are cached for the TTL; this replica's own writes
// (link, locked update, delete, key rotation) are seen at once; another
// replica's within the TTL, and not before its end when nothing here wrote.
func TestCredentials(t *testing.T) {
	r := newReplicas(t)
	ctx := t.Context()
	if _, err := r.a.UpsertCredential(ctx, credential("alice", "github", "at1")); err != nil {
		t.Fatal(err)
	}
	// Reads within the TTL cost one database read.
	for range 5 {
		if c := mustGet(t, r.a, "alice", "github"); string(c.AccessToken) != "at1" {
			t.Fatalf("access token %q, want at1", c.AccessToken)
		}
	}
	if r.ca.creds != 1 {
		t.Fatalf("%d database reads for 5 cached reads, want 1", r.ca.creds)
	}
	mustGet(t, r.b, "alice", "github")

	// Own write, seen at once.
	res, err := r.a.UpdateCredential(ctx, "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.AccessToken = []byte("at2")
		return store.Write(), nil
	})
	if err != nil || !res.Written {
		t.Fatalf("UpdateCredential: %+v, %v", res, err)
	}
	n := r.ca.creds
	if c := mustGet(t, r.a, "alice", "github"); string(c.AccessToken) != "at2" || c.Version != res.Credential.Version {
		t.Fatalf("after its own update A reads %q v%d, want at2 v%d", c.AccessToken, c.Version, res.Credential.Version)
	}
	if r.ca.creds != n {
		t.Error("the row A committed was read again instead of cached")
	}

	// Another replica's write: B serves its cached row until the TTL ends,
	// then the new one.
	r.clkB.Add(ttl - time.Millisecond)
	if c := mustGet(t, r.b, "alice", "github"); string(c.AccessToken) != "at1" {
		t.Fatalf("B within the TTL reads %q: the row was not cached", c.AccessToken)
	}
	r.clkB.Add(time.Millisecond)
	if c := mustGet(t, r.b, "alice", "github"); string(c.AccessToken) != "at2" {
		t.Fatalf("B after the TTL reads %q, want at2", c.AccessToken)
	}

	// An update that writes nothing, or fails, leaves nothing stale: the
	// next read goes to the database.
	if _, err := r.other.UpdateCredential(ctx, "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.AccessToken = []byte("at3")
		return store.Write(), nil
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("provider down")
	if _, err := r.a.UpdateCredential(ctx, "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		return store.Outcome{}, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("UpdateCredential: %v, want fn's error", err)
	}
	if c := mustGet(t, r.a, "alice", "github"); string(c.AccessToken) != "at3" {
		t.Fatalf("after a failed update A reads %q, want at3 (the row fn saw)", c.AccessToken)
	}

	// Key rotation through A.
	cur := mustGet(t, r.a, "alice", "github")
	cur.KeyID, cur.RefreshToken, cur.AccessToken = "k2", []byte("rt-k2"), []byte("at-k2")
	if _, err := r.a.ReplaceCredentialCiphertexts(ctx, cur); err != nil {
		t.Fatal(err)
	}
	if c := mustGet(t, r.a, "alice", "github"); c.KeyID != "k2" {
		t.Fatalf("after its own rotation A reads key %q, want k2", c.KeyID)
	}

	// Re-link through A.
	if _, err := r.a.UpsertCredential(ctx, credential("alice", "github", "at4")); err != nil {
		t.Fatal(err)
	}
	if c := mustGet(t, r.a, "alice", "github"); string(c.AccessToken) != "at4" {
		t.Fatalf("after its own link A reads %q, want at4", c.AccessToken)
	}

	// Delete: no stale read after it here, none past the TTL there.
	mustGet(t, r.b, "alice", "github")
	if err := r.a.DeleteCredential(ctx, "alice", "github"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.GetCredential(ctx, "alice", "github"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("A after its own delete: %v, want ErrNotFound", err)
	}
	r.clkB.Add(ttl)
	if _, err := r.b.GetCredential(ctx, "alice", "github"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("B a TTL after the delete: %v, want ErrNotFound", err)
	}

	// "Not found" is not cached: a link through the other replica is found
	// at once.
	if _, err := r.other.UpsertCredential(ctx, credential("alice", "github", "at5")); err != nil {
		t.Fatal(err)
	}
	if c := mustGet(t, r.b, "alice", "github"); string(c.AccessToken) != "at5" {
		t.Fatalf("B right after another replica's link reads %q, want at5", c.AccessToken)
	}
}

// TestReadAcrossWrite: a read that began before this replica's write and
// ended after it does not put the row it read back into the cache.
func TestReadAcrossWrite(t *testing.T) {
	path := sqliteFile(t)
	raw := openSQLite(t, path)
	clk := testutil.NewClock(time.Now())
	slow := &slowReads{Store: raw, read: make(chan struct{}), release: make(chan struct{})}
	c := cached.New(slow, cached.Options{TTL: ttl, Now: clk.Now})
	ctx := t.Context()
	if _, err := raw.UpsertCredential(ctx, credential("alice", "github", "old")); err != nil {
		t.Fatal(err)
	}
	done := make(chan store.Credential)
	go func() {
		got, _ := c.GetCredential(ctx, "alice", "github")
		done <- got
	}()
	<-slow.read // the old row is read, not yet returned
	if err := c.DeleteCredential(ctx, "alice", "github"); err != nil {
		t.Fatal(err)
	}
	close(slow.release)
	if got := <-done; string(got.AccessToken) != "old" {
		t.Fatalf("the slow read returned %q", got.AccessToken)
	}
	if _, err := c.GetCredential(ctx, "alice", "github"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after the delete: %v, want ErrNotFound (a read begun before it was cached)", err)
	}
}

// slowReads holds the first GetCredential after its database read until
// release is closed.
type slowReads struct {
	store.Store
	read, release chan struct{}
	once          sync.Once
}

func (s *slowReads) GetCredential(ctx context.Context, userID, provider string) (store.Credential, error) {
	c, err := s.Store.GetCredential(ctx, userID, provider)
	s.once.Do(func() {
		close(s.read)
		<-s.release
	})
	return c, err
}

// TestSessions: a session is read once a TTL; its own logout holds here at
// once and another replica's within the TTL; a touch made here is in the
// cached row; an expired row is never served, and a cached row past its
// ExpiresAt is read again (another replica may have extended it).
func TestSessions(t *testing.T) {
	r := newReplicas(t)
	ctx := t.Context()
	now := time.Now()
	s := store.Session{ID: "h1", UserID: "alice", Claims: []byte(`{"name":"Alice"}`), CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := r.a.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := r.a.GetSession(ctx, "h1", now); err != nil {
			t.Fatal(err)
		}
		if _, err := r.b.GetSession(ctx, "h1", now); err != nil {
			t.Fatal(err)
		}
	}
	if r.ca.sessions != 1 || r.cb.sessions != 1 {
		t.Fatalf("database reads A %d, B %d for 3 cached reads each, want 1", r.ca.sessions, r.cb.sessions)
	}

	// A touch through A is in A's cached row.
	later := now.Add(10 * time.Minute)
	if err := r.a.TouchSession(ctx, "h1", later, later.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := r.a.GetSession(ctx, "h1", later)
	if err != nil || !got.LastSeenAt.Equal(later) || r.ca.sessions != 1 {
		t.Fatalf("A after its touch: %v last seen %v (%d reads), want %v from the cache", err, got.LastSeenAt, r.ca.sessions, later)
	}

	// Expired at the caller's now: not served, though cached.
	if _, err := r.b.GetSession(ctx, "h1", now.Add(time.Hour)); err != nil {
		// B's cached row says it expired; the database (touched by A) says
		// it has not: B reads again and serves it.
		t.Fatalf("B past its cached expiry, extended by A's touch: %v", err)
	}
	if _, err := r.a.GetSession(ctx, "h1", later.Add(time.Hour)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("A at the session's expiry: %v, want ErrNotFound", err)
	}

	// Logout through A: at once on A, within the TTL on B.
	if _, err := r.b.GetSession(ctx, "h1", now); err != nil {
		t.Fatal(err)
	}
	if err := r.a.DeleteSession(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.GetSession(ctx, "h1", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("A after its own logout: %v, want ErrNotFound", err)
	}
	if _, err := r.b.GetSession(ctx, "h1", now); err != nil {
		t.Fatalf("B within the TTL: %v (the row was not cached)", err)
	}
	r.clkB.Add(ttl)
	if _, err := r.b.GetSession(ctx, "h1", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("B a TTL after the logout: %v, want ErrNotFound", err)
	}
	// Not found is not cached: a login through another replica works at once.
	s.ID = "h2"
	if err := r.other.CreateSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := r.b.GetSession(ctx, "h2", now); err != nil {
		t.Fatalf("B right after another replica's login: %v", err)
	}
}

// TestGrants: a usable grant is read once a TTL; expiry holds at once even
// for a cached grant; a grant bound to another ServiceAccount uid is not
// served from the cache to this one; a revoke here holds at once, one
// elsewhere within the TTL; a new grant works at once.
func TestGrants(t *testing.T) {
	r := newReplicas(t)
	ctx := t.Context()
	now := time.Now()
	exp := now.Add(time.Hour)
	g, err := r.a.CreateGrant(ctx, store.Grant{UserID: "alice", Provider: "github", ServiceAccountNamespace: "ns", ServiceAccountName: "app",
		ServiceAccountUID: "uid-1", ExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	find := func(s store.Store, uid string, at time.Time) (store.Grant, error) {
		return s.FindUsableGrant(ctx, "alice", "github", "ns", "app", uid, at)
	}
	for range 3 {
		if _, err := find(r.a, "uid-1", now); err != nil {
			t.Fatal(err)
		}
		if _, err := find(r.b, "uid-1", now); err != nil {
			t.Fatal(err)
		}
	}
	if r.ca.grants != 1 || r.cb.grants != 1 {
		t.Fatalf("database reads A %d, B %d for 3 cached reads each, want 1", r.ca.grants, r.cb.grants)
	}
	// Another uid is not served the cached grant: the database answers
	// (with the grant bound to uid-1, for the caller to refuse).
	if got, err := find(r.a, "uid-2", now); err != nil || got.MatchesUID("uid-2") || r.ca.grants != 2 {
		t.Fatalf("uid-2: %+v %v after %d reads, want uid-1's grant from the database", got, err, r.ca.grants)
	}
	// Expired: refused at once, though cached.
	if _, err := find(r.a, "uid-1", exp); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("at its expiry: %v, want ErrNotFound", err)
	}

	// Revoke through A: at once on A, within the TTL on B.
	if _, err := find(r.a, "uid-1", now); err != nil {
		t.Fatal(err)
	}
	if err := r.a.RevokeGrant(ctx, "alice", g.ID, now); err != nil {
		t.Fatal(err)
	}
	if _, err := find(r.a, "uid-1", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("A after its own revoke: %v, want ErrNotFound", err)
	}
	if _, err := find(r.b, "uid-1", now); err != nil {
		t.Fatalf("B within the TTL: %v (the grant was not cached)", err)
	}
	r.clkB.Add(ttl)
	if _, err := find(r.b, "uid-1", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("B a TTL after the revoke: %v, want ErrNotFound", err)
	}

	// No grant is not cached: one made through another replica works at once.
	g2, err := r.other.CreateGrant(ctx, store.Grant{UserID: "alice", Provider: "github", ServiceAccountNamespace: "ns", ServiceAccountName: "app",
		ServiceAccountUID: "uid-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := find(r.b, "uid-1", now); err != nil || got.ID != g2.ID {
		t.Fatalf("B right after another replica's grant: %+v %v", got, err)
	}
	// A grant made here replaces the cached answer at once (the newest wins).
	g3, err := r.b.CreateGrant(ctx, store.Grant{UserID: "alice", Provider: "github", ServiceAccountNamespace: "ns", ServiceAccountName: "app",
		ServiceAccountUID: "uid-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := find(r.b, "uid-1", now); err != nil || got.ID != g3.ID {
		t.Fatalf("B after its own grant: %+v %v, want grant %d", got, err, g3.ID)
	}
}
