package storeopen

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/sqlite"
	"github.com/tokenstore/tokenstore/internal/store/storetest"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		backend Backend
		dsn     string
	}{
		{"postgres://u:p@db:5432/ts?sslmode=require", Postgres, "postgres://u:p@db:5432/ts?sslmode=require"},
		{"postgresql://db/ts", Postgres, "postgresql://db/ts"},
		{"  postgres://db/ts  ", Postgres, "postgres://db/ts"},
		{"sqlite:///var/lib/tokenstore/ts.db", SQLite, "/var/lib/tokenstore/ts.db"},
		{"sqlite://data/ts.db", SQLite, "data/ts.db"},
		{"sqlite::memory:", SQLite, sqlite.Memory},
		{"sqlite://:memory:", SQLite, sqlite.Memory},
		// SQLAlchemy's absolute form (four slashes) names the same file.
		{"sqlite:////var/lib/ts.db", SQLite, "//var/lib/ts.db"},
	} {
		got, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got.Backend != tc.backend || got.DSN != tc.dsn {
			t.Errorf("Parse(%q) = %+v, want %s %q", tc.in, got, tc.backend, tc.dsn)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"mysql://root:topsecret@db/ts",
		"/var/lib/ts.db",
		"sqlite://",
		"sqlite:/x.db",
		"sqlite:///x.db?mode=ro",
		"postgres:db",
	} {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) accepted it", in)
			continue
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("Parse(%q) error quotes the password: %v", in, err)
		}
	}
	_, err := Open(t.Context(), "mysql://root:topsecret@db/ts")
	if err == nil || !strings.Contains(err.Error(), "postgres://") || !strings.Contains(err.Error(), "sqlite:///") {
		t.Errorf("Open with a bad scheme: %v, want an error naming the accepted schemes", err)
	}
}

func TestOpenPostgresUnreachable(t *testing.T) {
	start := time.Now()
	_, err := Open(t.Context(), "postgres://postgres@127.0.0.1:1/ts?sslmode=disable")
	if err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
	if !strings.Contains(err.Error(), "cannot reach PostgreSQL") {
		t.Errorf("unclear error: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Open took %v to fail", d)
	}
}

