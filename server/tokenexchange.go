package server

import (
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
)

// RFC 8693 identifiers.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
)

// maxFormBody bounds the token request: a ServiceAccount token is about
// 1 KB, a login access token not much more.
const maxFormBody = 64 << 10

// exchangeResponse is the RFC 8693 §2.2.1 answer.
type exchangeResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	// ExpiresIn is omitted for a token without expiry.
	ExpiresIn *int64 `json:"expires_in,omitempty"`
	Scope     string `json:"scope,omitempty"`
}

// tokenExchange is POST /api/oauth2/token, the standard way in for
// workloads and for people's programs:
//
//   - subject_token_type=…:jwt, subject_token = a ServiceAccount token with
//     tokenstore's audience. Without requested_subject: the provider's
//     service (client-credentials) token, if the provider allows the
//     ServiceAccount. With requested_subject=<user id>: that person's access
//     token, if they granted it to the ServiceAccount.
//   - subject_token_type=…:access_token, subject_token = a person's access
//     token from the login issuer: that person's own access token at the
//     provider (requested_subject, if given, must be themselves).
//
// resource or audience names the provider (its id). Errors are RFC 6749
// §5.2 JSON with a `reason` extension.
func (s *Server) tokenExchange(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	c.Header("Pragma", "no-cache")
	t, oe := s.exchange(c)
	if oe != nil {
		if oe.Status == http.StatusUnauthorized {
			// RFC 6750 §3 asks for a challenge with 401.
			c.Header("WWW-Authenticate", `Bearer error="invalid_token"`)
		}
		c.JSON(oe.Status, oe)
		return
	}
	resp := exchangeResponse{AccessToken: t.AccessToken, IssuedTokenType: TokenTypeAccessToken, TokenType: t.TokenType, Scope: scopeString(t.Scopes)}
	if resp.TokenType == "" {
		resp.TokenType = "Bearer"
	}
	if !t.Expiry.IsZero() {
		in := int64(t.Expiry.Sub(s.opt.Now()).Seconds())
		resp.ExpiresIn = &in
	}
	c.JSON(http.StatusOK, resp)
}

func invalidRequest(reason, desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Reason: reason, Description: desc}
}

// exchange validates the request and dispatches on the subject token type.
func (s *Server) exchange(c *gin.Context) (issued, *oauthError) {
	ctx := c.Request.Context()
	mt, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return issued{}, invalidRequest("", "The request must be form-encoded (Content-Type: application/x-www-form-urlencoded).")
	}
	// Tokens in a URL end up in access logs and proxies: refuse them there.
	if c.Request.URL.RawQuery != "" {
		return issued{}, invalidRequest("", "Parameters must be sent in the request body, not in the URL.")
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxFormBody)
	if err := c.Request.ParseForm(); err != nil {
		return issued{}, invalidRequest("", "The request body is not a readable form or is too large.")
	}
	form := c.Request.PostForm
	// RFC 6749 §3.2: parameters must not be repeated.
	for k, v := range form {
		if len(v) > 1 {
			return issued{}, invalidRequest("", "Parameter "+safeParam(k)+" is repeated.")
		}
	}
	if gt := form.Get("grant_type"); gt != GrantTypeTokenExchange {
		if gt == "" {
			return issued{}, invalidRequest("", "grant_type is required ("+GrantTypeTokenExchange+").")
		}
		return issued{}, &oauthError{Status: http.StatusBadRequest, Code: "unsupported_grant_type", Description: "Only " + GrantTypeTokenExchange + " is supported here."}
	}
	if rt := form.Get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken {
		return issued{}, invalidRequest("", "requested_token_type, if given, must be "+TokenTypeAccessToken+".")
	}
	if form.Get("actor_token") != "" {
		return issued{}, invalidRequest("", "actor_token is not supported; name the person with requested_subject.")
	}
	providerID, oe := target(form)
	if oe != nil {
		return issued{}, oe
	}
	subject := form.Get("subject_token")
	if subject == "" {
		return issued{}, invalidRequest("", "subject_token is required.")
	}
	p, ok := s.opt.Providers.Get(providerID)
	if !ok {
		return issued{}, &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Reason: "unknown_provider", Description: "There is no provider with this id."}
	}
	person := form.Get("requested_subject")
	switch form.Get("subject_token_type") {
	case TokenTypeJWT:
		wid, oe := s.authenticateWorkload(ctx, subject)
		if oe != nil {
			return issued{}, oe
		}
		if person == "" {
			return s.serviceToken(ctx, wid, p)
		}
		return s.delegatedToken(ctx, wid, p, person)
	case TokenTypeAccessToken:
		id, oe := s.authenticatePerson(ctx, subject)
		if oe != nil {
			return issued{}, oe
		}
		if person != "" && person != id.UserID {
			return issued{}, &oauthError{Status: http.StatusForbidden, Code: "unauthorized_client", Reason: "not_own_credential",
				Description: "A person's access token gets that person's own credential only; requested_subject names someone else."}
		}
		return s.personToken(ctx, id.UserID, p.ID, "user:"+id.UserID)
	case "":
		return issued{}, invalidRequest("", "subject_token_type is required ("+TokenTypeJWT+" for a ServiceAccount token, "+TokenTypeAccessToken+" for a person's access token).")
	}
	return issued{}, invalidRequest("unsupported_token_type", "subject_token_type must be "+TokenTypeJWT+" or "+TokenTypeAccessToken+".")
}

// target reads the provider from resource or audience (either, or both
// naming the same provider). resource may also be the provider's API URL
// (…/api/v1.0/{provider}), as RFC 8707 resources are URIs.
func target(form url.Values) (string, *oauthError) {
	res, aud := form.Get("resource"), form.Get("audience")
	if res != "" {
		if u, err := url.Parse(res); err == nil && u.IsAbs() {
			_, after, ok := strings.Cut(strings.TrimSuffix(u.Path, "/"), "/api/v1.0/")
			if !ok || after == "" || strings.Contains(after, "/") {
				return "", &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Reason: "unknown_provider",
					Description: "resource must be a provider id or its URL …/api/v1.0/{provider}."}
			}
			res = after
		}
	}
	switch {
	case res == "" && aud == "":
		return "", &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Description: "Name the provider in resource or audience."}
	case res != "" && aud != "" && res != aud:
		return "", &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Description: "resource and audience name different providers."}
	case res != "":
		return res, nil
	}
	return aud, nil
}

// safeParam keeps a parameter name printable and short in a description.
func safeParam(k string) string {
	if len(k) > 40 {
		k = k[:40]
	}
	return safeCode(k)
}
