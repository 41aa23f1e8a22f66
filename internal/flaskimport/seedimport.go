// Package flaskimport copies the refresh tokens of the old (Flask) tokenstore
// into this one (`tokenstore import`).
//
// The old service kept one row per person and provider in its refresh_token
// table (SQLAlchemy model RefreshToken: id, provider, token, expires_in,
// expires_at, user_id), the token Fernet-encrypted with the keys of its
// CRYPTOKEY setting (a MultiFernet: the first key encrypts, every key
// decrypts). Its user_id is the login subject, which is what this service
// calls the user id, so rows map one to one onto credentials.
//
// The import only reads the old database: PostgreSQL sessions are opened with
// default_transaction_read_only=on and inside a read-only transaction, SQLite
// files with mode=ro and query_only. Every row is its own step: a row that
// cannot be read is reported and the run goes on; a second run changes
// nothing, because a row whose credential already holds the same refresh
// token is skipped, and a credential holding a different token (linked or
// refreshed in the new service since) is kept, never overwritten by the
// older token from the old database, unless Overwrite is set.
package flaskimport

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/sqlite"
)

// Columns names the old table and its columns. The defaults are the old
// service's (its only Alembic migration, a07e67c00e84); deployments that
// renamed them can say so.
type Columns struct {
	Table, ID, UserID, Provider, Token string
	// ExpiresAt is the refresh token's expiry in Unix seconds (a float, NULL
	// or 0 when unknown); empty when the table has no such column.
	ExpiresAt string
}

// DefaultColumns are the old service's names.
func DefaultColumns() Columns {
	return Columns{Table: "refresh_token", ID: "id", UserID: "user_id", Provider: "provider", Token: "token", ExpiresAt: "expires_at"}
}

// Progress is reported every BatchSize rows and at the end.
type Progress struct {
	// Total is the number of rows in the old table when the run began.
	Total int64
	// Imported rows were stored; Unchanged already held the same token;
	// Kept rows were skipped because the new service holds a different
	// credential for that person and provider; Failed rows could not be read.
	Imported, Unchanged, Kept, Failed int64
	// Unserved counts the rows (of any outcome but Failed) whose provider
	// no TokenProvider serves, when Options.Providers is given.
	Unserved int64
}

// Seen is the number of rows handled so far.
func (p Progress) Seen() int64 { return p.Imported + p.Unchanged + p.Kept + p.Failed }

// Row identifies an old row in reports. It holds no token material.
type Row struct {
	ID       int64
	UserID   string
	Provider string
}

// Options configure a run.
type Options struct {
	// Source is the old database: the Flask service's SQLALCHEMY_DATABASE_URI
	// (see OpenSource).
	Source  string
	Columns Columns
	// OldKeys decrypt the old tokens (see ParseOldKeys).
	OldKeys []*fernet.Key
	// Ring seals the tokens for the new store; Store receives them.
	Ring  *crypto.KeyRing
	Store store.Store
	// Overwrite replaces a credential that holds a different token.
	Overwrite bool
	// BatchSize: progress is reported every BatchSize rows (default 100).
	BatchSize int
	// OnProgress, if set, is called every BatchSize rows and at the end.
	OnProgress func(Progress)
	// OnRow, if set, is called for each row that failed or was kept, and
	// for each row whose provider is not in Providers, with a reason that
	// never contains key or token material.
	OnRow func(r Row, outcome Outcome, reason string)
	// Providers, if not nil, are the provider ids TokenProviders serve. A
	// row of another provider is imported all the same (the provider may be
	// declared later) and reported: its credential serves no one until a
	// TokenProvider with that id exists.
	Providers map[string]bool
}

// Outcome of one row.
type Outcome string

const (
	Imported  Outcome = "imported"
	Unchanged Outcome = "unchanged"
	Kept      Outcome = "kept"
	Failed    Outcome = "failed"
)

// ParseOldKeys reads the old service's CRYPTOKEY: comma-separated 32-byte
// keys, each raw, base64 (44 characters) or hex (64 characters), decoded the
// way the old service did before handing them to Fernet. Errors name the
// key's position, never the key.
func ParseOldKeys(s string) ([]*fernet.Key, error) {
	var keys []*fernet.Key
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		raw := []byte(part)
		switch len(part) {
		case 44:
			if b, err := base64.StdEncoding.DecodeString(part); err == nil {
				raw = b
			} else if b, err := base64.URLEncoding.DecodeString(part); err == nil {
				raw = b
			}
		case 64:
			if b, err := hex.DecodeString(part); err == nil {
				raw = b
			}
		}
		if len(raw) != 32 {
			return nil, fmt.Errorf("old CRYPTOKEY: key %d is not 32 bytes (raw), 44 characters of base64 or 64 of hex", i+1)
		}
		// Fernet's 32-byte key is the signing key followed by the encryption
		// key, exactly the bytes the old service base64-encoded for Fernet().
		k := new(fernet.Key)
		copy(k[:], raw)
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("old CRYPTOKEY: no keys given")
	}
	return keys, nil
}

