// Package auth signs people in: OpenID Connect login (authorization code
// with PKCE, nonce and a state bound to the browser, the pending login
// sealed in a cookie rather than stored), sessions
// kept server-side in the store (the cookie holds a random value, the store
// its SHA-256, so a database dump holds no usable session), and bearer
// access tokens from the login issuer.
//
// A person is identified by the login ID token's `sub`: tokenstore has one
// login issuer at a time, and `sub` is what the seed keyed credentials by.
// The issuer is kept beside it in the session's claims.
//
// It also holds the pending-authorization bookkeeping (state, PKCE verifier,
// nonce, return URL) of account linking at token providers, which only a
// signed-in person can start and which is kept in the store. It knows
// nothing of HTTP frameworks.
package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/time/rate"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/ttlcache"
)

// LoginProvider is the LinkState.Provider of a login in progress; it cannot
// be a provider id (those are Kubernetes names, without underscores).
const LoginProvider = "_login"

// How long a started authorization may take to come back.
const pendingLifetime = 10 * time.Minute

// touchEvery limits session writes: LastSeenAt moves at most this often.
const touchEvery = time.Minute

// bearerCacheTTL is how long an accepted bearer token's identity is reused
// (at most until the token expires), so that a client calling in a loop
// does not have it checked, or the login issuer called, on every request.
// A token revoked at the issuer is still accepted for up to this long.
const bearerCacheTTL = time.Minute

// Refusals of authentication, with their answers (package fault).
var (
	// ErrUnauthenticated is a 403, as the Flask service answered a caller
	// that is not signed in.
	ErrUnauthenticated = &fault.Error{Status: http.StatusForbidden, Code: "unauthenticated", OAuth: "invalid_request", OAuthStatus: http.StatusUnauthorized,
		Message: "Sign in first (session cookie or bearer token)."}
	ErrInvalidToken = &fault.Error{Status: http.StatusUnauthorized, Code: "invalid_token", OAuth: "invalid_request", OAuthStatus: http.StatusUnauthorized,
		Message: "The bearer token was not accepted."}
	ErrInvalidState = &fault.Error{Status: http.StatusBadRequest, Code: "invalid_state",
		Message: "This authorization response is unknown, expired, already used, or was started by another session."}
	ErrNonceMismatch = &fault.Error{Status: http.StatusBadRequest, Code: "nonce_mismatch",
		Message: "The ID token does not belong to this authorization request."}
	ErrLoginFailed = &fault.Error{Status: http.StatusBadRequest, Code: "login_failed",
		Message: "The provider's answer was not accepted."}
	ErrLoginNotConfig = &fault.Error{Status: http.StatusServiceUnavailable, Code: "login_not_configured",
		Message: "Login is not configured on this server (OIDC_DISCOVERY_URL, OIDC_CLIENT_ID)."}
)

// UnavailableError: the login issuer could not be reached.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "login provider unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Fault is a 502 for the REST API and temporarily_unavailable for OAuth
// clients.
func (e *UnavailableError) Fault() *fault.Error {
	return &fault.Error{Status: http.StatusBadGateway, Code: "login_provider_unavailable", OAuth: "temporarily_unavailable", Err: e.Err,
		Message: "The login provider could not be reached; try again shortly."}
}

// Identity is who a request comes from.
type Identity struct {
	UserID  string `json:"user_id"`
	Issuer  string `json:"issuer"`
	Subject string `json:"sub"`
	Name    string `json:"name,omitempty"`
	Email   string `json:"email,omitempty"`
	// Method is "session" or "bearer".
	Method string `json:"auth_method"`
	// SessionID is the store key of the session (empty for bearer).
	SessionID string `json:"-"`
	// Roles are the roles and groups the login issuer's claims give the
	// person, read at ROLES_CLAIM (see Roles); nil when none.
	Roles []string `json:"-"`
	// Scopes are the scopes granted: a bearer token's `scope` (or `scp`)
	// claim, or those the login's token answer named; nil when unknown.
	Scopes []string `json:"-"`
	// Claims are what the identity was built from: the login ID token's
	// claims (session; only iss, sub, name, email and preferred_username
	// for sessions started before they were all kept), a JWT bearer
	// token's, or an opaque bearer token's userinfo answer. Shared by the
	// requests of a session or token: do not modify.
	Claims map[string]any `json:"-"`
}

