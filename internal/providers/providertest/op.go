// Package providertest runs a real OpenID Provider in-process for tests:
// zitadel's op package with its example in-memory storage, served over
// HTTP on 127.0.0.1. It can be stopped and started again on the same
// address (so its issuer stays the same) to test outages, and it can log a
// test user in without a browser to obtain real codes and ID tokens.
//
// Only tests import this package.
package providertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Fixed credentials of the test client and user. The secret is a test
// value, never a real one.
const (
	ClientID     = "tokenstore-test"
	Username     = "test-user2"
	UserPassword = "verysecure"
	// DeviceOnlyClientID is a second client, allowed the device code
	// grant only: the OP answers its refresh-token requests with
	// unauthorized_client (a client not allowed the grant), and its
	// client-credentials requests with invalid_client (not a service
	// user), as a provider refuses a misconfigured client.
	DeviceOnlyClientID = "tokenstore-device-only"
)

// OP is a running OpenID Provider.
type OP struct {
	// Issuer is http://127.0.0.1:PORT, stable across Stop/Start.
	Issuer string
	// ClientSecret of ClientID, random per OP.
	ClientSecret string
	// DeviceOnlySecret of DeviceOnlyClientID, random per OP.
	DeviceOnlySecret string
	// RedirectURL registered for ClientID.
	RedirectURL string

	storage  *storage.Storage
	provider *op.Provider
	handler  http.Handler
	addr     string

	mu  sync.Mutex
	srv *httptest.Server

	discoveryHits atomic.Int64
	hits          sync.Map // path → *atomic.Int64
}

// Start starts an OP with one web client (ClientID, a random secret,
// redirect URL redirectURL, or a default one if empty) and a device-only
// client (DeviceOnlyClientID) and stops it when the test ends.
func Start(tb testing.TB, redirectURL string) *OP {
	tb.Helper()
	o, err := New(redirectURL)
	if err != nil {
		tb.Fatalf("starting the test OpenID Provider: %v", err)
	}
	tb.Cleanup(o.Stop)
	return o
}

// New starts an OP; the caller must Stop it.
func New(redirectURL string) (*OP, error) {
	if redirectURL == "" {
		redirectURL = "http://127.0.0.1/callback"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the test OP: %w", err)
	}
	o := &OP{
		Issuer:           "http://" + ln.Addr().String(),
		ClientSecret:     rand.Text(),
		DeviceOnlySecret: rand.Text(),
		RedirectURL:      redirectURL,
		addr:             ln.Addr().String(),
	}
	// NewStorageWithClients, not RegisterClients: the latter writes a
	// package-global map shared by every OP in the process.
	o.storage = storage.NewStorageWithClients(storage.NewUserStore(o.Issuer), map[string]*storage.Client{
		ClientID:           storage.WebClient(ClientID, o.ClientSecret, redirectURL),
		DeviceOnlyClientID: storage.DeviceClient(DeviceOnlyClientID, o.DeviceOnlySecret),
	})
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		ln.Close()
		return nil, fmt.Errorf("generating the OP's crypto key: %w", err)
	}
	// The same settings as zitadel's example server, without its
	// SetupServer, which replaces the process-wide default logger.
	o.provider, err = op.NewProvider(&op.Config{
		CryptoKey:             key,
		CryptoKeyId:           "key1",
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedUILocales:    []language.Tag{language.English},
	}, o.storage, op.StaticIssuer(o.Issuer), op.WithAllowInsecure())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("creating the test OP: %w", err)
	}
	// Count discovery requests so tests can see what a cache saved.
	o.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" {
			o.discoveryHits.Add(1)
		}
		n, _ := o.hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		o.provider.ServeHTTP(w, r)
	})
	o.serve(ln)
	return o, nil
}

func (o *OP) serve(ln net.Listener) {
	srv := httptest.NewUnstartedServer(o.handler)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	o.srv = srv
}

// DiscoveryURL is the full .well-known/openid-configuration URL.
func (o *OP) DiscoveryURL() string {
	return o.Issuer + "/.well-known/openid-configuration"
}

// DiscoveryHits is how many times the discovery document was requested.
func (o *OP) DiscoveryHits() int64 { return o.discoveryHits.Load() }

