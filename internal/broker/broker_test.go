package broker

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
)

// fixture: a real OP as provider "p", a migrated PostgreSQL database, a
// broker with a movable clock.
type fixture struct {
	ctx   context.Context
	op    *providertest.OP
	prov  *providers.Provider
	st    store.Store
	b     *Broker
	now   atomic.Pointer[time.Time]
	tick  func(d time.Duration)
	codes func() *oauth2.Token
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{ctx: ctx}
	f.op = providertest.Start(t, "http://127.0.0.1/cb")
	p, err := oidc.NewProvider(ctx, f.op.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	ep := p.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	f.prov = &providers.Provider{ID: "p", ClientID: providertest.ClientID, ClientSecret: f.op.ClientSecret,
		AuthMethod: providers.AuthMethodClientSecretBasic, Endpoint: ep, Issuer: f.op.Issuer,
		Scopes: []string{"openid", "offline_access"}, PKCE: providers.PKCES256, Version: "1"}
	reg := providers.NewRegistry()
	reg.Set(f.prov)
	reg.MarkReady()
	dbURL := pgtest.NewDatabase(t)
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
	key, _ := crypto.GenerateKey()
	keys, _ := crypto.ParseKeyRing(key)
	start := time.Now()
	f.now.Store(&start)
	f.tick = func(d time.Duration) { n := f.now.Load().Add(d); f.now.Store(&n) }
	if f.b, err = New(Options{Store: f.st, Keys: keys, Providers: reg, Now: func() time.Time { return *f.now.Load() }}); err != nil {
		t.Fatal(err)
	}
	// codes runs a real authorization code flow at the OP.
	f.codes = func() *oauth2.Token {
		cfg := f.prov.OAuth2Config(f.op.RedirectURL)
		v := oauth2.GenerateVerifier()
		q, err := f.op.Login(ctx, cfg.AuthCodeURL("s", oauth2.S256ChallengeOption(v)))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		if tok.RefreshToken == "" {
			t.Fatal("the OP gave no refresh token")
		}
		return tok
	}
	return f
}

// A provider that gave no expires_in: the token is served for
// UnknownLifetime after it was obtained, then refreshed.
func TestUnknownExpiry(t *testing.T) {
	f := newFixture(t)
	tok := f.codes()
	noExpiry := &oauth2.Token{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: "Bearer"}
	if err := f.b.Link(f.ctx, "u", "p", "", "test", noExpiry); err != nil {
		t.Fatal(err)
	}
	got, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p"})
	if err != nil || got.AccessToken != tok.AccessToken || got.ExpiryKnown || got.Expiry.IsZero() {
		t.Fatalf("token without expiry: %+v %v", got.ExpiryKnown, err)
	}
	f.tick(DefaultUnknownLifetime)
	got2, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p"})
	if err != nil || got2.AccessToken == tok.AccessToken || !got2.ExpiryKnown {
		t.Fatalf("after the assumed lifetime: %v", err)
	}
}

// A token without expiry and without refresh token (GitHub-style) is
// served as long as it is stored, forced or not.
func TestNonExpiringWithoutRefreshToken(t *testing.T) {
	f := newFixture(t)
	if err := f.b.Link(f.ctx, "u", "p", "", "test", &oauth2.Token{AccessToken: "static-token-value", TokenType: "bearer"}); err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		got, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p", Force: force})
		if err != nil || got.AccessToken != "static-token-value" || !got.Expiry.IsZero() {
			t.Fatalf("force=%v: %+v %v", force, got.Expiry, err)
		}
	}
	// An expiring one without refresh token needs re-authorization once expired.
	exp := time.Now().Add(time.Minute)
	if err := f.b.Link(f.ctx, "u", "p", "", "test", &oauth2.Token{AccessToken: "short", Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	f.tick(2 * time.Minute)
	var re *ReauthError
	if _, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p"}); !errors.As(err, &re) || re.Reason != "no_refresh_token" {
		t.Fatalf("expired without refresh token: %v", err)
	}
}

func TestUnknownProviderAndNotLinked(t *testing.T) {
	f := newFixture(t)
	if _, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "nope"}); !errors.Is(err, ErrUnknownProvider) {
		t.Fatal(err)
	}
	if _, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p"}); !errors.Is(err, ErrNotLinked) {
		t.Fatal(err)
	}
	res, err := f.b.Revoke(f.ctx, "u", "p", "test")
	if err != nil || res.Existed {
		t.Fatalf("revoking nothing: %+v %v", res, err)
	}
}

