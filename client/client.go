// Package client lets a Go program running in a Kubernetes pod get access
// tokens from tokenstore with its ServiceAccount identity.
//
// The pod mounts a projected ServiceAccount token whose audience is
// tokenstore's (see docs/workloads.md). TokenSource exchanges it at
// tokenstore's RFC 8693 token-exchange endpoint for an access token at a
// provider — the provider's service (client-credentials) token, or, with
// Options.Subject, the access token of a person who granted this
// ServiceAccount access — and caches the answer until shortly before it
// expires:
//
//	ts := client.TokenSource(ctx, client.Options{
//		URL:      "http://tokenstore.tokenstore.svc",
//		Provider: "github",
//	})
//	httpClient := oauth2.NewClient(ctx, ts)
//
// The token file is read again on every exchange, so the kubelet's
// rotation of the projected token (it rewrites the file well before the
// old token expires) is picked up without a restart. The ServiceAccount
// token is sent only to tokenstore, never to the provider.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// DefaultTokenFile is where docs/workloads.md mounts the projected token.
const DefaultTokenFile = "/var/run/secrets/tokenstore/token"

// DefaultExpiryDelta: a cached token is renewed this long before it
// expires, so a request made with it does not reach the provider expired.
const DefaultExpiryDelta = 30 * time.Second

// RFC 8693 identifiers used on the wire.
const (
	grantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
	tokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	exchangePath           = "/api/oauth2/token"
)

// Options say where tokenstore is and which token to get.
type Options struct {
	// URL is tokenstore's base URL (scheme and host, optionally a path
	// prefix), e.g. http://tokenstore.tokenstore.svc.cluster.local.
	URL string
	// Provider is the provider id (the TokenProvider's name).
	Provider string
	// Subject is the user id of the person whose access token is wanted
	// (they must have granted this ServiceAccount access). Empty: the
	// provider's service token.
	Subject string
	// TokenFile is the projected ServiceAccount token; empty means
	// DefaultTokenFile.
	TokenFile string
	// HTTPClient calls tokenstore; nil means a client with a 30 s timeout.
	HTTPClient *http.Client
	// ExpiryDelta overrides DefaultExpiryDelta.
	ExpiryDelta time.Duration
}

// Error is tokenstore's refusal (an RFC 6749 error answer).
type Error struct {
	StatusCode int
	// Code is the OAuth error code (invalid_request, unauthorized_client, ...).
	Code string
	// Reason is tokenstore's finer code (token_expired, no_grant, ...).
	Reason      string
	Description string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("tokenstore: %d %s", e.StatusCode, e.Code)
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Exchanger performs one token exchange per Token call, without caching;
// TokenSource wraps it in a cache. It is exported for programs that manage
// caching themselves.
type Exchanger struct {
	ctx      context.Context
	opt      Options
	endpoint string
}

// New checks opt and returns an Exchanger whose requests use ctx.
func New(ctx context.Context, opt Options) (*Exchanger, error) {
	if opt.URL == "" || opt.Provider == "" {
		return nil, errors.New("tokenstore client: URL and Provider are required")
	}
	u, err := url.Parse(opt.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("tokenstore client: URL %q is not an http(s) URL", opt.URL)
	}
	if opt.TokenFile == "" {
		opt.TokenFile = DefaultTokenFile
	}
	if opt.HTTPClient == nil {
		opt.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	return &Exchanger{ctx: ctx, opt: opt, endpoint: strings.TrimSuffix(u.String(), "/") + exchangePath}, nil
}

// Token exchanges the current content of the token file for an access token.
func (x *Exchanger) Token() (*oauth2.Token, error) {
	// Read on every exchange: the kubelet replaces the file as it rotates
	// the token, and exchanges are rare (the cache in front of this
	// serves everything in between).
	sat, err := os.ReadFile(x.opt.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("tokenstore client: reading the ServiceAccount token: %w", err)
	}
	form := url.Values{
		"grant_type":           {grantTypeTokenExchange},
		"subject_token":        {strings.TrimSpace(string(sat))},
		"subject_token_type":   {tokenTypeJWT},
		"requested_token_type": {tokenTypeAccessToken},
		"audience":             {x.opt.Provider},
	}
	if x.opt.Subject != "" {
		form.Set("requested_subject", x.opt.Subject)
	}
	req, err := http.NewRequestWithContext(x.ctx, http.MethodPost, x.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("tokenstore client: building the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	start := time.Now()
	resp, err := x.opt.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tokenstore client: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("tokenstore client: reading the answer: %w", err)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil, &Error{StatusCode: resp.StatusCode, Code: "invalid_response", Description: "the answer is not JSON (" + resp.Status + ")"}
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code        string `json:"error"`
			Description string `json:"error_description"`
			Reason      string `json:"reason"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Code == "" {
			return nil, &Error{StatusCode: resp.StatusCode, Code: "invalid_response", Description: resp.Status}
		}
		return nil, &Error{StatusCode: resp.StatusCode, Code: e.Code, Reason: e.Reason, Description: e.Description}
	}
	var ok struct {
		AccessToken     string `json:"access_token"`
		IssuedTokenType string `json:"issued_token_type"`
		TokenType       string `json:"token_type"`
		ExpiresIn       *int64 `json:"expires_in"`
		Scope           string `json:"scope"`
	}
	if err := json.Unmarshal(body, &ok); err != nil || ok.AccessToken == "" {
		return nil, &Error{StatusCode: resp.StatusCode, Code: "invalid_response", Description: "the answer has no access_token"}
	}
	t := &oauth2.Token{AccessToken: ok.AccessToken, TokenType: ok.TokenType}
	if ok.ExpiresIn != nil {
		// Counted from when the request was sent: the token is at least
		// that fresh.
		t.Expiry = start.Add(time.Duration(*ok.ExpiresIn) * time.Second)
	}
	return t.WithExtra(map[string]any{"scope": ok.Scope, "issued_token_type": ok.IssuedTokenType}), nil
}

// TokenSource returns a token source that exchanges the ServiceAccount token
// for an access token and reuses it until ExpiryDelta before it expires.
// Concurrent callers wait for one exchange. Bad options show as an error
// from Token.
func TokenSource(ctx context.Context, opt Options) oauth2.TokenSource {
	x, err := New(ctx, opt)
	if err != nil {
		return errSource{err}
	}
	delta := opt.ExpiryDelta
	if delta <= 0 {
		delta = DefaultExpiryDelta
	}
	return oauth2.ReuseTokenSourceWithExpiry(nil, x, delta)
}

type errSource struct{ err error }

func (e errSource) Token() (*oauth2.Token, error) { return nil, e.err }
