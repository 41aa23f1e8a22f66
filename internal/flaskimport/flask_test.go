package flaskimport

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

// flaskExpected is testdata/flask/expected.json: the rows and the CRYPTOKEY
// list testdata/flask/generate.py encrypted them with, in Python.
type flaskExpected struct {
	CryptoKey string `json:"cryptokey"`
	Rows      []struct {
		ID       int64  `json:"id"`
		Provider string `json:"provider"`
		UserID   string `json:"user_id"`
		Token    string `json:"token"`
	} `json:"rows"`
}

func readFlaskExpected(t *testing.T) flaskExpected {
	t.Helper()
	raw, err := os.ReadFile("../../testdata/flask/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var e flaskExpected
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// The Flask service's tables, written by Python (SQLite file) and as a
// PostgreSQL dump, import with every token intact: its CRYPTOKEY list in
// its three key formats, a row under an older key (MultiFernet), its
// SQLAlchemy URLs with drivers.
func TestFlaskServiceDatabase(t *testing.T) {
	e := readFlaskExpected(t)
	keys, err := ParseOldKeys(e.CryptoKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("%d keys, want 3", len(keys))
	}

	pgURL := pgtest.NewDatabase(t)
	dump, err := os.ReadFile("../../testdata/flask/refresh_token.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), pgURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(context.Background(), string(dump)); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())

	src, err := filepath.Abs("../../testdata/flask/tokenstore.db")
	if err != nil {
		t.Fatal(err)
	}
	for name, source := range map[string]string{
		"sqlite":     "sqlite+pysqlite:///" + src, // four slashes: absolute
		"postgresql": strings.Replace(pgURL, "postgres://", "postgresql+psycopg2://", 1),
	} {
		t.Run(name, func(t *testing.T) {
			st, _ := newStore(t)
			ring := newRing(t)
			var unserved []string
			p, err := Run(context.Background(), Options{
				Source: source, OldKeys: keys, Ring: ring, Store: st,
				Providers: map[string]bool{"tern_keycloak": true, "Google": true, "public": true},
				OnRow: func(r Row, o Outcome, reason string) {
					if o == Failed {
						t.Errorf("row %d failed: %s", r.ID, reason)
					}
					unserved = append(unserved, r.Provider)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			if p.Imported != int64(len(e.Rows)) || p.Unserved != 1 || len(unserved) != 1 || unserved[0] != "retired_idp" {
				t.Fatalf("progress %+v, unserved %v", p, unserved)
			}
			for _, r := range e.Rows {
				if _, pt := openCred(t, st, ring, r.UserID, r.Provider); pt != r.Token {
					t.Errorf("row %d: got %q, want the token Python encrypted", r.ID, pt)
				}
			}
		})
	}
}
