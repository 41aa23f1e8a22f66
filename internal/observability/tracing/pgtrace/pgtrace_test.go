package pgtrace

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestQueryName(t *testing.T) {
	for sql, want := range map[string]string{
		"-- name: CredentialGet :one\nSELECT * FROM credentials WHERE user_id = $1": "CredentialGet",
		"\n  -- name: AuditEventInsert :one\nINSERT INTO audit_events ...":          "AuditEventInsert",
		"begin":                            "BEGIN",
		"-- ping":                          "query",
		"-- a comment\nselect 1":           "SELECT",
		"-- name: bad'name :one\nselect 1": "SELECT",
		"":                                 "query",
	} {
		if got := QueryName(sql); got != want {
			t.Errorf("QueryName(%q) = %q, want %q", sql, got, want)
		}
	}
}

// With no TracerProvider installed (TRACING_ENDPOINT unset, the usual
// case), a query costs the tracer nothing: no span in the context, no
// allocation. (server/tracing_test.go checks the spans when one is.)
func TestUntracedQueriesMakeNoSpan(t *testing.T) {
	ctx := context.Background()
	var tr Tracer
	data := pgx.TraceQueryStartData{SQL: "-- name: CredentialGet :one\nSELECT 1"}
	if got := tr.TraceQueryStart(ctx, nil, data); got != ctx {
		t.Fatal("TraceQueryStart made a span with no TracerProvider installed")
	}
	batch := pgx.TraceBatchStartData{Batch: &pgx.Batch{}}
	if got := tr.TraceBatchStart(ctx, nil, batch); got != ctx {
		t.Fatal("TraceBatchStart made a span with no TracerProvider installed")
	}
	allocs := testing.AllocsPerRun(100, func() {
		c := tr.TraceQueryStart(ctx, nil, data)
		tr.TraceQueryEnd(c, nil, pgx.TraceQueryEndData{})
		c = tr.TraceBatchStart(ctx, nil, batch)
		tr.TraceBatchQuery(c, nil, pgx.TraceBatchQueryData{})
		tr.TraceBatchEnd(c, nil, pgx.TraceBatchEndData{})
	})
	if allocs != 0 {
		t.Fatalf("an untraced query allocates %v times in the tracer, want 0", allocs)
	}
}
