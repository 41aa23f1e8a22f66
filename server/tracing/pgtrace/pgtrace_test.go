package pgtrace

import "testing"

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
