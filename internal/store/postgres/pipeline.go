package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/postgres/db"
)

// UpdateCredential's transaction is pipelined: the refresh path runs it for
// every refresh, and each round trip to PostgreSQL costs CPU on both ends of
// the socket (on a small machine, the same CPU the provider call needs).
//
//	round trip 1: BEGIN; SELECT ... FOR UPDATE           (the row is locked)
//	              fn runs: the provider is called meanwhile
//	round trip 2: UPDATE;
//	              [SAVEPOINT audit; INSERT audit event; RELEASE SAVEPOINT audit;]
//	              COMMIT
//
// instead of BEGIN, SELECT, UPDATE, COMMIT and, after it, the audit INSERT
// in a transaction (and a WAL flush) of its own. The statements of one round
// trip are one pgx batch: sent together, answered in order, and the server
// skips every statement after a failed one (up to the batch's Sync), so a
// failed UPDATE never reaches the COMMIT. The savepoint keeps a failed audit
// INSERT from taking the UPDATE down with it: the next round trip goes back
// to the savepoint and commits the update alone.
//
// The SQL is sqlc's: recorded from the generated functions (see queue), not
// written twice, and their results are read by the same functions (replay).
// The UPDATE sends no row back (a kilobyte of ciphertexts on every
// refresh): the row written is the locked one with the update's values
// (written). The audit INSERT's short row is read past (br.Exec).

// errRecorded is what the generated query functions return when run on a
// recorder: nothing was sent.
var errRecorded = errors.New("store/postgres: statement recorded, not sent")

// recorder is a db.DBTX that keeps the last statement and its arguments
// instead of sending them.
type recorder struct {
	sql  string
	args []any
}

func (r *recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.sql, r.args = sql, args
	return pgconn.CommandTag{}, errRecorded
}

func (r *recorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return nil, errRecorded
}

func (r *recorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	r.sql, r.args = sql, args
	return recordedRow{}
}

type recordedRow struct{}

func (recordedRow) Scan(...any) error { return errRecorded }

// queue queues in b the statement call sends through the generated code.
func queue(ctx context.Context, b *pgx.Batch, call func(ctx context.Context, q *db.Queries) error) {
	r := &recorder{}
	if err := call(ctx, db.New(r)); !errors.Is(err, errRecorded) || r.sql == "" {
		// Only a change to the generated code can get here.
		panic(fmt.Sprintf("store/postgres: recording a statement: %v", err))
	}
	b.Queue(r.sql, r.args...)
}

// replay is a db.DBTX that answers each query with the next result of a
// batch already sent: the generated functions, called again with the same
// arguments, read what their recorded statements returned, with their own
// (generated) scanning.
type replay struct{ br pgx.BatchResults }

func (r replay) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return r.br.Exec()
}

func (r replay) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return r.br.Query()
}

func (r replay) QueryRow(context.Context, string, ...any) pgx.Row {
	return r.br.QueryRow()
}

const auditSavepoint = "audit"

