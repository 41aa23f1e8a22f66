// Package sqlfiles embeds tokenstore's SQL migrations so that the binary can
// migrate a database without files on disk. The queries next to them are
// inputs to sqlc only (see sqlc.yaml); the generated Go lives under
// internal/store/{postgres,sqlite}/db.
package sqlfiles

import (
	"embed"
	"io/fs"
)

// PostgresFS holds postgres/migrations/*.sql (goose format).
//
//go:embed postgres/migrations/*.sql
var PostgresFS embed.FS

// SQLiteFS holds sqlite/migrations/*.sql (goose format).
//
//go:embed sqlite/migrations/*.sql
var SQLiteFS embed.FS

// PostgresMigrations returns the PostgreSQL migrations with the migration
// files at the root, as goose expects.
func PostgresMigrations() fs.FS { return mustSub(PostgresFS, "postgres/migrations") }

// SQLiteMigrations returns the SQLite migrations with the migration files at
// the root, as goose expects.
func SQLiteMigrations() fs.FS { return mustSub(SQLiteFS, "sqlite/migrations") }

// mustSub cannot fail at run time: the directory names are the embed patterns
// above, checked by the compiler, and fs.Sub only errors on an invalid name.
func mustSub(fsys embed.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic("sqlfiles: " + err.Error())
	}
	return sub
}