func TestOpenSQLiteFile(t *testing.T) {
	url := "sqlite://" + filepath.Join(t.TempDir(), "ts.db")
	m, err := NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if _, err := s.UpsertCredential(t.Context(), store.Credential{UserID: "u", Provider: "p", KeyID: "k", RefreshToken: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenPostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	m, err := NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestConformanceMemory runs the suite on sqlite::memory:, which Open
// migrates itself.
func TestConformanceMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(context.Background(), MemoryURL)
		if err != nil {
			t.Fatalf("Open(%s): %v", MemoryURL, err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
	if _, err := NewMigrator(MemoryURL); err == nil {
		t.Error("NewMigrator accepted an in-memory database")
	}
}

// --- migrations ----------------------------------------------------------

// backends yields a fresh database URL per backend: a schema in one
// PostgreSQL database that lives as long as t, a file in a temp dir.
func backends(t *testing.T) map[Backend]func(t *testing.T) string {
	pgURL := pgtest.NewDatabase(t)
	return map[Backend]func(t *testing.T) string{
		Postgres: func(t *testing.T) string { return pgtest.NewSchema(t, pgURL) },
		SQLite:   func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "ts.db") },
	}
}

func tables(t *testing.T, b Backend, url string) []string {
	t.Helper()
	var db *sql.DB
	var q string
	switch b {
	case Postgres:
		m, err := NewMigrator(url) // reuse its driver setup for the URL's search_path
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		db = m.db
		q = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'goose_db_version' ORDER BY 1"
	default:
		t2, _ := Parse(url)
		d, err := sqlite.OpenDB(t2.DSN)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		db = d
		q = "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'goose_db_version' ORDER BY 1"
	}
	rows, err := db.QueryContext(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMigrations(t *testing.T) {
	for b, newURL := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			t.Run("UpDownUp", func(t *testing.T) { testUpDownUp(t, b, newURL(t)) })
			t.Run("FailureLeavesDataIntact", func(t *testing.T) { testFailureLeavesData(t, b, newURL(t)) })
			if b == Postgres {
				t.Run("ConcurrentUp", func(t *testing.T) { testConcurrentUp(t, newURL(t)) })
			}
		})
	}
}

func testUpDownUp(t *testing.T, b Backend, url string) {
	ctx := t.Context()
	m, err := NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	st, err := m.Status(ctx)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if len(st) == 0 || st[0].Version != 1 || st[0].Name != "00001_init.sql" || st[0].Applied {
		t.Fatalf("Status before Up = %+v", st)
	}
	if _, err := m.Down(ctx); !errors.Is(err, ErrNoMigrationToRollBack) {
		t.Errorf("Down on an empty database: %v, want ErrNoMigrationToRollBack", err)
	}

	res, err := m.Up(ctx)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if len(res) != len(st) || res[0].Direction != "up" || res[0].Version != 1 {
		t.Errorf("Up ran %+v, want all %d migrations", res, len(st))
	}
	want := []string{"audit_events", "credentials", "grants", "link_states", "sessions"}
	if got := tables(t, b, url); !slices.Equal(got, want) {
		t.Errorf("tables after Up = %v, want %v", got, want)
	}
	st, err = m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied || s.AppliedAt.IsZero() {
			t.Errorf("after Up: %+v", s)
		}
	}
	cur, latest, err := m.Version(ctx)
	if err != nil || cur != latest || cur != st[len(st)-1].Version {
		t.Errorf("Version = %d, %d, %v", cur, latest, err)
	}
	if res, err := m.Up(ctx); err != nil || len(res) != 0 {
		t.Errorf("second Up = %+v, %v; want nothing to do", res, err)
	}

	// Down, one step at a time, to nothing.
	for i := len(st) - 1; i >= 0; i-- {
		r, err := m.Down(ctx)
		if err != nil {
			t.Fatalf("Down: %v", err)
		}
		if r.Version != st[i].Version || r.Direction != "down" {
			t.Errorf("Down rolled back %+v, want version %d", r, st[i].Version)
		}
	}
	if got := tables(t, b, url); len(got) != 0 {
		t.Errorf("tables after Down = %v, want none", got)
	}
	if _, err := m.Down(ctx); !errors.Is(err, ErrNoMigrationToRollBack) {
		t.Errorf("Down past the first migration: %v", err)
	}

	// And up again, to a working store.
	if _, err := m.Up(ctx); err != nil {
		t.Fatalf("Up again: %v", err)
	}
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.UpsertCredential(ctx, store.Credential{UserID: "u", Provider: "p", KeyID: "k", RefreshToken: []byte("x")}); err != nil {
		t.Errorf("store after up/down/up: %v", err)
	}
}

