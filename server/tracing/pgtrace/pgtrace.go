// Package pgtrace is a pgx QueryTracer that makes one client span per query,
// named by the sqlc query name (the "-- name: CredentialGet :one" line sqlc
// puts in each query) or, for other statements, by their first keyword
// (BEGIN, COMMIT, SELECT). Neither the SQL text nor any argument is
// recorded: arguments hold ciphertexts, user ids and hashed session ids.
// It uses OpenTelemetry's global provider: with tracing off it costs a
// no-op span per query.
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
)

const scope = "github.com/tokenstore/tokenstore/server/tracing/pgtrace"

// Tracer implements pgx.QueryTracer. Its zero value is ready to use.
type Tracer struct{}

var _ pgx.QueryTracer = Tracer{}

// TraceQueryStart starts the query's span.
func (Tracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	name := QueryName(data.SQL)
	ctx, span := otel.Tracer(scope).Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		attrs := []attribute.KeyValue{
			attribute.String("db.system.name", "postgresql"),
			attribute.String("db.operation.name", name),
		}
		if conn != nil {
			if cfg := conn.Config(); cfg != nil {
				attrs = append(attrs, attribute.String("db.namespace", cfg.Database))
			}
		}
		span.SetAttributes(attrs...)
	}
	return ctx
}

// TraceQueryEnd ends it, with the rows affected and, on failure, the
// SQLSTATE only: PostgreSQL's messages may quote a value.
func (Tracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		span.End()
		return
	}
	if data.Err != nil {
		var pgErr *pgconn.PgError
		desc := "query failed"
		switch {
		case errors.As(data.Err, &pgErr):
			span.SetAttributes(attribute.String("db.response.status_code", pgErr.Code))
			desc = "SQLSTATE " + pgErr.Code
		case errors.Is(data.Err, context.Canceled), errors.Is(data.Err, context.DeadlineExceeded):
			desc = "canceled"
		}
		span.SetStatus(codes.Error, desc)
	} else {
		span.SetAttributes(attribute.Int64("db.response.returned_rows", data.CommandTag.RowsAffected()))
	}
	span.End()
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