// The classification of provider answers that decides between
// needs_reauth, a rejected client and provider_unavailable.
func TestClassify(t *testing.T) {
	resp := func(code int) *http.Response { return &http.Response{StatusCode: code} }
	const reauth, rejected, unavailable = "reauth", "rejected", "unavailable"
	for _, c := range []struct {
		err  error
		want string
	}{
		{&oauth2.RetrieveError{Response: resp(400), ErrorCode: "invalid_grant"}, reauth},
		// One widely used provider answers a replayed rotated token so.
		{&oauth2.RetrieveError{Response: resp(400), ErrorCode: "invalid_request"}, reauth},
		{&oauth2.RetrieveError{Response: resp(401), ErrorCode: "invalid_client"}, rejected},
		{&oauth2.RetrieveError{Response: resp(400), ErrorCode: "unauthorized_client"}, rejected},
		{&oauth2.RetrieveError{Response: resp(400), ErrorCode: "unsupported_grant_type"}, rejected},
		{&oauth2.RetrieveError{Response: resp(400), ErrorCode: "invalid_scope"}, rejected},
		{&oauth2.RetrieveError{Response: resp(503)}, unavailable},
		{&oauth2.RetrieveError{Response: resp(500), ErrorCode: "invalid_grant"}, unavailable},
		{&oauth2.RetrieveError{Response: resp(502), ErrorCode: "invalid_client"}, unavailable},
		{&oauth2.RetrieveError{Response: resp(429), ErrorCode: "unauthorized_client"}, unavailable},
		{&url.Error{Op: "Post", URL: "http://x/token?secret=1", Err: errors.New("connection refused")}, unavailable},
	} {
		err := classify("p", c.err)
		var (
			gr *grantRefused
			cr *providers.ClientRejectedError
			ue *UnavailableError
		)
		got := map[bool]string{true: reauth}[errors.As(err, &gr)]
		if errors.As(err, &cr) {
			got = rejected
			if cr.Provider != "p" || cr.Grant != providers.GrantRefreshToken || cr.Code != c.err.(*oauth2.RetrieveError).ErrorCode {
				t.Errorf("%v: %+v", c.err, cr)
			}
		}
		if errors.As(err, &ue) {
			got = unavailable
		}
		if got != c.want {
			t.Errorf("%v classified as %T, want %s", c.err, err, c.want)
		}
		if ue != nil && strings.Contains(ue.Error(), "secret=1") {
			t.Errorf("the query string leaked into %q", ue.Error())
		}
	}
}

// TestClientRejectedKeepsCredential: a provider that refuses tokenstore's
// client on a refresh leaves the credential active: it is not the
// person's fault, and linking again would fail the same way. The real OP
// answers a wrong client secret (a rotation gone wrong) with
// invalid_client, and a client not allowed the refresh-token grant (the
// TokenProvider names the wrong registration) with unauthorized_client,
// which tokenstore used to take for a dead refresh token. Each refusal is
// a ClientRejectedError naming the code, counted as client_rejected, and
// sets the provider's client-rejected verdict (for its Ready condition)
// without making the token endpoint failing; with the right client again
// the same credential refreshes.
func TestClientRejectedKeepsCredential(t *testing.T) {
	f := newFixture(t)
	obs := &recordingObserver{}
	f.b.opt.Observer = obs
	if err := f.b.Link(f.ctx, "u", "p", "", "test", f.codes()); err != nil {
		t.Fatal(err)
	}
	reg := f.b.opt.Providers.(*providers.Registry)
	h := f.b.endpoints
	for i, tc := range []struct {
		clientID, secret, code string
	}{
		{providertest.ClientID, "not-the-secret", "invalid_client"},
		{providertest.DeviceOnlyClientID, f.op.DeviceOnlySecret, "unauthorized_client"},
	} {
		bad := *f.prov
		bad.ClientID, bad.ClientSecret, bad.Version = tc.clientID, tc.secret, strconv.Itoa(10+i)
		reg.Set(&bad)

		var cr *providers.ClientRejectedError
		_, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p", Force: true})
		if !errors.As(err, &cr) || cr.Code != tc.code || cr.Grant != providers.GrantRefreshToken {
			t.Fatalf("refresh as %s: %v, want the client rejected with %s", tc.clientID, err, tc.code)
		}
		if strings.Contains(err.Error(), tc.secret) {
			t.Fatalf("the error %q carries the client secret", err)
		}
		c, err := f.st.GetCredential(f.ctx, "u", "p")
		if err != nil || c.State != store.StateActive {
			t.Fatalf("credential after %s: state %q, %v; want active", tc.code, c.State, err)
		}
		if obs.last() != "client_rejected" {
			t.Errorf("refresh outcome %q, want client_rejected", obs.last())
		}
		r, rejected := h.Rejection("p")
		if !rejected || r.Grant != providers.GrantRefreshToken || r.Code != tc.code {
			t.Fatalf("client-rejected verdict: %+v %v", r, rejected)
		}
		if _, failing := h.Failing("p"); failing {
			t.Error("a refused client made the token endpoint failing")
		}
	}

	right := *f.prov
	right.Version = "3"
	reg.Set(&right)
	if _, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p", Force: true}); err != nil {
		t.Fatalf("refresh with the right client again: %v", err)
	}
	if _, rejected := h.Rejection("p"); rejected {
		t.Error("still rejected after a refresh succeeded")
	}
}