// Options are what an Authenticator is built from.
type Options struct {
	Settings   *settings.Settings
	Store      store.Store
	Keys       *crypto.KeyRing
	HTTPClient *http.Client
	Logger     *slog.Logger
	Now        func() time.Time
}

// Authenticator implements login, sessions and bearer authentication.
type Authenticator struct {
	opt Options
	log *slog.Logger
	// loginKeys seal pending logins into the login cookie: a subkey of
	// CRYPTOKEY for that alone.
	loginKeys *crypto.KeyRing

	mu    sync.Mutex
	login *loginProvider // nil until discovery succeeded

	// bearer holds the verdicts on bearer tokens of the login issuer. It is
	// not a read of the store (those are cached, for sessions, by the store
	// wrapper internal/store/cached): it spares a JWKS check or a userinfo
	// call to the issuer, and no write of ours can make a verdict stale.
	cacheMu sync.Mutex
	bearer  map[[32]byte]bearerEntry
	// refusals are the SHA-256s of tokens refused lately (refusalTTL),
	// never the tokens.
	refusals *ttlcache.Cache[[32]byte, struct{}]
	// limiter budgets calls to the login issuer made to check bearer
	// tokens (BEARER_VERIFY_RATE); nil is unbounded.
	limiter *rate.Limiter

	// identities keeps the Identity decoded from a session row, by session
	// id. It caches no read (the row comes from the store on every request,
	// and decides): it spares decoding the same claims JSON on every
	// request of a session, which with the row itself cached was a sixth of
	// the hot path's allocations. An entry is used only for the same user
	// and claims bytes, so it can never be stale.
	identities *ttlcache.Cache[string, decodedSession]
}

// decodedSession is the Identity of a session row, with the row's fields
// it was made from.
type decodedSession struct {
	userID   string
	claims   []byte
	identity *Identity
}

// identityMemo sizes: entries live as long as a cached session row
// (one second), one per session calling within it.
const (
	identityMemoTTL  = time.Second
	identityMemoSize = 65536
)

type loginProvider struct {
	oidc        *oidc.Provider
	idVerifier  *oidc.IDTokenVerifier
	jwtVerifier *oidc.IDTokenVerifier
	issuer      string
	// introspection is the issuer's RFC 7662 endpoint, if it names one.
	introspection string
}

type bearerEntry struct {
	id      Identity
	expires time.Time
}

// New returns an Authenticator. Discovery of the login issuer happens on
// first use, so a login provider that is briefly down does not stop start.
func New(opt Options) (*Authenticator, error) {
	if opt.Settings == nil || opt.Store == nil || opt.Keys == nil {
		return nil, errors.New("auth: settings, store and key ring are required")
	}
	if opt.HTTPClient == nil {
		opt.HTTPClient = &http.Client{Timeout: 20 * time.Second}
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	loginKeys, err := opt.Keys.Derive(loginSealPurpose)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	var limiter *rate.Limiter
	if r := opt.Settings.BearerVerifyRate; r > 0 {
		limiter = rate.NewLimiter(rate.Limit(r), max(1, int(2*r)))
	}
	return &Authenticator{opt: opt, log: opt.Logger, loginKeys: loginKeys, bearer: map[[32]byte]bearerEntry{},
		refusals: ttlcache.New[[32]byte, struct{}](refusalTTL, refusalSize, opt.Now), limiter: limiter,
		identities: ttlcache.New[string, decodedSession](identityMemoTTL, identityMemoSize, opt.Now)}, nil
}

// Hash is the store key of a secret value (cookie, state): its SHA-256 in hex.
func Hash(v string) string {
	h := sha256.Sum256([]byte(v))
	// Encoded on the stack: one allocation (the string), not two; this runs
	// on every request that carries a session cookie.
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], h[:])
	return string(out[:])
}

// RandomValue returns 32 random bytes, base64url: cookies, states, nonces,
// PKCE verifiers.
func RandomValue() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (a *Authenticator) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, a.opt.HTTPClient)
}