// Run imports every row of the old table. The returned error is fatal (the
// old or new database failed); rows that could not be read are counted in
// Progress.Failed and reported through OnRow.
func Run(ctx context.Context, opt Options) (Progress, error) {
	if opt.BatchSize <= 0 {
		opt.BatchSize = 100
	}
	if opt.Columns == (Columns{}) {
		opt.Columns = DefaultColumns()
	}
	if len(opt.OldKeys) == 0 || opt.Ring == nil || opt.Store == nil {
		return Progress{}, errors.New("import: old keys, new key ring and store are required")
	}
	db, dialect, err := OpenSource(opt.Source)
	if err != nil {
		return Progress{}, err
	}
	defer db.Close()

	txOpt := &sql.TxOptions{ReadOnly: true}
	if dialect == "postgres" {
		// One snapshot: the count and the rows agree even if the old
		// service is still writing.
		txOpt.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.BeginTx(ctx, txOpt)
	if err != nil {
		return Progress{}, fmt.Errorf("import: old database: %w", err)
	}
	// Read-only: there is nothing to commit.
	defer func() { _ = tx.Rollback() }()

	c := opt.Columns
	var p Progress
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+quote(c.Table)).Scan(&p.Total); err != nil {
		return Progress{}, fmt.Errorf("import: old database: counting %s: %w", c.Table, err)
	}
	cols := []string{quote(c.ID), quote(c.UserID), quote(c.Provider), quote(c.Token)}
	if c.ExpiresAt != "" {
		cols = append(cols, quote(c.ExpiresAt))
	}
	rows, err := tx.QueryContext(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+quote(c.Table)+" ORDER BY "+quote(c.ID))
	if err != nil {
		return Progress{}, fmt.Errorf("import: old database: reading %s: %w", c.Table, err)
	}
	defer rows.Close()

	report := func(r Row, o Outcome, reason string) {
		switch o {
		case Imported:
			p.Imported++
		case Unchanged:
			p.Unchanged++
		case Kept:
			p.Kept++
		case Failed:
			p.Failed++
		}
		if opt.OnRow != nil && (o == Failed || o == Kept) {
			opt.OnRow(r, o, reason)
		}
		if opt.OnProgress != nil && p.Seen()%int64(opt.BatchSize) == 0 {
			opt.OnProgress(p)
		}
	}
	for rows.Next() {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		var (
			id             int64
			user, provider sql.NullString
			token          []byte
			expiresAt      sql.NullFloat64
			dest           = []any{&id, &user, &provider, &token}
		)
		if c.ExpiresAt != "" {
			dest = append(dest, &expiresAt)
		}
		if err := rows.Scan(dest...); err != nil {
			// A value of an unexpected type in one row; the cursor goes on.
			report(Row{ID: id}, Failed, "unreadable row: "+scanReason(err))
			continue
		}
		r := Row{ID: id, UserID: user.String, Provider: provider.String}
		o, reason, err := importRow(ctx, opt, r, token, expiresAt)
		if err != nil {
			return p, err
		}
		if opt.Providers != nil && o != Failed && !opt.Providers[r.Provider] {
			p.Unserved++
			if opt.OnRow != nil {
				opt.OnRow(r, o, fmt.Sprintf("no TokenProvider serves provider %q: the credential is %s but unused until a TokenProvider with this id (metadata.name or spec.id) exists", r.Provider, o))
			}
		}
		report(r, o, reason)
	}
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("import: old database: reading %s: %w", c.Table, err)
	}
	if opt.OnProgress != nil && p.Seen()%int64(opt.BatchSize) != 0 {
		opt.OnProgress(p)
	}
	return p, nil
}

// maxExpiresAt is 10000-01-01T00:00:00Z in Unix seconds.
const maxExpiresAt = 253402300800

