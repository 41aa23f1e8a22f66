package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/admin"
	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

const actor = admin.ActorCLIPrefix + "oncall"

type fixture struct {
	ctx  context.Context
	st   store.Store
	keys *crypto.KeyRing
	op   *providertest.OP
	// revoking has the OP's revocation endpoint; silent has none.
	revoking, silent *providers.Provider
	b                *broker.Broker
	svc              *admin.Service
	revokedGrants    []int64
}

// backends runs fn on SQLite and on PostgreSQL.
func backends(t *testing.T, fn func(t *testing.T, f *fixture)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, newFixture(t, "sqlite://"+filepath.Join(t.TempDir(), "ts.db")))
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, newFixture(t, pgtest.NewDatabase(t)))
	})
}

func newFixture(t *testing.T, dbURL string) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{ctx: ctx}
	m, err := storeopen.NewMigrator(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if f.st, err = storeopen.Open(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.st.Close() })
	f.op = providertest.Start(t, "http://127.0.0.1/cb")
	op, err := oidc.NewProvider(ctx, f.op.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Revocation string `json:"revocation_endpoint"`
	}
	if err := op.Claims(&doc); err != nil || doc.Revocation == "" {
		t.Fatalf("the test OP has no revocation endpoint: %v", err)
	}
	ep := op.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	mk := func(id, revocation string) *providers.Provider {
		return &providers.Provider{ID: id, ClientID: providertest.ClientID, ClientSecret: f.op.ClientSecret,
			AuthMethod: providers.AuthMethodClientSecretBasic, Endpoint: ep, Issuer: f.op.Issuer, RevocationURL: revocation,
			Scopes: []string{"openid", "offline_access"}, PKCE: providers.PKCES256, Version: "1"}
	}
	f.revoking, f.silent = mk("revoking", doc.Revocation), mk("silent", "")
	reg := providers.NewRegistry()
	reg.Set(f.revoking)
	reg.Set(f.silent)
	reg.MarkReady()
	key, _ := crypto.GenerateKey()
	f.keys, _ = crypto.ParseKeyRing(key)
	if f.b, err = broker.New(broker.Options{Store: f.st, Keys: f.keys, Providers: reg}); err != nil {
		t.Fatal(err)
	}
	d := delegation.NewService(delegation.ServiceOptions{Store: f.st})
	if f.svc, err = admin.New(admin.Options{Store: f.st, Broker: f.b, Delegation: d,
		GrantRevoked: func(id int64) { f.revokedGrants = append(f.revokedGrants, id) }}); err != nil {
		t.Fatal(err)
	}
	return f
}

// link links user's account at p with a real code flow at the OP and
// returns the refresh token it stored.
func (f *fixture) link(t *testing.T, user string, p *providers.Provider) string {
	t.Helper()
	cfg := p.OAuth2Config(f.op.RedirectURL)
	v := oauth2.GenerateVerifier()
	q, err := f.op.Login(f.ctx, cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(v)))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.Exchange(f.ctx, q.Get("code"), oauth2.VerifierOption(v))
	if err != nil || tok.RefreshToken == "" {
		t.Fatalf("code exchange: %v (refresh token given: %v)", err, tok != nil && tok.RefreshToken != "")
	}
	if err := f.b.Link(f.ctx, user, p.ID, "", "user:"+user, tok); err != nil {
		t.Fatal(err)
	}
	return tok.RefreshToken
}

// refreshWorks reports whether the OP still takes refreshToken.
func (f *fixture) refreshWorks(t *testing.T, p *providers.Provider, refreshToken string) bool {
	t.Helper()
	_, err := p.OAuth2Config(f.op.RedirectURL).TokenSource(f.ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	var re *oauth2.RetrieveError
	if err != nil && !errors.As(err, &re) {
		t.Fatalf("refreshing at the OP: %v", err)
	}
	return err == nil
}

// events returns user's audit events by the operator, oldest first.
func (f *fixture) events(t *testing.T, user string) []store.AuditEvent {
	t.Helper()
	evs, err := f.st.ListAudit(f.ctx, user, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.AuditEvent
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Actor == actor {
			out = append(out, evs[i])
		}
	}
	return out
}

func actions(evs []store.AuditEvent) string {
	var a []string
	for _, e := range evs {
		a = append(a, e.Action+"@"+e.Provider)
	}
	return strings.Join(a, ",")
}

func wantError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var ae *admin.Error
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code || ae.Message == "" {
		t.Fatalf("err = %v, want a %d %s refusal", err, status, code)
	}
}

