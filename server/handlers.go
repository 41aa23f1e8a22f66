package server

import (
	"errors"
	"html"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
)

// loginCookie holds the pending login, sealed (auth.StartLogin), so that
// starting a login stores nothing server-side, and ties the callback to the
// browser that started it. It is Lax whatever SESSION_COOKIE_SAMESITE says:
// the callback is a cross-site top-level navigation, on which Strict
// cookies are not sent.
const loginCookie = "tokenstore_login"

func (s *Server) base() string { return strings.TrimSuffix(s.opt.Settings.ExternalURL, "/") }

func (s *Server) sameSite() http.SameSite {
	switch strings.ToLower(s.opt.Settings.SessionCookieSameSite) {
	case "strict":
		return http.SameSiteStrictMode
	case "none":
		return http.SameSiteNoneMode
	}
	return http.SameSiteLaxMode
}

func (s *Server) setCookie(c *gin.Context, name, value, path string, maxAge int, site http.SameSite) {
	http.SetCookie(c.Writer, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge,
		HttpOnly: true, Secure: s.opt.Settings.CookieSecure(), SameSite: site})
}

func (s *Server) redirect(c *gin.Context, to string) {
	c.Header("Cache-Control", "no-store")
	if s.strictCrossSite(c) {
		s.hop(c, to)
		return
	}
	c.Redirect(http.StatusFound, to)
}

// strictCrossSite tells whether this request arrived by a cross-site
// navigation (a provider redirecting back) while the session cookie is
// SameSite=Strict: the browser did not send the session cookie with it, and
// would not send it along a redirect chain that started cross-site either.
// Browsers say so in Sec-Fetch-Site; one that does not gets the plain
// redirect (and, with Strict, the failure it always had).
func (s *Server) strictCrossSite(c *gin.Context) bool {
	return s.sameSite() == http.SameSiteStrictMode && c.GetHeader("Sec-Fetch-Site") == "cross-site"
}

// hop answers with a page that navigates to `to` at once. That navigation
// starts from our own page, so it is same-site and the browser sends the
// SameSite=Strict session cookie with it. It carries no script (the page's
// Content-Security-Policy allows none) and keeps the URL, which may hold a
// code and state, out of Referer headers.
func (s *Server) hop(c *gin.Context, to string) {
	c.Header("Cache-Control", "no-store")
	c.Header("Referrer-Policy", "no-referrer")
	c.Header("Content-Security-Policy", "default-src 'none'")
	u := html.EscapeString(to)
	c.Data(http.StatusOK, "text/html; charset=utf-8", []byte(`<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=`+u+
		`"><title>Continuing…</title><p>Continuing to <a href="`+u+`">tokenstore</a>…</p>`))
}

// login starts an OIDC login at the login issuer.
func (s *Server) login(c *gin.Context) {
	ret, err := s.returns.Check(c.Query("return_url"))
	if err != nil {
		_ = c.Error(err)
		return
	}
	authURL, pending, err := s.auth.StartLogin(c.Request.Context(), ret)
	if err != nil {
		_ = c.Error(err)
		return
	}
	s.setCookie(c, loginCookie, pending, "/api/oidc", 600, http.SameSiteLaxMode)
	s.redirect(c, authURL)
}

// loginCallback finishes the login and starts the session.
func (s *Server) loginCallback(c *gin.Context) {
	pending, _ := c.Cookie(loginCookie)
	ctx := c.Request.Context()
	// The pending login is spent whatever comes of it: a browser coming
	// back keeps no cookie to replay.
	s.setCookie(c, loginCookie, "", "/api/oidc", -1, http.SameSiteLaxMode)
	if e := c.Query("error"); e != "" {
		ret, err := s.auth.AbortLogin(ctx, pending, c.Query("state"))
		if err != nil {
			_ = c.Error(err)
			return
		}
		s.redirect(c, auth.WithParams(ret, "error", fault.SafeCode(e)))
		return
	}
	cookie, ret, err := s.auth.FinishLogin(ctx, pending, c.Query("state"), c.Query("code"))
	if err != nil {
		_ = c.Error(err)
		return
	}
	// A login replaces the browser's previous session rather than leaving it
	// alive in the database.
	if old := s.sessionCookie(c); old != "" {
		if err := s.auth.Logout(ctx, old); err != nil {
			s.log.WarnContext(ctx, "ending the previous session failed", "error", err)
		}
	}
	s.setCookie(c, s.cookieName, cookie, "/", int(s.opt.Settings.SessionLifetime.Seconds()), s.sameSite())
	s.redirect(c, ret)
}

