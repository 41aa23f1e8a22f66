package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
	"golang.org/x/time/rate"

	"github.com/tokenstore/tokenstore/internal/fault"
)

// Bearer token checks, and what bounds their cost (issue 23).
const (
	// refusalTTL is how long a refused token is refused again without
	// looking at it, so a client retrying a bad token in a loop costs the
	// login issuer nothing.
	refusalTTL  = 30 * time.Second
	refusalSize = 65536
	// jwksMinRefetch: a JWT naming a key the cached JWKS lacks makes the
	// key set be fetched again at most this often, so that made-up `kid`s
	// cannot make every request a call to the issuer.
	jwksMinRefetch = 30 * time.Second
	// maxIssuerAnswer bounds what is read of an introspection or
	// JWKS answer.
	maxIssuerAnswer = 1 << 20
)

// Modes of BEARER_OPAQUE.
const (
	OpaqueRefuse        = "refuse"
	OpaqueIntrospection = "introspection"
	OpaqueUserinfo      = "userinfo"
)

// ErrVerifyBusy: checking this token needs a call to the login issuer and
// BEARER_VERIFY_RATE's budget is spent. Tokens already checked are still
// served from the cache.
var ErrVerifyBusy = &fault.Error{Status: http.StatusServiceUnavailable, Code: "bearer_verification_busy", OAuth: "temporarily_unavailable",
	Message: "Too many bearer tokens to check at the moment; try again shortly."}

// signingAlgs are the JWS algorithms accepted from the login issuer, as
// go-oidc accepts them (asymmetric only).
var signingAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA}

// issuerAlgs is the issuer's advertised ID token algorithms that go-oidc
// supports; empty lets go-oidc use its default (RS256).
func issuerAlgs(advertised []string) []string {
	var out []string
	for _, a := range advertised {
		if slices.Contains(signingAlgs, jose.SignatureAlgorithm(a)) {
			out = append(out, a)
		}
	}
	return out
}

// busyKey marks a context whose bearer check may set a busyFlag: go-oidc
// reports a key set's error as text only, so the key set says "out of
// budget" here instead.
type busyKey struct{}

type busyFlag struct{ set atomic.Bool }

func markBusy(ctx context.Context) {
	if f, ok := ctx.Value(busyKey{}).(*busyFlag); ok {
		f.set.Store(true)
	}
}

// keySet is the login issuer's JWKS, as go-oidc's RemoteKeySet but with
// its refetches bounded: a JWT whose key is not in the cached set causes a
// fetch only if the last one is jwksMinRefetch old, and only within the
// verification budget.
type keySet struct {
	url     string
	client  *http.Client
	limiter *rate.Limiter
	now     func() time.Time

	fetchMu sync.Mutex // one fetch at a time; held across the HTTP call
	mu      sync.Mutex // guards keys and fetched
	keys    []jose.JSONWebKey
	fetched time.Time // last fetch attempt
}

var errNoKey = errors.New("no key of the issuer verifies the signature")

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, signingAlgs)
	if err != nil {
		return nil, fmt.Errorf("malformed JWT: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	k.mu.Lock()
	keys := k.keys
	k.mu.Unlock()
	if p, ok := verifyWith(jws, kid, keys); ok {
		return p, nil
	}
	keys, err = k.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if p, ok := verifyWith(jws, kid, keys); ok {
		return p, nil
	}
	return nil, errNoKey
}

func verifyWith(jws *jose.JSONWebSignature, kid string, keys []jose.JSONWebKey) ([]byte, bool) {
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if p, err := jws.Verify(&key); err == nil {
			return p, true
		}
	}
	return nil, false
}

// refresh fetches the key set unless the last fetch is recent or the
// budget is spent; it returns the keys held after that.
func (k *keySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	k.fetchMu.Lock()
	defer k.fetchMu.Unlock()
	k.mu.Lock()
	keys, last := k.keys, k.fetched
	k.mu.Unlock()
	now := k.now()
	if !last.IsZero() && now.Sub(last) < jwksMinRefetch {
		// Fetched lately (maybe by the caller we waited for): what we
		// have is what the issuer serves.
		return keys, nil
	}
	if k.limiter != nil && !k.limiter.Allow() {
		markBusy(ctx)
		return nil, ErrVerifyBusy
	}
	k.mu.Lock()
	k.fetched = now
	k.mu.Unlock()
	var set jose.JSONWebKeySet
	if err := getJSON(ctx, k.client, k.url, &set); err != nil {
		return nil, &UnavailableError{Err: fmt.Errorf("fetching the issuer's keys: %w", err)}
	}
	k.mu.Lock()
	k.keys = set.Keys
	k.mu.Unlock()
	return set.Keys, nil
}

