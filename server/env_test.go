package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

// tokenProvider is one test token provider: a real OP behind a counting
// reverse proxy on its token endpoint (instrumentation, not a fake: every
// request goes to the OP and its answer comes back unchanged).
type tokenProvider struct {
	id       string
	op       *providertest.OP
	proxy    *httptest.Server
	refresh  atomic.Int64 // refresh_token grant requests that reached the proxy
	provider *providers.Provider
}

// env is one whole deployment: a database, a login OP, two token provider
// OPs, and one or more tokenstore instances sharing the database.
type env struct {
	t         testing.TB
	ctx       context.Context
	dbURL     string
	ext       string
	keys      *crypto.KeyRing
	settings  *settings.Settings
	login     *providertest.OP
	providers map[string]*tokenProvider
	logs      *testutil.SyncBuffer
	instances []*instance
	// seen collects every secret value the test saw, for the log check.
	seenMu sync.Mutex
	seen   map[string]string
}

type instance struct {
	srv   *Server
	http  *httptest.Server
	store store.Store
	reg   *providers.Registry
	url   string
	// metricsURL serves the instance's /metrics, apart from the API as
	// METRICS_ADDRESS does.
	metricsURL string
}

func (e *env) see(kind, v string) {
	if v == "" {
		return
	}
	e.seenMu.Lock()
	defer e.seenMu.Unlock()
	e.seen[v] = kind
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, logs: &testutil.SyncBuffer{}, providers: map[string]*tokenProvider{}, seen: map[string]string{}}
	e.dbURL = pgtest.NewDatabase(t)
	m, err := storeopen.NewMigrator(e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	m.Close()
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if e.keys, err = crypto.ParseKeyRing(key); err != nil {
		t.Fatal(err)
	}
	// The first instance's listener fixes EXTERNAL_URL before the OPs start,
	// as their registered redirect URIs are built from it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.ext = "http://" + ln.Addr().String()
	e.login = providertest.Start(t, e.ext+"/api/oidc/callback")
	for _, id := range []string{"alpha", "beta"} {
		e.addProvider(id)
	}
	e.settings = &settings.Settings{
		ExternalURL: e.ext, OIDCDiscoveryURL: e.login.DiscoveryURL(), OIDCClientID: providertest.ClientID,
		OIDCClientSecret: e.login.ClientSecret, OIDCScope: []string{"openid", "email", "profile"},
		SessionCookieName: "tokenstore_session", SessionCookieSecure: "auto", SessionCookieSameSite: "Lax",
		SessionLifetime: 24 * time.Hour, SessionIdleTimeout: time.Hour,
		CORSOrigins: []string{"https://app.example"}, CORSAllowHeaders: []string{"Authorization", "Content-Type"},
		CORSMaxAge: 10 * time.Minute, CORSSupportsCredentials: true,
		AllowedReturnURLs: []string{"https://app.example"},
		// The test OP's access tokens are opaque; it introspects them for
		// the client they were issued to, which is ours.
		BearerOpaque: auth.OpaqueIntrospection,
	}
	e.startInstance(ln)
	return e
}