// testFailureLeavesData runs a migration that changes the schema, writes
// and then fails, and checks that none of it stuck: goose runs each
// migration in one transaction, and DDL is transactional on both backends.
func testFailureLeavesData(t *testing.T, b Backend, url string) {
	ctx := t.Context()
	m, err := NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := store.Credential{UserID: "alice", Provider: "github", KeyID: "k1", RefreshToken: []byte("rt"), Scopes: []string{"a"}}
	orig, err := s.UpsertCredential(ctx, in)
	if err != nil {
		t.Fatal(err)
	}

	broken := `-- +goose Up
ALTER TABLE credentials ADD COLUMN half_done TEXT;
UPDATE credentials SET key_id = 'clobbered';
DELETE FROM sessions;
DROP TABLE grants;
SELECT * FROM no_such_table_so_this_migration_fails;

-- +goose Down
SELECT 1;
`
	fsys := shippedPlus(t, b, "00999_broken.sql", broken)
	var db *sql.DB
	if b == Postgres {
		db = m.db
	} else {
		tg, _ := Parse(url)
		if db, err = sqlite.OpenDB(tg.DSN); err != nil {
			t.Fatal(err)
		}
		defer db.Close()
	}
	p, err := newProvider(db, b, fsys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err == nil {
		t.Fatal("the broken migration succeeded")
	}

	got, err := s.GetCredential(ctx, "alice", "github")
	if err != nil {
		t.Fatalf("credential lost: %v", err)
	}
	if got.KeyID != orig.KeyID || got.Version != orig.Version {
		t.Errorf("half a failed migration stuck: %+v", got)
	}
	if _, err := s.ListGrants(ctx, "alice"); err != nil {
		t.Errorf("grants table gone after a failed migration: %v", err)
	}
	cur, _, err := m.Version(ctx)
	// The shipped migrations are numbered 1..n, and all of them stay applied.
	if want := int64(len(fsys) - 1); err != nil || int64(cur) != want {
		t.Errorf("version after the failure = %d, %v; want %d", cur, err, want)
	}
	// The column the failed migration added first is gone with the rest.
	if _, err := db.ExecContext(ctx, "SELECT half_done FROM credentials"); err == nil {
		t.Error("the failed migration's column exists")
	}
}

// testConcurrentUp starts migrators for one database at the same time, as
// replicas migrating at start-up do: the advisory lock makes one apply the
// migrations and the others wait and then find nothing left. The migration
// is made slow so that, without the lock, the migrators would overlap and
// all but one fail.
func testConcurrentUp(t *testing.T, url string) {
	const n = 3
	slow := fstest.MapFS{"00001_slow.sql": &fstest.MapFile{Data: []byte(`-- +goose Up
CREATE TABLE slow_t (id integer PRIMARY KEY);
SELECT pg_sleep(0.5);

-- +goose Down
DROP TABLE slow_t;
`)}}
	var wg sync.WaitGroup
	start := make(chan struct{})
	applied := make(chan int, n)
	for range n {
		m := mustMigrator(t, url) // for its *sql.DB on the URL
		p, err := newProvider(m.db, Postgres, slow)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			<-start
			res, err := p.Up(t.Context())
			if err != nil {
				t.Errorf("concurrent Up: %v", err)
				return
			}
			applied <- len(res)
		})
	}
	close(start)
	wg.Wait()
	close(applied)
	total := 0
	for a := range applied {
		total += a
	}
	if total != 1 {
		t.Errorf("the migration was applied %d times by %d concurrent migrators, want once", total, n)
	}
}

