// Package sqltrace traces the SQLite store's statements as pgtrace traces
// PostgreSQL's: one client span per statement, named by its sqlc query name
// (pgtrace.QueryName), with neither the SQL text nor any argument recorded
// (arguments hold ciphertexts, user ids and hashed session ids). It wraps
// the database/sql handle (or transaction) that sqlc's generated code runs
// on. It uses OpenTelemetry's global provider: with tracing off it costs a
// no-op span per statement.
package sqltrace

import (
	"context"
	"database/sql"
	"errors"
	"strconv"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"modernc.org/sqlite"

	"github.com/tokenstore/tokenstore/internal/observability/tracing"
	"github.com/tokenstore/tokenstore/internal/observability/tracing/pgtrace"
)

const scope = "github.com/tokenstore/tokenstore/internal/observability/tracing/sqltrace"

// DBTX is what sqlc's database/sql code runs statements on: *sql.DB,
// *sql.Tx, and the tracing wrapper of either.
type DBTX interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Wrap returns d with a span around each statement.
func Wrap(d DBTX) DBTX { return traced{d} }

type traced struct{ d DBTX }

func (t traced) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx, span := start(ctx, query)
	res, err := t.d.ExecContext(ctx, query, args...)
	if err == nil && span.IsRecording() {
		if n, nerr := res.RowsAffected(); nerr == nil {
			span.SetAttributes(attribute.Int64("db.response.returned_rows", n))
		}
	}
	end(span, err)
	return res, err
}

func (t traced) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	ctx, span := start(ctx, query)
	st, err := t.d.PrepareContext(ctx, query)
	end(span, err)
	return st, err
}

// QueryContext's span covers running the statement, not reading its rows
// (the caller does that after it returns).
func (t traced) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	ctx, span := start(ctx, query)
	rows, err := t.d.QueryContext(ctx, query, args...)
	end(span, err)
	return rows, err
}

// QueryRowContext's span covers running the statement and shows the
// error the Row holds (Row.Err: the statement's own, never sql.ErrNoRows,
// which Scan reports, so a row not found is no failure).
func (t traced) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	ctx, span := start(ctx, query)
	row := t.d.QueryRowContext(ctx, query, args...)
	end(span, row.Err())
	return row
}

func start(ctx context.Context, query string) (context.Context, trace.Span) {
	if !tracing.Installed() {
		// No provider: no span (a no-op one, whose End does nothing).
		return ctx, trace.SpanFromContext(context.Background())
	}
	name := pgtrace.QueryName(query)
	ctx, span := otel.Tracer(scope).Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("db.system.name", "sqlite"),
			attribute.String("db.operation.name", name),
		)
	}
	return ctx, span
}

// end ends span, marked failed with SQLite's result code only: its
// messages may quote a value.
func end(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		var se *sqlite.Error
		switch {
		case errors.As(err, &se):
			span.SetAttributes(attribute.String("db.response.status_code", strconv.Itoa(se.Code())))
			span.SetStatus(codes.Error, "query failed")
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			span.SetStatus(codes.Error, "canceled")
		default:
			span.SetStatus(codes.Error, "query failed")
		}
	}
	span.End()
}
