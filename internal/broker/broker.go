// Package broker hands out access tokens for people's linked accounts: the
// cached one while it is still good, else exactly one refresh at the
// provider, whose rotated refresh token is saved before anyone sees the new
// access token.
//
// Concurrency has two layers. In one process, concurrent requests for one
// credential share a single flight (golang.org/x/sync/singleflight). Across
// processes sharing a database, the refresh runs inside
// store.UpdateCredential, which holds the row lock while the provider is
// called; the next process waiting on the lock re-checks the row it then
// reads and serves what the first one stored instead of spending the (now
// rotated) refresh token again.
//
// Tokens never leave this package in an error or a log line.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
)

// Defaults of Options.
const (
	// DefaultMinValid is the margin a served access token must still be valid
	// for when the caller names none: enough for a request to reach the
	// provider's API before the token lapses.
	DefaultMinValid = 30 * time.Second
	// DefaultUnknownLifetime is how long an access token whose provider gave
	// no expires_in is assumed to live (counted from when it was obtained).
	// It is served until then and refreshed after; an hour is what most
	// providers that do say give.
	DefaultUnknownLifetime = time.Hour
	// DefaultForceWindow: a force_refresh is satisfied by a refresh that
	// started at most this long before the request, so that a burst of
	// force_refresh requests (a fleet of clients whose token was just
	// rejected) spends one refresh token rather than one each.
	DefaultForceWindow = 2 * time.Second
	// providerTimeout bounds one call to a provider's token or revocation
	// endpoint; the row lock is held meanwhile.
	providerTimeout = 20 * time.Second
)

// Audit actions written by the broker.
const (
	ActionLink        = "credential.link"
	ActionRefresh     = "credential.refresh"
	ActionRevoke      = "credential.revoke"
	ActionNeedsReauth = "credential.needs_reauth"
	// EventRecovered is not audited (the link is); it tells a Notifier that
	// a credential needing re-authorization was linked again.
	EventRecovered = "credential.recovered"
	// ActorRefresher is the audit actor of refreshes ahead of time.
	ActorRefresher = "system:refresher"
)

// Observer hears of refreshes and served tokens, for metrics. Its methods
// are called on the request path and must not block.
type Observer interface {
	// RefreshObserved: one refresh-token grant at provider, its outcome
	// (ok, invalid_grant, provider_error) and latency.
	RefreshObserved(provider, outcome string, d time.Duration)
	// TokenServed: an access token handed out; cached when no refresh was needed.
	TokenServed(provider string, cached bool)
}

// Notifier hears of credential state changes (needs_reauth, recovered), for
// webhooks. It must not block: it is called after the change is saved.
type Notifier interface {
	CredentialEvent(ctx context.Context, event, userID, provider string, detail map[string]any)
}

// Refusals of the broker, with their answers (package fault).
var (
	ErrUnknownProvider = &fault.Error{Status: http.StatusNotFound, Code: "unknown_provider", OAuth: "invalid_target",
		Message: "There is no provider with this id."}
	// ErrNotLinked is a 400, as the Flask service answered a token request
	// for a provider with no stored token.
	ErrNotLinked = &fault.Error{Status: http.StatusBadRequest, Code: "not_linked", OAuth: "invalid_grant", Relink: true,
		Message: "No account is linked at this provider; link one at its authorize URL."}
)

// ReauthError says the provider refused the stored refresh token: the person
// must link the account again. The credential is kept, marked needs_reauth.
type ReauthError struct {
	Provider string
	// Reason is the provider's error code (invalid_grant, ...) or another
	// short, token-free explanation.
	Reason string
}

func (e *ReauthError) Error() string {
	return fmt.Sprintf("the account at %s must be linked again (%s)", e.Provider, e.Reason)
}

// Fault is a 409 for the REST API (the stored authorization conflicts with
// the provider's view) and invalid_grant for OAuth clients.
func (e *ReauthError) Fault() *fault.Error {
	return &fault.Error{Status: http.StatusConflict, Code: "reauthorization_required", OAuth: "invalid_grant", Relink: true, Provider: e.Provider,
		Message: "Provider " + e.Provider + " no longer accepts the stored authorization (" + fault.SafeCode(e.Reason) + "); link the account again."}
}

// UnavailableError says the provider could not be reached or answered with
// a server error; the credential is unchanged and a retry may succeed.
//
// A provider that refuses tokenstore's client itself (invalid_client,
// unauthorized_client, ...: providers.RejectsClient) gives a
// *providers.ClientRejectedError instead: the credential is unchanged too,
// but retrying does not help until the TokenProvider is fixed.
type UnavailableError struct {
	Provider string
	Err      error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("provider %s unavailable: %v", e.Provider, e.Err)
}
func (e *UnavailableError) Unwrap() error { return e.Err }