// logout ends the session (if any) and clears the cookie.
func (s *Server) logout(c *gin.Context) {
	if err := s.auth.Logout(c.Request.Context(), s.sessionCookie(c)); err != nil {
		_ = c.Error(err)
		return
	}
	s.setCookie(c, s.cookieName, "", "/", -1, s.sameSite())
	c.JSON(http.StatusOK, gin.H{"status": "logged_out"})
}

// whoamiAnswer is the caller's identity as the Flask service's /api/whoami
// gave it (its flask_tern user: id, email, email_verified, name, claims,
// roles, scopes), so its clients keep reading the same keys, together with
// tokenstore's own (user_id, issuer, sub, auth_method, from Identity).
// Name and Email shadow Identity's so that they are always present, empty
// when the issuer gave none, as the Flask service's were.
type whoamiAnswer struct {
	*auth.Identity
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	Email         string         `json:"email"`
	EmailVerified bool           `json:"email_verified"`
	Roles         []string       `json:"roles"`
	Scopes        []string       `json:"scopes"`
	Claims        map[string]any `json:"claims"`
}

func (s *Server) whoami(c *gin.Context) {
	id := identity(c)
	// Claims are the login's (or the bearer token's) claims, never a token:
	// Identity keeps no token in them. Arrays and the object are empty, not
	// null, so a client can iterate them without a check, as it could the
	// Flask service's.
	claims := id.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	// Some issuers (Cognito among them) send email_verified as a string.
	verified, _ := claims["email_verified"].(bool)
	if str, ok := claims["email_verified"].(string); ok {
		verified = strings.EqualFold(str, "true")
	}
	c.JSON(http.StatusOK, whoamiAnswer{
		Identity:      id,
		ID:            id.UserID,
		Name:          id.Name,
		Email:         id.Email,
		EmailVerified: verified,
		Roles:         nonNil(id.Roles),
		Scopes:        nonNil(id.Scopes),
		Claims:        claims,
	})
}

func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// provider looks up the path's provider or records unknown_provider.
func (s *Server) provider(c *gin.Context) (*providers.Provider, bool) {
	id := c.Param("provider")
	p, ok := s.opt.Providers.Get(id)
	if !ok {
		_ = c.Error(broker.ErrUnknownProvider)
	}
	return p, ok
}

func (s *Server) actionURL(provider, action string) string {
	return s.base() + "/api/v1.0/" + url.PathEscape(provider) + "/" + action
}

func (s *Server) redirectURI(provider string) string { return s.actionURL(provider, "redirect_uri") }

