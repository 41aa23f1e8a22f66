package flaskimport

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/jackc/pgx/v5"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

// oldSchema is the old service's table as its Alembic migration created it
// (revision a07e67c00e84), in PostgreSQL.
const oldSchemaPG = `
CREATE TABLE refresh_token (
	id SERIAL NOT NULL,
	provider TEXT,
	token BYTEA,
	expires_in INTEGER,
	expires_at FLOAT,
	user_id TEXT,
	PRIMARY KEY (id)
);
CREATE INDEX ix_refresh_token_provider ON refresh_token (provider);
CREATE INDEX ix_refresh_token_user_id ON refresh_token (user_id);`

const oldSchemaSQLite = `
CREATE TABLE refresh_token (
	id INTEGER NOT NULL,
	provider TEXT,
	token BLOB,
	expires_in INTEGER,
	expires_at FLOAT,
	user_id TEXT,
	PRIMARY KEY (id)
);`

func rawKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func fkey(raw []byte) *fernet.Key {
	k := new(fernet.Key)
	copy(k[:], raw)
	return k
}

// oldRow is a row as the old service wrote it.
type oldRow struct {
	user, provider any // nil for NULL
	token          []byte
	expiresIn      int
	expiresAt      any
}

type fixture struct {
	oldKeys string         // the old CRYPTOKEY
	rows    []oldRow       // in id order (ids 1..n)
	plain   map[int]string // id -> refresh token, for the rows that must import
	bad     []int64        // ids that must be reported
}

// newFixture fills rows the way the old service did: MultiFernet over the
// CRYPTOKEY list, the first key encrypting new tokens; an older key (second
// in the list) still decrypts rows written before a key change.
func newFixture(t *testing.T) fixture {
	t.Helper()
	k1, k2, unknown := rawKey(t), rawKey(t), rawKey(t)
	enc := func(k []byte, msg string) []byte {
		tok, err := fernet.EncryptAndSign([]byte(msg), fkey(k))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	exp := float64(time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC).Unix())
	f := fixture{
		// base64 (44 characters) and hex (64), as the old service accepted.
		oldKeys: base64.StdEncoding.EncodeToString(k1) + ", " + hex.EncodeToString(k2),
		plain:   map[int]string{1: "rt-alice-idp1-" + hex.EncodeToString(rawKey(t)[:8]), 2: "rt-bob-idp2-under-older-key", 3: "rt-alice-idp2-with-expiry"},
		bad:     []int64{4, 5, 6, 7},
	}
	f.rows = []oldRow{
		{user: "alice", provider: "idp1", token: enc(k1, f.plain[1]), expiresIn: 0},
		{user: "bob", provider: "idp2", token: enc(k2, f.plain[2]), expiresIn: 0},
		{user: "alice", provider: "idp2", token: enc(k1, f.plain[3]), expiresIn: 86400, expiresAt: exp},
		// corrupt: a Fernet token with its last bytes changed
		{user: "carol", provider: "idp1", token: append(enc(k1, "rt-carol")[:40], []byte("AAAAAAAAAAAAAAAAAAAA")...)},
		// encrypted under a key that is not in the CRYPTOKEY given
		{user: "dave", provider: "idp1", token: enc(unknown, "rt-dave-unknown-key")},
		// no user
		{user: nil, provider: "idp1", token: enc(k1, "rt-nobody")},
		// no token
		{user: "erin", provider: "idp1", token: nil},
	}
	return f
}

func fillPG(t *testing.T, url string, f fixture) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, oldSchemaPG); err != nil {
		t.Fatal(err)
	}
	for _, r := range f.rows {
		if _, err := conn.Exec(ctx, `INSERT INTO refresh_token (provider, token, expires_in, expires_at, user_id) VALUES ($1, $2, $3, $4, $5)`,
			r.provider, r.token, r.expiresIn, r.expiresAt, r.user); err != nil {
			t.Fatal(err)
		}
	}
}

// checksumPG digests every row and the table's write counters, so any change
// (even one that writes identical values back) is seen.
func checksumPG(t *testing.T, url string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var sum string
	if err := conn.QueryRow(ctx, `SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM refresh_token t`).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	var xmax string
	if err := conn.QueryRow(ctx, `SELECT string_agg(xmin::text || '/' || xmax::text, ',' ORDER BY id) FROM refresh_token`).Scan(&xmax); err != nil {
		t.Fatal(err)
	}
	return sum + " " + xmax
}

