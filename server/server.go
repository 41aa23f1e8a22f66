// Package server is tokenstore's HTTP API on gin: one constructor that returns
// the handler, every route in routes.go, JSON errors rendered in one place.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/gin-gonic/gin"
	"github.com/rs/cors"

	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/observability/audit"
	"github.com/tokenstore/tokenstore/internal/observability/logctx"
	"github.com/tokenstore/tokenstore/internal/observability/metrics"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// Options are what the server is built from; cmd wires them.
type Options struct {
	Settings *settings.Settings
	Store    store.Store
	// Keys encrypts tokens and PKCE verifiers; nil means parse
	// Settings.CryptoKey.
	Keys *crypto.KeyRing
	// Providers is the token provider registry (read-only view); nil means
	// an empty one.
	Providers providers.Reader
	// HTTPClient calls the login issuer and token providers; nil means a
	// client with a 20 s timeout.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Ready reports whether the provider registry is complete; nil means
	// Providers.Ready (or, without Providers, the store alone decides).
	Ready func() bool
	// Now is the clock; nil means time.Now. Tests move it.
	Now func() time.Time
	// UnknownTokenLifetime is how long an access token without expires_in
	// is served before it is refreshed; 0 means broker.DefaultUnknownLifetime.
	UnknownTokenLifetime time.Duration

	// Workloads verifies ServiceAccount tokens at the token-exchange
	// endpoint (kubeauth.Authenticator in a cluster); nil means workloads
	// cannot authenticate (people's own access tokens still can).
	Workloads workload.Authenticator
	// ServiceAccounts confirms a grant's ServiceAccount exists; nil means
	// grants cannot be made (they would name accounts nobody can check).
	ServiceAccounts workload.Directory
	// ServiceTokens caches client-credentials tokens; nil means a cache built
	// from HTTPClient, Logger and Now.
	ServiceTokens *workload.ServiceTokens

	// Metrics records HTTP, refresh and cache metrics; Serve serves them
	// on METRICS_ADDRESS, never on the API's listener. nil means a private
	// registry.
	Metrics *metrics.Metrics
	// Notifier hears of credentials needing re-authorization and
	// recovering (webhooks); nil tells no one.
	Notifier broker.Notifier
	// GrantUseSummaryInterval is how often the repeats of delegated tokens
	// already disclosed to their recipient are written as grant.use
	// summaries (internal/delegation); 0 means delegation.DefaultInterval
	// (a minute). Tests shorten it.
	GrantUseSummaryInterval time.Duration
}

// Server holds the HTTP API's dependencies.
type Server struct {
	opt     Options
	log     *slog.Logger
	engine  *gin.Engine
	auth    *auth.Authenticator
	broker  *broker.Broker
	returns *auth.ReturnURLs
	// origins are allowed to make cookie-carried state-changing requests
	// (EXTERNAL_URL, ALLOWED_RETURN_URLS and CORS_ORIGINS).
	origins map[string]bool
	cors    *cors.Cors // nil: no CORS answers
	// delegation decides who gets which token and holds the grants.
	delegation *delegation.Service
	// audits writes the audit events of requests, concurrent ones in one
	// insert and commit (auditCtx).
	audits *audit.Writer
	// grantUse records which token values went to which workload under
	// which grant (handOut).
	grantUse *delegation.GrantUse
	// cookieName is the session cookie's name (sessionCookieName).
	cookieName string
	// limits are this replica's rate limits (ratelimit.go).
	limits rateLimits
}