func nullable(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

type authorization struct {
	Provider string             `json:"provider"`
	Active   bool               `json:"active"`
	State    string             `json:"state"`
	Actions  map[string]string  `json:"actions"`
	Metadata map[string]*string `json:"metadata"`
	// ExpiresAt is the cached access token's expiry (unix seconds), when known.
	ExpiresAt *int64 `json:"expires_at"`
}

// authorizations lists every provider with the caller's link state, in the
// seed's shape (provider, active, actions, metadata) plus state and expiry.
func (s *Server) authorizations(c *gin.Context) {
	id := identity(c)
	creds, err := s.opt.Store.ListCredentials(c.Request.Context(), id.UserID)
	if err != nil {
		_ = c.Error(err)
		return
	}
	byProvider := make(map[string]*store.Credential, len(creds))
	for i := range creds {
		byProvider[creds[i].Provider] = &creds[i]
	}
	out := []authorization{}
	for _, p := range s.opt.Providers.List() {
		a := authorization{
			Provider: p.ID, State: "not_linked",
			Actions: map[string]string{"authorize": s.actionURL(p.ID, "authorize"), "token": s.actionURL(p.ID, "token"), "revoke": s.actionURL(p.ID, "revoke")},
			Metadata: map[string]*string{"name": nullable(p.Metadata.Name), "description": nullable(p.Metadata.Description),
				"url": nullable(p.Metadata.URL), "icon": nullable(p.Metadata.Icon), "logo": nullable(p.Metadata.Logo)},
		}
		if cr, ok := byProvider[p.ID]; ok {
			a.State = string(cr.State)
			a.Active = cr.State == store.StateActive
			if exp, known := s.broker.Expiry(cr); known {
				u := exp.Unix()
				a.ExpiresAt = &u
			}
		}
		out = append(out, a)
	}
	c.JSON(http.StatusOK, out)
}

// requireSession: linking is bound to a browser session (its state is), so a
// bearer token cannot start or finish one.
func requireSession(c *gin.Context) (*auth.Identity, bool) {
	id := identity(c)
	if id.Method != "session" {
		_ = c.Error(&fault.Error{Status: http.StatusForbidden, Code: auth.ErrUnauthenticated.Code, Message: "Linking an account needs a browser session; sign in at /api/oidc/login."})
		return nil, false
	}
	return id, true
}

// returnURL is where linking sends the browser back to: return_url, checked
// against the allow-list; without one, the Referer, as the Flask service
// did, but only when it passes the same check (the Flask service followed
// any Referer: an open redirect); else the web page.
func (s *Server) returnURL(c *gin.Context) (string, error) {
	if raw := c.Query("return_url"); raw != "" {
		return s.returns.Check(raw)
	}
	if ref := c.GetHeader("Referer"); ref != "" {
		if u, err := s.returns.Check(ref); err == nil {
			return u, nil
		}
	}
	return s.returns.Default(), nil
}

// authorize starts linking the caller's account at a provider.
func (s *Server) authorize(c *gin.Context) {
	p, ok := s.provider(c)
	if !ok {
		return
	}
	id, ok := requireSession(c)
	if !ok {
		return
	}
	ret, err := s.returnURL(c)
	if err != nil {
		_ = c.Error(err)
		return
	}
	state, pend, err := s.auth.Begin(c.Request.Context(), id.SessionID, p.ID, ret)
	if err != nil {
		_ = c.Error(err)
		return
	}
	opts := p.AuthCodeOptions()
	switch p.PKCE {
	case providers.PKCENone:
	case providers.PKCEPlain:
		opts = append(opts, oauth2.SetAuthURLParam("code_challenge", pend.Verifier), oauth2.SetAuthURLParam("code_challenge_method", "plain"))
	default:
		opts = append(opts, oauth2.S256ChallengeOption(pend.Verifier))
	}
	if p.IsOIDC() {
		opts = append(opts, oidc.Nonce(pend.Nonce))
	}
	s.redirect(c, p.OAuth2Config(s.redirectURI(p.ID)).AuthCodeURL(state, opts...))
}

// errSubjectMismatch refuses a link whose provider subject is not the
// signed-in person's where the provider requires the same subject.
var errSubjectMismatch = &fault.Error{Status: http.StatusForbidden, Code: "subject_mismatch",
	Message: "This provider links only the account you are signed in with; you signed in at the provider as someone else."}

// linkCallback is the provider's redirect back: state, code exchange, ID
// token checks for OIDC providers, then the credential is stored.
func (s *Server) linkCallback(c *gin.Context) {
	p, ok := s.provider(c)
	if !ok {
		return
	}
	id, ok := requireSession(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	pend, err := s.auth.Consume(ctx, c.Query("state"), id.SessionID, p.ID)
	if err != nil {
		_ = c.Error(err)
		return
	}
	if e := c.Query("error"); e != "" {
		s.redirect(c, auth.WithParams(pend.ReturnURL, "error", fault.SafeCode(e), "provider", p.ID))
		return
	}
	code := c.Query("code")
	if code == "" {
		s.redirect(c, auth.WithParams(pend.ReturnURL, "error", "invalid_response", "provider", p.ID))
		return
	}
	var opts []oauth2.AuthCodeOption
	if p.PKCE != providers.PKCENone {
		opts = append(opts, oauth2.VerifierOption(pend.Verifier))
	}
	xctx := oidc.ClientContext(ctx, s.opt.HTTPClient)
	tok, err := p.OAuth2Config(s.redirectURI(p.ID)).Exchange(xctx, code, opts...)
	if err != nil {
		var re *oauth2.RetrieveError
		reason := "provider_unavailable"
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			reason = fault.SafeCode(re.ErrorCode)
		}
		s.log.WarnContext(ctx, "code exchange failed", "provider", p.ID, "user", id.UserID, "reason", reason)
		s.redirect(c, auth.WithParams(pend.ReturnURL, "error", reason, "provider", p.ID))
		return
	}
	subject := ""
	if raw, _ := tok.Extra("id_token").(string); raw != "" && p.IsOIDC() {
		idt, err := p.Verifier.Verify(xctx, raw)
		if err != nil {
			_ = c.Error(&fault.Error{Status: http.StatusBadRequest, Code: "invalid_id_token", Message: "The provider's ID token did not verify."})
			return
		}
		if idt.Nonce != pend.Nonce {
			_ = c.Error(auth.ErrNonceMismatch)
			return
		}
		subject = idt.Subject
	}
	if p.RequireSameSubject && subject != id.Subject {
		// The Flask service refused every such link; here it is the
		// provider's choice (spec.requireSameSubject), for sites that link
		// the identity provider they log in with. Without an ID token the
		// subject is unknown, which cannot pass either.
		s.log.WarnContext(ctx, "link refused: subject differs from the signed-in person's", "provider", p.ID, "user", id.UserID)
		_ = c.Error(errSubjectMismatch)
		return
	}
	if err := s.broker.Link(ctx, id.UserID, p.ID, subject, "user:"+id.UserID, tok); err != nil {
		_ = c.Error(err)
		return
	}
	s.log.InfoContext(ctx, "account linked", "provider", p.ID, "user", id.UserID)
	s.redirect(c, pend.ReturnURL)
}

// tokenResponse is the seed's token answer. The refresh token is never in it.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	// ExpiresIn and ExpiresAt are null for a token that never expires.
	ExpiresIn *int64  `json:"expires_in"`
	ExpiresAt *int64  `json:"expires_at"`
	Scope     *string `json:"scope,omitempty"`
}