// Hits is how many requests the OP received at path (such as "/keys",
// "/oauth/introspect" or "/userinfo").
func (o *OP) Hits(path string) int64 {
	if n, ok := o.hits.Load(path); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// SignJWT signs claims with the OP's own signing key (the one its JWKS
// serves), so tests can present JWTs shaped as other issuers make them
// (a Dex access token, a token for another audience) that the OP itself
// would not mint.
func (o *OP) SignJWT(claims map[string]any) (string, error) {
	k, err := o.storage.SigningKey(context.Background())
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.SignatureAlgorithm(), Key: k.Key()},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), k.ID()))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Running reports whether the OP is serving.
func (o *OP) Running() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.srv != nil
}

// Stop stops serving; connections are refused until Restart. Safe to call
// twice.
func (o *OP) Stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.srv == nil {
		return
	}
	// CloseClientConnections first: Close alone waits for idle keep-alive
	// connections of clients that may never come back.
	o.srv.CloseClientConnections()
	o.srv.Close()
	o.srv = nil
}

// Restart serves again on the same address, so the issuer is unchanged.
// The port may have been taken meanwhile; it retries for a few seconds.
func (o *OP) Restart() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.srv != nil {
		return nil
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", o.addr); err == nil {
			o.serve(ln)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("listening again on %s: %w", o.addr, err)
}

// Login plays the user's part of an authorization code flow without a
// browser: it opens authURL (as built by oauth2.Config.AuthCodeURL for
// ClientID), checks the test user's password the way the example login page
// would, and returns the query of the final redirect to the client's
// redirect URL (code and state, or error).
func (o *OP) Login(ctx context.Context, authURL string) (url.Values, error) {
	return o.LoginAs(ctx, authURL, Username)
}

// OtherUsername is the example user store's second user (subject "id1";
// Username's is "id2"), for tests that need a person whose subject at this
// OP differs from Username's.
func (o *OP) OtherUsername() string {
	u, _ := url.Parse(o.Issuer)
	return "test-user@" + u.Hostname()
}

// LoginAs is Login as another user of the example user store (Username or
// OtherUsername; both have UserPassword).
func (o *OP) LoginAs(ctx context.Context, authURL, username string) (url.Values, error) {
	client := &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	loc, err := redirectOf(ctx, client, authURL)
	if err != nil {
		return nil, fmt.Errorf("authorization request: %w", err)
	}
	if strings.HasPrefix(loc.String(), o.RedirectURL) {
		return loc.Query(), nil // an error answer straight away
	}
	id := loc.Query().Get("authRequestID")
	if id == "" {
		return nil, fmt.Errorf("authorization request redirected to %s, not to the login page", loc)
	}
	if err := o.storage.CheckUsernamePassword(username, UserPassword, id); err != nil {
		return nil, fmt.Errorf("logging the test user in: %w", err)
	}
	cb := op.AuthCallbackURL(o.provider)(op.ContextWithIssuer(ctx, o.Issuer), id)
	loc, err = redirectOf(ctx, client, cb)
	if err != nil {
		return nil, fmt.Errorf("login callback: %w", err)
	}
	if !strings.HasPrefix(loc.String(), o.RedirectURL) {
		return nil, fmt.Errorf("login callback redirected to %s, not to %s", loc, o.RedirectURL)
	}
	return loc.Query(), nil
}

func redirectOf(ctx context.Context, client *http.Client, u string) (*url.URL, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound && resp.StatusCode != http.StatusSeeOther {
		return nil, fmt.Errorf("expected a redirect, got %s", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, errors.New("redirect without a Location")
	}
	return loc, nil
}

// GrantType returns the grant_type of a POST to a token endpoint passing
// through a test proxy (empty for anything else), leaving the body intact
// for forwarding. Tests use it to count or hold refresh and
// client-credentials grants on their way to the real OP.
func GrantType(r *http.Request) string {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/token") || r.Body == nil {
		return ""
	}
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	if err != nil {
		return ""
	}
	f, err := url.ParseQuery(string(body))
	if err != nil {
		return ""
	}
	return f.Get("grant_type")
}
