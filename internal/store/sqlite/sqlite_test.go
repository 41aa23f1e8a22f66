package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/sqlite"
	"github.com/tokenstore/tokenstore/internal/store/storetest"
)

// migratedFile returns the path of a new, migrated database file.
func migratedFile(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "tokenstore.db")
	m, err := storeopen.NewMigrator("sqlite://" + path)
	if err != nil {
		tb.Fatalf("NewMigrator: %v", err)
	}
	defer m.Close()
	if _, err := m.Up(context.Background()); err != nil {
		tb.Fatalf("migrate up: %v", err)
	}
	return path
}

func open(tb testing.TB, path string) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		tb.Fatalf("sqlite.Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, migratedFile(t))
	})
}

// TestConformanceReplicas runs the cross-store checks with two handles on
// one file, as two processes would (e.g. the server and `keys rotate`).
func TestConformanceReplicas(t *testing.T) {
	storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
		path := migratedFile(t)
		return open(t, path), open(t, path)
	})
}

func TestOpenBadPath(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "x.db")
	_, err := sqlite.Open(t.Context(), missing)
	if err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error does not name the file: %v", err)
	}
}

// TestPathWithURLCharacters checks that DSN escapes the characters a file:
// URI would otherwise take as query or fragment.
func TestPathWithURLCharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a?b#c%d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "x.db")
	s := open(t, path)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DB().ExecContext(t.Context(), "CREATE TABLE t (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not created at the given path: %v", err)
	}
}

// TestDoubleSlashPath opens "//abs/path", what sqlite:////abs/path (the
// seed's SQLAlchemy form) parses to.
func TestDoubleSlashPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	s := open(t, "/"+path)
	if _, err := s.DB().ExecContext(t.Context(), "CREATE TABLE t (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not created at %s: %v", path, err)
	}
}

func TestSettings(t *testing.T) {
	s := open(t, migratedFile(t))
	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"foreign_keys": "1",
		"busy_timeout": "10000",
		"synchronous":  "2", // FULL
	} {
		var got string
		if err := s.DB().QueryRowContext(t.Context(), "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", pragma, err)
		}
		if got != want {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
}

func BenchmarkGetCredential(b *testing.B) {
	storetest.BenchmarkGetCredential(b, open(b, migratedFile(b)))
}

func BenchmarkUpdateCredential(b *testing.B) {
	storetest.BenchmarkUpdateCredential(b, open(b, migratedFile(b)))
}

// refuseAudit makes the database refuse audit events whose action is
// "refuse" (every event when all).
func refuseAudit(t *testing.T, s *sqlite.Store, all bool) {
	t.Helper()
	when := "WHEN NEW.action = 'refuse' "
	if all {
		when = ""
	}
	if _, err := s.DB().ExecContext(t.Context(), `CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events `+when+
		`BEGIN SELECT RAISE(ABORT, 'audit refused'); END`); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateCredentialAuditFails: see storetest.AuditRefusedKeepsUpdate.
func TestUpdateCredentialAuditFails(t *testing.T) {
	s := open(t, migratedFile(t))
	storetest.AuditRefusedKeepsUpdate(t, s, func(all bool) { refuseAudit(t, s, all) })
}

// TestAppendAuditBatchAllOrNone: see storetest.AuditBatchAllOrNone.
func TestAppendAuditBatchAllOrNone(t *testing.T) {
	s := open(t, migratedFile(t))
	storetest.AuditBatchAllOrNone(t, s, func(all bool) { refuseAudit(t, s, all) })
}
