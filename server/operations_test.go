package server

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/refresher"
	"github.com/tokenstore/tokenstore/internal/store"
)

// scrape returns an instance's /metrics text.
func scrape(t *testing.T, in *instance) string {
	t.Helper()
	resp, err := http.Get(in.metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// wantSeries fails unless the exposition has the series with the value.
func wantSeries(t *testing.T, text, series, value string) {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if name, v, ok := strings.Cut(line, " "); ok && name == series {
			if v != value {
				t.Errorf("%s = %s, want %s", series, v, value)
			}
			return
		}
	}
	t.Errorf("series %s missing from /metrics", series)
}

// TestMetricsAfterFlow: a full flow (login, link, cached token, refresh,
// refused refresh) shows in /metrics, and no user id or token in any label.
func TestMetricsAfterFlow(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	b := e.browser()
	b.loginAt(in, "")
	user := b.whoami(in)
	b.link(in, "alpha")
	if _, r := b.token(in, "alpha", ""); r.status != http.StatusOK { // cached: no refresh
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	e.expire(user, "alpha")
	if _, r := b.token(in, "alpha", ""); r.status != http.StatusOK { // refreshed
		t.Fatalf("token after expiry: %d %s", r.status, r.body)
	}
	e.credential(user, "alpha")
	// A second person whose refresh token is refused: needs_reauth.
	b2 := e.browser()
	b2.sessionFor(in, "person-two@example.test")
	b2.link(in, "beta")
	c := e.credential("person-two@example.test", "beta")
	if _, err := in.store.UpdateCredential(e.ctx, c.UserID, "beta", func(c *store.Credential) (store.Outcome, error) {
		sealed, err := e.keys.Seal([]byte("not-a-refresh-token"), refreshBinding(c))
		c.RefreshToken = sealed
		return store.Write(), err
	}); err != nil {
		t.Fatal(err)
	}
	e.expire(c.UserID, "beta")
	if _, r := b2.token(in, "beta", ""); r.status != http.StatusConflict {
		t.Fatalf("refused refresh: %d %s", r.status, r.body)
	}

	text := scrape(t, in)
	wantSeries(t, text, `tokenstore_refreshes_total{outcome="ok",provider="alpha"}`, "1")
	wantSeries(t, text, `tokenstore_refreshes_total{outcome="invalid_grant",provider="beta"}`, "1")
	wantSeries(t, text, `tokenstore_tokens_served_total{provider="alpha",source="cache"}`, "1")
	wantSeries(t, text, `tokenstore_tokens_served_total{provider="alpha",source="refresh"}`, "1")
	wantSeries(t, text, `tokenstore_http_requests_total{method="GET",route="/api/v1.0/:provider/token",status="200"}`, "2")
	wantSeries(t, text, `tokenstore_http_requests_total{method="GET",route="/api/v1.0/:provider/token",status="409"}`, "1")
	wantSeries(t, text, `tokenstore_http_request_duration_seconds_count{method="GET",route="/api/v1.0/:provider/token"}`, "3")
	wantSeries(t, text, `tokenstore_credentials{provider="alpha",state="active"}`, "1")
	wantSeries(t, text, `tokenstore_credentials{provider="beta",state="needs_reauth"}`, "1")
	wantSeries(t, text, `tokenstore_provider_ready{provider="alpha"}`, "1")
	wantSeries(t, text, `tokenstore_providers{ready="true"}`, "2")
	wantSeries(t, text, `tokenstore_database_up`, "1")
	if !strings.Contains(text, "tokenstore_refresh_duration_seconds_bucket{") {
		t.Error("no refresh latency histogram")
	}
	for _, secret := range []string{user, "person-two@example.test", "not-a-refresh-token"} {
		if strings.Contains(text, secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}
	e.seenMu.Lock()
	for v, kind := range e.seen {
		if len(v) >= 8 && strings.Contains(text, v) {
			t.Errorf("/metrics contains a %s", kind)
		}
	}
	e.seenMu.Unlock()
	e.checkLogs()
}

// TestRequestID: a sane X-Request-Id is kept, echoed and on every log line
// of the request, including the broker's; an insane one is replaced.
func TestRequestID(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	b := e.browser()
	b.loginAt(in, "")
	user := b.whoami(in)
	b.link(in, "alpha")
	e.expire(user, "alpha")
	r := b.do(http.MethodGet, in.url+"/api/v1.0/alpha/token", map[string]string{"X-Request-Id": "req-4711.abc"})
	if r.status != http.StatusOK {
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	if got := r.header.Get("X-Request-Id"); got != "req-4711.abc" {
		t.Errorf("echoed request id %q", got)
	}
	var lines []string
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, "request_id=req-4711.abc") {
			lines = append(lines, l)
		}
	}
	var refreshed, request bool
	for _, l := range lines {
		refreshed = refreshed || strings.Contains(l, `msg="credential refreshed"`)
		request = request || strings.Contains(l, "msg=request ")
		// The request line adds the id itself (logRequests); once, last.
		if n := strings.Count(l, "request_id="); n != 1 || !strings.HasSuffix(l, "request_id=req-4711.abc") {
			t.Errorf("request id %d times, or not last: %q", n, l)
		}
	}
	if !refreshed || !request {
		t.Errorf("request id missing from the refresh or request line: %q", lines)
	}
	// Handlers' own lines carry the id of the request they belong to too.
	linked := false
	for _, l := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(l, `msg="account linked"`) {
			linked = true
			if !regexp.MustCompile(`request_id=[0-9a-f]{32}`).MatchString(l) {
				t.Errorf("handler line without its request id: %q", l)
			}
		}
	}
	if !linked {
		t.Error(`no "account linked" line`)
	}

	r = b.do(http.MethodGet, in.url+"/healthz", map[string]string{"X-Request-Id": "bad id\"; injected=1"})
	if got := r.header.Get("X-Request-Id"); !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got) {
		t.Errorf("generated request id %q", got)
	}
	if strings.Contains(e.logs.String(), "injected") {
		t.Error("a foreign request id reached the log")
	}
	e.checkLogs()
}

