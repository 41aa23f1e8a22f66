// Package pgtrace is a pgx QueryTracer that makes one client span per query,
// named by the sqlc query name (the "-- name: CredentialGet :one" line sqlc
// puts in each query) or, for other statements, by their first keyword
// (BEGIN, COMMIT, SELECT). Neither the SQL text nor any argument is
// recorded: arguments hold ciphertexts, user ids and hashed session ids.
// It uses OpenTelemetry's global provider; with none installed (tracing
// off) it makes no span at all.
package pgtrace

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenstore/tokenstore/internal/observability/tracing"
)

const scope = "github.com/tokenstore/tokenstore/internal/observability/tracing/pgtrace"

// Tracer implements pgx.QueryTracer. Its zero value is ready to use.
type Tracer struct{}

var (
	_ pgx.QueryTracer = Tracer{}
	// A pgx tracer that is not also a BatchTracer gets TraceQueryEnd for
	// every result of a batch, with the batch's own context: it would end
	// the caller's span (the HTTP server span) instead of a query's.
	_ pgx.BatchTracer = Tracer{}
)

// TraceQueryStart starts the query's span.
func (Tracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !tracing.Installed() {
		return ctx // no span, nor its name
	}
	return start(ctx, conn, QueryName(data.SQL), nil)
}

// start starts a client span named name, with the attributes every span of
// this package carries and, when it is recorded, those of more.
func start(ctx context.Context, conn *pgx.Conn, name string, more func() []attribute.KeyValue) context.Context {
	ctx, span := otel.Tracer(scope).Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	if !span.IsRecording() {
		return ctx
	}
	attrs := []attribute.KeyValue{
		attribute.String("db.system.name", "postgresql"),
		attribute.String("db.operation.name", name),
	}
	if more != nil {
		attrs = append(attrs, more()...)
	}
	if conn != nil {
		if cfg := conn.Config(); cfg != nil {
			attrs = append(attrs, attribute.String("db.namespace", cfg.Database))
		}
	}
	span.SetAttributes(attrs...)
	return ctx
}

// TraceQueryEnd ends it, with the rows affected and, on failure, the
// SQLSTATE only: PostgreSQL's messages may quote a value.
func (Tracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if !tracing.Installed() {
		return // start made no span: the one in ctx is the caller's
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		span.End()
		return
	}
	if data.Err != nil {
		span.SetStatus(codes.Error, failure(span, data.Err))
	} else {
		span.SetAttributes(attribute.Int64("db.response.returned_rows", data.CommandTag.RowsAffected()))
	}
	span.End()
}

// TraceBatchStart starts one span for a pipelined batch, named BATCH, with
// the names of its queries in order (names only, as for single queries).
func (Tracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if !tracing.Installed() {
		return ctx
	}
	return start(ctx, conn, "BATCH", func() []attribute.KeyValue {
		var names []string
		if data.Batch != nil {
			for _, q := range data.Batch.QueuedQueries {
				names = append(names, QueryName(q.SQL))
			}
		}
		return []attribute.KeyValue{
			attribute.Int("db.operation.batch.size", len(names)),
			attribute.StringSlice("tokenstore.db.queries", names),
		}
	})
}

// TraceBatchQuery marks the batch's span failed with the first failing
// query's SQLSTATE (never its message).
func (Tracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	if data.Err == nil || !tracing.Installed() {
		return
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetStatus(codes.Error, failure(span, data.Err))
}

// TraceBatchEnd ends the batch's span.
func (Tracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	if !tracing.Installed() {
		return
	}
	span := trace.SpanFromContext(ctx)
	if data.Err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, failure(span, data.Err))
	}
	span.End()
}

// failure records err's SQLSTATE on span and returns the span status text.
func failure(span trace.Span, err error) string {
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr):
		span.SetAttributes(attribute.String("db.response.status_code", pgErr.Code))
		return "SQLSTATE " + pgErr.Code
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "query failed"
}

// QueryName is the sqlc name of sql ("-- name: X :kind" → X), else its
// first keyword in upper case, else "query".
func QueryName(sql string) string {
	rest := sql
	for {
		rest = strings.TrimLeft(rest, " \t\r\n")
		if !strings.HasPrefix(rest, "--") {
			break
		}
		line, after, _ := strings.Cut(rest, "\n")
		if n, ok := strings.CutPrefix(strings.TrimSpace(strings.TrimPrefix(line, "--")), "name:"); ok {
			if f := strings.Fields(n); len(f) > 0 && ident(f[0]) {
				return f[0]
			}
		}
		rest = after
	}
	end := 0
	for end < len(rest) && (rest[end] >= 'a' && rest[end] <= 'z' || rest[end] >= 'A' && rest[end] <= 'Z') {
		end++
	}
	if end == 0 {
		return "query"
	}
	return strings.ToUpper(rest[:end])
}

func ident(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return s != ""
}
