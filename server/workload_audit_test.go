package server

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tokenstore/tokenstore/server/workload/kubeauth"
)

// TestWorkloadAuditGrantUse: concurrent delegated exchanges each leave
// exactly one grant.use event (their writes grouped by the audit writer),
// and when the event cannot be stored no token is handed out.
func TestWorkloadAuditGrantUse(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	in := w.in
	br := w.browser()
	br.client.Transport = w.vt
	br.loginAt(in, "")
	user := br.whoami(in)
	br.link(in, "alpha")
	ns := w.kube.ns
	req, _ := http.NewRequestWithContext(w.ctx, http.MethodPost, in.url+"/api/v1.0/alpha/grants",
		strings.NewReader(`{"service_account":"`+ns+`/app"}`))
	req.Header.Set("Origin", w.ext)
	req.Header.Set("Content-Type", "application/json")
	resp, err := br.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("grant: %d", resp.StatusCode)
	}
	app := w.saToken("app", testAudience)

	const n = 40
	got := make([]exchangeAnswer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			got[i] = w.exchange(app, "alpha", user)
		})
	}
	close(start)
	wg.Wait()
	for i, a := range got {
		if a.status != http.StatusOK || a.AccessToken == "" {
			t.Fatalf("exchange %d: %d %s", i, a.status, a.redacted())
		}
	}
	countUses := func() int {
		t.Helper()
		evs, err := in.store.ListAudit(w.ctx, user, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		uses := 0
		for _, e := range evs {
			if e.Action == ActionGrantUse {
				uses++
			}
		}
		return uses
	}
	if uses := countUses(); uses != n {
		t.Errorf("%d grant.use events for %d answers", uses, n)
	}

	// The database refuses the event: no token goes out.
	conn, err := pgx.Connect(w.ctx, w.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(w.ctx)
	if _, err := conn.Exec(w.ctx, `
CREATE FUNCTION refuse_grant_use() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.action = 'grant.use' THEN RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$;
CREATE TRIGGER refuse_grant_use BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION refuse_grant_use();`); err != nil {
		t.Fatal(err)
	}
	a := w.exchange(app, "alpha", user)
	a.want(t, http.StatusInternalServerError, "server_error", "")
	if a.AccessToken != "" {
		t.Error("a token was handed out without its audit event")
	}
	if !strings.Contains(w.logs.String(), "writing an audit event failed") {
		t.Error("the failed audit write was not logged")
	}
	if _, err := conn.Exec(w.ctx, `DROP TRIGGER refuse_grant_use ON audit_events`); err != nil {
		t.Fatal(err)
	}
	if a := w.exchange(app, "alpha", user); a.status != http.StatusOK {
		t.Errorf("exchange once the database takes events again: %d %s", a.status, a.redacted())
	}
	if uses := countUses(); uses != n+1 {
		t.Errorf("%d grant.use events, want %d", uses, n+1)
	}
}