// recordingObserver keeps the outcome of each refresh.
type recordingObserver struct {
	mu       sync.Mutex
	outcomes []string
}

func (o *recordingObserver) RefreshObserved(_, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.outcomes = append(o.outcomes, outcome)
}

func (o *recordingObserver) TokenServed(string, bool) {}

func (o *recordingObserver) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.outcomes) == 0 {
		return ""
	}
	return o.outcomes[len(o.outcomes)-1]
}

// TestTokenEndpointHealthReported: the broker tells the registry how each
// refresh-token grant went, so that a token endpoint that keeps failing
// shows in the provider's Ready condition (controllers.StatusReconciler)
// even while discovery answers.
func TestTokenEndpointHealthReported(t *testing.T) {
	f := newFixture(t)
	tok := f.codes()
	if err := f.b.Link(f.ctx, "u", "p", "", "test", tok); err != nil {
		t.Fatal(err)
	}
	h := f.b.endpoints
	if h == nil {
		t.Fatal("the broker does not report to the registry's token-endpoint health")
	}
	f.op.Stop()
	for i := 1; i <= providers.DefaultFailThreshold; i++ {
		f.tick(24 * time.Hour)
		var ue *UnavailableError
		if _, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p"}); !errors.As(err, &ue) {
			t.Fatalf("refresh %d with the OP stopped: %v", i, err)
		}
		if _, failing := h.Failing("p"); failing != (i == providers.DefaultFailThreshold) {
			t.Fatalf("after %d failed refreshes: failing %v", i, failing)
		}
	}
	v, _ := h.Failing("p")
	if !strings.Contains(v.Reason, "refused") || strings.Contains(v.Reason, tok.RefreshToken) || strings.Contains(v.Reason, f.op.ClientSecret) {
		t.Fatalf("verdict reason %q: want the connection refused, and never a token or secret", v.Reason)
	}
	select {
	case id := <-h.Changes():
		if id != "p" {
			t.Fatalf("announced %q", id)
		}
	default:
		t.Fatal("the failing verdict was not announced")
	}

	if err := f.op.Restart(); err != nil {
		t.Fatal(err)
	}
	f.tick(24 * time.Hour)
	if _, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p"}); err != nil {
		t.Fatalf("refresh with the OP back: %v", err)
	}
	if _, failing := h.Failing("p"); failing {
		t.Fatal("still failing after a refresh succeeded")
	}

	// A refused grant is a working endpoint's answer: an unknown refresh
	// token, refused three times at the OP, does not make the endpoint
	// failing. Linked again before each try: a refused one leaves the
	// credential needing re-authorization, which the broker answers
	// without calling the provider.
	for range providers.DefaultFailThreshold {
		if err := f.b.Link(f.ctx, "v", "p", "", "test", &oauth2.Token{AccessToken: "a", RefreshToken: "not-a-refresh-token-of-the-op", Expiry: time.Now().Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
		var re *ReauthError
		if _, err := f.b.Token(f.ctx, Request{UserID: "v", Provider: "p", Force: true}); !errors.As(err, &re) || re.Reason != "invalid_grant" {
			t.Fatalf("unknown refresh token: %v", err)
		}
	}
	if _, failing := h.Failing("p"); failing {
		t.Fatal("refused grants made the token endpoint failing")
	}
}