func mustMigrator(t *testing.T, url string) *Migrator {
	t.Helper()
	m, err := NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestSchemaRule is the rule of rolling upgrades on both backends
// (docs/upgrading.md): a server may run on a schema that has every
// migration its binary embeds, and on one with more (a newer release's,
// which only add); a schema missing one is refused with a message naming
// the versions and `tokenstore migrate up`. Measuring changes nothing.
func TestSchemaRule(t *testing.T) {
	for b, newURL := range backends(t) {
		t.Run(string(b), func(t *testing.T) {
			ctx := t.Context()
			url := newURL(t)
			m := mustMigrator(t, url)
			shipped := m.p.ListSources()
			n := shipped[len(shipped)-1].Version

			// Empty: refused, and still empty afterwards (no goose table
			// created by looking).
			st, err := m.CheckSchema(ctx)
			var old *SchemaTooOldError
			if !errors.As(err, &old) || st.Current != 0 || st.Required != n || len(st.Missing) != len(shipped) {
				t.Fatalf("empty database: %+v, %v; want a SchemaTooOldError at 0 of %d", st, err, n)
			}
			for _, want := range []string{"no tokenstore schema (version 0)", fmt.Sprintf("needs version %d", n), "tokenstore migrate up", "MIGRATE_ON_START=true"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q does not say %q", err, want)
				}
			}
			if versionTable(t, m) {
				t.Error("checking the schema created goose's version table")
			}

			// One migration short (the previous release's schema): refused.
			if _, err := m.p.UpTo(ctx, n-1); err != nil {
				t.Fatal(err)
			}
			if !versionTable(t, m) {
				t.Fatal("goose's version table is not seen after migrating")
			}
			_, err = m.CheckSchema(ctx)
			if !errors.As(err, &old) || old.State.Current != n-1 || !slices.Equal(old.State.Missing, []int64{n}) {
				t.Fatalf("schema at %d: %v; want refused, missing %d", n-1, err, n)
			}
			if want := fmt.Sprintf("has schema version %d and this tokenstore needs version %d (migrations not applied: %d)", n-1, n, n); !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q does not say %q", err, want)
			}

			// Current: served.
			if _, err := m.Up(ctx); err != nil {
				t.Fatal(err)
			}
			if st, err := m.CheckSchema(ctx); err != nil || st.Current != n || len(st.Newer) != 0 {
				t.Fatalf("current schema: %+v, %v", st, err)
			}

			// One release newer: a migration this binary does not know,
			// applied through goose as the newer binary would, is accepted.
			applyFuture(t, m, b)
			st, err = m.CheckSchema(ctx)
			if err != nil || st.Current != n+1 || st.Required != n || !slices.Equal(st.Newer, []int64{n + 1}) {
				t.Fatalf("schema one newer: %+v, %v; want served, newer [%d]", st, err, n+1)
			}
			// This binary's `migrate up` (MIGRATE_ON_START) finds nothing
			// to do there, rather than failing.
			if res, err := m.Up(ctx); err != nil || len(res) != 0 {
				t.Fatalf("Up on a newer schema: %+v, %v", res, err)
			}
			s, err := Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.UpsertCredential(ctx, store.Credential{UserID: "u", Provider: "p", KeyID: "k", RefreshToken: []byte("x")}); err != nil {
				t.Errorf("the store on a newer schema: %v", err)
			}

			// A newer schema missing one of this binary's migrations (a
			// hole, not a newer release) is refused all the same.
			if _, err := m.db.ExecContext(ctx, fmt.Sprintf("DELETE FROM goose_db_version WHERE version_id = %d", n)); err != nil {
				t.Fatal(err)
			}
			if _, err := m.CheckSchema(ctx); !errors.As(err, &old) || !slices.Equal(old.State.Missing, []int64{n}) {
				t.Errorf("schema with a hole at %d: %v; want refused", n, err)
			}
		})
	}
}

// applyFuture applies, through goose, the shipped migrations plus one
// numbered after them that only adds (a column and a table), as the next
// release's binary would.
func applyFuture(t *testing.T, m *Migrator, b Backend) {
	t.Helper()
	next := int64(len(m.p.ListSources()) + 1) // numbered 1..n
	fsys := shippedPlus(t, b, fmt.Sprintf("%05d_future.sql", next), `-- +goose Up
ALTER TABLE credentials ADD COLUMN future_note TEXT;
CREATE TABLE future_things (id INTEGER PRIMARY KEY);

-- +goose Down
DROP TABLE future_things;
ALTER TABLE credentials DROP COLUMN future_note;
`)
	p, err := newProvider(m.db, b, fsys)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Up(t.Context())
	if err != nil || len(res) != 1 || res[0].Source.Version != next {
		t.Fatalf("applying the future migration: %v (%d applied)", err, len(res))
	}
}

// shippedPlus is the backend's shipped migrations plus one more, name
// holding text, for goose to run as if it were shipped.
func shippedPlus(t *testing.T, b Backend, name, text string) fstest.MapFS {
	t.Helper()
	shipped := migrations(b)
	entries, err := fs.ReadDir(shipped, ".")
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{name: &fstest.MapFile{Data: []byte(text)}}
	for _, e := range entries {
		data, err := fs.ReadFile(shipped, e.Name())
		if err != nil {
			t.Fatal(err)
		}
		fsys[e.Name()] = &fstest.MapFile{Data: data}
	}
	return fsys
}

// versionTable reports whether goose's version table exists.
func versionTable(t *testing.T, m *Migrator) bool {
	t.Helper()
	ok, err := m.versionTableExists(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ok
}
