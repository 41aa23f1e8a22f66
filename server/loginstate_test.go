package server

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"
)

// Starting a login writes nothing: the pending login travels sealed in the
// login cookie (issue 23), so anonymous GET /api/oidc/login in a loop
// costs the database nothing. The cookie is bound to the login path, Lax
// and HttpOnly; a tampered one is refused as an unknown state.
func TestLoginStartsWithoutRows(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	db, err := pgx.Connect(e.ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(e.ctx) })
	count := func() (n int) {
		t.Helper()
		if err := db.QueryRow(e.ctx, "SELECT (SELECT count(*) FROM link_states) + (SELECT count(*) FROM sessions)").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := count()
	for range 50 {
		r := e.browser().get(in.url + "/api/oidc/login?return_url=" + url.QueryEscape("https://app.example/"))
		if r.status != http.StatusFound {
			t.Fatalf("login: %d %s", r.status, r.body)
		}
	}
	if after := count(); after != before {
		t.Fatalf("50 anonymous logins added %d rows", after-before)
	}

	c := e.browser()
	r := c.get(in.url + "/api/oidc/login?return_url=/x")
	authURL := r.location(t)
	var sealed *http.Cookie
	for _, ck := range (&http.Response{Header: r.header}).Cookies() {
		if ck.Name == loginCookie {
			sealed = ck
		}
	}
	if sealed == nil || sealed.Path != "/api/oidc" || !sealed.HttpOnly || sealed.SameSite != http.SameSiteLaxMode || sealed.MaxAge != 600 {
		t.Fatalf("login cookie: %+v", sealed)
	}
	q, err := e.login.Login(e.ctx, authURL)
	if err != nil {
		t.Fatal(err)
	}
	e.seeQuery(q)
	e.see("login_cookie", sealed.Value)
	// Flip one character of the sealed value: refused, and the real
	// cookie is then gone (cleared by the callback), so the code cannot
	// be used by this browser either.
	b := []byte(sealed.Value)
	if b[10] == 'A' {
		b[10] = 'B'
	} else {
		b[10] = 'A'
	}
	tampered := e.browser()
	if r := tampered.do(http.MethodGet, in.url+"/api/oidc/callback?"+q.Encode(), map[string]string{"Cookie": loginCookie + "=" + string(b)}); r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_state" {
		t.Fatalf("tampered login cookie: %d %s", r.status, r.body)
	}
	// The untampered cookie with another state: refused.
	other := url.Values{"code": {q.Get("code")}, "state": {"not-the-state"}}
	if r := tampered.do(http.MethodGet, in.url+"/api/oidc/callback?"+other.Encode(), map[string]string{"Cookie": loginCookie + "=" + sealed.Value}); r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_state" {
		t.Fatalf("login cookie with another state: %d %s", r.status, r.body)
	}
	if got := c.get(in.url + "/api/oidc/callback?" + q.Encode()).location(t); got != e.ext+"/x" {
		t.Fatalf("login returned to %q", got)
	}
	c.whoami(in)
	if after := count(); after != before+1 {
		t.Fatalf("a completed login added %d rows, want the session's 1", after-before)
	}
	e.checkLogs()
}