// Fault is a 502 for the REST API (a gateway's upstream failed) and
// temporarily_unavailable (503) for OAuth clients.
func (e *UnavailableError) Fault() *fault.Error {
	return &fault.Error{Status: http.StatusBadGateway, Code: "provider_unavailable", OAuth: "temporarily_unavailable", Provider: e.Provider, Err: e.Err,
		Message: "Provider " + e.Provider + " could not be reached or failed; the stored authorization is intact, try again shortly."}
}

// Options are what a Broker is built from.
type Options struct {
	Store     store.Store
	Keys      *crypto.KeyRing
	Providers providers.Reader
	// HTTPClient calls providers' token and revocation endpoints; nil means
	// a client with a 20 s timeout. A client on net/http's default
	// transport is given providers.Transport() instead (the same settings,
	// but idle connections kept for concurrent refreshes, where the
	// default's two per host would open a connection per refresh).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// UnknownLifetime overrides DefaultUnknownLifetime.
	UnknownLifetime time.Duration
	// ForceWindow overrides DefaultForceWindow; negative disables it.
	ForceWindow time.Duration
	// Observer records metrics; nil records none.
	Observer Observer
	// Notifier hears of state changes; nil tells no one.
	Notifier Notifier
}

// Broker serves access tokens. Safe for concurrent use.
type Broker struct {
	opt    Options
	log    *slog.Logger
	flight singleflight.Group
	// endpoints hears how each refresh-token grant went, when the
	// registry keeps that (providers.Registry does), so that a token
	// endpoint failing behind a healthy discovery document shows in the
	// provider's Ready condition.
	endpoints *providers.TokenEndpointHealth
}

// tokenEndpointReporter is the part of providers.Registry the broker
// reports refresh outcomes to.
type tokenEndpointReporter interface {
	TokenEndpoints() *providers.TokenEndpointHealth
}