func (e *env) addProvider(id string) {
	t := e.t
	tp := &tokenProvider{id: id}
	tp.op = providertest.Start(t, e.ext+"/api/v1.0/"+id+"/redirect_uri")
	target, _ := url.Parse(tp.op.Issuer)
	rp := httputil.NewSingleHostReverseProxy(target)
	tp.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if providertest.GrantType(r) == "refresh_token" {
			tp.refresh.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(tp.proxy.Close)
	op, err := oidc.NewProvider(e.ctx, tp.op.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Revocation string `json:"revocation_endpoint"`
		Userinfo   string `json:"userinfo_endpoint"`
	}
	if err := op.Claims(&doc); err != nil {
		t.Fatal(err)
	}
	ep := op.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	tu, _ := url.Parse(ep.TokenURL)
	ep.TokenURL = tp.proxy.URL + tu.Path
	tp.provider = &providers.Provider{
		ID: id, Source: "test", ClientID: providertest.ClientID, ClientSecret: tp.op.ClientSecret,
		AuthMethod: providers.AuthMethodClientSecretBasic, Endpoint: ep, RevocationURL: doc.Revocation,
		UserinfoURL: doc.Userinfo, Issuer: tp.op.Issuer, OIDC: op,
		Verifier: op.Verifier(&oidc.Config{ClientID: providertest.ClientID}),
		Scopes:   []string{"openid", "email", "offline_access"}, PKCE: providers.PKCES256,
		Metadata: providers.Metadata{Name: strings.ToUpper(id), Description: "test provider " + id},
		Version:  "1",
	}
	e.providers[id] = tp
}

// startInstance starts one more tokenstore process on the shared database:
// its own store (connection pool), registry and server.
func (e *env) startInstance(ln net.Listener) *instance {
	return e.serve(ln, Options{}, nil)
}

// serve starts one more tokenstore instance on the shared database: its own
// store (connection pool; wrap, when not nil, wraps it, e.g. to count
// reads), a registry of the env's providers plus extra, and a server from
// o with the env's settings and keys filled in, and its logger unless o
// has one. ln, when not nil,
// is the listener to serve on.
func (e *env) serve(ln net.Listener, o Options, wrap func(store.Store) store.Store, extra ...*providers.Provider) *instance {
	t := e.t
	raw, err := storeopen.Open(e.ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	var st store.Store = raw
	if wrap != nil {
		st = wrap(st)
	}
	reg := providers.NewRegistry()
	for _, tp := range e.providers {
		reg.Set(tp.provider)
	}
	for _, p := range extra {
		reg.Set(p)
	}
	reg.MarkReady()
	o.Settings, o.Store, o.Keys, o.Providers = e.settings, st, e.keys, reg
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	// Stopped as serve stops it, after the HTTP server (cleanups run last
	// first) and before the store closes: the disclosure ledger's flush
	// loop, which runs while it holds a key (an hour for a token of unknown
	// expiry), ends with the test, and its last summaries are written.
	t.Cleanup(srv.DrainAudit)
	hs := httptest.NewUnstartedServer(srv.Handler())
	if ln != nil {
		hs.Listener.Close()
		hs.Listener = ln
	}
	hs.Start()
	t.Cleanup(hs.Close)
	ms := httptest.NewServer(srv.MetricsHandler())
	t.Cleanup(ms.Close)
	in := &instance{srv: srv, http: hs, store: st, reg: reg, url: hs.URL, metricsURL: ms.URL}
	e.instances = append(e.instances, in)
	return in
}

// browser is a person's user agent: a cookie jar, redirects not followed
// (the test plays the redirects, handing the OP's part to the OP).
type browser struct {
	e      *env
	client *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, client: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

func (r response) errorCode(t testing.TB) string {
	t.Helper()
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	r.json(t, &e)
	if e.Message == "" {
		t.Errorf("error answer without message: %s", r.body)
	}
	return e.Error
}

func (b *browser) do(method, u string, hdr map[string]string) response {
	b.e.t.Helper()
	req, err := http.NewRequestWithContext(b.e.ctx, method, u, nil)
	if err != nil {
		b.e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.e.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, c := range resp.Cookies() {
		b.e.see("cookie", c.Value)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

func (b *browser) get(u string) response { return b.do(http.MethodGet, u, nil) }

// location returns a redirect's target or fails.
func (r response) location(t testing.TB) string {
	t.Helper()
	if r.status != http.StatusFound && r.status != http.StatusSeeOther {
		t.Fatalf("want a redirect, got %d %s", r.status, r.body)
	}
	return r.header.Get("Location")
}

func (e *env) seeQuery(q url.Values) {
	e.see("code", q.Get("code"))
	e.see("state", q.Get("state"))
}

// loginAt signs the browser in through the login OP on instance in.
func (b *browser) loginAt(in *instance, returnURL string) string {
	t := b.e.t
	t.Helper()
	authURL := b.get(in.url + "/api/oidc/login?return_url=" + url.QueryEscape(returnURL)).location(t)
	q, err := b.e.login.Login(b.e.ctx, authURL)
	if err != nil {
		t.Fatalf("login at the OP: %v", err)
	}
	b.e.seeQuery(q)
	return b.get(in.url + "/api/oidc/callback?" + q.Encode()).location(t)
}

// authorizeQuery starts linking at provider id and plays the OP's part,
// returning the callback query the OP sent back.
func (b *browser) authorizeQuery(in *instance, id, returnURL string) url.Values {
	t := b.e.t
	t.Helper()
	u := in.url + "/api/v1.0/" + id + "/authorize"
	if returnURL != "" {
		u += "?return_url=" + url.QueryEscape(returnURL)
	}
	authURL := b.get(u).location(t)
	q, err := b.e.providers[id].op.Login(b.e.ctx, authURL)
	if err != nil {
		t.Fatalf("login at %s: %v", id, err)
	}
	b.e.seeQuery(q)
	return q
}

// link links the browser's account at provider id; returns the final redirect.
func (b *browser) link(in *instance, id string) string {
	b.e.t.Helper()
	q := b.authorizeQuery(in, id, "")
	return b.get(in.url + "/api/v1.0/" + id + "/redirect_uri?" + q.Encode()).location(b.e.t)
}

type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   *int64 `json:"expires_in"`
	ExpiresAt   *int64 `json:"expires_at"`
	Scope       string `json:"scope"`
}

func (b *browser) token(in *instance, id, query string) (tokenAnswer, response) {
	b.e.t.Helper()
	r := b.get(in.url + "/api/v1.0/" + id + "/token" + query)
	var ta tokenAnswer
	if r.status == http.StatusOK {
		r.json(b.e.t, &ta)
		b.e.see("access_token", ta.AccessToken)
	}
	return ta, r
}

// credential reads the stored credential and records its plaintext tokens
// as seen.
func (e *env) credential(user, provider string) store.Credential {
	e.t.Helper()
	c, err := e.instances[0].store.GetCredential(e.ctx, user, provider)
	if err != nil {
		e.t.Fatalf("reading credential %s/%s: %v", user, provider, err)
	}
	e.seeCredential(c)
	return c
}

func (e *env) seeCredential(c store.Credential) {
	if len(c.RefreshToken) > 0 {
		rt, err := e.keys.Open(c.RefreshToken, crypto.Binding{Owner: c.UserID, Provider: c.Provider, Purpose: crypto.PurposeRefreshToken})
		if err != nil {
			e.t.Fatalf("opening refresh token: %v", err)
		}
		e.see("refresh_token", string(rt))
	}
	if len(c.AccessToken) > 0 {
		at, err := e.keys.Open(c.AccessToken, crypto.Binding{Owner: c.UserID, Provider: c.Provider, Purpose: crypto.PurposeAccessToken})
		if err != nil {
			e.t.Fatalf("opening access token: %v", err)
		}
		e.see("access_token", string(at))
	}
}

func (e *env) refreshToken(c store.Credential) string {
	rt, err := e.keys.Open(c.RefreshToken, crypto.Binding{Owner: c.UserID, Provider: c.Provider, Purpose: crypto.PurposeRefreshToken})
	if err != nil {
		e.t.Fatal(err)
	}
	return string(rt)
}

// expire makes the cached access token look expired, as time passing would.
func (e *env) expire(user, provider string) {
	e.t.Helper()
	past := time.Now().Add(-time.Minute)
	if _, err := e.instances[0].store.UpdateCredential(e.ctx, user, provider, func(c *store.Credential) (store.Outcome, error) {
		c.AccessExpiresAt = &past
		return store.Write(), nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

// whoami returns the browser's user id.
func (b *browser) whoami(in *instance) string {
	b.e.t.Helper()
	r := b.get(in.url + "/api/whoami")
	if r.status != http.StatusOK {
		b.e.t.Fatalf("whoami: %d %s", r.status, r.body)
	}
	var id auth.Identity
	r.json(b.e.t, &id)
	return id.UserID
}

// sessionFor gives the browser a session of another person, created in the
// store as login would (the test OP has one test user; this is how a
// second person gets an identity).
func (b *browser) sessionFor(in *instance, user string) {
	t := b.e.t
	cookie := auth.RandomValue()
	now := time.Now()
	if err := in.store.CreateSession(b.e.ctx, store.Session{ID: auth.Hash(cookie), UserID: user,
		Claims: []byte(fmt.Sprintf(`{"sub":%q}`, user)), CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(in.url)
	b.client.Jar.SetCookies(u, []*http.Cookie{{Name: "tokenstore_session", Value: cookie, Path: "/"}})
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
