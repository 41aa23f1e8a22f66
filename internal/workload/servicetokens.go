package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/sync/singleflight"

	"github.com/tokenstore/tokenstore/internal/providers"
)

// Defaults of ServiceTokenOptions.
const (
	// DefaultServiceMinValid is how long a cached service token must still
	// be valid to be served: enough for a workload to use it after the
	// answer reaches it. A token closer to its end is replaced.
	DefaultServiceMinValid = time.Minute
	// DefaultServiceUnknownLifetime is how long a service token whose
	// provider gave no expires_in is kept. Short, since nothing says how
	// long it really lives and a fresh one costs only a request.
	DefaultServiceUnknownLifetime = 5 * time.Minute
	serviceTimeout                = 20 * time.Second
)

// ServiceTokenOptions configure ServiceTokens.
type ServiceTokenOptions struct {
	// HTTPClient calls the providers' token endpoints; nil means a client
	// with a 20 s timeout.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MinValid overrides DefaultServiceMinValid.
	MinValid time.Duration
	// UnknownLifetime overrides DefaultServiceUnknownLifetime.
	UnknownLifetime time.Duration
	// Endpoints, when set, hears whether each provider accepted
	// tokenstore's client for the client-credentials grant, so that a
	// refusal shows in the provider's Ready condition (ClientRejected).
	Endpoints *providers.TokenEndpointHealth
}

// ServiceTokens obtains client-credentials tokens from providers and shares
// each until near its expiry: every ServiceAccount a provider allows gets the
// same token (it is the provider client's token, not the workload's), and
// any number of concurrent callers cause one request to the provider.
//
// Tokens are held in memory only, per replica; they are never stored or
// logged.
type ServiceTokens struct {
	opt    ServiceTokenOptions
	flight singleflight.Group
	mu     sync.Mutex
	cache  map[string]versionedToken // key: provider id
}

// versionedToken is a cached token with the provider Version it was
// obtained under: a changed client secret, token URL or scope list must not
// be served the token of the old configuration. One entry per provider, so
// a token of a newer Version replaces the older one.
type versionedToken struct {
	version string
	ServiceToken
}

// ServiceToken is a client-credentials access token.
type ServiceToken struct {
	AccessToken string
	TokenType   string
	// Expiry is the provider's, or the assumed one (ExpiryKnown false).
	Expiry      time.Time
	ExpiryKnown bool
	Scopes      []string
}

// ServiceTokenError says the provider failed a client-credentials request,
// or refused it in a way that may pass. Code is the provider's OAuth error
// code (or "" for a transport failure or server error); it carries nothing
// the provider echoed. A refusal of tokenstore's client itself
// (invalid_client, unauthorized_client, ...) is a
// *providers.ClientRejectedError instead: asking again cannot help.
type ServiceTokenError struct {
	Provider string
	Status   int
	Code     string
	Err      error
}

func (e *ServiceTokenError) Error() string {
	return fmt.Sprintf("client credentials at %s failed: %d %s: %v", e.Provider, e.Status, e.Code, e.Err)
}
func (e *ServiceTokenError) Unwrap() error { return e.Err }