// New checks the options and returns a Broker.
func New(opt Options) (*Broker, error) {
	if opt.Store == nil || opt.Keys == nil || opt.Providers == nil {
		return nil, errors.New("broker: store, key ring and provider registry are required")
	}
	switch {
	case opt.HTTPClient == nil:
		opt.HTTPClient = &http.Client{Timeout: providerTimeout, Transport: providers.Transport()}
	case opt.HTTPClient.Transport == nil || opt.HTTPClient.Transport == http.DefaultTransport:
		c := *opt.HTTPClient
		c.Transport = providers.Transport()
		opt.HTTPClient = &c
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.UnknownLifetime <= 0 {
		opt.UnknownLifetime = DefaultUnknownLifetime
	}
	if opt.ForceWindow == 0 {
		opt.ForceWindow = DefaultForceWindow
	}
	b := &Broker{opt: opt, log: opt.Logger}
	if r, ok := opt.Providers.(tokenEndpointReporter); ok {
		b.endpoints = r.TokenEndpoints()
	}
	return b, nil
}

// Token is an access token as served.
type Token struct {
	AccessToken string
	TokenType   string
	// Expiry is when the token lapses; for a provider that gave no expiry it
	// is the assumed one (obtained + UnknownLifetime). Zero for a token that
	// never expires and cannot be refreshed.
	Expiry time.Time
	// ExpiryKnown is false when Expiry is assumed rather than the provider's.
	ExpiryKnown bool
	Scopes      []string
}

// Request says what access token a caller wants.
type Request struct {
	UserID   string
	Provider string
	// MinValid: the token must stay valid at least this long (0: DefaultMinValid).
	MinValid time.Duration
	// Force asks for a token obtained after the request began (within ForceWindow).
	Force bool
	// Actor is recorded in audit events ("user:<id>", ...); empty means
	// the user themself, "user:<UserID>" (built only when an event is).
	Actor string

	// refreshedSince, when set, makes a token obtained by a refresh before
	// it unsatisfying (RefreshAhead's idle keep-alive).
	refreshedSince time.Time
	// refreshed, when set, is told whether a refresh happened.
	refreshed *bool
}

func binding(userID, provider string, p crypto.Purpose) crypto.Binding {
	return crypto.Binding{Owner: userID, Provider: provider, Purpose: p}
}

// expiryOf is the expiry the broker works with: the provider's, or the
// assumed one for a refreshable token without expiry, or zero (never) for a
// token without expiry that cannot be refreshed anyway.
func (b *Broker) expiryOf(c *store.Credential) (time.Time, bool) {
	if c.AccessExpiresAt != nil {
		return *c.AccessExpiresAt, true
	}
	if len(c.RefreshToken) == 0 {
		return time.Time{}, false
	}
	// Obtained at the last refresh, or at linking (the upsert's UpdatedAt).
	obtained := c.UpdatedAt
	if c.LastRefreshedAt != nil {
		obtained = *c.LastRefreshedAt
	}
	return obtained.Add(b.opt.UnknownLifetime), false
}

// fresh reports whether the cached access token is good for minValid more.
func (b *Broker) fresh(c *store.Credential, minValid time.Duration, now time.Time) bool {
	if len(c.AccessToken) == 0 {
		return false
	}
	exp, _ := b.expiryOf(c)
	return exp.IsZero() || exp.After(now.Add(minValid))
}

// serve opens the cached access token of c.
func (b *Broker) serve(c *store.Credential) (Token, error) {
	at, err := b.opt.Keys.Open(c.AccessToken, binding(c.UserID, c.Provider, crypto.PurposeAccessToken))
	if err != nil {
		return Token{}, fmt.Errorf("opening the cached access token of %s: %w", c.Provider, err)
	}
	exp, known := b.expiryOf(c)
	tt := c.TokenType
	if tt == "" {
		tt = "Bearer"
	}
	return Token{AccessToken: string(at), TokenType: tt, Expiry: exp, ExpiryKnown: known, Scopes: c.Scopes}, nil
}

// Token returns an access token for req.UserID at req.Provider.
func (b *Broker) Token(ctx context.Context, req Request) (Token, error) {
	start := b.opt.Now()
	if req.MinValid <= 0 {
		req.MinValid = DefaultMinValid
	}
	p, ok := b.opt.Providers.Get(req.Provider)
	if !ok {
		return Token{}, ErrUnknownProvider
	}
	// The hot path's read: with the store wrapped by internal/store/cached,
	// as serve runs it, no database round trip for a row read within the
	// last second (the cache keeps sealed rows, so a heap dump of a replica
	// holds no more plaintext than the requests in flight).
	c, err := b.opt.Store.GetCredential(ctx, req.UserID, req.Provider)
	if errors.Is(err, store.ErrNotFound) {
		return Token{}, ErrNotLinked.For(req.Provider)
	}
	if err != nil {
		return Token{}, fmt.Errorf("reading the credential: %w", err)
	}
	if c.State == store.StateNeedsReauth {
		return Token{}, &ReauthError{Provider: req.Provider, Reason: c.StateReason}
	}
	// The hot path: one read and one decryption, no lock.
	if !req.Force && b.fresh(&c, req.MinValid, start) {
		t, err := b.serve(&c)
		if err == nil {
			b.served(req.Provider, true)
		}
		return t, err
	}
	// One flight per credential and kind of request in this process:
	// requests that want different things (forced or not, another
	// min_valid) do not share, or one would be served what suits the other.
	// They still meet at the row lock, where the later one finds the
	// earlier one's token and serves it if it suits.
	key := req.UserID + "\x00" + req.Provider + "\x00" + strconv.FormatBool(req.Force) + "\x00" + strconv.FormatInt(int64(req.MinValid), 10)
	v, err, _ := b.flight.Do(key, func() (any, error) {
		// The flight outlives no caller's interest in particular, but must
		// not be cut short by the first caller going away while it holds the
		// row lock and has spent the refresh token.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), providerTimeout+10*time.Second)
		defer cancel()
		var refreshed bool
		req.refreshed = &refreshed
		t, err := b.refresh(fctx, p, req, start)
		return flightResult{t, refreshed}, err
	})
	if err != nil {
		return Token{}, err
	}
	res := v.(flightResult)
	b.served(req.Provider, !res.refreshed)
	return res.tok, nil
}

// flightResult is what one flight hands every caller that shared it.
type flightResult struct {
	tok       Token
	refreshed bool
}

func (b *Broker) served(provider string, cached bool) {
	if b.opt.Observer != nil {
		b.opt.Observer.TokenServed(provider, cached)
	}
}

// RefreshAhead refreshes userID's credential at provider if, once its row
// is locked, it is still due: its access token lapses within minValid, or
// (idleSince not zero) it was not refreshed since idleSince, so its refresh
// token would die unused at an idle-timeout provider. A credential someone
// else refreshed meanwhile (another replica, a request) is left alone. It
// reports whether it refreshed. Used by the background refresher.
func (b *Broker) RefreshAhead(ctx context.Context, userID, provider string, minValid time.Duration, idleSince time.Time) (bool, error) {
	p, ok := b.opt.Providers.Get(provider)
	if !ok {
		return false, ErrUnknownProvider
	}
	if minValid <= 0 {
		minValid = DefaultMinValid
	}
	var refreshed bool
	req := Request{UserID: userID, Provider: provider, MinValid: minValid, Actor: ActorRefresher,
		refreshedSince: idleSince, refreshed: &refreshed}
	// Like a request's flight: once the refresh token is spent, the rotated
	// one must be saved even if the refresher is being stopped.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), providerTimeout+10*time.Second)
	defer cancel()
	_, err := b.refresh(fctx, p, req, b.opt.Now())
	return refreshed, err
}

// grantRefused is the provider's refusal of a refresh token (invalid_grant).
// It leaves UpdateCredential without writing, so that the caller can
// re-read the row before deciding the credential is dead.
type grantRefused struct{ code string }

func (e *grantRefused) Error() string { return "refresh token refused: " + e.code }

// refresh answers a request the hot path could not: under the row lock it
// decides (decide), refreshes at the provider if it must (refreshAt), and,
// when the provider refuses the refresh token, marks the credential as
// needing re-authorization (refused).
func (b *Broker) refresh(ctx context.Context, p *providers.Provider, req Request, start time.Time) (Token, error) {
	for attempt := 0; ; attempt++ {
		pass, res, err := b.refreshLocked(ctx, p, req, start)
		var gr *grantRefused
		switch {
		case err == nil:
			if res.Written {
				b.refreshSaved(ctx, req, pass, res)
			}
			return pass.tok, nil
		case errors.Is(err, store.ErrNotFound):
			return Token{}, ErrNotLinked.For(req.Provider)
		case !errors.As(err, &gr):
			return Token{}, err
		}
		retry, err := b.refused(ctx, req, gr.code, pass.usedVer, attempt == 0)
		if !retry {
			return Token{}, err
		}
	}
}

// lockedPass is what one pass under the row lock learnt.
type lockedPass struct {
	// tok is the token to serve: the stored one, or the one just obtained.
	tok Token
	// usedVer is the Version of the row the decision was made on.
	usedVer int64
	// rotated: the provider handed out a new refresh token.
	rotated bool
}

// refreshLocked runs decide, and refreshAt when decide says so, on the row
// as it stands once locked: another process (or an earlier flight here) may
// have refreshed it while this one waited, and then the stored token is
// served and nothing is written. A refresh is written with its audit event
// in the same transaction (one commit, one round trip).
func (b *Broker) refreshLocked(ctx context.Context, p *providers.Provider, req Request, start time.Time) (lockedPass, store.UpdateResult, error) {
	var pass lockedPass
	res, err := b.opt.Store.UpdateCredential(ctx, req.UserID, req.Provider, func(c *store.Credential) (store.Outcome, error) {
		now := b.opt.Now()
		pass.usedVer = c.Version
		serveStored, err := b.decide(c, req, start, now)
		if err != nil {
			return store.Unchanged(), err
		}
		if serveStored {
			pass.tok, err = b.serve(c)
			return store.Unchanged(), err
		}
		return b.refreshAt(ctx, p, req, c, now, &pass)
	})
	return pass, res, err
}

// decide says, from the locked row alone, whether the stored access token
// answers req (serveStored) or the refresh token must be spent; an error
// when neither can be (needs_reauth, or nothing to refresh with). It is
// kept apart from the provider call so that the rules deciding whether a
// refresh token is spent (min_valid, force and its window, the refresher's
// idle keep-alive) read in one place and run before any I/O.
func (b *Broker) decide(c *store.Credential, req Request, start, now time.Time) (serveStored bool, err error) {
	if c.State == store.StateNeedsReauth {
		return false, &ReauthError{Provider: req.Provider, Reason: c.StateReason}
	}
	if b.satisfied(c, req, start, now) {
		return true, nil
	}
	if len(c.RefreshToken) > 0 {
		return false, nil
	}
	if len(c.AccessToken) > 0 {
		if exp, _ := b.expiryOf(c); exp.IsZero() {
			// Never expires, cannot be refreshed: it is what there is.
			return true, nil
		}
	}
	return false, &ReauthError{Provider: req.Provider, Reason: "no_refresh_token"}
}

// refreshAt spends c's refresh token at p and leaves the answer sealed in
// *c, to be written by the update it runs in: the rotated refresh token is
// saved under the same lock that let it be spent, before anyone sees the
// new access token, so no other process can spend the old one meanwhile.
// Every call is reported to metrics and the token endpoint's health.
func (b *Broker) refreshAt(ctx context.Context, p *providers.Provider, req Request, c *store.Credential, now time.Time, pass *lockedPass) (store.Outcome, error) {
	rt, err := b.opt.Keys.Open(c.RefreshToken, binding(c.UserID, c.Provider, crypto.PurposeRefreshToken))
	if err != nil {
		return store.Unchanged(), fmt.Errorf("opening the refresh token of %s: %w", c.Provider, err)
	}
	t0 := time.Now()
	nt, err := b.callRefresh(ctx, p, string(rt))
	b.observeRefresh(p, err, time.Since(t0))
	if err != nil {
		return store.Unchanged(), err
	}
	// x/oauth2 fills in the old refresh token when the answer has
	// none, so rotation shows as a different value.
	pass.rotated = nt.RefreshToken != "" && nt.RefreshToken != string(rt)
	if nt.RefreshToken == "" {
		// The provider does not rotate: keep the old one.
		nt.RefreshToken = string(rt)
	}
	if err := b.seal(c, nt, now); err != nil {
		return store.Unchanged(), err
	}
	if pass.tok, err = b.serve(c); err != nil {
		return store.Unchanged(), err
	}
	// The store writes the row as version usedVer+1 (it holds the lock: no
	// other write comes between).
	return store.WriteAudited(b.auditEvent(req, ActionRefresh,
		map[string]any{"rotated": pass.rotated, "expiry_known": !nt.Expiry.IsZero(), "version": pass.usedVer + 1})), nil
}

// refreshSaved reports a refresh once it is committed: to the flight's
// callers (a refresh happened), the log, and the log again if its audit
// event could not be written (the refresh stands without it).
func (b *Broker) refreshSaved(ctx context.Context, req Request, pass lockedPass, res store.UpdateResult) {
	if req.refreshed != nil {
		*req.refreshed = true
	}
	b.log.InfoContext(ctx, "credential refreshed", "provider", req.Provider, "user", req.UserID, "rotated", pass.rotated, "forced", req.Force, "actor", req.actor())
	if res.Audit == store.AuditFailed {
		b.auditFailed(ctx, req, ActionRefresh, res.AuditErr)
	}
}

// refused handles the provider's refusal (reason) of the refresh token of
// version usedVer. The row is re-read first: if it changed since
// (re-linked, or rotated by a writer that did not wait for our lock), that
// newer state decides, and retry (allowed once, on the first pass) says to
// run the refresh again. Otherwise the credential is marked and the
// ReauthError returned.
func (b *Broker) refused(ctx context.Context, req Request, reason string, usedVer int64, mayRetry bool) (retry bool, err error) {
	cur, err := b.opt.Store.GetCredential(ctx, req.UserID, req.Provider)
	if errors.Is(err, store.ErrNotFound) {
		return false, ErrNotLinked
	}
	if err != nil {
		return false, fmt.Errorf("re-reading the credential: %w", err)
	}
	if cur.Version != usedVer && mayRetry {
		return true, nil
	}
	if err := b.markNeedsReauth(ctx, req, reason, usedVer); err != nil {
		return false, err
	}
	return false, &ReauthError{Provider: req.Provider, Reason: reason}
}

// markNeedsReauth marks the credential as needing re-authorization, with
// its audit event in the same transaction, and tells the Notifier. It is
// a locked update of its own, which leaves the row alone unless it is still
// the version whose refresh token was refused: a re-link or refresh that
// came between must not be marked dead. The credential is kept, never
// deleted; only the dead access token is dropped.
func (b *Broker) markNeedsReauth(ctx context.Context, req Request, reason string, usedVer int64) error {
	res, err := b.opt.Store.UpdateCredential(ctx, req.UserID, req.Provider, func(c *store.Credential) (store.Outcome, error) {
		if c.Version != usedVer {
			return store.Unchanged(), nil // changed again meanwhile: leave it
		}
		c.State = store.StateNeedsReauth
		c.StateReason = reason
		// The dead access token is dropped; the rest stays for the
		// person to see and re-link.
		c.AccessToken = nil
		return store.WriteAudited(b.auditEvent(req, ActionNeedsReauth, map[string]any{"reason": reason})), nil
	})
	if err != nil {
		return fmt.Errorf("marking the credential for re-authorization: %w", err)
	}
	if !res.Written {
		return nil
	}
	b.log.WarnContext(ctx, "provider refused the refresh token; credential needs re-authorization",
		"provider", req.Provider, "user", req.UserID, "reason", reason)
	if res.Audit == store.AuditFailed {
		b.auditFailed(ctx, req, ActionNeedsReauth, res.AuditErr)
	}
	b.notify(ctx, ActionNeedsReauth, req.UserID, req.Provider, map[string]any{"reason": reason})
	return nil
}

// satisfied decides, under the lock, whether the row already answers the
// request without a refresh.
func (b *Broker) satisfied(c *store.Credential, req Request, start, now time.Time) bool {
	if !b.fresh(c, req.MinValid, now) {
		return false
	}
	if !req.refreshedSince.IsZero() && (c.LastRefreshedAt == nil || c.LastRefreshedAt.Before(req.refreshedSince)) {
		return false
	}
	if !req.Force {
		return true
	}
	// Forced: only a refresh that began after (or just before, within the
	// window) this request counts.
	if c.LastRefreshedAt == nil {
		return false
	}
	window := b.opt.ForceWindow
	if window < 0 {
		window = 0
	}
	return !c.LastRefreshedAt.Before(start.Add(-window))
}

// maxLifetimeSeconds is the longest refresh_expires_in a time.Duration holds.
const maxLifetimeSeconds = float64(math.MaxInt64 / int64(time.Second))

// seal puts a token answer into c, both ciphertexts under the primary key
// (KeyID names the key of both).
func (b *Broker) seal(c *store.Credential, t *oauth2.Token, now time.Time) error {
	at, err := b.opt.Keys.Seal([]byte(t.AccessToken), binding(c.UserID, c.Provider, crypto.PurposeAccessToken))
	if err != nil {
		return fmt.Errorf("sealing the access token: %w", err)
	}
	var rt []byte
	if t.RefreshToken != "" {
		if rt, err = b.opt.Keys.Seal([]byte(t.RefreshToken), binding(c.UserID, c.Provider, crypto.PurposeRefreshToken)); err != nil {
			return fmt.Errorf("sealing the refresh token: %w", err)
		}
	}
	c.AccessToken = at
	c.RefreshToken = rt
	c.KeyID = b.opt.Keys.PrimaryKeyID()
	c.TokenType = t.Type()
	if s, ok := t.Extra("scope").(string); ok && s != "" {
		c.Scopes = strings.Fields(s)
	}
	if t.Expiry.IsZero() {
		c.AccessExpiresAt = nil
	} else {
		e := t.Expiry.UTC()
		c.AccessExpiresAt = &e
	}
	// A lifetime beyond what a time.Duration holds (~292 years) would wrap
	// into the past: it counts as no known expiry.
	if v, ok := t.Extra("refresh_expires_in").(float64); ok && v > 0 && v < maxLifetimeSeconds {
		e := now.Add(time.Duration(v) * time.Second).UTC()
		c.RefreshExpiresAt = &e
	}
	n := now.UTC()
	c.LastRefreshedAt = &n
	c.State = store.StateActive
	c.StateReason = ""
	return nil
}

// observeRefresh tells the Observer and the registry's token-endpoint
// health how a refresh-token grant went.
func (b *Broker) observeRefresh(p *providers.Provider, err error, d time.Duration) {
	provider := p.ID
	var (
		gr *grantRefused
		cr *providers.ClientRejectedError
		ue *UnavailableError
	)
	if b.endpoints != nil {
		switch {
		case errors.As(err, &cr):
			// The endpoint answers, and refuses our client: its own
			// verdict (ClientRejected), not a failing endpoint.
			b.endpoints.Observe(provider, "")
			b.endpoints.Rejected(provider, p.Version, cr.Grant, cr.Code)
		case errors.As(err, &ue):
			// 5xx, 429, no answer. Its text never holds the provider's
			// body or a token.
			b.endpoints.Observe(provider, ue.Err.Error())
		default:
			// A token, or a refused grant (invalid_grant): a working
			// endpoint that accepted the client.
			b.endpoints.Observe(provider, "")
			b.endpoints.Accepted(provider, providers.GrantRefreshToken)
		}
	}
	if b.opt.Observer == nil {
		return
	}
	outcome := "ok"
	switch {
	case err == nil:
	case errors.As(err, &gr):
		outcome = "invalid_grant"
	case errors.As(err, &cr):
		outcome = "client_rejected"
	default:
		outcome = "provider_error"
	}
	b.opt.Observer.RefreshObserved(provider, outcome, d)
}

func (b *Broker) notify(ctx context.Context, event, userID, provider string, detail map[string]any) {
	if b.opt.Notifier != nil {
		b.opt.Notifier.CredentialEvent(ctx, event, userID, provider, detail)
	}
}

// callRefresh spends rt at the provider's token endpoint and classifies the
// failure: refused grant, or provider unavailable.
func (b *Broker) callRefresh(ctx context.Context, p *providers.Provider, rt string) (*oauth2.Token, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.opt.HTTPClient)
	ctx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	cfg := p.OAuth2Config("")
	nt, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	if err == nil {
		if nt.AccessToken == "" {
			return nil, &UnavailableError{Provider: p.ID, Err: errors.New("token answer without an access token")}
		}
		return nt, nil
	}
	return nil, classify(p.ID, err)
}

