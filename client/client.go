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
//
// Failures that pass (tokenstore or the provider unavailable or busy: 5xx,
// 429, temporarily_unavailable, a network error) are retried within one
// Token call, with backoff, for up to Options.RetryFor. A refusal that
// will not pass by asking again (any other 4xx: no grant, a ServiceAccount
// the provider does not allow, the provider refusing tokenstore's own
// client, ...) is returned at once as a *Error whose Permanent method is
// true (IsPermanent), and TokenSource answers later calls with the same
// error, without asking, for Options.PermanentHold.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// DefaultTokenFile is where docs/workloads.md mounts the projected token.
const DefaultTokenFile = "/var/run/secrets/tokenstore/token"

// DefaultExpiryDelta: a cached token is renewed this long before it
// expires, so a request made with it does not reach the provider expired.
const DefaultExpiryDelta = 30 * time.Second

// Defaults of the retries.
const (
	// DefaultRetryFor is how long one Token call keeps retrying failures
	// that pass: long enough to ride out a replica restarting or a
	// provider's blip, short enough for the caller's own request.
	DefaultRetryFor = 30 * time.Second
	// DefaultPermanentHold is how long TokenSource answers with a
	// permanent refusal before it asks tokenstore again: a workload whose
	// every HTTP request asks for a token does not send one exchange per
	// request, and still sees the fix (a grant given, a TokenProvider
	// corrected) within this time, without a restart.
	DefaultPermanentHold = time.Minute
	// retryMin and retryMax bound the wait between retries (doubling,
	// with jitter), unless tokenstore says Retry-After (up to retryMax).
	retryMin = 250 * time.Millisecond
	retryMax = 8 * time.Second
)

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
	// RetryFor overrides DefaultRetryFor; negative means no retries.
	RetryFor time.Duration
	// PermanentHold overrides DefaultPermanentHold; negative means every
	// Token call asks again.
	PermanentHold time.Duration
}

// Error is tokenstore's refusal (an RFC 6749 error answer), or an answer
// that was not tokenstore's (Code invalid_response).
type Error struct {
	StatusCode int
	// Code is the OAuth error code (invalid_request, unauthorized_client,
	// invalid_target, temporarily_unavailable, ...).
	Code string
	// Reason is tokenstore's finer code (token_expired, no_grant,
	// provider_rejected_client, provider_unavailable, ...).
	Reason      string
	Description string
	// RetryAfter is the answer's Retry-After, if it had one.
	RetryAfter time.Duration
}

// Temporary reports whether the refusal may pass by itself, so that the
// same request is worth repeating: tokenstore or the provider behind it is
// unavailable or busy (5xx, 429, 408, temporarily_unavailable).
func (e *Error) Temporary() bool {
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusRequestTimeout ||
		e.Code == "temporarily_unavailable"
}

// Permanent reports whether asking again with the same token file cannot
// help until something changes elsewhere: a person grants access, the
// TokenProvider or the client's registration at the provider is fixed
// (Reason provider_rejected_client), this ServiceAccount is allowed, ...
// Description says what.
func (e *Error) Permanent() bool { return !e.Temporary() }

// IsPermanent reports whether err, from an Exchanger or a TokenSource, is
// a permanent refusal (a *Error whose Permanent is true), which a caller
// should report rather than retry.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent()
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
		return nil, &answerError{err}
	}
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"))
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/json" {
		return nil, &Error{StatusCode: resp.StatusCode, Code: "invalid_response", Description: "the answer is not JSON (" + resp.Status + ")", RetryAfter: retryAfter}
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Code        string `json:"error"`
			Description string `json:"error_description"`
			Reason      string `json:"reason"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Code == "" {
			return nil, &Error{StatusCode: resp.StatusCode, Code: "invalid_response", Description: resp.Status, RetryAfter: retryAfter}
		}
		return nil, &Error{StatusCode: resp.StatusCode, Code: e.Code, Reason: e.Reason, Description: e.Description, RetryAfter: retryAfter}
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

// parseRetryAfter reads a Retry-After header given in seconds (the form
// tokenstore and most proxies send); anything else counts as absent.
func parseRetryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// TokenSource returns a token source that exchanges the ServiceAccount token
// for an access token and reuses it until ExpiryDelta before it expires.
// Concurrent callers wait for one exchange. Failures that pass are retried
// for up to RetryFor; a permanent refusal is returned at once and repeated,
// without asking, for PermanentHold (see the package documentation). Bad
// options show as an error from Token.
func TokenSource(ctx context.Context, opt Options) oauth2.TokenSource {
	x, err := New(ctx, opt)
	if err != nil {
		return errSource{err}
	}
	delta := opt.ExpiryDelta
	if delta <= 0 {
		delta = DefaultExpiryDelta
	}
	return oauth2.ReuseTokenSourceWithExpiry(nil, newRetrying(x, opt), delta)
}

// retrying is an Exchanger with TokenSource's retry policy.
type retrying struct {
	x             *Exchanger
	retryFor      time.Duration
	permanentHold time.Duration

	mu        sync.Mutex
	permErr   error
	permUntil time.Time
}

func newRetrying(x *Exchanger, opt Options) *retrying {
	r := &retrying{x: x, retryFor: opt.RetryFor, permanentHold: opt.PermanentHold}
	if r.retryFor == 0 {
		r.retryFor = DefaultRetryFor
	}
	if r.permanentHold == 0 {
		r.permanentHold = DefaultPermanentHold
	}
	return r
}

// Token exchanges, retrying what may pass until retryFor has gone by.
func (r *retrying) Token() (*oauth2.Token, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	if r.permErr != nil && start.Before(r.permUntil) {
		return nil, r.permErr
	}
	r.permErr = nil
	wait := retryMin
	for {
		t, err := r.x.Token()
		if err == nil {
			return t, nil
		}
		if IsPermanent(err) {
			if r.permanentHold > 0 {
				r.permErr, r.permUntil = err, time.Now().Add(r.permanentHold)
			}
			return nil, err
		}
		if !retryable(err) || r.retryFor < 0 {
			return nil, err
		}
		d := jitter(wait)
		var e *Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			d = min(e.RetryAfter, retryMax)
		}
		if time.Since(start)+d > r.retryFor {
			return nil, err
		}
		if serr := sleepCtx(r.x.ctx, d); serr != nil {
			return nil, err
		}
		wait = min(2*wait, retryMax)
	}
}

// retryable: a refusal that may pass, or no answer at all (tokenstore not
// reachable, the connection cut, a timeout). A ServiceAccount token file
// that cannot be read is not; nor is anything once the context has ended
// (the wait before the next try fails then).
func retryable(err error) bool {
	var (
		e  *Error
		ue *url.Error
		ae *answerError
	)
	if errors.As(err, &e) {
		return e.Temporary()
	}
	return errors.As(err, &ue) || errors.As(err, &ae)
}

// answerError is an answer that could not be read to its end.
type answerError struct{ err error }

func (e *answerError) Error() string {
	return "tokenstore client: reading the answer: " + e.err.Error()
}
func (e *answerError) Unwrap() error { return e.err }

// jitter spreads retries of many pods over ±20 % of d.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.4-0.2)*float64(d))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type errSource struct{ err error }

func (e errSource) Token() (*oauth2.Token, error) { return nil, e.err }
