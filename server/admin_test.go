package server

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/admin"
	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/store"
)

// adminSession gives the browser a session of user whose stored login
// claims carry realm roles, as a Keycloak login keeps them (the test OP's
// one user has no roles).
func (b *browser) adminSession(in *instance, user string, roles ...string) {
	t := b.e.t
	t.Helper()
	claims, _ := json.Marshal(map[string]any{"sub": user, "iss": b.e.login.Issuer, "realm_access": map[string]any{"roles": roles}})
	cookie := auth.RandomValue()
	now := time.Now()
	if err := in.store.CreateSession(b.e.ctx, store.Session{ID: auth.Hash(cookie), UserID: user, Claims: claims,
		CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(in.url)
	b.client.Jar.SetCookies(u, []*http.Cookie{{Name: "tokenstore_session", Value: cookie, Path: "/"}})
}

// sessionCookie is the browser's session cookie at in.
func (b *browser) sessionCookie(in *instance) string {
	u, _ := url.Parse(in.url)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == "tokenstore_session" {
			return c.Value
		}
	}
	b.e.t.Fatal("no session cookie")
	return ""
}

func TestAdminAPI(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	vt := &validatingTransport{t: t, doc: loadSpec(t), server: in.url, seen: map[string]bool{}}
	sameOrigin := map[string]string{"Origin": e.ext}

	// The person: a real login (whose session keeps the ID token's
	// claims), a linked account, a grant to a workload.
	person := e.browser()
	person.client.Transport = vt
	person.loginAt(in, "")
	sub := person.whoami(in)
	id, err := in.srv.auth.Session(e.ctx, person.sessionCookie(in))
	if err != nil {
		t.Fatal(err)
	}
	if id.Claims["aud"] == nil || id.Claims["amr"] == nil || id.Claims["nonce"] != nil || id.Roles != nil ||
		!slices.Contains(id.Scopes, "openid") {
		t.Errorf("a login session's claims = %v, roles %q, scopes %q", id.Claims, id.Roles, id.Scopes)
	}
	person.link(in, "alpha")
	rt := e.refreshToken(e.credential(sub, "alpha"))
	g, err := in.store.CreateGrant(e.ctx, store.Grant{UserID: sub, Provider: "alpha", ServiceAccountNamespace: "team-a", ServiceAccountName: "ci", ServiceAccountUID: "uid-1"})
	if err != nil {
		t.Fatal(err)
	}

	ops := e.browser()
	ops.client.Transport = vt
	ops.adminSession(in, "ops-1", "offline_access", "tokenstore-admin")
	personURL := in.url + "/api/v1.0/admin/users/" + url.PathEscape(sub)

	// Without ADMIN_ROLES the admin API is not there.
	if r := ops.get(personURL); r.status != http.StatusNotFound || r.errorCode(t) != "not_found" {
		t.Fatalf("admin API without ADMIN_ROLES: %d %s", r.status, r.body)
	}
	e.settings.AdminRoles = []string{"tokenstore-admin"}

	// A person without the role is refused, their own data included.
	if r := person.get(personURL); r.status != http.StatusForbidden || r.errorCode(t) != "admin_role_required" {
		t.Fatalf("non-admin: %d %s", r.status, r.body)
	}
	if r := person.do(http.MethodDelete, personURL+"/credentials", sameOrigin); r.status != http.StatusForbidden {
		t.Fatalf("non-admin revoke: %d %s", r.status, r.body)
	}

	r := ops.get(personURL)
	var p admin.Person
	r.json(t, &p)
	if r.status != http.StatusOK || len(p.Credentials) != 1 || p.Credentials[0].Provider != "alpha" || len(p.Grants) != 1 || p.Grants[0].ID != g.ID {
		t.Fatalf("person: %d %s", r.status, r.body)
	}
	if r := ops.get(personURL + "/credentials"); r.status != http.StatusOK {
		t.Fatalf("credentials: %d %s", r.status, r.body)
	}
	if r := ops.get(personURL + "/grants"); r.status != http.StatusOK {
		t.Fatalf("grants: %d %s", r.status, r.body)
	}
	if r := ops.get(in.url + "/api/v1.0/admin/users/nobody"); r.status != http.StatusNotFound || r.errorCode(t) != "user_not_found" {
		t.Fatalf("unknown person: %d %s", r.status, r.body)
	}

	// Writes carried by the cookie follow the CSRF rule.
	if r := ops.do(http.MethodDelete, personURL+"/credentials/alpha", map[string]string{"Origin": "https://evil.example"}); r.status != http.StatusForbidden || r.errorCode(t) != "csrf_refused" {
		t.Fatalf("cross-origin revoke: %d %s", r.status, r.body)
	}
	if _, err := in.store.GetCredential(e.ctx, sub, "alpha"); err != nil {
		t.Fatalf("the refused revoke revoked: %v", err)
	}
	r = ops.do(http.MethodDelete, personURL+"/credentials/alpha", sameOrigin)
	var cr admin.CredentialRevocation
	r.json(t, &cr)
	if r.status != http.StatusOK || !cr.AtProvider {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	// The provider saw it: it no longer takes the refresh token.
	if _, err := e.providers["alpha"].provider.OAuth2Config("").TokenSource(e.ctx, &oauth2.Token{RefreshToken: rt}).Token(); err == nil {
		t.Error("the provider still takes the revoked refresh token")
	}
	if r := ops.do(http.MethodDelete, personURL+"/credentials/alpha", sameOrigin); r.status != http.StatusNotFound || r.errorCode(t) != "credential_not_found" {
		t.Fatalf("second revoke: %d %s", r.status, r.body)
	}

	saURL := in.url + "/api/v1.0/admin/serviceaccounts/team-a/ci/grants"
	if r := ops.get(saURL); r.status != http.StatusOK {
		t.Fatalf("service account grants: %d %s", r.status, r.body)
	}
	if r := ops.get(in.url + "/api/v1.0/admin/serviceaccounts/Bad_NS/ci/grants"); r.status != http.StatusBadRequest {
		t.Fatalf("bad service account: %d %s", r.status, r.body)
	}
	r = ops.do(http.MethodDelete, saURL, sameOrigin)
	var grs []admin.GrantRevocation
	r.json(t, &grs)
	if r.status != http.StatusOK || len(grs) != 1 || grs[0].Grant.ID != g.ID || !grs[0].Revoked {
		t.Fatalf("service account revoke: %d %s", r.status, r.body)
	}
	if r := ops.do(http.MethodDelete, in.url+"/api/v1.0/admin/grants/"+"999999", sameOrigin); r.status != http.StatusNotFound {
		t.Fatalf("unknown grant: %d %s", r.status, r.body)
	}
	if r := ops.do(http.MethodDelete, personURL+"/grants", sameOrigin); r.status != http.StatusOK {
		t.Fatalf("revoke grants: %d %s", r.status, r.body)
	}
	if r := ops.do(http.MethodDelete, personURL+"/credentials", sameOrigin); r.status != http.StatusOK {
		t.Fatalf("revoke all credentials: %d %s", r.status, r.body)
	}

	// Signed out everywhere.
	if r := ops.do(http.MethodDelete, personURL+"/sessions", sameOrigin); r.status != http.StatusOK {
		t.Fatalf("end sessions: %d %s", r.status, r.body)
	}
	if r := person.get(in.url + "/api/whoami"); r.status != http.StatusForbidden {
		t.Fatalf("the person's session survived: %d", r.status)
	}

	// Each action is in the person's trail, the operator as actor.
	evs, err := in.store.ListAudit(e.ctx, sub, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Actor == "admin:ops-1" {
			got = append(got, evs[i].Action)
		}
	}
	want := []string{"admin.inspect", "admin.inspect", "admin.inspect", "credential.revoke", "grant.revoke", "admin.sessions_end"}
	if !slices.Equal(got, want) {
		t.Errorf("the operator's events in the person's trail = %q\n\twant %q", got, want)
	}
	for _, s := range []string{"GET /api/v1.0/admin/users/{user} 403", "DELETE /api/v1.0/admin/users/{user}/credentials/{provider} 200",
		"DELETE /api/v1.0/admin/serviceaccounts/{namespace}/{name}/grants 200"} {
		if !vt.seen[s] {
			t.Errorf("the test did not exercise %s", s)
		}
	}
}

// A bearer caller's roles come from its token's claims too, and bearer
// writes are exempt from the origin check as elsewhere.
func TestAdminAPIBearer(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	br := e.browser()
	br.loginAt(in, "")
	user := br.whoami(in)
	accessToken := e.loginAccessToken()
	if _, err := in.store.CreateGrant(e.ctx, store.Grant{UserID: "victim", Provider: "alpha", ServiceAccountNamespace: "team-a", ServiceAccountName: "ci"}); err != nil {
		t.Fatal(err)
	}

	// The test OP's user has no role claims; its sub is a claim every
	// token carries, so it stands in for one here.
	e.settings.RolesClaim = []string{"sub"}
	e.settings.AdminRoles = []string{"tokenstore-admin"}
	c := e.browser()
	bearer := map[string]string{"Authorization": "Bearer " + accessToken, "Origin": "https://cli.example"}
	saURL := in.url + "/api/v1.0/admin/serviceaccounts/team-a/ci/grants"
	if r := c.do(http.MethodDelete, saURL, bearer); r.status != http.StatusForbidden || r.errorCode(t) != "admin_role_required" {
		t.Fatalf("bearer without the role: %d %s", r.status, r.body)
	}
	e.settings.AdminRoles = []string{"tokenstore-admin", user}
	r := c.do(http.MethodDelete, saURL, bearer)
	var grs []admin.GrantRevocation
	r.json(t, &grs)
	if r.status != http.StatusOK || len(grs) != 1 || grs[0].Grant.UserID != "victim" {
		t.Fatalf("bearer admin: %d %s", r.status, r.body)
	}
	evs, err := in.store.ListAudit(e.ctx, "victim", 0, 10)
	if err != nil || len(evs) != 1 || evs[0].Actor != "admin:"+user || evs[0].Action != "grant.revoke" {
		t.Fatalf("victim's trail: %+v %v", evs, err)
	}
}