func getJSON(ctx context.Context, client *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, maxIssuerAnswer)).Decode(v)
}

// acceptedAudiences are the `aud` values a JWT access token may carry:
// OIDC_AUDIENCE, or the login client id when that is empty.
func (a *Authenticator) acceptedAudiences() []string {
	if aud := a.opt.Settings.OIDCAudience; len(aud) > 0 {
		return aud
	}
	return []string{a.opt.Settings.OIDCClientID}
}

func overlaps(have, want []string) bool {
	return slices.ContainsFunc(have, func(x string) bool { return x != "" && slices.Contains(want, x) })
}

// idTokenShaped tells a JWT carrying an ID token's login-binding claims.
// Dex issues its access tokens so; other issuers' ID tokens look so.
func idTokenShaped(claims map[string]any) bool {
	for _, k := range loginBindingClaims {
		if _, ok := claims[k]; ok {
			return true
		}
	}
	return false
}

// Bearer checks an access token from the login issuer.
//
// A JWT is verified locally against the issuer's JWKS (signature, issuer,
// expiry) and must name in `aud` one of OIDC_AUDIENCE (default: the login
// client id); a JWT shaped like an ID token (nonce, at_hash or c_hash, as
// Dex's access tokens are) must name the login client id itself, as the
// Kubernetes API server's OIDC authenticator requires. A token issued to
// another application at the same issuer is therefore refused.
//
// An opaque token's audience cannot be seen: BEARER_OPAQUE says whether it
// is refused (the default), checked by RFC 7662 introspection, or taken on
// the userinfo endpoint's word.
//
// Verdicts are cached by the token's SHA-256: an identity for a minute (at
// most until the token expires), a refusal for refusalTTL. Calls to the
// issuer are budgeted by BEARER_VERIFY_RATE; past it, ErrVerifyBusy.
func (a *Authenticator) Bearer(ctx context.Context, token string) (*Identity, error) {
	if token == "" {
		return nil, ErrUnauthenticated
	}
	key := sha256.Sum256([]byte(token))
	now := a.opt.Now()
	a.cacheMu.Lock()
	if e, ok := a.bearer[key]; ok && now.Before(e.expires) {
		a.cacheMu.Unlock()
		id := e.id
		return &id, nil
	}
	a.cacheMu.Unlock()
	if _, refused := a.refusals.Get(key); refused {
		return nil, ErrInvalidToken
	}
	lp, err := a.provider(ctx)
	if err != nil {
		return nil, err
	}
	until := now.Add(bearerCacheTTL)
	var id *Identity
	if strings.Count(token, ".") == 2 {
		id, until, err = a.bearerJWT(ctx, lp, token, until)
	} else {
		id, until, err = a.bearerOpaque(ctx, lp, token, until)
	}
	if err != nil {
		if errors.Is(err, ErrInvalidToken) {
			a.refusals.Put(a.refusals.Begin(), key, struct{}{})
		}
		return nil, err
	}
	a.cacheMu.Lock()
	if len(a.bearer) > 10000 {
		clear(a.bearer) // crude bound; entries live a minute anyway
	}
	a.bearer[key] = bearerEntry{id: *id, expires: until}
	a.cacheMu.Unlock()
	return id, nil
}

func (a *Authenticator) bearerJWT(ctx context.Context, lp *loginProvider, token string, until time.Time) (*Identity, time.Time, error) {
	flag := &busyFlag{}
	t, err := lp.jwtVerifier.Verify(context.WithValue(a.ctx(ctx), busyKey{}, flag), token)
	if err != nil {
		if flag.set.Load() {
			return nil, until, ErrVerifyBusy
		}
		return nil, until, ErrInvalidToken
	}
	all := map[string]any{}
	if err := t.Claims(&all); err != nil {
		return nil, until, ErrInvalidToken
	}
	accepted := a.acceptedAudiences()
	if idTokenShaped(all) {
		accepted = []string{a.opt.Settings.OIDCClientID}
	}
	if !overlaps(t.Audience, accepted) {
		return nil, until, ErrInvalidToken
	}
	id := &Identity{UserID: t.Subject, Issuer: t.Issuer, Subject: t.Subject, Name: claimString(all, "name"), Email: claimString(all, "email"), Method: "bearer"}
	a.identityClaims(id, all)
	if t.Expiry.Before(until) {
		until = t.Expiry
	}
	return id, until, nil
}

