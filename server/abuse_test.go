package server

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store"
)

func TestStateAbuse(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	a := e.browser()
	a.loginAt(in, "")
	userA := a.whoami(in)

	// Forged state.
	r := a.get(in.url + "/api/v1.0/alpha/redirect_uri?state=forged&code=whatever")
	if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_state" {
		t.Fatalf("forged state: %d %s", r.status, r.body)
	}

	// Another session's state and code: refused, and spent.
	q := a.authorizeQuery(in, "alpha", "")
	b := e.browser()
	b.sessionFor(in, "user-b")
	r = b.get(in.url + "/api/v1.0/alpha/redirect_uri?" + q.Encode())
	if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_state" {
		t.Fatalf("other session's state: %d %s", r.status, r.body)
	}
	if _, err := in.store.GetCredential(e.ctx, "user-b", "alpha"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a credential was stored for the other session")
	}

	// A state for one provider used at another.
	q = a.authorizeQuery(in, "alpha", "")
	r = a.get(in.url + "/api/v1.0/beta/redirect_uri?" + q.Encode())
	if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_state" {
		t.Fatalf("state of another provider: %d %s", r.status, r.body)
	}

	// Replay: the first use links, the second is refused.
	q = a.authorizeQuery(in, "alpha", "")
	if r := a.get(in.url + "/api/v1.0/alpha/redirect_uri?" + q.Encode()); r.status != http.StatusFound {
		t.Fatalf("callback: %d %s", r.status, r.body)
	}
	v := e.credential(userA, "alpha").Version
	r = a.get(in.url + "/api/v1.0/alpha/redirect_uri?" + q.Encode())
	if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_state" {
		t.Fatalf("replayed state: %d %s", r.status, r.body)
	}
	if e.credential(userA, "alpha").Version != v {
		t.Fatal("a replayed callback changed the credential")
	}

	// A code swapped between two pending requests of one session: the PKCE
	// verifier (and the nonce) belong to the other request; refused, nothing stored.
	q1 := a.authorizeQuery(in, "beta", "")
	q2 := a.authorizeQuery(in, "beta", "")
	swapped := url.Values{"state": {q2.Get("state")}, "code": {q1.Get("code")}}
	r = a.get(in.url + "/api/v1.0/beta/redirect_uri?" + swapped.Encode())
	if r.status == http.StatusFound && !strings.Contains(r.header.Get("Location"), "error=") {
		t.Fatalf("a swapped code was accepted: %s", r.header.Get("Location"))
	}
	if _, err := in.store.GetCredential(e.ctx, userA, "beta"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a swapped code stored a credential")
	}

	// Login state: single use, bound to the browser that started it.
	c := e.browser()
	authURL := c.get(in.url + "/api/oidc/login").location(t)
	lq, err := e.login.Login(e.ctx, authURL)
	if err != nil {
		t.Fatal(err)
	}
	e.seeQuery(lq)
	other := e.browser()
	if r := other.get(in.url + "/api/oidc/callback?" + lq.Encode()); r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_state" {
		t.Fatalf("login callback in another browser: %d %s", r.status, r.body)
	}
	// The pending login lives in the starting browser's cookie, which a
	// foreign attempt cannot spend: that browser still completes, and its
	// cookie is cleared.
	pendingCookie := ""
	cbURL, _ := url.Parse(in.url + "/api/oidc/callback")
	for _, ck := range c.client.Jar.Cookies(cbURL) {
		if ck.Name == "tokenstore_login" {
			pendingCookie = ck.Value
		}
	}
	if pendingCookie == "" {
		t.Fatal("no login cookie")
	}
	if r := c.get(in.url + "/api/oidc/callback?" + lq.Encode()); r.status != http.StatusFound {
		t.Fatalf("login callback in the browser that started it: %d %s", r.status, r.body)
	}
	if r := c.get(in.url + "/api/oidc/callback?" + lq.Encode()); r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_state" {
		t.Fatalf("login callback after its cookie was cleared: %d %s", r.status, r.body)
	}
	// Replayed with the cookie put back: the code is spent at the issuer.
	if r := c.do(http.MethodGet, in.url+"/api/oidc/callback?"+lq.Encode(), map[string]string{"Cookie": "tokenstore_login=" + pendingCookie}); r.status != http.StatusBadRequest || r.errorCode(t) != "login_failed" {
		t.Fatalf("login callback replayed with its cookie: %d %s", r.status, r.body)
	}
	e.checkLogs()
}

