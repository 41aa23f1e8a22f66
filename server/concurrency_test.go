package server

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/store"
)

// hammer runs n token requests at once, spread over the instances, and
// returns the access tokens served.
func hammer(t *testing.T, b *browser, ins []*instance, id, query string, n int) []string {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	got := make([]string, n)
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := b.get(ins[i%len(ins)].url + "/api/v1.0/" + id + "/token" + query)
			if r.status != http.StatusOK {
				errs <- string(r.body)
				return
			}
			var ta tokenAnswer
			if err := jsonUnmarshal(r.body, &ta); err != nil {
				errs <- err.Error()
				return
			}
			b.e.see("access_token", ta.AccessToken)
			got[i] = ta.AccessToken
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("token request failed: %s", e)
	}
	return got
}

func allSame(t *testing.T, toks []string) {
	t.Helper()
	for _, tk := range toks {
		if tk == "" || tk != toks[0] {
			t.Fatal("concurrent callers were served different tokens")
		}
	}
}

func TestConcurrentRefreshOneProcess(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	b := e.browser()
	b.loginAt(in, "")
	user := b.whoami(in)
	b.link(in, "alpha")
	b.link(in, "beta")

	// Expired cached token: 50 callers, one refresh.
	before := e.credential(user, "alpha")
	e.expire(user, "alpha")
	toks := hammer(t, b, []*instance{in}, "alpha", "", 50)
	if n := e.providers["alpha"].refresh.Load(); n != 1 {
		t.Fatalf("%d refreshes at the provider for 50 concurrent requests, want 1", n)
	}
	allSame(t, toks)
	after := e.credential(user, "alpha")
	if e.refreshToken(after) == e.refreshToken(before) {
		t.Fatal("rotated refresh token not saved")
	}

	// force_refresh from 50 callers at once: still one refresh.
	toks = hammer(t, b, []*instance{in}, "beta", "?force_refresh=true", 50)
	if n := e.providers["beta"].refresh.Load(); n != 1 {
		t.Fatalf("%d refreshes for 50 concurrent forced requests, want 1", n)
	}
	allSame(t, toks)
	e.checkLogs()
}

func TestConcurrentRefreshTwoInstances(t *testing.T) {
	e := newEnv(t)
	a := e.instances[0]
	bInst := e.startInstance(nil)
	br := e.browser()
	br.loginAt(a, "")
	user := br.whoami(bInst) // the session is in the database: the other instance knows it
	br.link(bInst, "alpha")

	// A forced burst first (the link is not a refresh, so it must refresh),
	// then an expired token: one refresh each.
	toks := hammer(t, br, []*instance{a, bInst}, "alpha", "?force_refresh=true", 40)
	if n := e.providers["alpha"].refresh.Load(); n != 1 {
		t.Fatalf("%d refreshes for a forced burst across two instances, want 1", n)
	}
	allSame(t, toks)

	e.expire(user, "alpha")
	toks = hammer(t, br, []*instance{a, bInst}, "alpha", "", 40)
	if n := e.providers["alpha"].refresh.Load(); n != 2 {
		t.Fatalf("%d refreshes in total after an expired burst across two instances, want 2", n)
	}
	allSame(t, toks)
	// The chain of rotated refresh tokens is intact: one more refresh works.
	if _, r := br.token(a, "alpha", "?force_refresh=true&min_valid=1"); r.status != http.StatusOK {
		// within the force window the last refresh may be reused; either way it must succeed
		t.Fatalf("refresh after the bursts: %d %s", r.status, r.body)
	}
	e.checkLogs()
}