// provider returns the login issuer, discovering it on first use.
func (a *Authenticator) provider(ctx context.Context) (*loginProvider, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.login != nil {
		return a.login, nil
	}
	s := a.opt.Settings
	if s.OIDCDiscoveryURL == "" || s.OIDCClientID == "" {
		return nil, ErrLoginNotConfig
	}
	issuer, ok := providers.IssuerFor(s.OIDCDiscoveryURL)
	var p *oidc.Provider
	var meta struct {
		JWKSURI       string   `json:"jwks_uri"`
		Introspection string   `json:"introspection_endpoint"`
		Algorithms    []string `json:"id_token_signing_alg_values_supported"`
	}
	var err error
	if ok {
		p, err = oidc.NewProvider(a.ctx(ctx), issuer)
		if err == nil {
			err = p.Claims(&meta)
		}
	} else {
		// Discovery at an off-spec path: read it, trust its issuer.
		var d *providers.Discovery
		d, err = providers.Fetch(ctx, a.opt.HTTPClient, s.OIDCDiscoveryURL)
		if err == nil {
			cfg := oidc.ProviderConfig{IssuerURL: d.Issuer, AuthURL: d.AuthorizationEndpoint, TokenURL: d.TokenEndpoint,
				UserInfoURL: d.UserinfoEndpoint, JWKSURL: d.JWKSURI, Algorithms: d.IDTokenSigningAlgValuesSupported}
			p = cfg.NewProvider(a.ctx(ctx))
			issuer = d.Issuer
			meta.JWKSURI, meta.Introspection, meta.Algorithms = d.JWKSURI, d.IntrospectionEndpoint, d.IDTokenSigningAlgValuesSupported
		}
	}
	if err != nil {
		return nil, &UnavailableError{Err: fmt.Errorf("discovering %s: %w", s.OIDCDiscoveryURL, err)}
	}
	if s.BearerOpaque == OpaqueIntrospection && meta.Introspection == "" {
		a.log.Warn("BEARER_OPAQUE=introspection, but the login issuer names no introspection_endpoint: opaque bearer tokens are refused")
	}
	// One key set for login and bearer checks, with bounded refetches.
	keys := a.newKeySet(meta.JWKSURI)
	algs := issuerAlgs(meta.Algorithms)
	a.login = &loginProvider{
		oidc:          p,
		issuer:        issuer,
		introspection: meta.Introspection,
		idVerifier:    oidc.NewVerifier(issuer, keys, &oidc.Config{ClientID: s.OIDCClientID, SupportedSigningAlgs: algs, Now: a.opt.Now}),
		jwtVerifier:   oidc.NewVerifier(issuer, keys, &oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: algs, Now: a.opt.Now}),
	}
	return a.login, nil
}

// LoginRedirectURL is the login client's redirect URI.
func (a *Authenticator) LoginRedirectURL() string {
	return strings.TrimSuffix(a.opt.Settings.ExternalURL, "/") + "/api/oidc/callback"
}

func (a *Authenticator) oauth2Config(lp *loginProvider) *oauth2.Config {
	s := a.opt.Settings
	scopes := slices.Clone(s.OIDCScope)
	if !slices.Contains(scopes, oidc.ScopeOpenID) {
		scopes = append([]string{oidc.ScopeOpenID}, scopes...)
	}
	return &oauth2.Config{ClientID: s.OIDCClientID, ClientSecret: s.OIDCClientSecret,
		Endpoint: lp.oidc.Endpoint(), RedirectURL: a.LoginRedirectURL(), Scopes: scopes}
}

// Pending is a started authorization request's secrets, as the callback
// needs them.
type Pending struct {
	Verifier  string
	Nonce     string
	ReturnURL string
}

// Begin stores a pending account link for binding (the signed-in person's
// session id) at provider and returns the state, PKCE verifier and nonce
// to send. The store keeps the state's hash and the verifier
// sealed.
func (a *Authenticator) Begin(ctx context.Context, binding, provider, returnURL string) (state string, p Pending, err error) {
	state, p = RandomValue(), Pending{Verifier: oauth2.GenerateVerifier(), Nonce: RandomValue(), ReturnURL: returnURL}
	sealed, err := a.opt.Keys.Seal([]byte(p.Verifier), crypto.Binding{Owner: binding, Provider: provider, Purpose: crypto.PurposePKCEVerifier})
	if err != nil {
		return "", Pending{}, fmt.Errorf("sealing the PKCE verifier: %w", err)
	}
	now := a.opt.Now()
	if err := a.opt.Store.CreateLinkState(ctx, store.LinkState{
		State: Hash(state), SessionID: binding, Provider: provider, CodeVerifier: sealed,
		Nonce: p.Nonce, ReturnURL: returnURL, CreatedAt: now, ExpiresAt: now.Add(pendingLifetime),
	}); err != nil {
		return "", Pending{}, fmt.Errorf("storing the pending authorization: %w", err)
	}
	return state, p, nil
}