func newStore(t *testing.T) (store.Store, string) {
	t.Helper()
	url := "sqlite://" + filepath.Join(t.TempDir(), "new.db")
	mg, err := storeopen.NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mg.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	mg.Close()
	st, err := storeopen.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, url
}

func newRing(t *testing.T) *crypto.KeyRing {
	t.Helper()
	k, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	r, err := crypto.ParseKeyRing(k)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

type recorder struct {
	progress []Progress
	rows     map[int64]string
	outcomes map[int64]Outcome
}

func (r *recorder) options(o Options) Options {
	r.rows, r.outcomes = map[int64]string{}, map[int64]Outcome{}
	o.BatchSize = 2
	o.OnProgress = func(p Progress) { r.progress = append(r.progress, p) }
	o.OnRow = func(row Row, out Outcome, reason string) { r.rows[row.ID] = reason; r.outcomes[row.ID] = out }
	return o
}

func openCred(t *testing.T, st store.Store, ring *crypto.KeyRing, user, provider string) (store.Credential, string) {
	t.Helper()
	c, err := st.GetCredential(context.Background(), user, provider)
	if err != nil {
		t.Fatalf("credential %s/%s: %v", user, provider, err)
	}
	pt, err := ring.Open(c.RefreshToken, crypto.Binding{Owner: user, Provider: provider, Purpose: crypto.PurposeRefreshToken})
	if err != nil {
		t.Fatalf("credential %s/%s does not open with the new ring: %v", user, provider, err)
	}
	return c, string(pt)
}

func TestImportFromPostgres(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	oldURL := pgtest.NewDatabase(t)
	fillPG(t, oldURL, f)
	before := checksumPG(t, oldURL)

	keys, err := ParseOldKeys(f.oldKeys)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := newStore(t)
	ring := newRing(t)
	var rec recorder
	p, err := Run(ctx, rec.options(Options{Source: oldURL, OldKeys: keys, Ring: ring, Store: st}))
	if err != nil {
		t.Fatal(err)
	}
	want := Progress{Total: 7, Imported: 3, Failed: 4}
	if p != want {
		t.Fatalf("first run: got %+v, want %+v", p, want)
	}
	for _, id := range f.bad {
		if rec.outcomes[id] != Failed {
			t.Errorf("row %d: not reported as failed (reports: %v)", id, rec.rows)
		}
	}
	if !strings.Contains(rec.rows[5], "cannot decrypt") || !strings.Contains(rec.rows[6], "no user") || !strings.Contains(rec.rows[7], "no token") {
		t.Errorf("reasons: %v", rec.rows)
	}
	// progress is shown along the way (every 2 rows here) and at the end
	if len(rec.progress) < 3 || rec.progress[len(rec.progress)-1] != p {
		t.Errorf("progress reports: %+v", rec.progress)
	}
	assertNoSecrets(t, rec.rows, f)

	users := map[int][2]string{1: {"alice", "idp1"}, 2: {"bob", "idp2"}, 3: {"alice", "idp2"}}
	versions := map[int]int64{}
	for id, up := range users {
		c, pt := openCred(t, st, ring, up[0], up[1])
		if pt != f.plain[id] {
			t.Errorf("row %d: token differs after import", id)
		}
		if c.KeyID != ring.PrimaryKeyID() || c.State != store.StateActive {
			t.Errorf("row %d: key %q state %q", id, c.KeyID, c.State)
		}
		versions[id] = c.Version
	}
	c3, _ := openCred(t, st, ring, "alice", "idp2")
	if c3.RefreshExpiresAt == nil || !c3.RefreshExpiresAt.Equal(time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)) {
		t.Errorf("refresh expiry not carried over: %v", c3.RefreshExpiresAt)
	}
	if checksumPG(t, oldURL) != before {
		t.Fatal("the old database changed during the import")
	}

	// A second run changes nothing.
	p2, err := Run(ctx, rec.options(Options{Source: oldURL, OldKeys: keys, Ring: ring, Store: st}))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Progress{Total: 7, Unchanged: 3, Failed: 4}); p2 != want {
		t.Fatalf("second run: got %+v, want %+v", p2, want)
	}
	for id, up := range users {
		c, _ := openCred(t, st, ring, up[0], up[1])
		if c.Version != versions[id] {
			t.Errorf("row %d: second run rewrote the credential (version %d -> %d)", id, versions[id], c.Version)
		}
	}

	// A credential the new service has refreshed since is kept, not replaced
	// by the older token of the old database...
	newer, err := ring.Seal([]byte("rt-alice-idp1-rotated"), crypto.Binding{Owner: "alice", Provider: "idp1", Purpose: crypto.PurposeRefreshToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpsertCredential(ctx, store.Credential{UserID: "alice", Provider: "idp1", KeyID: ring.PrimaryKeyID(), RefreshToken: newer}); err != nil {
		t.Fatal(err)
	}
	p3, err := Run(ctx, rec.options(Options{Source: oldURL, OldKeys: keys, Ring: ring, Store: st}))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Progress{Total: 7, Unchanged: 2, Kept: 1, Failed: 4}); p3 != want || rec.outcomes[1] != Kept {
		t.Fatalf("third run: got %+v (%v), want %+v", p3, rec.rows, want)
	}
	if _, pt := openCred(t, st, ring, "alice", "idp1"); pt != "rt-alice-idp1-rotated" {
		t.Fatal("a newer credential was overwritten without Overwrite")
	}
	// ...unless asked to.
	p4, err := Run(ctx, rec.options(Options{Source: oldURL, OldKeys: keys, Ring: ring, Store: st, Overwrite: true}))
	if err != nil {
		t.Fatal(err)
	}
	if p4.Imported != 1 {
		t.Fatalf("overwrite run: %+v", p4)
	}
	if _, pt := openCred(t, st, ring, "alice", "idp1"); pt != f.plain[1] {
		t.Fatal("Overwrite did not replace the credential")
	}
	if checksumPG(t, oldURL) != before {
		t.Fatal("the old database changed")
	}
}

