package storeopen

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	"github.com/tokenstore/tokenstore/internal/store/sqlite"
	sqlfiles "github.com/tokenstore/tokenstore/sql"
)

// ErrNoMigrationToRollBack is returned by Migrator.Down when no migration is
// applied.
var ErrNoMigrationToRollBack = errors.New("storeopen: no applied migration to roll back")

// MigrationResult is one migration that ran.
type MigrationResult struct {
	Version   int64
	Name      string // file name, e.g. 00001_init.sql
	Direction string // "up" or "down"
	Duration  time.Duration
}

// MigrationStatus is one known migration and whether it is applied.
type MigrationStatus struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time // zero unless Applied
}

// Migrator applies the embedded migrations (sql/<dialect>/migrations) with
// goose. Each migration runs in one transaction, so a failing one leaves the
// database as it was before it. On PostgreSQL a session-level advisory lock
// is held for each operation, so replicas that migrate at start-up at the
// same moment take turns and the later ones find nothing to do.
//
// On SQLite there is no such lock: two processes migrating one file at the
// same instant can make the later one fail (its transaction rolls back
// whole, nothing is half applied). SQLite is for single-node installs, where
// this does not happen in practice.
type Migrator struct {
	p       *goose.Provider
	db      *sql.DB // owned by p: p.Close closes it
	backend Backend
}

// NewMigrator prepares a migrator for databaseURL; it connects lazily, on
// the first operation. Close it when done.
func NewMigrator(databaseURL string) (*Migrator, error) {
	t, err := Parse(databaseURL)
	if err != nil {
		return nil, err
	}
	if t.Memory() {
		return nil, errors.New("storeopen: an in-memory SQLite database lives in one process; Open migrates it, there is nothing to migrate from outside")
	}
	var db *sql.DB
	switch t.Backend {
	case Postgres:
		cfg, err := pgx.ParseConfig(t.DSN)
		if err != nil {
			return nil, fmt.Errorf("storeopen: parse PostgreSQL URL: %w", err)
		}
		db = stdlib.OpenDB(*cfg)
	default:
		db, err = sqlite.OpenDB(t.DSN)
		if err != nil {
			return nil, err
		}
	}
	p, err := newProvider(db, t.Backend, migrations(t.Backend))
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Migrator{p: p, db: db, backend: t.Backend}, nil
}

// migrations returns the embedded migrations of a backend.
func migrations(b Backend) fs.FS {
	if b == Postgres {
		return sqlfiles.PostgresMigrations()
	}
	return sqlfiles.SQLiteMigrations()
}

// newProvider returns a goose provider for db; fsys is a parameter so that
// tests can add a failing migration to the real ones.
func newProvider(db *sql.DB, b Backend, fsys fs.FS) (*goose.Provider, error) {
	opts := []goose.ProviderOption{
		// Migrations come from the embedded FS only; nothing registered
		// elsewhere in the binary may slip in.
		goose.WithDisableGlobalRegistry(true),
		// Results are returned to the caller, who decides what to print.
		goose.WithLogger(goose.NopLogger()),
	}
	var dialect goose.Dialect
	switch b {
	case Postgres:
		dialect = goose.DialectPostgres
		// Poll the advisory lock every second (goose's default is 5 s) for
		// up to 5 minutes: a replica waiting on another's migration starts
		// soon after it ends.
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
		if err != nil {
			return nil, fmt.Errorf("storeopen: migration lock: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	default:
		dialect = goose.DialectSQLite3
	}
	p, err := goose.NewProvider(dialect, db, fsys, opts...)
	if err != nil {
		return nil, fmt.Errorf("storeopen: load migrations: %w", err)
	}
	return p, nil
}

// migrateUp applies all migrations on db, which stays open.
func migrateUp(ctx context.Context, db *sql.DB, b Backend) error {
	p, err := newProvider(db, b, migrations(b))
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("storeopen: migrate %s up: %w", b, err)
	}
	return nil
}

// Up applies every pending migration, in order, and returns what it ran
// (nothing when the database is current).
func (m *Migrator) Up(ctx context.Context) ([]MigrationResult, error) {
	res, err := m.p.Up(ctx)
	out := results(res)
	var partial *goose.PartialError
	if errors.As(err, &partial) {
		out = results(partial.Applied)
	}
	if err != nil {
		return out, fmt.Errorf("storeopen: migrate %s up: %w", m.backend, err)
	}
	return out, nil
}

// Down rolls back the most recently applied migration; with none applied it
// returns ErrNoMigrationToRollBack.
func (m *Migrator) Down(ctx context.Context) (MigrationResult, error) {
	res, err := m.p.Down(ctx)
	if errors.Is(err, goose.ErrNoNextVersion) {
		return MigrationResult{}, ErrNoMigrationToRollBack
	}
	if err != nil {
		return MigrationResult{}, fmt.Errorf("storeopen: migrate %s down: %w", m.backend, err)
	}
	r := results([]*goose.MigrationResult{res})
	return r[0], nil
}

// Status lists every migration the binary knows, oldest first.
func (m *Migrator) Status(ctx context.Context) ([]MigrationStatus, error) {
	st, err := m.p.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("storeopen: migration status of %s: %w", m.backend, err)
	}
	out := make([]MigrationStatus, 0, len(st))
	for _, s := range st {
		ms := MigrationStatus{Version: s.Source.Version, Name: path.Base(s.Source.Path)}
		if s.State == goose.StateApplied {
			ms.Applied, ms.AppliedAt = true, s.AppliedAt.UTC()
		}
		out = append(out, ms)
	}
	return out, nil
}