// Consume takes the pending authorization of state, once. It is refused
// (ErrInvalidState) when unknown, expired, already used, or started by
// another binding or for another provider; the state is spent either way.
func (a *Authenticator) Consume(ctx context.Context, state, binding, provider string) (Pending, error) {
	if state == "" {
		return Pending{}, ErrInvalidState
	}
	l, err := a.opt.Store.ConsumeLinkState(ctx, Hash(state), a.opt.Now())
	if errors.Is(err, store.ErrNotFound) {
		return Pending{}, ErrInvalidState
	}
	if err != nil {
		return Pending{}, fmt.Errorf("reading the pending authorization: %w", err)
	}
	if l.SessionID != binding || l.Provider != provider {
		return Pending{}, ErrInvalidState
	}
	v, err := a.opt.Keys.Open(l.CodeVerifier, crypto.Binding{Owner: binding, Provider: provider, Purpose: crypto.PurposePKCEVerifier})
	if err != nil {
		return Pending{}, ErrInvalidState
	}
	return Pending{Verifier: string(v), Nonce: l.Nonce, ReturnURL: l.ReturnURL}, nil
}

// StartLogin begins a login; it returns the issuer URL to send the browser
// to and the value of the login cookie, which holds the pending login
// sealed (see pending.go) and ties the callback to this browser.
func (a *Authenticator) StartLogin(ctx context.Context, returnURL string) (authURL, cookie string, err error) {
	lp, err := a.provider(ctx)
	if err != nil {
		return "", "", err
	}
	pl := pendingLogin{State: RandomValue(), Expires: a.opt.Now().Add(pendingLifetime),
		Pending: Pending{Verifier: oauth2.GenerateVerifier(), Nonce: RandomValue(), ReturnURL: returnURL}}
	cookie, err = a.sealLogin(pl)
	if err != nil {
		return "", "", fmt.Errorf("sealing the pending login: %w", err)
	}
	authURL = a.oauth2Config(lp).AuthCodeURL(pl.State, oauth2.S256ChallengeOption(pl.Pending.Verifier), oidc.Nonce(pl.Pending.Nonce))
	return authURL, cookie, nil
}

// AbortLogin checks a login callback that came back with an error and
// returns where to send the browser.
func (a *Authenticator) AbortLogin(_ context.Context, cookie, state string) (string, error) {
	p, err := a.openLogin(cookie, state)
	return p.ReturnURL, err
}

// FinishLogin completes a login: state check against the login cookie, code
// exchange with the PKCE verifier, ID token and nonce checks, then a new
// session. It returns the session cookie value and the return URL.
func (a *Authenticator) FinishLogin(ctx context.Context, loginCookie, state, code string) (cookie, returnURL string, err error) {
	p, err := a.openLogin(loginCookie, state)
	if err != nil {
		return "", "", err
	}
	lp, err := a.provider(ctx)
	if err != nil {
		return "", "", err
	}
	tok, err := a.oauth2Config(lp).Exchange(a.ctx(ctx), code, oauth2.VerifierOption(p.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return "", "", fmt.Errorf("%w: code exchange refused (%s)", ErrLoginFailed, re.ErrorCode)
		}
		return "", "", &UnavailableError{Err: errors.New("code exchange failed")}
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", "", fmt.Errorf("%w: no ID token in the answer", ErrLoginFailed)
	}
	idt, err := lp.idVerifier.Verify(a.ctx(ctx), raw)
	if err != nil {
		return "", "", fmt.Errorf("%w: ID token: %v", ErrLoginFailed, err)
	}
	if idt.Nonce != p.Nonce {
		return "", "", ErrNonceMismatch
	}
	claims, err := sessionClaimsJSON(idt, tok)
	if err != nil {
		return "", "", fmt.Errorf("%w: ID token claims: %v", ErrLoginFailed, err)
	}
	cookie = RandomValue()
	now := a.opt.Now()
	if err := a.opt.Store.CreateSession(ctx, store.Session{
		ID: Hash(cookie), UserID: idt.Subject, Claims: claims, CreatedAt: now, LastSeenAt: now, ExpiresAt: a.sessionExpiry(now, now),
	}); err != nil {
		return "", "", fmt.Errorf("storing the session: %w", err)
	}
	a.log.Info("login", "user", idt.Subject)
	return cookie, p.ReturnURL, nil
}

