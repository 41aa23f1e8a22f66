package storetest

import (
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/internal/store"
)

// The audit-refusal checks need the database itself to refuse an insert
// (a trigger), which each backend installs in its own dialect: refuse makes
// the database refuse audit events whose action is "refuse", or every
// event when all.

// AuditRefusedKeepsUpdate: an audit event that cannot be written does not
// take the update (here, a rotated refresh token) down with it, and is not
// stored. It leaves alice's github credential at version 2 with every
// event refused.
func AuditRefusedKeepsUpdate(t *testing.T, s store.Store, refuse func(all bool)) {
	t.Helper()
	ctx := t.Context()
	orig, err := s.UpsertCredential(ctx, store.Credential{UserID: "alice", Provider: "github", KeyID: "k1",
		RefreshToken: []byte("rt-1"), State: store.StateActive})
	if err != nil {
		t.Fatal(err)
	}
	refuse(true)
	res, err := s.UpdateCredential(ctx, "alice", "github", func(c *store.Credential) (store.Outcome, error) {
		c.RefreshToken = []byte("rt-2")
		return store.WriteAudited(store.AuditEvent{UserID: "alice", Actor: "user:alice", Action: "credential.refresh", Provider: "github"}), nil
	})
	if err != nil {
		t.Fatalf("UpdateCredential (audited): %v", err)
	}
	got, auditErr := res.Credential, res.AuditErr
	if !res.Written || res.Audit != store.AuditFailed {
		t.Errorf("refused event: Written %v, Audit %v; want true, failed", res.Written, res.Audit)
	}
	if auditErr == nil || !strings.Contains(auditErr.Error(), "audit refused") {
		t.Errorf("auditErr = %v, want the trigger's refusal", auditErr)
	}
	read, err := s.GetCredential(ctx, "alice", "github")
	if err != nil {
		t.Fatal(err)
	}
	if string(read.RefreshToken) != "rt-2" || read.Version != orig.Version+1 || got.Version != read.Version {
		t.Errorf("stored refresh token %q version %d (returned %d); want %q version %d",
			read.RefreshToken, read.Version, got.Version, "rt-2", orig.Version+1)
	}
	if ev, err := s.ListAudit(ctx, "alice", 0, 10); err != nil || len(ev) != 0 {
		t.Errorf("ListAudit = %v, %v; want no events", ev, err)
	}
}

// AuditBatchAllOrNone: one event the database refuses fails the whole
// batch, and none of the others is stored. (AuditBatchCanceled of Run
// fails before the first insert, so it cannot tell.)
func AuditBatchAllOrNone(t *testing.T, s store.Store, refuse func(all bool)) {
	t.Helper()
	ctx := t.Context()
	refuse(false)
	_, err := s.AppendAuditBatch(ctx, []store.AuditEvent{
		{UserID: "alice", Actor: "user:alice", Action: "a"},
		{UserID: "alice", Actor: "user:alice", Action: "refuse"},
		{UserID: "alice", Actor: "user:alice", Action: "b"},
	})
	if err == nil || !strings.Contains(err.Error(), "audit refused") {
		t.Fatalf("AppendAuditBatch = %v, want the trigger's refusal", err)
	}
	if evs, err := s.ListAudit(ctx, "alice", 0, 10); err != nil || len(evs) != 0 {
		t.Errorf("ListAudit after the failed batch = %+v, %v; want none", evs, err)
	}
}
