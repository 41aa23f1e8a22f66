package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/tokenstore/tokenstore/internal/app"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/settings"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/sqlite"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
	"github.com/tokenstore/tokenstore/internal/testutil"
	sqlfiles "github.com/tokenstore/tokenstore/sql"
)

// TestServeSchemaRule is the rule of rolling upgrades as `serve` applies it
// (docs/upgrading.md), on both backends: on an empty database and on the
// previous release's schema it refuses to start, naming the versions and
// `tokenstore migrate up`; with MIGRATE_ON_START=true it migrates and
// serves; on a schema one release newer than it knows (a migration it does
// not embed, applied to the goose table) it starts, says so in its log, and
// serves a whole sign-in, which writes and reads the database.
func TestServeSchemaRule(t *testing.T) {
	names, err := fs.Glob(sqlfiles.PostgresMigrations(), "*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("embedded migrations: %v %v", names, err)
	}
	n := int64(len(names)) // numbered 1..n (sql/embed_test.go checks the names)
	for _, backend := range []storeopen.Backend{storeopen.Postgres, storeopen.SQLite} {
		t.Run(string(backend), func(t *testing.T) {
			dbURL := "sqlite://" + filepath.Join(t.TempDir(), "ts.db")
			if backend == storeopen.Postgres {
				dbURL = pgtest.NewDatabase(t)
			}
			ext := "http://" + freeAddress(t)
			op := providertest.Start(t, ext+"/api/oidc/callback")
			key, _ := crypto.GenerateKey()
			t.Setenv("TOKENSTORE_DATABASE_URL", dbURL)
			t.Setenv("TOKENSTORE_CRYPTOKEY", key)
			t.Setenv("TOKENSTORE_LISTEN_ADDRESS", strings.TrimPrefix(ext, "http://"))
			t.Setenv("TOKENSTORE_METRICS_ADDRESS", freeAddress(t))
			t.Setenv("TOKENSTORE_EXTERNAL_URL", ext)
			t.Setenv("TOKENSTORE_OIDC_DISCOVERY_URL", op.DiscoveryURL())
			t.Setenv("TOKENSTORE_OIDC_CLIENT_ID", providertest.ClientID)
			t.Setenv("TOKENSTORE_OIDC_CLIENT_SECRET", op.ClientSecret)
			t.Setenv("TOKENSTORE_REFRESHER_INTERVAL", "0")
			t.Setenv("TOKENSTORE_MIGRATE_ON_START", "false")

			// An empty database: refused, and left empty.
			err := serveFor(t, 15*time.Second)
			wantRefusal(t, err, "the database has no tokenstore schema (version 0)", fmt.Sprintf("needs version %d", n))
			if v := schemaVersion(t, dbURL); v != 0 {
				t.Errorf("the refusing serve left the schema at version %d", v)
			}

			// The previous release's schema (one migration short): refused.
			if _, _, err := run(t, "migrate", "up"); err != nil {
				t.Fatal(err)
			}
			if _, _, err := run(t, "migrate", "down"); err != nil {
				t.Fatal(err)
			}
			err = serveFor(t, 15*time.Second)
			wantRefusal(t, err, fmt.Sprintf("has schema version %d and this tokenstore needs version %d (migrations not applied: %d)", n-1, n, n))

			// MIGRATE_ON_START=true migrates, then serves.
			t.Setenv("TOKENSTORE_MIGRATE_ON_START", "true")
			startAndSignIn(t, ext, op)
			if v := schemaVersion(t, dbURL); v != n {
				t.Fatalf("after MIGRATE_ON_START the schema is at %d, want %d", v, n)
			}

			// One release newer: the next release's migration (it only
			// adds) is applied to this database. This binary starts on it
			// without migrating, logs that it did, and serves.
			t.Setenv("TOKENSTORE_MIGRATE_ON_START", "false")
			applyNextRelease(t, backend, dbURL, n+1)
			logs := startAndSignIn(t, ext, op)
			if !strings.Contains(logs, "database schema is newer than this binary") ||
				!strings.Contains(logs, fmt.Sprintf(`"schema_version":%d`, n+1)) || !strings.Contains(logs, fmt.Sprintf(`"binary_schema_version":%d`, n)) {
				t.Errorf("no log line says the schema is newer:\n%s", logs)
			}
			// Housekeeping (which runs at once) and the requests found
			// every table they use.
			if strings.Contains(logs, "housekeeping") || strings.Contains(logs, `"level":"ERROR"`) {
				t.Errorf("housekeeping warnings or errors serving on the newer schema:\n%s", logs)
			}
			// The operator's commands show it too.
			out, _, err := run(t, "migrate", "status")
			if err != nil || !regexp.MustCompile(fmt.Sprintf(`(?m)^%d +\(a newer release's, unknown to this binary\) +applied$`, n+1)).MatchString(out) {
				t.Errorf("migrate status on the newer schema: %v\n%s", err, out)
			}
			out, _, err = run(t, "migrate", "up")
			if err != nil || strings.Contains(out, "applied ") || !strings.Contains(out, fmt.Sprintf("migrations of a newer release, unknown to this binary: [%d]", n+1)) {
				t.Errorf("migrate up on the newer schema: %v\n%s", err, out)
			}
			// And MIGRATE_ON_START=true finds nothing to do there rather
			// than refusing (a pod of the old release restarting during a
			// rolling upgrade).
			t.Setenv("TOKENSTORE_MIGRATE_ON_START", "true")
			startAndSignIn(t, ext, op)
			if v := schemaVersion(t, dbURL); v != n+1 {
				t.Errorf("the old binary moved the newer schema to %d", v)
			}
		})
	}
}

