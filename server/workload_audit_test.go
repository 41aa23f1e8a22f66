package server

import (
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload/kubeauth"
)

// grantUse is a grant.use event as the audit trail holds it.
type grantUse struct {
	store.AuditEvent
	grantUseDetail
}

type grantUseDetail struct {
	GrantID        int64  `json:"grant_id"`
	ServiceAccount string `json:"service_account"`
	Pod            string `json:"pod"`
	TokenExpiresAt string `json:"token_expires_at"`
	// Repeats is set on summaries only.
	Repeats       *int64 `json:"repeats"`
	FirstRepeatAt string `json:"first_repeat_at"`
	LastRepeatAt  string `json:"last_repeat_at"`
}

// grantUses reads a person's grant.use events, oldest first, split into
// first disclosures and summaries.
func (w *wlEnv) grantUses(user string) (firsts, summaries []grantUse) {
	w.t.Helper()
	evs, err := w.in.store.ListAudit(w.ctx, user, 0, 1000)
	if err != nil {
		w.t.Fatal(err)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		if e.Action != ActionGrantUse {
			continue
		}
		u := grantUse{AuditEvent: e}
		if err := json.Unmarshal(e.Detail, &u.grantUseDetail); err != nil {
			w.t.Fatalf("grant.use detail %s: %v", e.Detail, err)
		}
		if u.Repeats != nil {
			summaries = append(summaries, u)
		} else {
			firsts = append(firsts, u)
		}
	}
	return firsts, summaries
}

// repeats is the sum of the summaries' repeats.
func repeats(sums []grantUse) int64 {
	var n int64
	for _, s := range sums {
		n += *s.Repeats
	}
	return n
}

// person logs a new person in at in through the API-validating transport
// and links their accounts at providers; it returns their browser and user
// id.
func (w *wlEnv) person(in *instance, providers ...string) (*browser, string) {
	w.t.Helper()
	br := w.browser()
	br.client.Transport = w.vt
	br.loginAt(in, "")
	user := br.whoami(in)
	for _, p := range providers {
		br.link(in, p)
	}
	return br, user
}

// grantApp grants the test namespace's "app" ServiceAccount access to the
// browser's account at provider.
func (w *wlEnv) grantApp(br *browser, in *instance, provider string) grantJSON {
	w.t.Helper()
	req, _ := http.NewRequestWithContext(w.ctx, http.MethodPost, in.url+"/api/v1.0/"+provider+"/grants",
		strings.NewReader(`{"service_account":"`+w.kube.ns+`/app"}`))
	req.Header.Set("Origin", w.ext)
	req.Header.Set("Content-Type", "application/json")
	resp, err := br.client.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		w.t.Fatalf("grant: %d", resp.StatusCode)
	}
	var g grantJSON
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		w.t.Fatal(err)
	}
	return g
}

// TestWorkloadAuditGrantUse: concurrent delegated exchanges of one token
// value share one durable grant.use event; when the event of a first
// disclosure cannot be stored no token is handed out, to any of the
// callers sharing it, and the next call tries again.
func TestWorkloadAuditGrantUse(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	in := w.in
	br, user := w.person(in, "alpha")
	w.grantApp(br, in, "alpha")
	app := w.saToken("app", testAudience)

	concurrently := func(n int) []exchangeAnswer {
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
		return got
	}
	const n = 40
	got := concurrently(n)
	for i, a := range got {
		if a.status != http.StatusOK || a.AccessToken == "" || a.AccessToken != got[0].AccessToken {
			t.Fatalf("exchange %d: %d %s (the same token expected)", i, a.status, a.redacted())
		}
	}
	if firsts, sums := w.grantUses(user); len(firsts) != 1 || len(sums) != 0 {
		t.Errorf("%d answers of one token value: %d grant.use events and %d summaries, want 1 and 0", n, len(firsts), len(sums))
	}

	// The database refuses grant.use events.
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
	// A repeat discloses nothing new: it is answered and counted.
	if a := w.exchange(app, "alpha", user); a.status != http.StatusOK || a.AccessToken != got[0].AccessToken {
		t.Fatalf("a repeat while the audit store refuses: %d %s", a.status, a.redacted())
	}
	// A new token value is a first disclosure: no token goes out, to none
	// of the callers sharing the failed write.
	w.expire(user, "alpha")
	for i, a := range concurrently(10) {
		a.want(t, http.StatusInternalServerError, "server_error", "")
		if a.AccessToken != "" {
			t.Errorf("exchange %d: a token was handed out without its audit event", i)
		}
	}
	if !strings.Contains(w.logs.String(), "writing an audit event failed") {
		t.Error("the failed audit write was not logged")
	}
	// Not remembered: the next call tries again, and fails again.
	a := w.exchange(app, "alpha", user)
	a.want(t, http.StatusInternalServerError, "server_error", "")
	if a.AccessToken != "" {
		t.Error("a token was handed out without its audit event on the second try")
	}
	if _, err := conn.Exec(w.ctx, `DROP TRIGGER refuse_grant_use ON audit_events`); err != nil {
		t.Fatal(err)
	}
	a = w.exchange(app, "alpha", user)
	if a.status != http.StatusOK || a.AccessToken == got[0].AccessToken {
		t.Fatalf("exchange once the database takes events again: %d %s (a new token expected)", a.status, a.redacted())
	}
	firsts, _ := w.grantUses(user)
	if len(firsts) != 2 {
		t.Fatalf("%d grant.use events of first disclosures, want 2", len(firsts))
	}
	// Stopping writes the counts: n-1 shared answers plus the repeat.
	in.srv.DrainAudit()
	if _, sums := w.grantUses(user); len(sums) != 1 || repeats(sums) != n {
		t.Errorf("summaries on stop: %d with %d repeats, want 1 with %d", len(sums), repeats(sums), n)
	}
	w.checkLogs()
}