func TestInvalidGrantMarksNeedsReauth(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	b := e.browser()
	b.loginAt(in, "")
	user := b.whoami(in)
	b.link(in, "alpha")
	c := e.credential(user, "alpha")

	// Someone else spends the stored refresh token (a replay): the OP
	// rotates it, so tokenstore's copy is now refused with invalid_grant.
	tp := e.providers["alpha"]
	cfg := tp.provider.OAuth2Config("")
	stolen, err := cfg.TokenSource(e.ctx, &oauth2.Token{RefreshToken: e.refreshToken(c)}).Token()
	if err != nil {
		t.Fatalf("spending the refresh token directly: %v", err)
	}
	e.see("refresh_token", stolen.RefreshToken)
	e.see("access_token", stolen.AccessToken)

	_, r := b.token(in, "alpha", "?force_refresh=true")
	if r.status != http.StatusConflict || r.errorCode(t) != "reauthorization_required" {
		t.Fatalf("after a refused refresh: %d %s", r.status, r.body)
	}
	var body struct {
		AuthorizeURL string `json:"authorize_url"`
	}
	r.json(t, &body)
	if body.AuthorizeURL != e.ext+"/api/v1.0/alpha/authorize" {
		t.Fatalf("re-link URL %q", body.AuthorizeURL)
	}
	kept := e.credential(user, "alpha")
	if kept.State != store.StateNeedsReauth || kept.StateReason != "invalid_grant" || len(kept.RefreshToken) == 0 {
		t.Fatalf("credential after invalid_grant: state %s reason %q", kept.State, kept.StateReason)
	}
	// Later calls answer the same without calling the provider again.
	n := tp.refresh.Load()
	if _, r := b.token(in, "alpha", ""); r.status != http.StatusConflict {
		t.Fatalf("second call: %d", r.status)
	}
	if tp.refresh.Load() != n {
		t.Fatal("a credential needing re-authorization was refreshed again")
	}
	var auths []authorization
	b.get(in.url+"/api/v1.0/authorizations").json(t, &auths)
	if auths[0].Active || auths[0].State != "needs_reauth" {
		t.Fatalf("authorizations: %+v", auths[0])
	}
	// Linking again restores it.
	b.link(in, "alpha")
	if _, r := b.token(in, "alpha", ""); r.status != http.StatusOK {
		t.Fatalf("after re-linking: %d %s", r.status, r.body)
	}
	events, err := in.store.ListAudit(e.ctx, user, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, ev := range events {
		actions[ev.Action]++
	}
	if actions["credential.needs_reauth"] != 1 || actions["credential.link"] != 2 {
		t.Fatalf("audit actions: %v", actions)
	}
	e.checkLogs()
}

func TestProviderDown(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	b := e.browser()
	b.loginAt(in, "")
	user := b.whoami(in)
	b.link(in, "alpha")
	before := e.credential(user, "alpha")

	tp := e.providers["alpha"]
	tp.op.Stop()
	_, r := b.token(in, "alpha", "?force_refresh=true")
	if r.status != http.StatusBadGateway || r.errorCode(t) != "provider_unavailable" {
		t.Fatalf("provider down: %d %s", r.status, r.body)
	}
	after := e.credential(user, "alpha")
	if after.Version != before.Version || after.State != store.StateActive {
		t.Fatal("the credential changed while the provider was down")
	}
	// A valid cached token is still served while the provider is down.
	if _, r := b.token(in, "alpha", ""); r.status != http.StatusOK {
		t.Fatalf("cached token while the provider is down: %d", r.status)
	}
	if err := tp.op.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, r := b.token(in, "alpha", "?force_refresh=true"); r.status != http.StatusOK {
		t.Fatalf("after the provider came back: %d %s", r.status, r.body)
	}
	e.checkLogs()
}

func TestRevoke(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	b := e.browser()
	b.loginAt(in, "")
	user := b.whoami(in)
	b.link(in, "alpha")
	c := e.credential(user, "alpha")
	rt := e.refreshToken(c)

	r := b.do(http.MethodPost, in.url+"/api/v1.0/alpha/revoke", map[string]string{"Origin": e.ext, "Accept": "application/json"})
	var res struct {
		Revoked           bool `json:"revoked"`
		RevokedAtProvider bool `json:"revoked_at_provider"`
	}
	r.json(t, &res)
	if r.status != http.StatusOK || !res.Revoked || !res.RevokedAtProvider {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if _, err := in.store.GetCredential(e.ctx, user, "alpha"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("credential after revoke: %v", err)
	}
	// A client of the Flask service, which does not ask for an object,
	// gets its answer: the JSON string "Token revoked".
	if r := b.do(http.MethodPost, in.url+"/api/v1.0/alpha/revoke", map[string]string{"Origin": e.ext, "Accept": "*/*"}); r.status != http.StatusOK ||
		strings.TrimSpace(string(r.body)) != `"Token revoked"` || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("revoke without Accept: application/json: %d %q", r.status, r.body)
	}
	// The provider no longer honours the refresh token.
	cfg := e.providers["alpha"].provider.OAuth2Config("")
	if _, err := cfg.TokenSource(e.ctx, &oauth2.Token{RefreshToken: rt}).Token(); err == nil {
		t.Fatal("the revoked refresh token still works at the provider")
	}
	if _, r := b.token(in, "alpha", ""); r.status != http.StatusBadRequest || r.errorCode(t) != "not_linked" {
		t.Fatalf("token after revoke: %d %s", r.status, r.body)
	}
	r = b.do(http.MethodPost, in.url+"/api/v1.0/alpha/revoke", map[string]string{"Origin": e.ext, "Accept": "application/json"})
	r.json(t, &res)
	if r.status != http.StatusOK || res.Revoked {
		t.Fatalf("revoking nothing: %d %s", r.status, r.body)
	}
	e.checkLogs()
}