// NewServiceTokens returns an empty cache.
func NewServiceTokens(opt ServiceTokenOptions) *ServiceTokens {
	if opt.HTTPClient == nil {
		opt.HTTPClient = &http.Client{Timeout: serviceTimeout}
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.MinValid <= 0 {
		opt.MinValid = DefaultServiceMinValid
	}
	if opt.UnknownLifetime <= 0 {
		opt.UnknownLifetime = DefaultServiceUnknownLifetime
	}
	return &ServiceTokens{opt: opt, cache: map[string]versionedToken{}}
}

// Token returns a service token of provider p valid for at least MinValid.
func (s *ServiceTokens) Token(ctx context.Context, p *providers.Provider) (ServiceToken, error) {
	if t, ok := s.cached(p); ok {
		return t, nil
	}
	// One flight per provider Version: callers of another configuration
	// must not be handed this one's token.
	v, err, _ := s.flight.Do(p.ID+"\x00"+p.Version, func() (any, error) {
		// Another flight may have filled the cache between our look and
		// taking the flight.
		if t, ok := s.cached(p); ok {
			return t, nil
		}
		// The first caller leaving must not fail the others waiting on
		// this flight.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serviceTimeout)
		defer cancel()
		t, err := s.fetch(fctx, p)
		if err != nil {
			return ServiceToken{}, err
		}
		s.mu.Lock()
		s.cache[p.ID] = versionedToken{version: p.Version, ServiceToken: t}
		s.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return ServiceToken{}, err
	}
	return v.(ServiceToken), nil
}

func (s *ServiceTokens) cached(p *providers.Provider) (ServiceToken, bool) {
	s.mu.Lock()
	t, ok := s.cache[p.ID]
	s.mu.Unlock()
	if !ok || t.version != p.Version || !t.Expiry.After(s.opt.Now().Add(s.opt.MinValid)) {
		return ServiceToken{}, false
	}
	return t.ServiceToken, true
}

// Forget drops the cached token of a provider (for example after the
// provider rejected it).
func (s *ServiceTokens) Forget(providerID string) {
	s.mu.Lock()
	delete(s.cache, providerID)
	s.mu.Unlock()
}

func (s *ServiceTokens) fetch(ctx context.Context, p *providers.Provider) (ServiceToken, error) {
	if p.Endpoint.TokenURL == "" {
		return ServiceToken{}, &ServiceTokenError{Provider: p.ID, Err: errors.New("the provider has no token endpoint")}
	}
	style := oauth2.AuthStyleInHeader
	if p.AuthMethod == providers.AuthMethodClientSecretPost || p.AuthMethod == providers.AuthMethodNone {
		style = oauth2.AuthStyleInParams
	}
	cfg := clientcredentials.Config{
		ClientID: p.ClientID, ClientSecret: p.ClientSecret, TokenURL: p.Endpoint.TokenURL,
		Scopes: slices.Clone(p.ServiceScopes), AuthStyle: style,
	}
	start := s.opt.Now()
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, s.opt.HTTPClient))
	if err != nil {
		err = classify(p.ID, err)
		var cr *providers.ClientRejectedError
		if s.opt.Endpoints != nil && errors.As(err, &cr) {
			s.opt.Endpoints.Rejected(p.ID, p.Version, cr.Grant, cr.Code)
		}
		return ServiceToken{}, err
	}
	if s.opt.Endpoints != nil {
		s.opt.Endpoints.Accepted(p.ID, providers.GrantClientCredentials)
	}
	if tok.AccessToken == "" {
		return ServiceToken{}, &ServiceTokenError{Provider: p.ID, Err: errors.New("token answer without an access token")}
	}
	t := ServiceToken{AccessToken: tok.AccessToken, TokenType: tok.Type(), Expiry: tok.Expiry, ExpiryKnown: !tok.Expiry.IsZero()}
	if !t.ExpiryKnown {
		t.Expiry = start.Add(s.opt.UnknownLifetime)
	}
	if sc, ok := tok.Extra("scope").(string); ok && sc != "" {
		t.Scopes = strings.Fields(sc)
	} else {
		t.Scopes = slices.Clone(p.ServiceScopes)
	}
	s.opt.Logger.Info("service token obtained", "provider", p.ID, "expires_in_s", int64(t.Expiry.Sub(start).Seconds()), "expiry_known", t.ExpiryKnown)
	return t, nil
}

// classify keeps the provider's status and error code, never its body or
// a URL's query (either could echo a secret).
func classify(provider string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		st := 0
		if re.Response != nil {
			st = re.Response.StatusCode
		}
		if providers.RejectsClient(st, re.ErrorCode) {
			return &providers.ClientRejectedError{Provider: provider, Grant: providers.GrantClientCredentials, Status: st, Code: re.ErrorCode}
		}
		return &ServiceTokenError{Provider: provider, Status: st, Code: re.ErrorCode, Err: fmt.Errorf("token endpoint answered %d %s", st, re.ErrorCode)}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		u := ue.URL
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i]
		}
		return &ServiceTokenError{Provider: provider, Err: fmt.Errorf("%s %s: %v", ue.Op, u, ue.Err)}
	}
	return &ServiceTokenError{Provider: provider, Err: err}
}