// loginBindingClaims tie an ID token to one login request, not to the
// person; the session does not keep them.
var loginBindingClaims = []string{"nonce", "at_hash", "c_hash"}

// sessionClaimsJSON is what a session keeps of a login: the ID token's
// claims (roles are read from them each time the session row is read, so a ROLES_CLAIM
// change applies to sessions already open) without its login-binding
// ones, plus the scopes the token answer granted as `scope` when the ID
// token names none.
func sessionClaimsJSON(idt *oidc.IDToken, tok *oauth2.Token) ([]byte, error) {
	all := map[string]any{}
	if err := idt.Claims(&all); err != nil {
		return nil, err
	}
	for _, k := range loginBindingClaims {
		delete(all, k)
	}
	all["iss"], all["sub"] = idt.Issuer, idt.Subject
	if _, ok := all["scope"]; !ok {
		if sc, _ := tok.Extra("scope").(string); sc != "" {
			all["scope"] = sc
		}
	}
	return json.Marshal(all)
}

// identityClaims fills the role, scope and claim fields of id from claims.
func (a *Authenticator) identityClaims(id *Identity, claims map[string]any) {
	id.Claims = claims
	id.Roles = Roles(claims, a.opt.Settings.RolesClaim, a.opt.Settings.OIDCClientID)
	id.Scopes = scopesOf(claims)
}

// sessionExpiry is the earlier of the absolute lifetime and the idle timeout.
func (a *Authenticator) sessionExpiry(created, lastSeen time.Time) time.Time {
	s := a.opt.Settings
	exp := created.Add(s.SessionLifetime)
	if s.SessionIdleTimeout > 0 {
		if idle := lastSeen.Add(s.SessionIdleTimeout); idle.Before(exp) {
			exp = idle
		}
	}
	return exp
}

// Session returns the identity of a session cookie value. It is shared by
// the requests of that session (see decodedSession): do not modify it.
func (a *Authenticator) Session(ctx context.Context, cookie string) (*Identity, error) {
	if cookie == "" {
		return nil, ErrUnauthenticated
	}
	now := a.opt.Now()
	// On the token hot path: with the store wrapped by
	// internal/store/cached, as serve runs it, this is no database read for
	// a session read within the last second.
	s, err := a.opt.Store.GetSession(ctx, Hash(cookie), now)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("reading the session: %w", err)
	}
	if now.Sub(s.LastSeenAt) > touchEvery {
		if err := a.opt.Store.TouchSession(ctx, s.ID, now, a.sessionExpiry(s.CreatedAt, now)); err != nil {
			a.log.Warn("touching the session failed", "error", err)
		}
	}
	return a.identity(s), nil
}

// identity is the Identity of session row s, decoded once per row.
func (a *Authenticator) identity(s store.Session) *Identity {
	if d, ok := a.identities.Get(s.ID); ok && d.userID == s.UserID && bytes.Equal(d.claims, s.Claims) {
		return d.identity
	}
	t := a.identities.Begin()
	cl := decodeClaims(s.Claims)
	id := &Identity{UserID: s.UserID, Issuer: claimString(cl, "iss"), Subject: s.UserID,
		Name: claimString(cl, "name"), Email: claimString(cl, "email"), Method: "session", SessionID: s.ID}
	a.identityClaims(id, cl)
	a.identities.Put(t, s.ID, decodedSession{userID: s.UserID, claims: s.Claims, identity: id})
	return id
}

// decodeClaims reads a session's claims JSON (the row's Claims, written at
// login); a row whose claims do not decode (none should) gives an identity
// without them.
func decodeClaims(raw []byte) map[string]any {
	cl := map[string]any{}
	if err := json.Unmarshal(raw, &cl); err != nil {
		return map[string]any{}
	}
	return cl
}

// claimString is claims[k] when it is a string, else "".
func claimString(claims map[string]any, k string) string {
	s, _ := claims[k].(string)
	return s
}

// Logout ends the session of a cookie value; ending none is not an error.
func (a *Authenticator) Logout(ctx context.Context, cookie string) error {
	if cookie == "" {
		return nil
	}
	if err := a.opt.Store.DeleteSession(ctx, Hash(cookie)); err != nil {
		return fmt.Errorf("deleting the session: %w", err)
	}
	return nil
}