func (a *Authenticator) bearerOpaque(ctx context.Context, lp *loginProvider, token string, until time.Time) (*Identity, time.Time, error) {
	switch a.opt.Settings.BearerOpaque {
	case OpaqueIntrospection:
		return a.introspect(ctx, lp, token, until)
	case OpaqueUserinfo:
		if !a.budget() {
			return nil, until, ErrVerifyBusy
		}
		ui, err := lp.oidc.UserInfo(a.ctx(ctx), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token, TokenType: "Bearer"}))
		if err != nil {
			if strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "403") {
				return nil, until, ErrInvalidToken
			}
			return nil, until, &UnavailableError{Err: errors.New("userinfo request failed")}
		}
		if ui.Subject == "" {
			return nil, until, ErrInvalidToken
		}
		all := map[string]any{}
		_ = ui.Claims(&all)
		id := &Identity{UserID: ui.Subject, Issuer: lp.issuer, Subject: ui.Subject, Name: claimString(all, "name"), Email: ui.Email, Method: "bearer"}
		a.identityClaims(id, all)
		return id, until, nil
	}
	return nil, until, ErrInvalidToken
}

// budget takes one call to the login issuer from BEARER_VERIFY_RATE.
func (a *Authenticator) budget() bool { return a.limiter == nil || a.limiter.Allow() }

// introspect checks an opaque token by RFC 7662 at the issuer's
// introspection endpoint, authenticating as the login client. The token
// must be active, from the login issuer, not expired, for a subject, and
// issued to the login client (client_id) or for one of the accepted
// audiences (aud): an issuer answers active=true for any client's token.
func (a *Authenticator) introspect(ctx context.Context, lp *loginProvider, token string, until time.Time) (*Identity, time.Time, error) {
	if lp.introspection == "" {
		return nil, until, ErrInvalidToken
	}
	if !a.budget() {
		return nil, until, ErrVerifyBusy
	}
	s := a.opt.Settings
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, lp.introspection, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, until, fmt.Errorf("introspection request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: each part form-encoded before Basic.
	req.SetBasicAuth(url.QueryEscape(s.OIDCClientID), url.QueryEscape(s.OIDCClientSecret))
	resp, err := a.opt.HTTPClient.Do(req)
	if err != nil {
		return nil, until, &UnavailableError{Err: errors.New("introspection request failed")}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 500 {
			return nil, until, &UnavailableError{Err: fmt.Errorf("introspection answered %d", resp.StatusCode)}
		}
		// Our own credentials refused: a configuration fault, not the
		// caller's; say so in the log, refuse the token.
		a.log.WarnContext(ctx, "the login issuer refused our introspection request", "status", resp.StatusCode)
		return nil, until, ErrInvalidToken
	}
	all := map[string]any{}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxIssuerAnswer)).Decode(&all); err != nil {
		return nil, until, &UnavailableError{Err: errors.New("introspection answer is not JSON")}
	}
	if active, _ := all["active"].(bool); !active {
		return nil, until, ErrInvalidToken
	}
	sub := claimString(all, "sub")
	if sub == "" {
		return nil, until, ErrInvalidToken
	}
	if iss := claimString(all, "iss"); iss != "" && iss != lp.issuer {
		return nil, until, ErrInvalidToken
	}
	if !a.introspectionForUs(all) {
		return nil, until, ErrInvalidToken
	}
	if exp, ok := all["exp"].(float64); ok {
		e := time.Unix(int64(exp), 0)
		if !a.opt.Now().Before(e) {
			return nil, until, ErrInvalidToken
		}
		if e.Before(until) {
			until = e
		}
	}
	id := &Identity{UserID: sub, Issuer: lp.issuer, Subject: sub, Name: claimString(all, "name"), Email: claimString(all, "email"), Method: "bearer"}
	a.identityClaims(id, all)
	return id, until, nil
}

// introspectionForUs tells an introspection answer for a token issued to
// the login client (client_id) or for an accepted audience (aud).
func (a *Authenticator) introspectionForUs(answer map[string]any) bool {
	return claimString(answer, "client_id") == a.opt.Settings.OIDCClientID && a.opt.Settings.OIDCClientID != "" ||
		overlaps(audienceOf(answer["aud"]), a.acceptedAudiences())
}

// audienceOf reads `aud`: a string or a list of strings.
func audienceOf(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// newKeySet is the bounded key set of a discovered issuer.
func (a *Authenticator) newKeySet(jwksURL string) oidc.KeySet {
	return &keySet{url: jwksURL, client: a.opt.HTTPClient, limiter: a.limiter, now: a.opt.Now}
}