// Version returns the newest applied migration's version (0: none) and the
// newest the binary knows. Whether a server may run on the schema is
// CheckSchema's question: current may be above latest (a newer release
// migrated the database), and equal ones can hide a missing migration.
func (m *Migrator) Version(ctx context.Context) (current, latest int64, err error) {
	current, latest, err = m.p.GetVersions(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("storeopen: migration version of %s: %w", m.backend, err)
	}
	return current, latest, nil
}

// SchemaState is a database's schema measured against the migrations this
// binary embeds, as goose's version table records them.
type SchemaState struct {
	// Current is the highest migration version applied (0: none).
	Current int64
	// Required is the highest migration version this binary embeds.
	Required int64
	// Missing are the versions this binary embeds that are not applied.
	Missing []int64
	// Newer are applied versions this binary does not embed: a newer
	// release's migrations, which only add (docs/upgrading.md).
	Newer []int64
}

// Serveable reports whether a server of this binary may run on the
// schema: every migration it embeds is applied. Migrations it does not
// know (Newer) do not matter, since a release's migrations only add what
// the previous release does not use.
func (s SchemaState) Serveable() bool { return len(s.Missing) == 0 }

// SchemaTooOldError says the database lacks migrations this binary needs.
type SchemaTooOldError struct{ State SchemaState }

func (e *SchemaTooOldError) Error() string {
	s := e.State
	what := "has no tokenstore schema (version 0)"
	if s.Current > 0 {
		what = "has schema version " + strconv.FormatInt(s.Current, 10)
	}
	return fmt.Sprintf("storeopen: the database %s and this tokenstore needs version %d (migrations not applied: %s): "+
		"run `tokenstore migrate up` against it (the Helm chart's init container does), or start with MIGRATE_ON_START=true",
		what, s.Required, joinVersions(s.Missing))
}

func joinVersions(vs []int64) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = strconv.FormatInt(v, 10)
	}
	return strings.Join(out, ", ")
}

// Schema measures the database's schema against the embedded migrations
// without changing anything: unlike goose's own version queries it does not
// create goose's version table in a database that has none (a server
// refusing to start must leave the database as it found it). Every row of
// the version table counts as applied, as goose's Provider counts them (it
// deletes the row of a migration it undoes).
func (m *Migrator) Schema(ctx context.Context) (SchemaState, error) {
	var st SchemaState
	known := m.p.ListSources()
	if len(known) > 0 {
		st.Required = known[len(known)-1].Version
	}
	applied := map[int64]bool{}
	exists, err := m.versionTableExists(ctx)
	if err != nil {
		return st, fmt.Errorf("storeopen: reading the schema version of %s: %w", m.backend, err)
	}
	if exists {
		gs, err := database.NewStore(m.dialect(), goose.DefaultTablename)
		if err != nil {
			return st, fmt.Errorf("storeopen: reading the schema version of %s: %w", m.backend, err)
		}
		rows, err := gs.ListMigrations(ctx, m.db)
		if err != nil {
			return st, fmt.Errorf("storeopen: reading the schema version of %s: %w", m.backend, err)
		}
		for _, r := range rows {
			if r.Version > 0 { // goose's version table starts with a row of version 0
				applied[r.Version] = true
				st.Current = max(st.Current, r.Version)
			}
		}
	}
	isKnown := map[int64]bool{}
	for _, src := range known {
		isKnown[src.Version] = true
		if !applied[src.Version] {
			st.Missing = append(st.Missing, src.Version)
		}
	}
	for v := range applied {
		if !isKnown[v] {
			st.Newer = append(st.Newer, v)
		}
	}
	slices.Sort(st.Newer)
	return st, nil
}

// CheckSchema returns the database's SchemaState, or a *SchemaTooOldError
// (with it) when a server of this binary may not run on it.
func (m *Migrator) CheckSchema(ctx context.Context) (SchemaState, error) {
	st, err := m.Schema(ctx)
	if err != nil {
		return st, err
	}
	if !st.Serveable() {
		return st, &SchemaTooOldError{State: st}
	}
	return st, nil
}

// versionTableExists looks for goose's version table in the schema the
// connection uses (PostgreSQL's search path), as goose itself does.
func (m *Migrator) versionTableExists(ctx context.Context) (bool, error) {
	q := "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '" + goose.DefaultTablename + "'"
	if m.backend == Postgres {
		q = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = '" + goose.DefaultTablename + "'"
	}
	var n int
	if err := m.db.QueryRowContext(ctx, q).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}

func (m *Migrator) dialect() database.Dialect {
	if m.backend == Postgres {
		return database.DialectPostgres
	}
	return database.DialectSQLite3
}

// Close closes the migrator's database connections.
func (m *Migrator) Close() error { return m.p.Close() }

func results(in []*goose.MigrationResult) []MigrationResult {
	out := make([]MigrationResult, 0, len(in))
	for _, r := range in {
		if r == nil || r.Source == nil {
			continue
		}
		out = append(out, MigrationResult{
			Version:   r.Source.Version,
			Name:      path.Base(r.Source.Path),
			Direction: r.Direction,
			Duration:  r.Duration,
		})
	}
	return out
}