func TestReturnURLsAndProviderErrors(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	b := e.browser()
	for _, bad := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "http://app.example/x", "relative"} {
		r := b.get(in.url + "/api/oidc/login?return_url=" + url.QueryEscape(bad))
		if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_return_url" {
			t.Errorf("login return_url %q: %d %s", bad, r.status, r.body)
		}
	}
	if got := b.loginAt(in, "https://app.example/home"); got != "https://app.example/home" {
		t.Fatalf("allowed origin: returned to %q", got)
	}
	r := b.get(in.url + "/api/v1.0/alpha/authorize?return_url=" + url.QueryEscape("https://evil.example/"))
	if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_return_url" {
		t.Fatalf("authorize with a foreign return_url: %d %s", r.status, r.body)
	}

	// The provider reports an error: back to the return URL with the reason.
	loc, _ := url.Parse(b.get(in.url + "/api/v1.0/alpha/authorize?return_url=" + url.QueryEscape("https://app.example/done")).location(t))
	state := loc.Query().Get("state")
	e.see("state", state)
	r = b.get(in.url + "/api/v1.0/alpha/redirect_uri?error=access_denied&error_description=no&state=" + url.QueryEscape(state))
	if got := r.location(t); got != "https://app.example/done?error=access_denied&provider=alpha" {
		t.Fatalf("provider error redirected to %q", got)
	}
	// The login callback too.
	c := e.browser()
	loc, _ = url.Parse(c.get(in.url + "/api/oidc/login?return_url=/x").location(t))
	r = c.get(in.url + "/api/oidc/callback?error=access_denied&state=" + url.QueryEscape(loc.Query().Get("state")))
	if got := r.location(t); got != e.ext+"/x?error=access_denied" {
		t.Fatalf("login error redirected to %q", got)
	}
	e.checkLogs()
}

func TestOtherUsersAndCSRF(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	a := e.browser()
	a.loginAt(in, "")
	userA := a.whoami(in)
	a.link(in, "alpha")
	tokA, _ := a.token(in, "alpha", "")

	b := e.browser()
	b.sessionFor(in, "user-b")
	if _, r := b.token(in, "alpha", ""); r.status != http.StatusBadRequest || r.errorCode(t) != "not_linked" {
		t.Fatalf("B reading A's token: %d %s", r.status, r.body)
	}
	if _, r := b.token(in, "alpha", "?force_refresh=true"); r.status != http.StatusBadRequest {
		t.Fatalf("B refreshing A's token: %d %s", r.status, r.body)
	}
	r := b.do(http.MethodPost, in.url+"/api/v1.0/alpha/revoke", map[string]string{"Origin": e.ext})
	if r.status != http.StatusOK || strings.Contains(string(r.body), `"revoked":true`) {
		t.Fatalf("B revoking: %d %s", r.status, r.body)
	}
	var auths []authorization
	b.get(in.url+"/api/v1.0/authorizations").json(t, &auths)
	if auths[0].Active {
		t.Fatal("B sees A's link")
	}
	if tok, _ := a.token(in, "alpha", ""); tok.AccessToken != tokA.AccessToken {
		t.Fatal("A's credential changed")
	}

	// CSRF: a cookie-carried POST from a foreign page is refused.
	for _, h := range []map[string]string{{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}} {
		r := a.do(http.MethodPost, in.url+"/api/v1.0/alpha/revoke", h)
		if r.status != http.StatusForbidden || r.errorCode(t) != "csrf_refused" {
			t.Fatalf("cross-site revoke %v: %d %s", h, r.status, r.body)
		}
	}
	if r := a.do(http.MethodPost, in.url+"/api/oidc/logout", map[string]string{"Origin": "https://evil.example"}); r.status != http.StatusForbidden {
		t.Fatalf("cross-site logout: %d", r.status)
	}
	e.credential(userA, "alpha") // still there

	// CORS: configured origins only, with credentials.
	r = a.do(http.MethodOptions, in.url+"/api/v1.0/alpha/token", map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "https://app.example" || r.header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight from an allowed origin: %d %v", r.status, r.header)
	}
	r = a.do(http.MethodGet, in.url+"/api/v1.0/alpha/token", map[string]string{"Origin": "https://evil.example"})
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS answered a foreign origin")
	}
	e.checkLogs()
}