// New builds the server and its routes.
func New(opt Options) (*Server, error) {
	if opt.Settings == nil || opt.Store == nil {
		return nil, errors.New("server: settings and store are required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	// Every line logged with a request's context carries its request id.
	opt.Logger = logctx.Logger(opt.Logger)
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.HTTPClient == nil {
		opt.HTTPClient = &http.Client{Timeout: 20 * time.Second}
	}
	if opt.Keys == nil {
		k, err := crypto.ParseKeyRing(opt.Settings.CryptoKey)
		if err != nil {
			return nil, fmt.Errorf("server: CRYPTOKEY: %w", err)
		}
		opt.Keys = k
	}
	if opt.Providers == nil {
		opt.Providers = providers.NewRegistry()
	} else if opt.Ready == nil {
		opt.Ready = opt.Providers.Ready
	}
	if opt.Metrics == nil {
		// A private registry: /metrics always answers, and tests see what
		// a deployment would. cmd passes one on controller-runtime's registry.
		m, err := metrics.New(metrics.Options{Store: opt.Store, Providers: opt.Providers, GoCollectors: true})
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		opt.Metrics = m
	}
	returns, err := auth.NewReturnURLs(opt.Settings.ExternalURL, opt.Settings.AllowedReturnURLs)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	a, err := auth.New(auth.Options{Settings: opt.Settings, Store: opt.Store, Keys: opt.Keys, HTTPClient: opt.HTTPClient, Logger: opt.Logger, Now: opt.Now})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	b, err := broker.New(broker.Options{Store: opt.Store, Keys: opt.Keys, Providers: opt.Providers, HTTPClient: opt.HTTPClient,
		Logger: opt.Logger, Now: opt.Now, UnknownLifetime: opt.UnknownTokenLifetime, Observer: observer(opt.Metrics), Notifier: opt.Notifier})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if opt.ServiceTokens == nil {
		sto := workload.ServiceTokenOptions{HTTPClient: opt.HTTPClient, Logger: opt.Logger, Now: opt.Now}
		// As the broker reports refreshes: a provider refusing the
		// client-credentials grant shows in its Ready condition.
		if r, ok := opt.Providers.(interface {
			TokenEndpoints() *providers.TokenEndpointHealth
		}); ok {
			sto.Endpoints = r.TokenEndpoints()
		}
		opt.ServiceTokens = workload.NewServiceTokens(sto)
	}
	cookieName, err := sessionCookieName(opt.Settings)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	gin.SetMode(gin.ReleaseMode)
	s := &Server{opt: opt, log: opt.Logger, engine: gin.New(), auth: a, broker: b, returns: returns,
		cookieName: cookieName, limits: newRateLimits(opt.Settings),
		origins: map[string]bool{}, cors: newCORS(opt.Settings),
		audits: audit.New(opt.Store, audit.Options{Logger: opt.Logger, Observe: opt.Metrics.AuditWrite}),
		delegation: delegation.NewService(delegation.ServiceOptions{Store: opt.Store, ServiceAccounts: opt.ServiceAccounts,
			Now: opt.Now, Logger: opt.Logger})}
	s.grantUse = delegation.NewGrantUse(delegation.GrantUseOptions{Store: opt.Store, Append: s.audits.Append,
		Interval: opt.GrantUseSummaryInterval, Now: opt.Now, Logger: opt.Logger, ObserveBatch: opt.Metrics.AuditWrite,
		Keys: opt.Metrics.GrantUseLedgerKeys, Fallback: opt.Metrics.GrantUseLedgerFallback})
	for _, o := range opt.Settings.CORSOrigins {
		s.origins[normOrigin(o)] = true
	}
	// X-Forwarded-For is believed only from TRUSTED_PROXIES (the seed's
	// ProxyFix); with none, the peer address is the client.
	if err := s.engine.SetTrustedProxies(opt.Settings.TrustedProxies); err != nil {
		return nil, fmt.Errorf("server: TRUSTED_PROXIES: %w", err)
	}
	s.routes()
	return s, nil
}

// observer keeps a nil *metrics.Metrics out of the broker's interface, so
// the broker's nil check means what it says.
func observer(m *metrics.Metrics) broker.Observer {
	if m == nil {
		return nil
	}
	return m
}

// Broker is the server's token broker, for the background refresher to
// share (its refreshes then meet the requests' at the same row locks and
// are counted in the same metrics).
func (s *Server) Broker() *broker.Broker { return s.broker }

// Handler is the whole HTTP API.
func (s *Server) Handler() http.Handler { return s.engine }

// MetricsHandler serves the metrics exposition; Serve puts it on
// METRICS_ADDRESS alone.
func (s *Server) MetricsHandler() http.Handler { return s.opt.Metrics.Handler() }

// Defaults of the API listener's timeouts, for Settings built without the
// loader (embedders, tests); the loader's defaults are the same.
const (
	defaultReadTimeout  = 30 * time.Second
	defaultWriteTimeout = 60 * time.Second
	defaultIdleTimeout  = 120 * time.Second
)

// apiServer is the API's http.Server. Every connection is bounded in time:
// the headers within 10 s, the whole request within HTTP_READ_TIMEOUT (a
// body trickled a byte a second is cut off), the answer within
// HTTP_WRITE_TIMEOUT of the headers, and an idle keep-alive connection is
// closed after HTTP_IDLE_TIMEOUT. The write timeout must exceed the longest
// request: a bearer check at the login issuer (20 s) plus a refresh that
// waits for another's (the broker's 30 s), 50 s in all.
func (s *Server) apiServer() *http.Server {
	or := func(d, def time.Duration) time.Duration {
		if d > 0 {
			return d
		}
		return def
	}
	st := s.opt.Settings
	return &http.Server{
		Addr:              st.ListenAddress,
		Handler:           s.Handler(),
		ReadHeaderTimeout: min(10*time.Second, or(st.HTTPReadTimeout, defaultReadTimeout)),
		ReadTimeout:       or(st.HTTPReadTimeout, defaultReadTimeout),
		WriteTimeout:      or(st.HTTPWriteTimeout, defaultWriteTimeout),
		IdleTimeout:       or(st.HTTPIdleTimeout, defaultIdleTimeout),
	}
}

// Serve listens on LISTEN_ADDRESS (and serves metrics on METRICS_ADDRESS)
// until ctx ends, then stops taking new requests and waits up to 25 s for
// in-flight ones, and then up to 10 s more for the last grant.use
// summaries and audit events still being written (those of callers that
// went away); only then may the store be closed.
func (s *Server) Serve(ctx context.Context) error {
	servers := []*http.Server{s.apiServer()}
	if m := s.metricsServer(); m != nil {
		servers = append(servers, m)
	}
	errc := make(chan error, len(servers))
	for _, hs := range servers {
		go func() { errc <- hs.ListenAndServe() }()
	}
	s.log.Info("listening", "address", s.opt.Settings.ListenAddress, "external_url", s.opt.Settings.ExternalURL,
		"metrics_address", s.opt.Settings.MetricsAddress)
	var err error
	select {
	case err = <-errc:
		// One listener failed (an address in use): stop the other too.
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	for _, hs := range servers {
		if serr := hs.Shutdown(shutdownCtx); err == nil {
			err = serr
		}
	}
	s.DrainAudit()
	return err
}

// metricsServer serves /metrics alone on METRICS_ADDRESS, or is nil when
// METRICS_ADDRESS is empty (no metrics served). /metrics is never one of
// the API's routes: it is unauthenticated, and the API's port is the one
// the Service and Ingress expose.
func (s *Server) metricsServer() *http.Server {
	if s.opt.Settings.MetricsAddress == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.MetricsHandler())
	return &http.Server{Addr: s.opt.Settings.MetricsAddress, Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}
}

// DrainAudit writes the grant.use summaries of the repeats counted so far
// and waits, up to 10 s in all, until no audit event is queued or being
// written; what is left then is logged. From then on every delegated
// answer waits for its own grant.use event. For whoever stops a server
// that did not run Serve, before closing the store.
func (s *Server) DrainAudit() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.grantUse.Close(ctx)
	if err := s.audits.Drain(ctx); err != nil {
		s.log.Error("audit events not written before shutdown", "error", err)
	}
}

// restError is the REST API's JSON error: a stable code and a sentence,
// plus, for some codes, the provider and where to go next.
type restError struct {
	Code    string `json:"error"`
	Message string `json:"message"`
	// Provider and AuthorizeURL accompany refusals about a provider;
	// AuthorizeURL those that linking again puts right.
	Provider     string `json:"provider,omitempty"`
	AuthorizeURL string `json:"authorize_url,omitempty"`
}

// oauthError is the token-exchange endpoint's error in the RFC 6749 §5.2
// shape ({error, error_description}), not the rest of the API's
// {error, message}: OAuth client libraries parse this one. Reason is an
// extension member with tokenstore's finer, stable code (token_expired,
// no_grant, ...), so that programs can tell refusals apart without parsing
// the description.
type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
	Reason      string `json:"reason,omitempty"`
}

