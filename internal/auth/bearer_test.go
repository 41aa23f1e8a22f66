package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

type bearerEnv struct {
	t     *testing.T
	op    *providertest.OP
	clock *testutil.Clock // the Authenticator's; go-oidc's expiry checks read it too
	ring  *crypto.KeyRing
}

func newBearerEnv(t *testing.T) *bearerEnv {
	t.Helper()
	ring, err := crypto.NewKeyRing([]byte(strings.Repeat("k", crypto.KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	return &bearerEnv{t: t, op: providertest.Start(t, ""), clock: testutil.NewClock(time.Now()), ring: ring}
}

func (e *bearerEnv) settings() *settings.Settings {
	return &settings.Settings{OIDCDiscoveryURL: e.op.DiscoveryURL(), OIDCClientID: providertest.ClientID,
		OIDCClientSecret: e.op.ClientSecret, OIDCScope: []string{"openid", "email", "profile"}, ExternalURL: "http://127.0.0.1"}
}

// authenticator builds an Authenticator whose store is empty of methods:
// checking a bearer token or a login cookie must not touch the store (any
// call would panic).
func (e *bearerEnv) authenticator(s *settings.Settings) *Authenticator {
	e.t.Helper()
	a, err := New(Options{Settings: s, Store: &linkStore{}, Keys: e.ring, Now: e.clock.Now})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// opTokens logs the test user in at the OP as the test client and returns
// its real (opaque) access token and ID token.
func (e *bearerEnv) opTokens() (access, idToken, sub string) {
	e.t.Helper()
	ctx := context.Background()
	cfg := &oauth2.Config{ClientID: providertest.ClientID, ClientSecret: e.op.ClientSecret, RedirectURL: e.op.RedirectURL,
		Endpoint: oauth2.Endpoint{AuthURL: e.op.Issuer + "/authorize", TokenURL: e.op.Issuer + "/oauth/token", AuthStyle: oauth2.AuthStyleInHeader},
		Scopes:   []string{"openid", "email", "profile"}}
	q, err := e.op.Login(ctx, cfg.AuthCodeURL(RandomValue(), oauth2.SetAuthURLParam("nonce", "n-0S6_WzA2Mj")))
	if err != nil {
		e.t.Fatal(err)
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"))
	if err != nil {
		e.t.Fatal(err)
	}
	idt, _ := tok.Extra("id_token").(string)
	if idt == "" || strings.Count(tok.AccessToken, ".") == 2 {
		e.t.Fatalf("want an opaque access token and an ID token, got %d-part access token, ID token %t", strings.Count(tok.AccessToken, ".")+1, idt != "")
	}
	var claims struct{ Sub string }
	part := strings.Split(idt, ".")[1]
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil || json.Unmarshal(raw, &claims) != nil {
		e.t.Fatalf("ID token payload: %v", err)
	}
	return tok.AccessToken, idt, claims.Sub
}

// jwt signs claims with the OP's key; exp and iat follow the fake clock.
func (e *bearerEnv) jwt(claims map[string]any) string {
	e.t.Helper()
	now := e.clock.Now()
	all := map[string]any{"iss": e.op.Issuer, "sub": "person-1", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	for k, v := range claims {
		all[k] = v
	}
	tok, err := e.op.SignJWT(all)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func wantRefused(t *testing.T, what string, id *Identity, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("%s: got %+v, %v; want invalid_token", what, id, err)
	}
}

func wantAccepted(t *testing.T, what string, id *Identity, err error, sub string) {
	t.Helper()
	if err != nil || id == nil || id.Subject != sub || id.Method != "bearer" {
		t.Fatalf("%s: got %+v, %v; want subject %q", what, id, err, sub)
	}
}

// JWT bearer tokens: the audience must be ours. A Dex access token (an
// ID-token-shaped JWT, with at_hash) for tokenstore's login client is
// accepted, the same for any other audience refused.
func TestBearerJWTAudience(t *testing.T) {
	e := newBearerEnv(t)
	ctx := context.Background()
	s := e.settings()
	a := e.authenticator(s)

	id, err := a.Bearer(ctx, e.jwt(map[string]any{"aud": providertest.ClientID, "scope": "openid tokens"}))
	wantAccepted(t, "access token for our client", id, err, "person-1")
	if len(id.Scopes) != 2 {
		t.Fatalf("scopes %q", id.Scopes)
	}
	id, err = a.Bearer(ctx, e.jwt(map[string]any{"aud": []string{"other-app"}, "azp": "other-app"}))
	wantRefused(t, "access token of another application", id, err)

	// As Dex issues access tokens: an ID token's claims, at_hash of a
	// random value, and the login's nonce.
	dex := func(aud any) string {
		return e.jwt(map[string]any{"aud": aud, "at_hash": "fkZJ1Jm7u0TmpNdk1ZmVjA", "nonce": "n-0S6_WzA2Mj",
			"email": "jane@example.com", "email_verified": true, "name": "Jane", "sub": "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs"})
	}
	id, err = a.Bearer(ctx, dex(providertest.ClientID))
	wantAccepted(t, "Dex access token for our client", id, err, "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs")
	if id.Email != "jane@example.com" || id.Name != "Jane" {
		t.Fatalf("Dex identity %+v", id)
	}
	id, err = a.Bearer(ctx, dex("example-app"))
	wantRefused(t, "Dex access token for another client", id, err)

	// The OP's real ID token for our client, likewise.
	_, idt, sub := e.opTokens()
	id, err = a.Bearer(ctx, idt)
	wantAccepted(t, "the OP's ID token for our client", id, err, sub)

	// OIDC_AUDIENCE names the API audience: access tokens for it are
	// accepted, ID-token-shaped ones only ever for the login client.
	s2 := e.settings()
	s2.OIDCAudience = []string{"https://tokens.example"}
	a2 := e.authenticator(s2)
	id, err = a2.Bearer(ctx, e.jwt(map[string]any{"aud": []string{"https://tokens.example", "other"}}))
	wantAccepted(t, "access token for OIDC_AUDIENCE", id, err, "person-1")
	id, err = a2.Bearer(ctx, e.jwt(map[string]any{"aud": "https://tokens.example", "at_hash": "x"}))
	wantRefused(t, "ID-token-shaped JWT for OIDC_AUDIENCE", id, err)
	id, err = a2.Bearer(ctx, e.jwt(map[string]any{"aud": providertest.ClientID}))
	wantRefused(t, "access token for the client id when OIDC_AUDIENCE names others", id, err)

	// Expired, another issuer, no audience: refused.
	id, err = a.Bearer(ctx, e.jwt(map[string]any{"aud": providertest.ClientID, "exp": e.clock.Now().Add(-time.Minute).Unix()}))
	wantRefused(t, "expired", id, err)
	id, err = a.Bearer(ctx, e.jwt(map[string]any{"aud": providertest.ClientID, "iss": "https://elsewhere.example"}))
	wantRefused(t, "another issuer", id, err)
	id, err = a.Bearer(ctx, e.jwt(map[string]any{"jti": "no-aud"}))
	wantRefused(t, "no audience", id, err)
}

// Opaque tokens: refused by default; through introspection only when the
// issuer says active and for our client; through userinfo only when
// BEARER_OPAQUE says so.
func TestBearerOpaque(t *testing.T) {
	e := newBearerEnv(t)
	ctx := context.Background()
	access, _, sub := e.opTokens()

	id, err := e.authenticator(e.settings()).Bearer(ctx, access)
	wantRefused(t, "opaque token by default", id, err)
	s := e.settings()
	s.BearerOpaque = OpaqueRefuse
	id, err = e.authenticator(s).Bearer(ctx, access)
	wantRefused(t, "opaque token with BEARER_OPAQUE=refuse", id, err)
	if n := e.op.Hits("/oauth/introspect") + e.op.Hits("/userinfo"); n != 0 {
		t.Fatalf("refusing opaque tokens called the issuer %d times", n)
	}

	s = e.settings()
	s.BearerOpaque = OpaqueIntrospection
	a := e.authenticator(s)
	id, err = a.Bearer(ctx, access)
	wantAccepted(t, "introspected token of our client", id, err, sub)
	if _, err := a.Bearer(ctx, access); err != nil {
		t.Fatal(err)
	}
	if n := e.op.Hits("/oauth/introspect"); n != 1 {
		t.Fatalf("introspection calls %d, want 1 (then cached)", n)
	}
	id, err = a.Bearer(ctx, "not-a-token-the-issuer-knows")
	wantRefused(t, "unknown opaque token", id, err)

	// Another application introspecting our client's token (or, the same
	// thing seen from us, our introspecting another application's): the
	// issuer answers inactive.
	s = e.settings()
	s.BearerOpaque = OpaqueIntrospection
	s.OIDCClientID, s.OIDCClientSecret = providertest.DeviceOnlyClientID, e.op.DeviceOnlySecret
	id, err = e.authenticator(s).Bearer(ctx, access)
	wantRefused(t, "token of another client, introspected", id, err)

	s = e.settings()
	s.BearerOpaque = OpaqueUserinfo
	id, err = e.authenticator(s).Bearer(ctx, access)
	wantAccepted(t, "opaque token by userinfo", id, err, sub)
	if n := e.op.Hits("/userinfo"); n != 1 {
		t.Fatalf("userinfo calls %d, want 1", n)
	}
}

// The introspection answer decides only with our client or audience in it:
// an issuer that answers active=true for any client's token (as Keycloak
// does) does not make another application's token ours.
func TestIntrospectionAudience(t *testing.T) {
	a := &Authenticator{opt: Options{Settings: &settings.Settings{OIDCClientID: "tokenstore"}}}
	for _, c := range []struct {
		answer map[string]any
		ok     bool
	}{
		{map[string]any{"client_id": "tokenstore"}, true},
		{map[string]any{"client_id": "other", "aud": "tokenstore"}, true},
		{map[string]any{"client_id": "other", "aud": []any{"account", "tokenstore"}}, true},
		{map[string]any{"client_id": "other", "aud": []any{"account"}}, false},
		{map[string]any{"client_id": "other"}, false},
		{map[string]any{}, false},
		{map[string]any{"aud": ""}, false},
	} {
		if got := a.introspectionForUs(c.answer); got != c.ok {
			t.Errorf("%v: accepted %t, want %t", c.answer, got, c.ok)
		}
	}
}

// A refused token is refused again without a call to the issuer; made-up
// key ids cause at most one JWKS fetch per jwksMinRefetch; past
// BEARER_VERIFY_RATE, tokens that need a call are answered busy (503),
// while tokens already checked are still served.
func TestBearerCosts(t *testing.T) {
	e := newBearerEnv(t)
	ctx := context.Background()

	s := e.settings()
	s.BearerOpaque = OpaqueUserinfo
	a := e.authenticator(s)
	for range 5 {
		id, err := a.Bearer(ctx, "bad-opaque-token")
		wantRefused(t, "bad opaque token", id, err)
	}
	if n := e.op.Hits("/userinfo"); n != 1 {
		t.Fatalf("5 tries of one bad token: %d userinfo calls, want 1", n)
	}
	e.clock.Add(refusalTTL)
	_, _ = a.Bearer(ctx, "bad-opaque-token")
	if n := e.op.Hits("/userinfo"); n != 2 {
		t.Fatalf("after the refusal lapsed: %d userinfo calls, want 2", n)
	}

	// JWTs signed by a key the issuer does not have, each with a new kid.
	// (An algorithm the issuer does not advertise is refused before any
	// key is looked for.)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forge := func(kid string) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", kid))
		if err != nil {
			t.Fatal(err)
		}
		now := e.clock.Now()
		payload, _ := json.Marshal(map[string]any{"iss": e.op.Issuer, "sub": "x", "aud": providertest.ClientID, "exp": now.Add(time.Hour).Unix()})
		jws, err := signer.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := jws.CompactSerialize()
		return out
	}
	b := e.authenticator(e.settings())
	keysBefore := e.op.Hits("/keys")
	for i := range 20 {
		id, err := b.Bearer(ctx, forge("kid-"+RandomValue()[:8]+string(rune('a'+i))))
		wantRefused(t, "unknown kid", id, err)
	}
	if n := e.op.Hits("/keys") - keysBefore; n != 1 {
		t.Fatalf("20 unknown kids: %d JWKS fetches, want 1", n)
	}
	// A genuine token still verifies from the keys fetched.
	id, err := b.Bearer(ctx, e.jwt(map[string]any{"aud": providertest.ClientID}))
	wantAccepted(t, "genuine token", id, err, "person-1")
	if n := e.op.Hits("/keys") - keysBefore; n != 1 {
		t.Fatalf("JWKS fetches %d, want still 1", n)
	}
	e.clock.Add(jwksMinRefetch)
	_, _ = b.Bearer(ctx, forge("later"))
	if n := e.op.Hits("/keys") - keysBefore; n != 2 {
		t.Fatalf("after jwksMinRefetch: %d JWKS fetches, want 2", n)
	}

	// A budget of one call (0.01/s, burst 1): the first token checked by
	// userinfo uses it, the next new token is busy, a cached one is served.
	access, _, sub := e.opTokens()
	s = e.settings()
	s.BearerOpaque = OpaqueUserinfo
	s.BearerVerifyRate = 0.01
	c := e.authenticator(s)
	id, err = c.Bearer(ctx, access)
	wantAccepted(t, "first token", id, err, sub)
	userinfo := e.op.Hits("/userinfo")
	if _, err := c.Bearer(ctx, "another-opaque-token"); !errors.Is(err, ErrVerifyBusy) {
		t.Fatalf("past the budget: %v, want bearer_verification_busy", err)
	} else if f := ErrVerifyBusy; f.Status != http.StatusServiceUnavailable || f.OAuth != "temporarily_unavailable" {
		t.Fatalf("busy answer %+v", f)
	}
	if n := e.op.Hits("/userinfo"); n != userinfo {
		t.Fatalf("a busy refusal called userinfo")
	}
	id, err = c.Bearer(ctx, access)
	wantAccepted(t, "cached token past the budget", id, err, sub)
}

// Bearer checks never read the store.
var _ store.Store = (*linkStore)(nil)