// classify turns an oauth2 error into grantRefused (the person must link
// again), a *providers.ClientRejectedError (tokenstore's client is refused:
// a configuration problem, neither the person's nor passing) or an
// UnavailableError (a retry may succeed), never carrying the provider's
// raw body (it may echo a token).
func classify(provider string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code := re.ErrorCode
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if providers.RejectsClient(status, code) {
			// unauthorized_client among them: it refuses the client's use
			// of the grant (RFC 6749 §5.2), and a real provider (zitadel)
			// answers a wrong client secret with it. Marking every
			// credential needs_reauth for it would send everyone to link
			// again, which fails the same way.
			return &providers.ClientRejectedError{Provider: provider, Grant: providers.GrantRefreshToken, Status: status, Code: code}
		}
		switch code {
		// invalid_request too: one widely used provider answers a replayed
		// rotated refresh token with it rather than invalid_grant.
		case "invalid_grant", "invalid_request":
			if status < 500 {
				return &grantRefused{code: code}
			}
		}
		answer := strings.TrimSpace(fmt.Sprintf("%d %s", status, code))
		if status >= 500 || status == http.StatusTooManyRequests || status == 0 {
			return &UnavailableError{Provider: provider, Err: fmt.Errorf("token endpoint answered %s", answer)}
		}
		// Another 4xx, with a code that says nothing definite: the
		// credential is left alone and the answer is taken as passing.
		return &UnavailableError{Provider: provider, Err: fmt.Errorf("token endpoint refused the request: %s", answer)}
	}
	// Transport failures (refused, reset, timeout): the provider is down
	// or unreachable from here.
	return &UnavailableError{Provider: provider, Err: scrub(err)}
}