// The old database is opened so that it cannot be written, whatever a
// statement asks.
func TestSourceIsReadOnly(t *testing.T) {
	f := newFixture(t)
	pgURL := pgtest.NewDatabase(t)
	fillPG(t, pgURL, f)
	sqlitePath := filepath.Join(t.TempDir(), "old.db")
	fillSQLite(t, sqlitePath, f)
	for name, src := range map[string]string{
		"postgres": strings.Replace(pgURL, "postgres://", "postgresql+psycopg2://", 1),
		"sqlite":   "sqlite:///" + sqlitePath,
	} {
		t.Run(name, func(t *testing.T) {
			db, _, err := OpenSource(src)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			_, err = db.Exec(`UPDATE refresh_token SET provider = 'x'`)
			if err == nil {
				t.Fatal("an UPDATE on the old database succeeded")
			}
			t.Logf("write refused as expected: %v", err)
		})
	}
}

func fillSQLite(t *testing.T, path string, f fixture) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(oldSchemaSQLite); err != nil {
		t.Fatal(err)
	}
	for _, r := range f.rows {
		if _, err := db.Exec(`INSERT INTO refresh_token (provider, token, expires_in, expires_at, user_id) VALUES (?, ?, ?, ?, ?)`,
			r.provider, r.token, r.expiresIn, r.expiresAt, r.user); err != nil {
			t.Fatal(err)
		}
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// The old service's default database was SQLite; the same import works from
// a file, which is left byte for byte as it was.
func TestImportFromSQLite(t *testing.T) {
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "old.db")
	fillSQLite(t, path, f)
	before := fileSum(t, path)
	keys, err := ParseOldKeys(f.oldKeys)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := newStore(t)
	ring := newRing(t)
	var rec recorder
	for run := 1; run <= 2; run++ {
		p, err := Run(context.Background(), rec.options(Options{Source: "sqlite:///" + path, OldKeys: keys, Ring: ring, Store: st}))
		if err != nil {
			t.Fatal(err)
		}
		want := Progress{Total: 7, Imported: 3, Failed: 4}
		if run == 2 {
			want = Progress{Total: 7, Unchanged: 3, Failed: 4}
		}
		if p != want {
			t.Fatalf("run %d: got %+v, want %+v", run, p, want)
		}
	}
	if _, pt := openCred(t, st, ring, "bob", "idp2"); pt != f.plain[2] {
		t.Fatal("bob's token differs")
	}
	if fileSum(t, path) != before {
		t.Fatal("the old SQLite file changed")
	}
}