// updateCredential is UpdateCredential.
func (s *Store) updateCredential(ctx context.Context, userID, provider string, fn func(c *store.Credential) (store.Outcome, error)) (store.UpdateResult, error) {
	// Lock holders are capped below the pool's size, so that short queries
	// (the hot path's reads) still find a connection while a slow provider
	// keeps rows locked.
	select {
	case s.lockSlots <- struct{}{}:
		defer func() { <-s.lockSlots }()
	case <-ctx.Done():
		return store.UpdateResult{}, wrap("update credential: begin", ctx.Err())
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return store.UpdateResult{}, wrap("update credential: begin", err)
	}
	// Release destroys a connection left inside a transaction, which ends
	// the transaction and its lock even when the ROLLBACK below could not
	// be sent.
	defer conn.Release()
	open := false
	defer func() {
		if open {
			// On every path but a commit (Unchanged, fn's error, a failed
			// statement, a panic in fn) this releases the lock.
			_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()

	lock := db.CredentialGetForUpdateParams{UserID: userID, Provider: provider}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	queue(ctx, b, func(ctx context.Context, q *db.Queries) error {
		_, err := q.CredentialGetForUpdate(ctx, lock)
		return err
	})
	open = true
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	var row db.Credential
	if err == nil {
		row, err = db.New(replay{br}).CredentialGetForUpdate(ctx, lock)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return store.UpdateResult{}, wrap("update credential: lock row", err)
	}

	cur := credential(row)
	next := cur
	out, err := fn(&next)
	if err != nil {
		return store.UpdateResult{}, err // as is, per the contract
	}
	if !out.Writes() {
		// The deferred ROLLBACK ends the transaction and its lock.
		return store.UpdateResult{Credential: cur}, nil
	}
	if err := validState(next.State); err != nil {
		return store.UpdateResult{}, fmt.Errorf("store/postgres: update credential: %w", err)
	}
	ev := out.Audit()

	update := db.CredentialUpdateParams{
		ID:               cur.ID, // fn cannot re-address the row
		Subject:          next.Subject,
		KeyID:            next.KeyID,
		RefreshToken:     nonNil(next.RefreshToken),
		AccessToken:      nonNil(next.AccessToken),
		TokenType:        next.TokenType,
		Scopes:           nonNilStrings(next.Scopes),
		AccessExpiresAt:  tsp(next.AccessExpiresAt),
		RefreshExpiresAt: tsp(next.RefreshExpiresAt),
		State:            string(next.State),
		StateReason:      next.StateReason,
		Now:              ts(s.now()),
		LastRefreshedAt:  tsp(next.LastRefreshedAt),
		LastUsedAt:       tsp(next.LastUsedAt),
	}
	b = &pgx.Batch{}
	queue(ctx, b, func(ctx context.Context, q *db.Queries) error {
		_, err := q.CredentialUpdate(ctx, update)
		return err
	})
	if ev != nil {
		b.Queue("SAVEPOINT " + auditSavepoint)
		queue(ctx, b, func(ctx context.Context, q *db.Queries) error {
			_, err := q.AuditEventInsert(ctx, s.auditParams(*ev))
			return err
		})
		b.Queue("RELEASE SAVEPOINT " + auditSavepoint)
	}
	b.Queue("COMMIT")
	br = conn.SendBatch(ctx, b)
	n, err := db.New(replay{br}).CredentialUpdate(ctx, update)
	if err == nil && n != 1 {
		// The row is locked by this transaction: only a broken invariant
		// (the id changed under the lock) gets here.
		err = fmt.Errorf("%d rows updated, want 1", n)
	}
	if err != nil {
		br.Close()
		return store.UpdateResult{}, wrap("update credential", err)
	}
	row = written(row, update)
	if ev != nil {
		if _, err := br.Exec(); err != nil { // SAVEPOINT
			br.Close()
			return store.UpdateResult{}, wrap("update credential: savepoint", err)
		}
		if _, auditErr := br.Exec(); auditErr != nil {
			// The server skipped the rest of the batch; the transaction
			// waits, aborted, at the savepoint. Back to it and commit, in
			// the simple protocol: pgx cannot prepare statements inside an
			// aborted transaction (nor drop the ones the failure made it
			// forget; it does so once the transaction is over).
			br.Close()
			failed := store.UpdateResult{Audit: store.AuditFailed, AuditErr: wrap("append audit event", auditErr)}
			if _, err := conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+auditSavepoint); err != nil {
				return store.UpdateResult{}, wrap("update credential: after a failed audit event", err)
			}
			tag, err := conn.Exec(ctx, "COMMIT")
			return s.committed(row, failed, tag, err, &open)
		}
		if _, err := br.Exec(); err != nil { // RELEASE
			br.Close()
			return store.UpdateResult{}, wrap("update credential: release savepoint", err)
		}
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	var res store.UpdateResult
	if ev != nil {
		res.Audit = store.AuditWritten
	}
	return s.committed(row, res, tag, err, &open)
}

// written is the row locked as it stands once update is applied to it,
// as CredentialUpdate writes it (version + 1; the timestamps are already
// at PostgreSQL's microsecond precision, see ts).
func written(locked db.Credential, update db.CredentialUpdateParams) db.Credential {
	w := locked
	w.Subject = update.Subject
	w.KeyID = update.KeyID
	w.RefreshToken = update.RefreshToken
	w.AccessToken = update.AccessToken
	w.TokenType = update.TokenType
	w.Scopes = update.Scopes
	w.AccessExpiresAt = update.AccessExpiresAt
	w.RefreshExpiresAt = update.RefreshExpiresAt
	w.State = update.State
	w.StateReason = update.StateReason
	w.UpdatedAt = update.Now
	w.LastRefreshedAt = update.LastRefreshedAt
	w.LastUsedAt = update.LastUsedAt
	w.Version = locked.Version + 1
	return w
}

// committed is updateCredential's result once the COMMIT answered tag,
// err: res (what became of the audit event) with the row written.
func (s *Store) committed(row db.Credential, res store.UpdateResult, tag pgconn.CommandTag, err error, open *bool) (store.UpdateResult, error) {
	if err != nil {
		return store.UpdateResult{}, wrap("update credential: commit", err)
	}
	if tag.String() != "COMMIT" {
		// A COMMIT of a failed transaction answers ROLLBACK, without an error.
		return store.UpdateResult{}, fmt.Errorf("store/postgres: update credential: commit: the transaction was rolled back (%s)", tag.String())
	}
	*open = false
	res.Credential, res.Written = credential(row), true
	return res, nil
}

// auditParams is what AuditEventInsert stores for e.
func (s *Store) auditParams(e store.AuditEvent) db.AuditEventInsertParams {
	t := e.Time
	if t.IsZero() {
		t = s.now()
	}
	return db.AuditEventInsertParams{
		Time:     ts(t),
		UserID:   e.UserID,
		Actor:    e.Actor,
		Action:   e.Action,
		Provider: e.Provider,
		Detail:   nonNil(e.Detail),
	}
}