// faultOf is the answer to err: its *fault.Error, 503 database_unavailable
// while the database cannot be reached, else an internal error. What the
// caller is not told is logged here, once: the cause of a refusal that has
// one (a provider or Kubernetes that failed, a client the provider
// refused) and every unforeseen error.
func (s *Server) faultOf(c *gin.Context, err error) *fault.Error {
	ctx := c.Request.Context()
	fe := fault.As(err)
	switch {
	case fe != nil:
		if fe.Err != nil {
			s.log.WarnContext(ctx, "request refused", "method", c.Request.Method, "route", c.FullPath(), "code", fe.Code, "provider", fe.Provider, "error", fe.Err)
		}
		return fe
	case databaseDown(err):
		// A warning, not an error: the outage is not a bug here, and
		// /readyz reports it too.
		s.log.WarnContext(ctx, "database unavailable", "method", c.Request.Method, "route", c.FullPath(), "error", err)
		c.Header("Retry-After", "1")
		return errDatabaseDown
	}
	s.log.ErrorContext(ctx, "request failed", "method", c.Request.Method, "route", c.FullPath(), "error", err)
	return fault.Internal
}

// renderErrors turns the first error a handler recorded with c.Error into
// the REST API's JSON error answer.
func (s *Server) renderErrors(c *gin.Context) {
	c.Next()
	if len(c.Errors) == 0 || c.Writer.Written() {
		return
	}
	s.renderREST(c, c.Errors[0].Err)
}