// scrub keeps an error's message but drops a URL's query, where a token
// could sit in a misconfigured GET request.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		u := ue.URL
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i]
		}
		return fmt.Errorf("%s %s: %v", ue.Op, u, ue.Err)
	}
	return err
}

// Link stores a freshly obtained token answer as userID's credential at
// provider, replacing an earlier one (and its needs_reauth state).
func (b *Broker) Link(ctx context.Context, userID, provider, subject, actor string, t *oauth2.Token) error {
	now := b.opt.Now()
	c := store.Credential{UserID: userID, Provider: provider, Subject: subject}
	if err := b.seal(&c, t, now); err != nil {
		return err
	}
	// Linking is not a refresh: a force_refresh right after it must refresh.
	c.LastRefreshedAt = nil
	// A Notifier wants to know when a credential that needed
	// re-authorization comes back; one extra read per link tells.
	wasDead := false
	if b.opt.Notifier != nil {
		if old, err := b.opt.Store.GetCredential(ctx, userID, provider); err == nil && old.State == store.StateNeedsReauth {
			wasDead = true
		}
	}
	saved, err := b.opt.Store.UpsertCredential(ctx, c)
	if err != nil {
		return fmt.Errorf("saving the linked credential: %w", err)
	}
	b.audit(ctx, Request{UserID: userID, Provider: provider, Actor: actor}, ActionLink,
		map[string]any{"has_refresh_token": t.RefreshToken != "", "expiry_known": !t.Expiry.IsZero(), "version": saved.Version})
	if wasDead {
		b.notify(ctx, EventRecovered, userID, provider, nil)
	}
	return nil
}

