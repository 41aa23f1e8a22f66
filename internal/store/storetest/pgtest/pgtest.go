// Package pgtest gives tests a throwaway PostgreSQL database on the server
// the project's tests run against (127.0.0.1:5432, user postgres, trust
// auth). Tests use a real server, never a mock; when it is not running they
// fail, with the command that starts it, rather than skip: a skipped store
// test is a test nobody notices is not running.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// AdminURLEnv names the environment variable that overrides AdminURL, for
// machines whose test server is elsewhere.
const AdminURLEnv = "TOKENSTORE_TEST_POSTGRES_URL"

// AdminURL is where databases are created and dropped from.
const AdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// StartHint is the command that starts the local test server.
const StartHint = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"

func adminURL() string {
	if u := os.Getenv(AdminURLEnv); u != "" {
		return u
	}
	return AdminURL
}

// connectAdmin opens a connection to the maintenance database or fails the
// test with instructions.
func connectAdmin(t testing.TB, ctx context.Context) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, adminURL())
	if err != nil {
		t.Fatalf("pgtest: PostgreSQL is not reachable (%v).\n"+
			"The store tests need a real server on 127.0.0.1:5432 (user postgres, trust auth); start it with:\n\t%s\n"+
			"or point %s at another server.", err, StartHint, AdminURLEnv)
	}
	return conn
}

// NewDatabase creates an empty database named tokenstore_test_<pkg>_<random>
// and returns its URL. The database is dropped when the test (or benchmark)
// and its subtests finish; connections still open then are terminated.
func NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	name := "tokenstore_test_" + packageName() + "_" + randomHex(6)
	admin := connectAdmin(t, ctx)
	defer admin.Close(context.Background())

	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, adminURL())
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		// WITH (FORCE) ends sessions a failed test left open (PostgreSQL 13+).
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return withDatabase(t, adminURL(), name)
}

// NewSchema creates an empty schema in the database at databaseURL and
// returns a URL whose connections use it (search_path), so every test can
// start from a clean slate without paying for a CREATE DATABASE. The schema
// goes away with its database; it is not dropped separately.
func NewSchema(t testing.TB, databaseURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatalf("pgtest: connect: %v (start the server with: %s)", err, StartHint)
	}
	defer conn.Close(context.Background())
	name := "s_" + randomHex(6)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create schema %s: %v", name, err)
	}
	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatalf("pgtest: parse database URL: %v", err)
	}
	q := u.Query()
	// pgx passes unknown URL parameters to the server as run-time settings.
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func withDatabase(t testing.TB, base, name string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", AdminURLEnv, err)
	}
	u.Path = "/" + name
	return u.String()
}

// packageName is the test binary's name without ".test" (go test names it
// after the package), reduced to what is safe in an identifier.
func packageName() string {
	base := strings.TrimSuffix(filepath.Base(os.Args[0]), ".test")
	var b strings.Builder
	for _, r := range strings.ToLower(base) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 24 { // keep the whole name under PostgreSQL's 63 bytes
			break
		}
	}
	if b.Len() == 0 {
		return "pkg"
	}
	return b.String()
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(buf)
}
