package server

import (
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/fault"
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
	t, err := s.exchange(c)
	if err != nil {
		s.renderOAuth(c, err)
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
	// What c.JSON would write, without reflection (see appendExchangeResponse).
	c.Data(http.StatusOK, "application/json; charset=utf-8",
		appendExchangeResponse(make([]byte, 0, 160+len(resp.AccessToken)+len(resp.TokenType)+len(resp.Scope)), &resp))
}

func invalidRequest(reason, desc string) *fault.Error {
	return &fault.Error{Status: http.StatusBadRequest, OAuth: "invalid_request", Code: reason, Message: desc}
}

// exchange validates the request and dispatches on the subject token type.
func (s *Server) exchange(c *gin.Context) (issued, error) {
	ctx := c.Request.Context()
	if !formEncoded(c.GetHeader("Content-Type")) {
		return issued{}, invalidRequest("", "The request must be form-encoded (Content-Type: application/x-www-form-urlencoded).")
	}
	// Tokens in a URL end up in access logs and proxies: refuse them there.
	if c.Request.URL.RawQuery != "" {
		return issued{}, invalidRequest("", "Parameters must be sent in the request body, not in the URL.")
	}
	form, err := readForm(c)
	if err != nil {
		return issued{}, invalidRequest("", "The request body is not a readable form or is too large.")
	}
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
		return issued{}, &fault.Error{Status: http.StatusBadRequest, OAuth: "unsupported_grant_type", Message: "Only " + GrantTypeTokenExchange + " is supported here."}
	}
	if rt := form.Get("requested_token_type"); rt != "" && rt != TokenTypeAccessToken {
		return issued{}, invalidRequest("", "requested_token_type, if given, must be "+TokenTypeAccessToken+".")
	}
	if form.Get("actor_token") != "" {
		return issued{}, invalidRequest("", "actor_token is not supported; name the person with requested_subject.")
	}
	providerID, terr := target(form)
	if terr != nil {
		return issued{}, terr
	}
	subject := form.Get("subject_token")
	if subject == "" {
		return issued{}, invalidRequest("", "subject_token is required.")
	}
	p, ok := s.opt.Providers.Get(providerID)
	if !ok {
		return issued{}, &fault.Error{Status: http.StatusBadRequest, OAuth: "invalid_target", Code: "unknown_provider", Message: "There is no provider with this id."}
	}
	req := delegation.Request{Provider: p, Subject: form.Get("requested_subject")}
	var caller delegation.Caller
	switch form.Get("subject_token_type") {
	case TokenTypeJWT:
		wid, err := s.authenticateWorkload(ctx, subject)
		if err != nil {
			return issued{}, s.unidentified(c, err)
		}
		caller.Workload = &wid
		if err := s.takePrincipal(c, "sa:"+wid.Namespace+"/"+wid.ServiceAccount); err != nil {
			return issued{}, err
		}
	case TokenTypeAccessToken:
		// As the API's bearer authentication: auth's refusals and outages
		// carry their OAuth answers (invalid_token 401; 503 for an issuer
		// that cannot be asked or a spent verification budget).
		id, err := s.auth.Bearer(ctx, subject)
		if err != nil {
			return issued{}, s.unidentified(c, err)
		}
		caller.PersonID = id.UserID
		if err := s.takePrincipal(c, "user:"+id.UserID); err != nil {
			return issued{}, err
		}
	case "":
		return issued{}, invalidRequest("", "subject_token_type is required ("+TokenTypeJWT+" for a ServiceAccount token, "+TokenTypeAccessToken+" for a person's access token).")
	default:
		return issued{}, invalidRequest("unsupported_token_type", "subject_token_type must be "+TokenTypeJWT+" or "+TokenTypeAccessToken+".")
	}
	d, err := s.delegation.Decide(ctx, caller, req)
	if err != nil {
		return issued{}, err
	}
	return s.handOut(ctx, caller.Workload, p, d)
}

// formContentType is the one media type of the token request.
const formContentType = "application/x-www-form-urlencoded"

// formEncoded reports whether a Content-Type is form-encoding, as
// mime.ParseMediaType reads it (any case, parameters such as charset). The
// usual exact spelling is recognised without parsing.
func formEncoded(ct string) bool {
	if ct == formContentType {
		return true
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == formContentType
}

// formPrealloc bounds the buffer readForm takes up front on the word of
// Content-Length: a token request is 1-2 KB; a larger body grows the
// buffer as it arrives, so a Content-Length alone reserves no more.
const formPrealloc = 8 << 10

// readForm reads the form body of a request whose Content-Type is
// form-encoded and whose URL has no query: what Request.ParseForm then
// does (its PostForm, set here too), with the body read into one buffer
// sized by Content-Length (up to formPrealloc) instead of grown from 512
// bytes, and the media type not parsed a second time. The body is limited
// to maxFormBody.
func readForm(c *gin.Context) (url.Values, error) {
	r := c.Request
	body := http.MaxBytesReader(c.Writer, r.Body, maxFormBody)
	size := int64(512)
	if r.ContentLength > 0 {
		// One byte more, so that reading the end needs no growth.
		size = min(r.ContentLength, formPrealloc) + 1
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	form, err := url.ParseQuery(string(buf))
	r.PostForm, r.Form = form, form
	return form, err
}

// target reads the provider from resource or audience (either, or both
// naming the same provider). resource may also be the provider's API URL
// (…/api/v1.0/{provider}), as RFC 8707 resources are URIs.
func target(form url.Values) (string, *fault.Error) {
	res, aud := form.Get("resource"), form.Get("audience")
	if res != "" {
		if u, err := url.Parse(res); err == nil && u.IsAbs() {
			_, after, ok := strings.Cut(strings.TrimSuffix(u.Path, "/"), "/api/v1.0/")
			if !ok || after == "" || strings.Contains(after, "/") {
				return "", &fault.Error{Status: http.StatusBadRequest, OAuth: "invalid_target", Code: "unknown_provider",
					Message: "resource must be a provider id or its URL …/api/v1.0/{provider}."}
			}
			res = after
		}
	}
	switch {
	case res == "" && aud == "":
		return "", &fault.Error{Status: http.StatusBadRequest, OAuth: "invalid_target", Message: "Name the provider in resource or audience."}
	case res != "" && aud != "" && res != aud:
		return "", &fault.Error{Status: http.StatusBadRequest, OAuth: "invalid_target", Message: "resource and audience name different providers."}
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
	return fault.SafeCode(k)
}