func (f *fixture) grant(t *testing.T, user, provider, ns, name, uid string) store.Grant {
	t.Helper()
	g, err := f.st.CreateGrant(f.ctx, store.Grant{UserID: user, Provider: provider, ServiceAccountNamespace: ns, ServiceAccountName: name, ServiceAccountUID: uid})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// An operator sees a person's credentials and grants, never a token, and
// each look is in the person's trail.
func TestPersonShowsWithoutTokens(t *testing.T) {
	backends(t, func(t *testing.T, f *fixture) {
		rt := f.link(t, "alice", f.revoking)
		g := f.grant(t, "alice", "revoking", "team-a", "ci", "uid-1")

		_, err := f.svc.Person(f.ctx, actor, "nobody")
		wantError(t, err, http.StatusNotFound, "user_not_found")
		_, err = f.svc.Person(f.ctx, "", "alice")
		wantError(t, err, http.StatusBadRequest, "invalid_actor")

		p, err := f.svc.Person(f.ctx, actor, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Credentials) != 1 || p.Credentials[0].Provider != "revoking" || p.Credentials[0].State != "active" ||
			!p.Credentials[0].HasRefreshToken || p.Credentials[0].AccessExpiresAt == nil || len(p.Credentials[0].Scopes) == 0 {
			t.Errorf("credentials = %+v", p.Credentials)
		}
		if len(p.Grants) != 1 || p.Grants[0].ID != g.ID || p.Grants[0].ServiceAccount.UID != "uid-1" || p.Grants[0].State != "active" {
			t.Errorf("grants = %+v", p.Grants)
		}
		js, _ := json.Marshal(p)
		if strings.Contains(string(js), rt) {
			t.Fatal("the answer holds the refresh token")
		}
		if _, err := f.svc.Credentials(f.ctx, actor, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Grants(f.ctx, actor, "alice"); err != nil {
			t.Fatal(err)
		}
		evs := f.events(t, "alice")
		if got := actions(evs); got != "admin.inspect@,admin.inspect@,admin.inspect@" {
			t.Fatalf("operator's events = %s", got)
		}
		var d map[string]string
		_ = json.Unmarshal(evs[1].Detail, &d)
		if d["what"] != "credentials" {
			t.Errorf("detail = %s", evs[1].Detail)
		}
	})
}

// Revoking a person's credentials revokes at the provider where it has a
// revocation endpoint (the OP no longer takes the refresh token) and
// forgets them everywhere, each audited with the operator as actor.
func TestRevokeCredentials(t *testing.T) {
	backends(t, func(t *testing.T, f *fixture) {
		rtAlice := f.link(t, "alice", f.revoking)
		f.link(t, "alice", f.silent)
		rtBob := f.link(t, "bob", f.revoking)

		_, err := f.svc.RevokeCredential(f.ctx, actor, "alice", "nope")
		wantError(t, err, http.StatusNotFound, "credential_not_found")

		r, err := f.svc.RevokeCredential(f.ctx, actor, "bob", "revoking")
		if err != nil || !r.AtProvider || r.ProviderError != "" {
			t.Fatalf("revoking bob's credential: %+v %v", r, err)
		}
		if f.refreshWorks(t, f.revoking, rtBob) {
			t.Error("the provider still takes bob's revoked refresh token")
		}
		if !f.refreshWorks(t, f.revoking, rtAlice) {
			t.Fatal("alice's refresh token stopped working with bob's revocation")
		}

		rs, err := f.svc.RevokeCredentials(f.ctx, actor, "alice")
		if err != nil || len(rs) != 2 {
			t.Fatalf("revoking all of alice's: %+v %v", rs, err)
		}
		byProvider := map[string]admin.CredentialRevocation{rs[0].Provider: rs[0], rs[1].Provider: rs[1]}
		if !byProvider["revoking"].AtProvider || byProvider["silent"].AtProvider || byProvider["silent"].ProviderError == "" {
			t.Errorf("revocations = %+v", rs)
		}
		if f.refreshWorks(t, f.revoking, rtAlice) {
			t.Error("the provider still takes alice's revoked refresh token")
		}
		if cs, _ := f.st.ListCredentials(f.ctx, "alice"); len(cs) != 0 {
			t.Errorf("alice still has %d credentials", len(cs))
		}
		if got := actions(f.events(t, "alice")); got != "credential.revoke@revoking,credential.revoke@silent" {
			t.Errorf("alice's events by the operator = %s", got)
		}
		if got := actions(f.events(t, "bob")); got != "credential.revoke@revoking" {
			t.Errorf("bob's events by the operator = %s", got)
		}
		if rs, err := f.svc.RevokeCredentials(f.ctx, actor, "alice"); err != nil || len(rs) != 0 {
			t.Errorf("revoking again = %+v %v, want nothing", rs, err)
		}
	})
}

// Grants: one by id (whoever's), all of a person, all of a ServiceAccount
// (optionally those its uid could use); each revocation in its owner's
// trail, the grant-revoked hook told.
func TestRevokeGrants(t *testing.T) {
	backends(t, func(t *testing.T, f *fixture) {
		a1 := f.grant(t, "alice", "revoking", "team-a", "ci", "uid-1")
		a2 := f.grant(t, "alice", "silent", "team-a", "deploy", "")
		b1 := f.grant(t, "bob", "revoking", "team-a", "ci", "")
		b2 := f.grant(t, "bob", "silent", "team-a", "ci", "uid-2")
		c1 := f.grant(t, "carol", "revoking", "team-b", "ci", "")

		_, err := f.svc.RevokeGrant(f.ctx, actor, 999999)
		wantError(t, err, http.StatusNotFound, "grant_not_found")
		r, err := f.svc.RevokeGrant(f.ctx, actor, c1.ID)
		if err != nil || !r.Revoked || r.Grant.State != "revoked" || r.Grant.UserID != "carol" {
			t.Fatalf("revoking carol's grant: %+v %v", r, err)
		}
		if r, err := f.svc.RevokeGrant(f.ctx, actor, c1.ID); err != nil || r.Revoked {
			t.Fatalf("revoking it again: %+v %v", r, err)
		}

		// uid-1 could use a1 (bound to it) and b1 (bound to none), not b2.
		rs, err := f.svc.RevokeServiceAccountGrants(f.ctx, actor, "team-a", "ci", "uid-1")
		if err != nil || len(rs) != 2 || rs[0].Grant.ID != b1.ID || rs[1].Grant.ID != a1.ID {
			t.Fatalf("revoking what uid-1 could use: %+v %v", rs, err)
		}
		gs, err := f.svc.ServiceAccountGrants(f.ctx, actor, "team-a", "ci")
		if err != nil || len(gs) != 3 || gs[0].ID != b2.ID || gs[0].State != "active" {
			t.Fatalf("team-a/ci's grants: %+v %v", gs, err)
		}
		rs, err = f.svc.RevokeServiceAccountGrants(f.ctx, actor, "team-a", "ci", "")
		if err != nil || len(rs) != 1 || rs[0].Grant.ID != b2.ID {
			t.Fatalf("revoking the rest of team-a/ci: %+v %v", rs, err)
		}
		_, err = f.svc.RevokeServiceAccountGrants(f.ctx, actor, "", "ci", "")
		wantError(t, err, http.StatusBadRequest, "invalid_service_account")

		rs, err = f.svc.RevokeGrants(f.ctx, actor, "alice")
		if err != nil || len(rs) != 1 || rs[0].Grant.ID != a2.ID {
			t.Fatalf("revoking the rest of alice's: %+v %v", rs, err)
		}
		for _, g := range []store.Grant{a1, a2, b1, b2, c1} {
			got, _ := f.st.GetGrant(f.ctx, g.ID)
			if got.RevokedAt == nil {
				t.Errorf("grant %d is not revoked", g.ID)
			}
		}
		if len(f.revokedGrants) != 5 {
			t.Errorf("the hook heard of %v, want 5 grants", f.revokedGrants)
		}
		if got := actions(f.events(t, "alice")); got != "grant.revoke@revoking,grant.revoke@silent" {
			t.Errorf("alice's events = %s", got)
		}
		if got := actions(f.events(t, "bob")); got != "grant.revoke@revoking,grant.revoke@silent" {
			t.Errorf("bob's events = %s", got)
		}
		evs := f.events(t, "carol")
		var d map[string]any
		if len(evs) != 1 || json.Unmarshal(evs[0].Detail, &d) != nil || d["service_account"] != "team-b/ci" || d["grant_id"] != float64(c1.ID) {
			t.Errorf("carol's events = %s", actions(evs))
		}
	})
}

// Ending a person's sessions ends theirs only, audited.
func TestEndSessions(t *testing.T) {
	backends(t, func(t *testing.T, f *fixture) {
		now := time.Now()
		for _, s := range []store.Session{{ID: "a1", UserID: "alice"}, {ID: "a2", UserID: "alice"}, {ID: "b1", UserID: "bob"}} {
			s.CreatedAt, s.LastSeenAt, s.ExpiresAt = now, now, now.Add(time.Hour)
			if err := f.st.CreateSession(f.ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		n, err := f.svc.EndSessions(f.ctx, actor, "alice")
		if err != nil || n != 2 {
			t.Fatalf("EndSessions = %d %v", n, err)
		}
		if _, err := f.st.GetSession(f.ctx, "b1", now); err != nil {
			t.Errorf("bob's session ended too: %v", err)
		}
		if got := actions(f.events(t, "alice")); got != "admin.sessions_end@" {
			t.Errorf("alice's events = %s", got)
		}
	})
}