// renderREST answers err as the REST API's JSON error.
func (s *Server) renderREST(c *gin.Context, err error) {
	fe := s.faultOf(c, err)
	body := restError{Code: fe.Code, Message: fe.Message, Provider: fe.Provider}
	if fe.Relink && fe.Provider != "" {
		body.AuthorizeURL = s.actionURL(fe.Provider, "authorize")
	}
	switch fe.Status {
	case http.StatusUnauthorized:
		// RFC 6750 §3: a refused bearer token is challenged.
		c.Header("WWW-Authenticate", `Bearer error="invalid_token"`)
	case http.StatusForbidden:
		if fe.Code == auth.ErrUnauthenticated.Code {
			// No credentials at all: 403 as the Flask service answered,
			// with the challenge RFC 6750 gives a request without one.
			c.Header("WWW-Authenticate", `Bearer`)
		}
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(fe.Status, body)
}

// renderOAuth answers err as an OAuth error (RFC 6749 §5.2).
func (s *Server) renderOAuth(c *gin.Context, err error) {
	fe := s.faultOf(c, err)
	status := fe.OAuthHTTPStatus()
	if status == http.StatusUnauthorized {
		// RFC 6750 §3 asks for a challenge with 401.
		c.Header("WWW-Authenticate", `Bearer error="invalid_token"`)
	}
	c.Header("Cache-Control", "no-store")
	reason := fe.Code
	if reason == fault.Internal.Code {
		// server_error says it all; there is no finer reason to give.
		reason = ""
	}
	c.JSON(status, oauthError{Code: fe.OAuthCode(), Description: fe.Message, Reason: reason})
}