// TestWorkloadGrantUseSummaries: the same person's token exchanged N times
// by one ServiceAccount is one durable grant.use event, stored before the
// first answer, and one summary of N-1 repeats after the summary interval;
// a refreshed token (a new value) is a new durable event; a revoke on the
// replica drops its keys, their counts still written on stop.
func TestWorkloadGrantUseSummaries(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	const interval = 400 * time.Millisecond
	fast := w.serve(nil, Options{Workloads: w.ka, ServiceAccounts: w.ka, GrantUseSummaryInterval: interval}, nil, w.svc)
	slow := w.serve(nil, Options{Workloads: w.ka, ServiceAccounts: w.ka, GrantUseSummaryInterval: time.Hour}, nil, w.svc)
	br := w.browser()
	br.loginAt(w.in, "")
	user := br.whoami(w.in)
	br.link(w.in, "alpha")
	g := w.grantApp(br, w.in, "alpha")
	app := w.saToken("app", testAudience)
	sa := w.kube.ns + "/app"

	// On the replica that summarises every interval.
	const n = 12
	var first exchangeAnswer
	for i := range n {
		a := w.exchangeAt(fast, app, "alpha", user)
		if a.status != http.StatusOK || (i > 0 && a.AccessToken != first.AccessToken) {
			t.Fatalf("exchange %d: %d %s (the same token expected)", i, a.status, a.redacted())
		}
		if i == 0 {
			first = a
			// On record before the answer.
			if firsts, _ := w.grantUses(user); len(firsts) != 1 {
				t.Fatalf("after the first answer: %d grant.use events, want 1", len(firsts))
			}
		}
	}
	firsts, sums := w.grantUses(user)
	if len(firsts) != 1 {
		t.Fatalf("%d answers of one token value: %d durable grant.use events, want 1", n, len(firsts))
	}
	f := firsts[0]
	if f.GrantID != g.ID || f.ServiceAccount != sa || f.Pod != "" || f.Actor != "serviceaccount:"+sa || f.Provider != "alpha" {
		t.Errorf("grant.use event by %s at %s: %s", f.Actor, f.Provider, f.Detail)
	}
	if first.ExpiresIn == nil {
		t.Fatal("the test token has no expires_in")
	}
	if exp, err := time.Parse(time.RFC3339, f.TokenExpiresAt); err != nil ||
		exp.Sub(time.Now().Add(time.Duration(*first.ExpiresIn)*time.Second)).Abs() > time.Minute {
		t.Errorf("token_expires_at %q for a token expiring in %d s", f.TokenExpiresAt, *first.ExpiresIn)
	}
	deadline := time.Now().Add(15 * time.Second)
	for repeats(sums) < n-1 && time.Now().Before(deadline) {
		time.Sleep(interval / 4)
		_, sums = w.grantUses(user)
	}
	if len(sums) != 1 || repeats(sums) != n-1 {
		// Exchanges spread over more than one interval make more than one
		// summary; the count must still be exact.
		t.Errorf("summaries: %d with %d repeats in all, want 1 with %d", len(sums), repeats(sums), n-1)
	}
	for _, s := range sums {
		fr, err1 := time.Parse(time.RFC3339, s.FirstRepeatAt)
		lr, err2 := time.Parse(time.RFC3339, s.LastRepeatAt)
		if err1 != nil || err2 != nil || lr.Before(fr) || s.GrantID != g.ID || s.ServiceAccount != sa || s.Actor != "serviceaccount:"+sa ||
			s.Provider != "alpha" || s.TokenExpiresAt != "" {
			t.Errorf("summary: %s", s.Detail)
		}
	}
	// Nothing repeated since: no empty summaries.
	time.Sleep(3 * interval)
	if f2, s2 := w.grantUses(user); len(f2) != 1 || len(s2) != len(sums) {
		t.Errorf("idle intervals wrote %d events", len(f2)+len(s2)-1-len(sums))
	}

	// A refreshed token is a new value: a new durable event, its repeats
	// counted apart.
	w.expire(user, "alpha")
	second := w.exchangeAt(fast, app, "alpha", user)
	if second.status != http.StatusOK || second.AccessToken == first.AccessToken {
		t.Fatalf("after the refresh: %d %s (a new token expected)", second.status, second.redacted())
	}
	if firsts, _ := w.grantUses(user); len(firsts) != 2 {
		t.Fatalf("after the refresh: %d durable grant.use events, want 2", len(firsts))
	} else if firsts[1].TokenExpiresAt == firsts[0].TokenExpiresAt {
		t.Errorf("the refreshed token's event has token_expires_at %q, as the first token's", firsts[1].TokenExpiresAt)
	}

	// Another replica has its own ledger: its first answer is on record too.
	before := len(sums)
	for range 3 {
		if a := w.exchangeAt(slow, app, "alpha", user); a.status != http.StatusOK || a.AccessToken != second.AccessToken {
			t.Fatalf("at the other replica: %d %s", a.status, a.redacted())
		}
	}
	firsts, sums = w.grantUses(user)
	if len(firsts) != 3 || len(sums) != before {
		t.Fatalf("after 3 answers at the other replica: %d durable events (want 3), %d summaries (want %d)", len(firsts), len(sums), before)
	}
	if slow.srv.grantUse.Keys() != 1 {
		t.Fatalf("the other replica holds %d keys, want 1", slow.srv.grantUse.Keys())
	}
	m := scrape(t, slow)
	wantSeries(t, m, "tokenstore_grant_use_ledger_keys", "1")
	wantSeries(t, m, `tokenstore_grant_use_ledger_fallbacks_total{reason="full"}`, "0")
	// Revoked through that replica: its keys go at once; the pending
	// counts are written when it stops.
	if r := br.do(http.MethodDelete, slow.url+"/api/v1.0/grants/"+jsonNumber(g.ID), map[string]string{"Origin": w.ext}); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if k := slow.srv.grantUse.Keys(); k != 0 {
		t.Errorf("the replica that revoked the grant still holds %d of its keys", k)
	}
	wantSeries(t, scrape(t, slow), "tokenstore_grant_use_ledger_keys", "0")
	slow.srv.DrainAudit()
	_, sums = w.grantUses(user)
	if len(sums) != before+1 || *sums[len(sums)-1].Repeats != 2 {
		t.Errorf("on stop: %d summaries (want %d), the last of %d repeats (want 2)", len(sums), before+1, *sums[len(sums)-1].Repeats)
	}
	w.checkLogs()
}

// ledgerLoops counts the disclosure ledgers' flush loops running in the
// process.
func ledgerLoops() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "delegation.(*Ledger[...]).loop(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestWorkloadEnvStopsLedger: the test env stops every server's disclosure
// ledger when its test ends, as serve does on stop, so a flush loop (a
// minute's interval, running while a key is held) does not outlive it.
func TestWorkloadEnvStopsLedger(t *testing.T) {
	before := ledgerLoops()
	t.Run("exchange", func(t *testing.T) {
		w := newWorkloadEnv(t, kubeauth.Options{})
		br, user := w.person(w.in, "alpha")
		w.grantApp(br, w.in, "alpha")
		if a := w.exchange(w.saToken("app", testAudience), "alpha", user); a.status != http.StatusOK {
			t.Fatalf("exchange: %d %s", a.status, a.redacted())
		}
		if n := ledgerLoops(); n != before+1 {
			t.Fatalf("%d ledger flush loops after a first disclosure, want %d", n, before+1)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for ledgerLoops() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ledgerLoops(); n != before {
		t.Errorf("%d ledger flush loops outlived their test", n-before)
	}
}
