package postgres_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/postgres"
	"github.com/tokenstore/tokenstore/internal/store/storetest"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

// migratedSchema returns the URL of a new, migrated schema in the database
// at dbURL: a clean slate per subtest at the cost of a few DDL statements.
func migratedSchema(tb testing.TB, dbURL string) string {
	tb.Helper()
	url := pgtest.NewSchema(tb, dbURL)
	m, err := storeopen.NewMigrator(url)
	if err != nil {
		tb.Fatalf("NewMigrator: %v", err)
	}
	defer m.Close()
	if _, err := m.Up(context.Background()); err != nil {
		tb.Fatalf("migrate up: %v", err)
	}
	return url
}

func open(tb testing.TB, url string) *postgres.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), url)
	if err != nil {
		tb.Fatalf("postgres.Open: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, migratedSchema(t, dbURL))
	})
}

// TestConformanceReplicas runs the cross-store checks with two pools on one
// database, as two replicas of the server would.
func TestConformanceReplicas(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	storetest.RunReplicas(t, func(t *testing.T) (store.Store, store.Store) {
		url := migratedSchema(t, dbURL)
		return open(t, url), open(t, url)
	})
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens, the connection is refused at once.
	_, err := postgres.Open(ctx, "postgres://postgres:hunter2@127.0.0.1:1/tokenstore?sslmode=disable")
	if err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "cannot reach PostgreSQL at 127.0.0.1:1") {
		t.Errorf("error does not say where it tried: %v", err)
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error quotes the password: %v", err)
	}
}

func TestOpenMissingDatabase(t *testing.T) {
	_, err := postgres.Open(t.Context(), "postgres://postgres@127.0.0.1:5432/tokenstore_does_not_exist?sslmode=disable")
	if err == nil || !strings.Contains(err.Error(), "tokenstore_does_not_exist") {
		t.Fatalf("Open of a missing database: %v, want an error naming it", err)
	}
}

func BenchmarkGetCredential(b *testing.B) {
	s := open(b, migratedSchema(b, pgtest.NewDatabase(b)))
	storetest.BenchmarkGetCredential(b, s)
}

func BenchmarkUpdateCredential(b *testing.B) {
	s := open(b, migratedSchema(b, pgtest.NewDatabase(b)))
	storetest.BenchmarkUpdateCredential(b, s)
}

// refuseAudit makes the database refuse audit events whose action is
// "refuse" (every event when all).
func refuseAudit(t *testing.T, s *postgres.Store, all bool) {
	t.Helper()
	cond := "NEW.action = 'refuse'"
	if all {
		cond = "true"
	}
	if _, err := s.Pool().Exec(t.Context(), `
CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF `+cond+` THEN RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$;
CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_audit();`); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateCredentialAuditFails: see storetest.AuditRefusedKeepsUpdate;
// then the row is not left locked, and the connections' prepared
// statements survive the failed pipelined batch.
func TestUpdateCredentialAuditFails(t *testing.T) {
	s := open(t, migratedSchema(t, pgtest.NewDatabase(t)))
	ctx := t.Context()
	storetest.AuditRefusedKeepsUpdate(t, s, func(all bool) { refuseAudit(t, s, all) })
	// Nothing left locked or half done.
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.UpdateCredential(lctx, "alice", "github", func(*store.Credential) (store.Outcome, error) { return store.Write(), nil }); err != nil {
		t.Fatalf("UpdateCredential afterwards: %v", err)
	}
	// And audited updates work again once events can be written (the
	// connection's prepared statements survived the failure).
	if _, err := s.Pool().Exec(ctx, `DROP TRIGGER refuse_audit ON audit_events`); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if res, err := s.UpdateCredential(lctx, "alice", "github", func(*store.Credential) (store.Outcome, error) {
			return store.WriteAudited(store.AuditEvent{UserID: "alice", Actor: "user:alice", Action: "credential.refresh"}), nil
		}); err != nil || res.AuditErr != nil || res.Audit != store.AuditWritten {
			t.Fatalf("UpdateCredential (audited) afterwards: %v, audit: %v (%v)", err, res.Audit, res.AuditErr)
		}
	}
	if ev, err := s.ListAudit(ctx, "alice", 0, 10); err != nil || len(ev) != 3 {
		t.Errorf("ListAudit = %d events, %v; want 3", len(ev), err)
	}
}

// TestUpdateCredentialLeavesConnections: rows locked by slow updaters (a
// provider that does not answer) never take the connections the other
// queries need.
func TestUpdateCredentialLeavesConnections(t *testing.T) {
	s := open(t, migratedSchema(t, pgtest.NewDatabase(t))+"&pool_max_conns=4")
	ctx := t.Context()
	for _, u := range []string{"u0", "u1", "u2", "u3", "u4"} {
		if _, err := s.UpsertCredential(ctx, store.Credential{UserID: u, Provider: "github", KeyID: "k1", State: store.StateActive}); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	held := make(chan struct{}, 5)
	done := make(chan error, 5)
	for _, u := range []string{"u0", "u1", "u2", "u3", "u4"} {
		go func() {
			_, err := s.UpdateCredential(ctx, u, "github", func(*store.Credential) (store.Outcome, error) {
				held <- struct{}{}
				<-release
				return store.Write(), nil
			})
			done <- err
		}()
	}
	// Three of the four connections may hold a lock; the others wait.
	for range 3 {
		select {
		case <-held:
		case <-time.After(10 * time.Second):
			t.Fatal("three updaters did not get their rows")
		}
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.GetCredential(qctx, "u0", "github"); err != nil {
		t.Errorf("GetCredential while updaters hold the rows: %v", err)
	}
	select {
	case <-held:
		t.Error("a fourth updater holds a connection: none is left for the rest")
	default:
	}
	close(release)
	for range 5 {
		if err := <-done; err != nil {
			t.Errorf("UpdateCredential: %v", err)
		}
	}
}

// TestAppendAuditBatchAllOrNone: see storetest.AuditBatchAllOrNone.
func TestAppendAuditBatchAllOrNone(t *testing.T) {
	s := open(t, migratedSchema(t, pgtest.NewDatabase(t)))
	storetest.AuditBatchAllOrNone(t, s, func(all bool) { refuseAudit(t, s, all) })
}
