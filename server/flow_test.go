package server

import (
	"net/http"
	"os"
	"strings"
	"testing"
)

func TestLoginLinkToken(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	b := e.browser()

	if r := b.get(in.url + "/api/whoami"); r.status != http.StatusForbidden || r.errorCode(t) != "unauthenticated" {
		t.Fatalf("whoami before login: %d %s", r.status, r.body)
	}
	if got := b.loginAt(in, "/after"); got != e.ext+"/after" {
		t.Fatalf("login returned to %q", got)
	}
	user := b.whoami(in)
	if user == "" {
		t.Fatal("no user id")
	}

	var auths []authorization
	r := b.get(in.url + "/api/v1.0/authorizations")
	r.json(t, &auths)
	if len(auths) != 2 || auths[0].Provider != "alpha" || auths[0].Active || auths[0].Metadata["logo"] != nil ||
		auths[0].Actions["token"] != e.ext+"/api/v1.0/alpha/token" {
		t.Fatalf("authorizations before linking: %s", r.body)
	}

	if got := b.link(in, "alpha"); got != e.ext+"/" {
		t.Fatalf("link returned to %q", got)
	}
	r = b.get(in.url + "/api/v1.0/authorizations")
	r.json(t, &auths)
	if !auths[0].Active || auths[0].State != "active" || auths[1].Active {
		t.Fatalf("authorizations after linking: %s", r.body)
	}
	c1 := e.credential(user, "alpha")

	tok1, r := b.token(in, "alpha", "")
	if r.status != http.StatusOK || tok1.AccessToken == "" || tok1.TokenType == "" || tok1.ExpiresIn == nil || *tok1.ExpiresIn <= 0 {
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	if strings.Contains(string(r.body), "refresh") {
		t.Fatalf("token answer mentions a refresh token: %s", r.body)
	}
	tok2, _ := b.token(in, "alpha", "")
	if tok2.AccessToken != tok1.AccessToken || e.providers["alpha"].refresh.Load() != 0 {
		t.Fatal("a valid cached token was not served from the cache")
	}
	tok3, r := b.token(in, "alpha", "?force_refresh=true")
	if r.status != http.StatusOK || tok3.AccessToken == tok1.AccessToken || e.providers["alpha"].refresh.Load() != 1 {
		t.Fatalf("force_refresh did not refresh: %d %s", r.status, r.body)
	}
	c2 := e.credential(user, "alpha")
	if e.refreshToken(c2) == e.refreshToken(c1) || c2.Version <= c1.Version {
		t.Fatal("the rotated refresh token was not saved")
	}
	// min_valid longer than the token's life forces a refresh too.
	tok4, _ := b.token(in, "alpha", "?min_valid=3600")
	if tok4.AccessToken == tok3.AccessToken || e.providers["alpha"].refresh.Load() != 2 {
		t.Fatal("min_valid beyond the expiry did not refresh")
	}

	// Not linked at beta.
	if _, r := b.token(in, "beta", ""); r.status != http.StatusBadRequest || r.errorCode(t) != "not_linked" {
		t.Fatalf("token at an unlinked provider: %d %s", r.status, r.body)
	}
	if _, r := b.token(in, "nope", ""); r.status != http.StatusNotFound || r.errorCode(t) != "unknown_provider" {
		t.Fatalf("unknown provider: %d %s", r.status, r.body)
	}

	// Logout ends the session everywhere.
	if r := b.do(http.MethodPost, in.url+"/api/oidc/logout", map[string]string{"Origin": e.ext}); r.status != http.StatusOK {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if r := b.get(in.url + "/api/whoami"); r.status != http.StatusForbidden {
		t.Fatalf("whoami after logout: %d", r.status)
	}
	e.checkLogs()
}

// checkLogs fails when any secret the test saw appears in the logs.
func (e *env) checkLogs() {
	e.t.Helper()
	logs := e.logs.String()
	if testing.Verbose() && os.Getenv("TOKENSTORE_DUMP_LOGS") != "" {
		e.t.Log(logs)
	}
	if logs == "" {
		e.t.Fatal("no logs captured")
	}
	e.seenMu.Lock()
	defer e.seenMu.Unlock()
	for v, kind := range e.seen {
		if len(v) >= 8 && strings.Contains(logs, v) {
			e.t.Errorf("a %s value appears in the logs", kind)
		}
	}
}