// nearExpiry makes the credential's access token lapse in d.
func (e *env) nearExpiry(user, provider string, d time.Duration) {
	e.t.Helper()
	at := time.Now().Add(d)
	if _, err := e.instances[0].store.UpdateCredential(e.ctx, user, provider, func(c *store.Credential) (store.Outcome, error) {
		c.AccessExpiresAt = &at
		return store.Write(), nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

func newRefresher(t *testing.T, in *instance, window time.Duration) *refresher.Refresher {
	t.Helper()
	r, err := refresher.New(refresher.Options{Store: in.store, Broker: in.srv.Broker(), Providers: in.reg,
		Metrics: in.srv.opt.Metrics, Window: window, Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRefresherTwoInstances: two refreshers on one database, run at once,
// refresh each due credential exactly once; fresh ones are left alone.
func TestRefresherTwoInstances(t *testing.T) {
	e := newEnv(t)
	a := e.instances[0]
	bi := e.startInstance(nil)
	users := []string{"r1@example.test", "r2@example.test", "r3@example.test", "r4@example.test", "r5@example.test"}
	for _, u := range users {
		br := e.browser()
		br.sessionFor(a, u)
		br.link(a, "alpha")
		e.nearExpiry(u, "alpha", time.Minute) // due: within the 2-minute window (the OP issues 5-minute tokens)
	}
	fresh := e.browser()
	fresh.sessionFor(a, "fresh@example.test")
	fresh.link(a, "beta")
	e.nearExpiry("fresh@example.test", "beta", time.Hour) // not due

	before := map[string]store.Credential{}
	for _, u := range users {
		before[u] = e.credential(u, "alpha")
	}
	ra, rb := newRefresher(t, a, 2*time.Minute), newRefresher(t, bi, 2*time.Minute)
	var wg sync.WaitGroup
	stats := make([]refresher.Stats, 2)
	for i, r := range []*refresher.Refresher{ra, rb} {
		wg.Go(func() {
			st, err := r.RunOnce(e.ctx)
			if err != nil {
				t.Error(err)
			}
			stats[i] = st
		})
	}
	wg.Wait()
	if n := e.providers["alpha"].refresh.Load(); n != int64(len(users)) {
		t.Errorf("%d refreshes at alpha for %d due credentials, want one each", n, len(users))
	}
	if n := e.providers["beta"].refresh.Load(); n != 0 {
		t.Errorf("%d refreshes of a fresh credential", n)
	}
	if got := stats[0].Refreshed + stats[1].Refreshed; got != len(users) {
		t.Errorf("refreshed %d (%+v, %+v), want %d", got, stats[0], stats[1], len(users))
	}
	for _, u := range users {
		c := e.credential(u, "alpha")
		if e.refreshToken(c) == e.refreshToken(before[u]) || !c.AccessExpiresAt.After(time.Now().Add(2*time.Minute)) {
			t.Errorf("%s: not refreshed ahead", u)
		}
	}
	// A second pass finds nothing due.
	if st, err := ra.RunOnce(e.ctx); err != nil || st.Claimed != 0 {
		t.Errorf("second pass: %+v, %v", st, err)
	}
	// The refresh is audited as the refresher's.
	events, err := a.store.ListAudit(e.ctx, users[0], 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if events[0].Action != "credential.refresh" || events[0].Actor != "system:refresher" {
		t.Errorf("latest audit event: %+v", events[0])
	}
	text := scrape(t, a) + scrape(t, bi)
	if !strings.Contains(text, `tokenstore_refresher_refreshes_total{provider="alpha",result="refreshed"}`) {
		t.Error("refresher progress missing from /metrics")
	}
	e.checkLogs()
}

// TestRefresherIdleKeepAlive: at a provider whose refresh tokens die after
// an idle time, a credential unrefreshed for more than half of it is
// refreshed although its access token is fresh.
func TestRefresherIdleKeepAlive(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	idle := *e.providers["alpha"].provider
	idle.RefreshIdleTimeout = 48 * time.Hour
	idle.Version = "idle"
	in.reg.Set(&idle)
	br := e.browser()
	br.sessionFor(in, "idle@example.test")
	br.link(in, "alpha")
	br2 := e.browser()
	br2.sessionFor(in, "busy@example.test")
	br2.link(in, "alpha")
	for u, last := range map[string]time.Duration{"idle@example.test": -30 * time.Hour, "busy@example.test": -time.Hour} {
		at := time.Now().Add(last)
		exp := time.Now().Add(time.Hour)
		if _, err := in.store.UpdateCredential(e.ctx, u, "alpha", func(c *store.Credential) (store.Outcome, error) {
			c.LastRefreshedAt, c.AccessExpiresAt = &at, &exp
			return store.Write(), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	r := newRefresher(t, in, 0) // no expiry window: idle keep-alive alone
	st, err := r.RunOnce(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Refreshed != 1 || e.providers["alpha"].refresh.Load() != 1 {
		t.Fatalf("idle keep-alive: %+v, %d refreshes", st, e.providers["alpha"].refresh.Load())
	}
	if c := e.credential("idle@example.test", "alpha"); time.Since(*c.LastRefreshedAt) > time.Minute {
		t.Error("the idle credential was not refreshed")
	}
	e.checkLogs()
}

var _ providers.Reader = (*providers.Registry)(nil)

func refreshBinding(c *store.Credential) crypto.Binding {
	return crypto.Binding{Owner: c.UserID, Provider: c.Provider, Purpose: crypto.PurposeRefreshToken}
}