// Renamed columns are named by options; a missing table is a clear error.
func TestColumnsAndMissingTable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	k := rawKey(t)
	tok, _ := fernet.EncryptAndSign([]byte("rt-x"), fkey(k))
	if _, err := db.Exec(`CREATE TABLE tokens (pk INTEGER PRIMARY KEY, sub TEXT, idp TEXT, secret BLOB)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO tokens (sub, idp, secret) VALUES ('u', 'p', ?)`, tok); err != nil {
		t.Fatal(err)
	}
	db.Close()
	keys, _ := ParseOldKeys(hex.EncodeToString(k))
	st, _ := newStore(t)
	ring := newRing(t)
	p, err := Run(context.Background(), Options{Source: "sqlite:///" + path, OldKeys: keys, Ring: ring, Store: st,
		Columns: Columns{Table: "tokens", ID: "pk", UserID: "sub", Provider: "idp", Token: "secret"}})
	if err != nil || p.Imported != 1 {
		t.Fatalf("renamed columns: %+v %v", p, err)
	}
	_, err = Run(context.Background(), Options{Source: "sqlite:///" + path, OldKeys: keys, Ring: ring, Store: st})
	if err == nil || !strings.Contains(err.Error(), "refresh_token") {
		t.Fatalf("missing table: want an error naming refresh_token, got %v", err)
	}
}

// An unreadable row (here an expires_at that is no number) is reported and
// counted like any failed row, progress included, and the run goes on.
func TestUnreadableRow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	k := rawKey(t)
	tok, _ := fernet.EncryptAndSign([]byte("rt-x"), fkey(k))
	if _, err := db.Exec(oldSchemaSQLite); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO refresh_token (id, provider, token, expires_at, user_id) VALUES
		(1, 'p', ?, 'not-a-number', 'u1'), (2, 'p', ?, NULL, 'u2')`, tok, tok); err != nil {
		t.Fatal(err)
	}
	db.Close()
	keys, _ := ParseOldKeys(hex.EncodeToString(k))
	st, _ := newStore(t)
	var rec recorder
	opt := rec.options(Options{Source: "sqlite:///" + path, OldKeys: keys, Ring: newRing(t), Store: st})
	opt.BatchSize = 1
	p, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Progress{Total: 2, Imported: 1, Failed: 1}); p != want {
		t.Fatalf("got %+v, want %+v", p, want)
	}
	if rec.outcomes[1] != Failed || !strings.HasPrefix(rec.rows[1], "unreadable row") {
		t.Errorf("row 1: %q %q, want failed as unreadable", rec.outcomes[1], rec.rows[1])
	}
	if want := []Progress{{Total: 2, Failed: 1}, p}; fmt.Sprint(rec.progress) != fmt.Sprint(want) {
		t.Errorf("progress reports %+v, want one per row: %+v", rec.progress, want)
	}
}

func TestParseOldKeys(t *testing.T) {
	k := rawKey(t)
	rawPrintable := strings.Repeat("k", 32)
	for _, s := range []string{
		base64.StdEncoding.EncodeToString(k),
		base64.URLEncoding.EncodeToString(k),
		hex.EncodeToString(k),
		rawPrintable,
		" " + hex.EncodeToString(k) + " , " + rawPrintable + ",",
	} {
		keys, err := ParseOldKeys(s)
		if err != nil || len(keys) == 0 {
			t.Errorf("ParseOldKeys: %v", err)
		}
	}
	keys, _ := ParseOldKeys(hex.EncodeToString(k))
	if *keys[0] != *fkey(k) {
		t.Error("hex key decoded wrong")
	}
	for _, bad := range []string{"", " , ", "short-key-secret", hex.EncodeToString(k)[:62]} {
		_, err := ParseOldKeys(bad)
		if err == nil {
			t.Errorf("ParseOldKeys accepted a bad key list")
			continue
		}
		if bad != "" && strings.Contains(err.Error(), strings.TrimSpace(strings.Trim(bad, ", "))) && strings.Trim(bad, ", ") != "" {
			t.Errorf("error quotes the key: %v", err)
		}
	}
}

func TestSourceErrorsHideURL(t *testing.T) {
	_, _, err := OpenSource("postgresql://user:s3cretpw@127.0.0.1:1/old?connect_timeout=1")
	if err == nil {
		t.Fatal("connecting to a closed port succeeded")
	}
	if strings.Contains(err.Error(), "s3cretpw") {
		t.Fatalf("error shows the password: %v", err)
	}
	if _, _, err := OpenSource("mysql://x"); err == nil || !strings.Contains(err.Error(), "unsupported") {
		t.Fatalf("mysql: %v, want unsupported", err)
	}
}

func assertNoSecrets(t *testing.T, reasons map[int64]string, f fixture) {
	t.Helper()
	for id, r := range reasons {
		for _, p := range f.plain {
			if strings.Contains(r, p) {
				t.Errorf("row %d: reason contains a token", id)
			}
		}
		for _, k := range strings.Split(f.oldKeys, ",") {
			if strings.Contains(r, strings.TrimSpace(k)) {
				t.Errorf("row %d: reason contains a key", id)
			}
		}
	}
}