func TestBearer(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	br := e.browser()
	br.loginAt(in, "")
	user := br.whoami(in)
	br.link(in, "alpha")

	// A client of the login issuer gets its own access token for the person.

	cfg := &oauth2.Config{ClientID: providertest.ClientID, ClientSecret: e.login.ClientSecret,
		Endpoint:    oauth2.Endpoint{AuthURL: e.login.Issuer + "/authorize", TokenURL: e.login.Issuer + "/oauth/token", AuthStyle: oauth2.AuthStyleInHeader},
		RedirectURL: e.ext + "/api/oidc/callback", Scopes: []string{"openid"}}
	state := auth.RandomValue()
	q, err := e.login.Login(e.ctx, cfg.AuthCodeURL(state))
	if err != nil {
		t.Fatal(err)
	}
	e.seeQuery(q)
	tok, err := cfg.Exchange(e.ctx, q.Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	e.see("access_token", tok.AccessToken)
	e.see("refresh_token", tok.RefreshToken)

	c := e.browser() // no cookies
	bearer := map[string]string{"Authorization": "Bearer " + tok.AccessToken}
	r := c.do(http.MethodGet, in.url+"/api/whoami", bearer)
	var id auth.Identity
	r.json(t, &id)
	if r.status != http.StatusOK || id.UserID != user || id.Method != "bearer" {
		t.Fatalf("whoami with a bearer token: %d %s", r.status, r.body)
	}
	if r := c.do(http.MethodGet, in.url+"/api/v1.0/alpha/token", bearer); r.status != http.StatusOK {
		t.Fatalf("token with a bearer token: %d %s", r.status, r.body)
	}
	// Bearer requests are not CSRF-checked: no browser adds the header.
	bearerFromElsewhere := map[string]string{"Authorization": "Bearer " + tok.AccessToken, "Origin": "https://cli.example"}
	if r := c.do(http.MethodPost, in.url+"/api/v1.0/beta/revoke", bearerFromElsewhere); r.status != http.StatusOK {
		t.Fatalf("bearer revoke: %d %s", r.status, r.body)
	}
	for _, h := range []string{"Bearer not-a-token", "Bearer a.b.c", "Basic Zm9vOmJhcg=="} {
		if r := c.do(http.MethodGet, in.url+"/api/whoami", map[string]string{"Authorization": h}); r.status != http.StatusUnauthorized {
			t.Fatalf("whoami with %q: %d %s", h, r.status, r.body)
		}
	}
	// An ID-token-shaped JWT for our login client is accepted, as the
	// Kubernetes API server accepts it (Dex's access tokens are so shaped);
	// internal/auth's tests refuse it for any other audience.
	if idt, _ := tok.Extra("id_token").(string); idt == "" {
		t.Fatal("no ID token")
	} else if r := c.do(http.MethodGet, in.url+"/api/whoami", map[string]string{"Authorization": "Bearer " + idt}); r.status != http.StatusOK {
		t.Fatalf("whoami with an ID token for our client: %d %s", r.status, r.body)
	}
	// A token from another issuer (a token provider) is not a login token.
	alphaTok, _ := br.token(in, "alpha", "")
	if r := c.do(http.MethodGet, in.url+"/api/whoami", map[string]string{"Authorization": "Bearer " + alphaTok.AccessToken}); r.status != http.StatusUnauthorized {
		t.Fatalf("whoami with a token provider's token: %d %s", r.status, r.body)
	}
	e.checkLogs()
}

// With PKCE off (a provider that does not support it), a code obtained for
// one pending request and delivered with another's state is caught by the
// ID token's nonce.
func TestNonceMismatch(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	noPKCE := *e.providers["beta"].provider
	noPKCE.PKCE = providers.PKCENone
	noPKCE.Version = "no-pkce"
	in.reg.Set(&noPKCE)

	a := e.browser()
	a.loginAt(in, "")
	user := a.whoami(in)
	q1 := a.authorizeQuery(in, "beta", "")
	q2 := a.authorizeQuery(in, "beta", "")
	swapped := url.Values{"state": {q2.Get("state")}, "code": {q1.Get("code")}}
	r := a.get(in.url + "/api/v1.0/beta/redirect_uri?" + swapped.Encode())
	if r.status != http.StatusBadRequest || r.errorCode(t) != "nonce_mismatch" {
		t.Fatalf("swapped code without PKCE: %d %s", r.status, r.body)
	}
	if _, err := in.store.GetCredential(e.ctx, user, "beta"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a credential was stored despite the nonce mismatch")
	}
	e.checkLogs()
}
