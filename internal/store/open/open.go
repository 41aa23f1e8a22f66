// Package storeopen turns a DATABASE_URL into a store.Store and migrates
// the database behind it. It is the one place that knows which URL schemes
// map to which backend, so cmd and tests wire stores the same way.
//
// Accepted URLs:
//
//	postgres://user:pass@host:5432/db?sslmode=...   (also postgresql://; any libpq/pgx URL)
//	sqlite:///absolute/path/to/file.db
//	sqlite://relative/path/to/file.db
//	sqlite::memory:                                  (a private in-memory database, migrated by Open)
package storeopen

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/postgres"
	"github.com/tokenstore/tokenstore/internal/store/sqlite"
)

// Backend names a storage backend.
type Backend string

const (
	// Postgres is the production backend.
	Postgres Backend = "postgres"
	// SQLite is the embedded backend for dev and single-node installs.
	SQLite Backend = "sqlite"
)

// MemoryURL is the URL of a private in-memory SQLite database.
const MemoryURL = "sqlite::memory:"

// acceptedSchemes is quoted in errors so a mistyped URL says what would work.
const acceptedSchemes = "postgres://, postgresql://, sqlite:///absolute/path, sqlite://relative/path or sqlite::memory:"

// Target is a parsed DATABASE_URL.
type Target struct {
	Backend Backend
	// DSN is what the backend is opened with: the URL itself for PostgreSQL,
	// the file path (or sqlite.Memory) for SQLite.
	DSN string
}

// Memory reports whether the target is an in-memory SQLite database.
func (t Target) Memory() bool { return t.Backend == SQLite && t.DSN == sqlite.Memory }

// Parse parses a DATABASE_URL. Its errors never quote the URL, which may
// hold a password.
func Parse(databaseURL string) (Target, error) {
	u := strings.TrimSpace(databaseURL)
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || u == "" {
		return Target{}, fmt.Errorf("storeopen: database URL has no scheme; use %s", acceptedSchemes)
	}
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		if !strings.HasPrefix(rest, "//") {
			return Target{}, fmt.Errorf("storeopen: a PostgreSQL URL starts with %s://", scheme)
		}
		return Target{Backend: Postgres, DSN: u}, nil
	case "sqlite", "sqlite3":
		if rest == ":memory:" || rest == "//:memory:" {
			return Target{Backend: SQLite, DSN: sqlite.Memory}, nil
		}
		path, ok := strings.CutPrefix(rest, "//")
		if !ok || path == "" {
			return Target{}, errors.New("storeopen: a SQLite URL is sqlite:///absolute/path, sqlite://relative/path or sqlite::memory: (in memory)")
		}
		if strings.ContainsAny(path, "?#") {
			return Target{}, errors.New("storeopen: a SQLite URL takes no query or fragment: tokenstore sets the connection options itself")
		}
		return Target{Backend: SQLite, DSN: path}, nil
	default:
		return Target{}, fmt.Errorf("storeopen: unsupported database URL scheme %q; use %s", scheme, acceptedSchemes)
	}
}

// Open opens the store at databaseURL and checks that it answers. It does
// not migrate a database on disk (see Migrator); an in-memory SQLite
// database, which no other process can reach, is migrated here.
func Open(ctx context.Context, databaseURL string) (store.Store, error) {
	t, err := Parse(databaseURL)
	if err != nil {
		return nil, err
	}
	switch t.Backend {
	case Postgres:
		s, err := postgres.Open(ctx, t.DSN)
		if err != nil {
			return nil, err
		}
		return s, nil
	default:
		s, err := sqlite.Open(ctx, t.DSN)
		if err != nil {
			return nil, err
		}
		if t.Memory() {
			if err := migrateUp(ctx, s.DB(), SQLite); err != nil {
				s.Close()
				return nil, err
			}
		}
		return s, nil
	}
}