// token returns an access token valid for at least min_valid seconds.
func (s *Server) token(c *gin.Context) {
	if _, ok := s.provider(c); !ok {
		return
	}
	id := identity(c)
	// Actor left empty: the user themself (built only if an audit event is).
	req := broker.Request{UserID: id.UserID, Provider: c.Param("provider")}
	// Most calls have no query: parsing an empty one still allocates.
	if c.Request.URL.RawQuery != "" {
		if v := c.Query("min_valid"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 86400 {
				_ = c.Error(&fault.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: "min_valid must be a number of seconds between 0 and 86400."})
				return
			}
			req.MinValid = time.Duration(n) * time.Second
		}
		if v := c.Query("force_refresh"); v != "" {
			f, err := strconv.ParseBool(v)
			if err != nil {
				_ = c.Error(&fault.Error{Status: http.StatusBadRequest, Code: "invalid_request", Message: "force_refresh must be true or false."})
				return
			}
			req.Force = f
		}
	}
	t, err := s.broker.Token(c.Request.Context(), req)
	if err != nil {
		_ = c.Error(err)
		return
	}
	resp := tokenResponse{AccessToken: t.AccessToken, TokenType: t.TokenType}
	if !t.Expiry.IsZero() {
		at := t.Expiry.Unix()
		in := int64(t.Expiry.Sub(s.opt.Now()).Seconds())
		resp.ExpiresAt, resp.ExpiresIn = &at, &in
	}
	if len(t.Scopes) > 0 {
		sc := strings.Join(t.Scopes, " ")
		resp.Scope = &sc
	}
	// Header values from shared slices: net/http only reads them, and an
	// Add to one of these keys appends to a full slice, so it copies.
	h := c.Writer.Header()
	h["Cache-Control"], h["Pragma"], h["Content-Type"] = hdrNoStore, hdrNoCache, hdrJSON
	c.JSON(http.StatusOK, resp)
}

// Header values of token answers, shared by all of them (see token).
var (
	hdrNoStore = []string{"no-store"}
	hdrNoCache = []string{"no-cache"}
	hdrJSON    = []string{"application/json; charset=utf-8"}
)

// revoke revokes at the provider where it can and forgets the credential.
// The answer is the Flask service's "Token revoked", or, for a client that
// asks for application/json, what happened in detail.
func (s *Server) revoke(c *gin.Context) {
	if _, ok := s.provider(c); !ok {
		return
	}
	id := identity(c)
	res, err := s.broker.Revoke(c.Request.Context(), id.UserID, c.Param("provider"), "user:"+id.UserID)
	if err != nil {
		_ = c.Error(err)
		return
	}
	if !acceptsJSONObject(c.GetHeader("Accept")) {
		// The Flask service's answer, which its clients may compare.
		c.JSON(http.StatusOK, "Token revoked")
		return
	}
	body := gin.H{"provider": c.Param("provider"), "revoked": res.Existed, "revoked_at_provider": res.AtProvider}
	if res.ProviderError != "" {
		body["provider_error"] = res.ProviderError
	}
	c.JSON(http.StatusOK, body)
}

// acceptsJSONObject reports whether an Accept header names application/json
// itself (not only */*): such a client gets revoke's detailed answer, any
// other the Flask service's JSON string.
func acceptsJSONObject(accept string) bool {
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, _ := strings.Cut(part, ";")
		if strings.EqualFold(strings.TrimSpace(mt), "application/json") {
			return true
		}
	}
	return false
}