// RevokeResult says what Revoke did.
type RevokeResult struct {
	// Existed is false when there was nothing to revoke.
	Existed bool
	// AtProvider is true when the provider confirmed the revocation.
	AtProvider bool
	// ProviderError explains why the provider did not (no endpoint, down, ...).
	ProviderError string
}

// Revoke revokes the credential at the provider (RFC 7009) where it has a
// revocation endpoint, then deletes it. The provider call runs under the
// row lock so that no refresh spends a token that is being revoked. A
// provider that fails to answer does not keep the credential: the person
// asked tokenstore to let go of it, and it does; the result says so.
func (b *Broker) Revoke(ctx context.Context, userID, provider, actor string) (RevokeResult, error) {
	var res RevokeResult
	p, ok := b.opt.Providers.Get(provider)
	// The update only holds the row lock while the provider is told; it
	// writes nothing (Unchanged), as the row is deleted right after.
	_, err := b.opt.Store.UpdateCredential(ctx, userID, provider, func(c *store.Credential) (store.Outcome, error) {
		res.Existed = true
		if !ok {
			res.ProviderError = "provider no longer configured"
			return store.Unchanged(), nil
		}
		if p.RevocationURL == "" {
			res.ProviderError = "provider has no revocation endpoint"
			return store.Unchanged(), nil
		}
		tok, hint := c.RefreshToken, "refresh_token"
		purpose := crypto.PurposeRefreshToken
		if len(tok) == 0 {
			tok, hint, purpose = c.AccessToken, "access_token", crypto.PurposeAccessToken
		}
		if len(tok) == 0 {
			return store.Unchanged(), nil
		}
		plain, err := b.opt.Keys.Open(tok, binding(c.UserID, c.Provider, purpose))
		if err != nil {
			res.ProviderError = "stored token unreadable"
			return store.Unchanged(), nil
		}
		if err := b.revokeAt(ctx, p, string(plain), hint); err != nil {
			res.ProviderError = err.Error()
			b.log.WarnContext(ctx, "revocation at the provider failed; forgetting the credential anyway", "provider", provider, "user", userID, "error", err)
			return store.Unchanged(), nil
		}
		res.AtProvider = true
		return store.Unchanged(), nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("revoking: %w", err)
	}
	if err := b.opt.Store.DeleteCredential(ctx, userID, provider); err != nil && !errors.Is(err, store.ErrNotFound) {
		return res, fmt.Errorf("deleting the credential: %w", err)
	}
	b.audit(ctx, Request{UserID: userID, Provider: provider, Actor: actor}, ActionRevoke,
		map[string]any{"at_provider": res.AtProvider, "provider_error": res.ProviderError})
	return res, nil
}

// revokeAt posts an RFC 7009 revocation request, authenticating the way the
// provider's token endpoint expects.
func (b *Broker) revokeAt(ctx context.Context, p *providers.Provider, token, hint string) error {
	ctx, cancel := context.WithTimeout(ctx, providerTimeout)
	defer cancel()
	form := url.Values{"token": {token}, "token_type_hint": {hint}}
	basic := p.AuthMethod != providers.AuthMethodClientSecretPost && p.AuthMethod != providers.AuthMethodNone
	if !basic {
		form.Set("client_id", p.ClientID)
		if p.AuthMethod == providers.AuthMethodClientSecretPost {
			form.Set("client_secret", p.ClientSecret)
		}
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, p.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("building the revocation request: %w", err)
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		r.SetBasicAuth(url.QueryEscape(p.ClientID), url.QueryEscape(p.ClientSecret))
	}
	resp, err := b.opt.HTTPClient.Do(r)
	if err != nil {
		return scrub(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&e)
	return fmt.Errorf("revocation endpoint answered %d %s", resp.StatusCode, e.Error)
}

// actor is the audit actor of req: Actor, or the user themself.
func (r Request) actor() string {
	if r.Actor == "" {
		return "user:" + r.UserID
	}
	return r.Actor
}

// auditEvent is the audit event of action on req's credential.
func (b *Broker) auditEvent(req Request, action string, detail map[string]any) store.AuditEvent {
	d, _ := json.Marshal(detail)
	return store.AuditEvent{Time: b.opt.Now().UTC(), UserID: req.UserID, Actor: req.actor(), Action: action, Provider: req.Provider, Detail: d}
}

// audit appends an event; a failure is logged, not returned, as the
// operation it records has already happened.
func (b *Broker) audit(ctx context.Context, req Request, action string, detail map[string]any) {
	_, err := b.opt.Store.AppendAudit(context.WithoutCancel(ctx), b.auditEvent(req, action, detail))
	b.auditFailed(ctx, req, action, err)
}

// auditFailed logs a failure to write an audit event (err nil: none).
func (b *Broker) auditFailed(ctx context.Context, req Request, action string, err error) {
	if err != nil {
		b.log.ErrorContext(ctx, "writing an audit event failed", "action", action, "provider", req.Provider, "user", req.UserID, "error", err)
	}
}

// Expiry returns the expiry the broker assumes for a stored credential
// (see Token.Expiry); for listings.
func (b *Broker) Expiry(c *store.Credential) (time.Time, bool) { return b.expiryOf(c) }