// serveFor runs the serve command until it returns or d passes (then it
// is stopped as by SIGTERM and returns nil: it started).
func serveFor(t *testing.T, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	root := newRootCmd()
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"serve"})
	return root.ExecuteContext(ctx)
}

func wantRefusal(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("serve started on a schema older than it needs")
	}
	for _, want := range append(wants, "run `tokenstore migrate up`", "MIGRATE_ON_START=true") {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
}

// startAndSignIn builds the service from the environment as `serve` does
// (app.New, its log captured), runs it, signs the OP's test user in
// through the API (a login state and a session written and read back) and
// stops it. It returns the service's log, to its end.
func startAndSignIn(t *testing.T, ext string, op *providertest.OP) (logText string) {
	t.Helper()
	s, err := settings.Load(nil, os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	svc, err := app.New(t.Context(), s, log, app.Options{Version: version, Migrate: s.MigrateOnStart})
	if err != nil {
		t.Fatalf("the service did not start: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		svc.Close()
		logText = logs.String()
	}()

	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	eventually(t, "/readyz", func() bool {
		resp, err := hc.Get(ext + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	authURL := redirectTo(t, hc, ext+"/api/oidc/login")
	q, err := op.Login(ctx, authURL)
	if err != nil {
		t.Fatalf("login at the OP: %v", err)
	}
	redirectTo(t, hc, ext+"/api/oidc/callback?"+q.Encode())
	resp, err := hc.Get(ext + "/api/whoami")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var who struct {
		UserID string `json:"user_id"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &who); resp.StatusCode != http.StatusOK || err != nil || who.UserID == "" {
		t.Fatalf("whoami after signing in: %d %s", resp.StatusCode, body)
	}
	return "" // set when stopped
}

func redirectTo(t *testing.T, hc *http.Client, u string) string {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || loc == "" {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s, want a redirect", u, resp.StatusCode, bytes.TrimSpace(body))
	}
	return loc
}

// freeAddress is a loopback address nothing listens on right now.
func freeAddress(t *testing.T) string { return testutil.FreeAddr(t) }

// openDB opens the database behind a DATABASE_URL for direct SQL.
func openDB(t *testing.T, dbURL string) *sql.DB {
	t.Helper()
	tg, err := storeopen.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	var db *sql.DB
	if tg.Backend == storeopen.Postgres {
		cfg, err := pgx.ParseConfig(tg.DSN)
		if err != nil {
			t.Fatal(err)
		}
		db = stdlib.OpenDB(*cfg)
	} else if db, err = sqlite.OpenDB(tg.DSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// schemaVersion is the highest version in goose's table (0 without one).
func schemaVersion(t *testing.T, dbURL string) int64 {
	t.Helper()
	m, err := storeopen.NewMigrator(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	st, err := m.Schema(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st.Current
}

// applyNextRelease does what the next release's `migrate up` would: an
// expand-only migration (a new column, a new table) recorded as version v
// in goose's table, in one transaction.
func applyNextRelease(t *testing.T, backend storeopen.Backend, dbURL string, v int64) {
	t.Helper()
	db := openDB(t, dbURL)
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	insert := "INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, true)"
	if backend == storeopen.SQLite {
		insert = "INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, 1)"
	}
	for _, q := range []string{
		"ALTER TABLE credentials ADD COLUMN next_release_note TEXT",
		"CREATE TABLE next_release_things (id INTEGER PRIMARY KEY)",
	} {
		if _, err := tx.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := tx.ExecContext(t.Context(), insert, v); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
