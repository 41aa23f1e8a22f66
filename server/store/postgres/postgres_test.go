package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/server/store"
	storeopen "github.com/tokenstore/tokenstore/server/store/open"
	"github.com/tokenstore/tokenstore/server/store/postgres"
	"github.com/tokenstore/tokenstore/server/store/storetest"
	"github.com/tokenstore/tokenstore/server/store/storetest/pgtest"
)

// migratedSchema returns the URL of a new, migrated schema in the database
// at dbURL: a clean slate per subtest at the cost of a few DDL statements.
func migratedSchema(tb testing.TB, dbURL string) string {
	tb.Helper()
	url := pgtest.NewSchema(tb, dbURL)
	m, err := storeopen.NewMigrator(url)
	if err != nil {
		tb.Fatalf("NewMigrator: %v", err)
	}
	defer m.Close()
	if _, err := m.Up(context.Background()); err != nil {
		tb.Fatalf("migrate up: %v", err)
	}
	return url
}

func open(tb testing.TB, url string) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), url)
	if err != nil {
		tb.Fatalf("postgres.Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, migratedSchema(t, dbURL))
	})
}

// TestConformanceReplicas runs the cross-store checks with two pools on one
// database, as two replicas of the server would.
func TestConformanceReplicas(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
		url := migratedSchema(t, dbURL)
		return open(t, url), open(t, url)
	})
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens, the connection is refused at once.
	_, err := postgres.Open(ctx, "postgres://postgres:hunter2@127.0.0.1:1/tokenstore?sslmode=disable")
	if err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "cannot reach PostgreSQL at 127.0.0.1:1") {
		t.Errorf("error does not say where it tried: %v", err)
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error quotes the password: %v", err)
	}
}

func TestOpenMissingDatabase(t *testing.T) {
	_, err := postgres.Open(t.Context(), "postgres://postgres@127.0.0.1:5432/tokenstore_does_not_exist?sslmode=disable")
	if err == nil || !strings.Contains(err.Error(), "tokenstore_does_not_exist") {
		t.Fatalf("Open of a missing database: %v, want an error naming it", err)
	}
}

func BenchmarkGetCredential(b *testing.B) {
	s := open(b, migratedSchema(b, pgtest.NewDatabase(b)))
	storetest.BenchmarkGetCredential(b, s)
}

func BenchmarkUpdateCredential(b *testing.B) {
	s := open(b, migratedSchema(b, pgtest.NewDatabase(b)))
	storetest.BenchmarkUpdateCredential(b, s)
}
