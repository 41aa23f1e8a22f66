package providers_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

func TestDiscoverByIssuerAndURL(t *testing.T) {
	op := providertest.Start(t, "")
	d := providers.NewDiscoverer(nil, providers.DiscovererOptions{})
	ctx := context.Background()

	doc, err := d.Discover(ctx, "", op.Issuer)
	if err != nil {
		t.Fatalf("discover by issuer: %v", err)
	}
	if doc.Issuer != op.Issuer || !strings.HasPrefix(doc.TokenEndpoint, op.Issuer) || doc.JWKSURI == "" {
		t.Fatalf("unexpected document: %+v", doc)
	}
	if doc.RevocationEndpoint == "" || doc.UserinfoEndpoint == "" {
		t.Fatalf("revocation/userinfo endpoints missing: %+v", doc)
	}
	if _, err := d.Discover(ctx, op.DiscoveryURL(), ""); err != nil {
		t.Fatalf("discover by URL: %v", err)
	}
	if hits := op.DiscoveryHits(); hits != 1 {
		t.Fatalf("discovery fetched %d times, want 1 (cached by URL)", hits)
	}
}

func TestDiscoverIssuerMismatch(t *testing.T) {
	op := providertest.Start(t, "")
	d := providers.NewDiscoverer(nil, providers.DiscovererOptions{})
	ctx := context.Background()

	// A trailing slash is a different issuer: ID tokens would not match.
	_, err := d.Discover(ctx, "", op.Issuer+"/")
	var mm *providers.IssuerMismatchError
	if !errors.As(err, &mm) || mm.Got != op.Issuer {
		t.Fatalf("want an issuer mismatch, got %v", err)
	}
	// The same OP reached by another host name names its own issuer.
	other := strings.Replace(op.DiscoveryURL(), "127.0.0.1", "localhost", 1)
	_, err = d.Discover(ctx, other, "")
	if !errors.As(err, &mm) || mm.Expected != strings.Replace(op.Issuer, "127.0.0.1", "localhost", 1) {
		t.Fatalf("want an issuer mismatch for %s, got %v", other, err)
	}
}

func TestDiscoverCacheStaleAndRecovery(t *testing.T) {
	op := providertest.Start(t, "")
	clk := testutil.NewClock(time.Now())
	d := providers.NewDiscoverer(nil, providers.DiscovererOptions{TTL: time.Minute, FailureTTL: 5 * time.Second, Now: clk.Now})
	ctx := context.Background()

	good, err := d.Discover(ctx, "", op.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	op.Stop()
	// Within the TTL the cache answers although the OP is down.
	if _, err := d.Discover(ctx, "", op.Issuer); err != nil {
		t.Fatalf("cached document not used: %v", err)
	}
	clk.Add(2 * time.Minute)
	doc, err := d.Discover(ctx, "", op.Issuer)
	var de *providers.DiscoveryError
	if !errors.As(err, &de) || de.Failures != 1 || de.LastGood.IsZero() {
		t.Fatalf("want a DiscoveryError after one failure, got %v", err)
	}
	if doc != good {
		t.Fatal("the last good document was not returned with the failure")
	}
	// A failure is remembered for FailureTTL: no new attempt, same count.
	if _, err := d.Discover(ctx, "", op.Issuer); !errors.As(err, &de) || de.Failures != 1 {
		t.Fatalf("failure not cached: %v", err)
	}
	clk.Add(6 * time.Second)
	if _, err := d.Discover(ctx, "", op.Issuer); !errors.As(err, &de) || de.Failures != 2 {
		t.Fatalf("second failure not counted: %v", err)
	}
	if err := op.Restart(); err != nil {
		t.Fatal(err)
	}
	clk.Add(6 * time.Second)
	doc, err = d.Discover(ctx, "", op.Issuer)
	if err != nil || doc == good {
		t.Fatalf("no recovery after restart: %v", err)
	}
}

func TestFetchRejectsWhatIsNotADiscoveryDocument(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<html>login</html>"))
	})
	mux.HandleFunc("/partial", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"issuer":"x","authorization_endpoint":"http://x/a"}`))
	})
	mux.HandleFunc("/notjson", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`nope`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]string{
		"/html":    "HTML",
		"/partial": "lacks token_endpoint, jwks_uri",
		"/notjson": "decoding",
		"/missing": "404",
	} {
		_, err := providers.Fetch(context.Background(), srv.Client(), srv.URL+path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an error containing %q, got %v", path, want, err)
		}
	}
}

// TestProviderWorksAgainstRealOP builds a Provider from discovery by hand
// and runs a full authorization code flow with PKCE against the OP, then
// verifies the ID token: the values the registry holds are usable as is.
func TestProviderWorksAgainstRealOP(t *testing.T) {
	op := providertest.Start(t, "http://127.0.0.1/callback")
	d := providers.NewDiscoverer(nil, providers.DiscovererOptions{})
	ctx := context.Background()
	doc, err := d.Discover(ctx, "", op.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	oidcProvider, verifier := d.NewOIDC(oidc.ProviderConfig{
		IssuerURL: doc.Issuer, AuthURL: doc.AuthorizationEndpoint, TokenURL: doc.TokenEndpoint,
		UserInfoURL: doc.UserinfoEndpoint, JWKSURL: doc.JWKSURI, Algorithms: doc.IDTokenSigningAlgValuesSupported,
	}, providertest.ClientID)
	p := &providers.Provider{
		ID: "test", ClientID: providertest.ClientID, ClientSecret: op.ClientSecret,
		AuthMethod: providers.AuthMethodClientSecretBasic,
		Endpoint:   oauth2.Endpoint{AuthURL: doc.AuthorizationEndpoint, TokenURL: doc.TokenEndpoint, AuthStyle: oauth2.AuthStyleInHeader},
		Issuer:     doc.Issuer, Verifier: verifier, OIDC: oidcProvider,
		Scopes: []string{"openid", "email", "offline_access"}, PKCE: providers.PKCES256,
	}
	cfg := p.OAuth2Config(op.RedirectURL)
	verifierStr := oauth2.GenerateVerifier()
	nonce := rand.Text()
	authURL := cfg.AuthCodeURL("state-1", append(p.AuthCodeOptions(), oauth2.S256ChallengeOption(verifierStr), oidc.Nonce(nonce))...)
	q, err := op.Login(ctx, authURL)
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("state") != "state-1" || q.Get("code") == "" {
		t.Fatalf("unexpected redirect query %v", q)
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifierStr))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := p.Verifier.Verify(ctx, raw)
	if err != nil {
		t.Fatalf("verifying the ID token: %v", err)
	}
	if idt.Nonce != nonce {
		t.Fatal("nonce not carried")
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	// A second Verifier for the same JWKS URL shares the fetched keys.
	if d.KeySet(doc.JWKSURI) != d.KeySet(doc.JWKSURI) {
		t.Fatal("key sets are not shared per URL")
	}
}