// importRow handles one row; an error is returned only when the new store
// fails, which stops the run.
func importRow(ctx context.Context, opt Options, r Row, token []byte, expiresAt sql.NullFloat64) (Outcome, string, error) {
	switch {
	case r.UserID == "":
		return Failed, "no user id", nil
	case r.Provider == "":
		return Failed, "no provider", nil
	case len(token) == 0:
		return Failed, "no token", nil
	}
	// ttl 0: the old service never expired its ciphertexts.
	plain := fernet.VerifyAndDecrypt(bytes.TrimSpace(token), 0, opt.OldKeys)
	if len(plain) == 0 {
		return Failed, "cannot decrypt the token with any old key (corrupt, or encrypted under a key not given)", nil
	}
	b := crypto.Binding{Owner: r.UserID, Provider: r.Provider, Purpose: crypto.PurposeRefreshToken}

	existing, err := opt.Store.GetCredential(ctx, r.UserID, r.Provider)
	switch {
	case err == nil:
		have, oerr := opt.Ring.Open(existing.RefreshToken, b)
		if oerr == nil && bytes.Equal(have, plain) {
			return Unchanged, "", nil
		}
		if !opt.Overwrite {
			if oerr != nil {
				return Kept, "tokenstore already holds a credential for this person and provider (it cannot be opened with CRYPTOKEY); kept it", nil
			}
			return Kept, "tokenstore already holds a different credential for this person and provider (linked or refreshed since); kept it", nil
		}
	case errors.Is(err, store.ErrNotFound):
	default:
		return "", "", fmt.Errorf("import: new store: %w", err)
	}

	sealed, err := opt.Ring.Seal(plain, b)
	if err != nil {
		return "", "", fmt.Errorf("import: sealing: %w", err)
	}
	c := store.Credential{
		UserID:       r.UserID,
		Provider:     r.Provider,
		KeyID:        opt.Ring.PrimaryKeyID(),
		RefreshToken: sealed,
		State:        store.StateActive,
	}
	// Later than 9999-12-31 (or infinite) is no real date: PostgreSQL and
	// JSON cannot hold it, so it counts as unknown rather than failing the run.
	if expiresAt.Valid && expiresAt.Float64 > 0 && expiresAt.Float64 < maxExpiresAt {
		sec, frac := math.Modf(expiresAt.Float64)
		t := time.Unix(int64(sec), int64(frac*1e9)).UTC()
		c.RefreshExpiresAt = &t
	}
	if _, err := opt.Store.UpsertCredential(ctx, c); err != nil {
		return "", "", fmt.Errorf("import: new store: %w", err)
	}
	return Imported, "", nil
}

// scanReason keeps a Scan error's gist without the value it choked on.
func scanReason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i > 0 {
		msg = msg[:i]
	}
	return msg
}

func quote(ident string) string { return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"` }

// OpenSource opens the old database read-only and returns it with its
// dialect ("postgres" or "sqlite"). source is the Flask service's
// SQLALCHEMY_DATABASE_URI, read as SQLAlchemy reads it (settings.DatabaseURL,
// the function serve and migrate read it with too): a +driver is dropped,
// sqlite:///relative.db is relative to the working directory and
// sqlite:////abs/path.db absolute. Errors never quote the URL, which may
// hold a password.
func OpenSource(source string) (*sql.DB, string, error) {
	u, err := settings.DatabaseURL(source, true)
	if err != nil {
		return nil, "", fmt.Errorf("import: the old database URL: %w", err)
	}
	t, err := storeopen.Parse(u)
	if err != nil {
		return nil, "", fmt.Errorf("import: the old database URL: %w; use the Flask service's SQLALCHEMY_DATABASE_URI (postgresql://…, sqlite:///relative/path or sqlite:////absolute/path)", err)
	}
	switch {
	case t.Backend == storeopen.Postgres:
		cfg, err := pgx.ParseConfig(t.DSN)
		if err != nil {
			return nil, "", errors.New("import: the old database URL is not a valid PostgreSQL URL")
		}
		// Every transaction of these sessions is read-only, whatever a
		// statement asks for: the import cannot change the old database.
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
		db := stdlib.OpenDB(*cfg)
		if err := db.Ping(); err != nil {
			db.Close()
			return nil, "", fmt.Errorf("import: old database: %w", err)
		}
		return db, "postgres", nil
	case t.Memory():
		return nil, "", errors.New("import: the old database URL names an in-memory SQLite database, which holds nothing to import")
	default:
		path := filepath.Clean(t.DSN)
		// mode=ro opens the file read-only (and fails if it is missing rather
		// than creating it); query_only refuses writes on top of that.
		dsn := sqlite.FileURI(path) + "?mode=ro&_pragma=query_only(1)"
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			return nil, "", fmt.Errorf("import: old database: %w", err)
		}
		if err := db.Ping(); err != nil {
			db.Close()
			return nil, "", fmt.Errorf("import: old database %s: %w", path, err)
		}
		return db, "sqlite", nil
	}
}
