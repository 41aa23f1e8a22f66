package server

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/gin-gonic/gin"
	"github.com/rs/cors"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/observability/logctx"
	"github.com/tokenstore/tokenstore/internal/observability/reqlog"
	"github.com/tokenstore/tokenstore/internal/observability/tracing"
	"github.com/tokenstore/tokenstore/internal/settings"
)

// requestIDHeader carries the request id in and out.
const requestIDHeader = "X-Request-Id"

// call is what the server keeps of one request beyond gin's context: its
// id and, once authenticated, its caller. It rides in the request's
// context as logctx's Carrier, so that the id reaches every log line of the
// request and the caller reaches the handlers for one context value and one
// copy of the request: an id in the context and the caller in gin's Keys
// took a map besides, on every request.
type call struct {
	// header is the request id as the X-Request-Id header's value slice,
	// allocated with the call rather than on its own.
	header [1]string
	caller *auth.Identity
	// limited: the request spent a principal's rate-limit bucket, so
	// not its client address's (ratelimit.go).
	limited bool
}

func (cl *call) LogRequestID() string { return cl.header[0] }

// callOf returns the request's call, or nil before requestID (the first
// middleware of every route) ran.
func callOf(c *gin.Context) *call {
	cl, _ := logctx.Carried(c.Request.Context()).(*call)
	return cl
}

// callerOf returns the authenticated caller, or nil.
func callerOf(c *gin.Context) *auth.Identity {
	if cl := callOf(c); cl != nil {
		return cl.caller
	}
	return nil
}

// requestID takes the caller's X-Request-Id when it looks like an id (so a
// proxy's or client's id joins their logs to ours) and makes one otherwise;
// it is echoed in the answer and put in the request's context (in its
// call), where the logger (logctx.Handler) adds it to every line logged
// with that context.
func (s *Server) requestID(c *gin.Context) {
	id := c.GetHeader(requestIDHeader)
	if !saneRequestID(id) {
		id = newRequestID()
	}
	// requestIDHeader is in canonical form: no c.Header, which would
	// canonicalize it again on every request.
	cl := &call{header: [1]string{id}}
	c.Writer.Header()[requestIDHeader] = cl.header[:]
	c.Request = c.Request.WithContext(logctx.WithCarrier(c.Request.Context(), cl))
	c.Next()
}

// traceRequests makes one server span per request (OpenTelemetry; a no-op
// unless TRACING_ENDPOINT installed a provider), child of the caller's
// traceparent if any. It is named by the route template and carries the
// method, route, status and request id: never the URL (query strings carry
// codes and states) nor any header.
func (s *Server) traceRequests(c *gin.Context) {
	if !tracing.Installed() {
		// No provider installed (no TRACING_ENDPOINT): every span would
		// be a no-op; skip the propagator, the span and the copy of the
		// request that carrying them takes.
		c.Next()
		return
	}
	ctx := otel.GetTextMapPropagator().Extract(c.Request.Context(), propagation.HeaderCarrier(c.Request.Header))
	route := c.FullPath()
	name := c.Request.Method
	if route != "" {
		name += " " + route
	}
	ctx, span := otel.Tracer("github.com/tokenstore/tokenstore/server").Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	if !span.IsRecording() {
		c.Request = c.Request.WithContext(ctx)
		c.Next()
		return
	}
	span.SetAttributes(attribute.String("http.request.method", c.Request.Method),
		attribute.String("request_id", logctx.RequestID(ctx)))
	if route != "" {
		span.SetAttributes(attribute.String("http.route", route))
	}
	if p := c.Param("provider"); p != "" {
		span.SetAttributes(attribute.String("tokenstore.provider", p))
	}
	c.Request = c.Request.WithContext(ctx)
	c.Next()
	status := c.Writer.Status()
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		// The stable code only: wrapped errors' messages stay in the log.
		desc := ""
		if len(c.Errors) > 0 {
			if ae := fault.As(c.Errors[0].Err); ae != nil {
				desc = ae.Code
			}
		}
		span.SetStatus(codes.Error, desc)
	}
}

// saneRequestID accepts up to 128 characters of [A-Za-z0-9._:-]: enough for
// UUIDs, trace ids and most proxies' ids, and nothing that could forge a log
// field or smuggle a header.
func saneRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == ':':
		default:
			return false
		}
	}
	return true
}

// newRequestID returns 16 random bytes in hex. Random rather than a
// counter, which would tell anyone reading ids how many requests a replica
// serves; crypto/rand costs no system call here (the vDSO's getrandom, Go
// 1.24+ on Linux 6.11+), about half a percent of the token hot path.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	var out [32]byte
	hex.Encode(out[:], b[:])
	return string(out[:])
}

// countRequests counts and times every request by its route template
// (c.FullPath) in the request metrics (metrics.HTTPRequest).
func (s *Server) countRequests(c *gin.Context) {
	if s.opt.Metrics == nil {
		c.Next()
		return
	}
	start := time.Now()
	c.Next()
	s.opt.Metrics.HTTPRequest(c.FullPath(), c.Request.Method, c.Writer.Status(), time.Since(start))
}

// logRequests writes one line per request. It logs the route pattern, never
// the URL: query strings carry codes and states, and nothing here may carry
// a token into a log.
//
// The line is a slog.Record (reqlog) handed to the logger's handler;
// request_id is added here, not by logctx's handler, which would copy the
// record to add it.
func (s *Server) logRequests(c *gin.Context) {
	start := time.Now()
	c.Next()
	status := c.Writer.Status()
	l := reqlog.Line{Level: slog.LevelInfo, Method: c.Request.Method, Route: c.FullPath(), Status: status}
	if status >= 500 {
		l.Level = slog.LevelError
	}
	ctx := c.Request.Context()
	h, _ := logctx.Unwrap(s.log.Handler())
	if !h.Enabled(ctx, l.Level) {
		return
	}
	if l.Route == "" {
		l.Route = "(no route)"
	}
	l.Time = time.Now()
	l.DurationMS = l.Time.Sub(start).Milliseconds()
	l.ClientIP = c.ClientIP()
	l.Provider = c.Param("provider")
	if len(c.Errors) > 0 {
		// The stable code only: messages of wrapped errors are logged by
		// renderErrors, once, for 500s.
		if ae := fault.As(c.Errors[0].Err); ae != nil {
			l.Error = ae.Code
		}
	}
	if id := callerOf(c); id != nil {
		l.User = id.UserID
	}
	l.RequestID = logctx.RequestID(ctx)
	reqlog.Log(ctx, h, &l)
}

func normOrigin(o string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(o), "/"))
}

// newCORS answers CORS as Flask-Cors did for the Flask service, with
// rs/cors doing the protocol. CORS_ORIGINS "*" (the default, Flask-Cors'
// default) answers every origin with Access-Control-Allow-Origin: * and
// never with credentials, so a browser app elsewhere that sends a bearer
// token works and no page can ride a person's cookie. Credentials
// (CORS_SUPPORTS_CREDENTIALS) are allowed only with an explicit list of
// origins; the answer then echoes the origin and varies on it. No origins
// (CORS_ORIGINS empty) means no CORS answers at all. nil when none.
func newCORS(st *settings.Settings) *cors.Cors {
	if len(st.CORSOrigins) == 0 {
		return nil
	}
	origins := make([]string, 0, len(st.CORSOrigins))
	for _, o := range st.CORSOrigins {
		if o == "*" {
			origins = []string{"*"}
			break
		}
		origins = append(origins, normOrigin(o))
	}
	return cors.New(cors.Options{
		AllowedOrigins: origins,
		// The methods the API's routes use (routes.go).
		AllowedMethods:   []string{http.MethodGet, http.MethodPost, http.MethodDelete},
		AllowedHeaders:   st.CORSAllowHeaders,
		AllowCredentials: st.CORSSupportsCredentials && origins[0] != "*",
		MaxAge:           int(st.CORSMaxAge.Seconds()),
	})
}

// corsHeaders sets the CORS answer headers and ends preflights here (204).
func (s *Server) corsHeaders(c *gin.Context) {
	if s.cors == nil || c.GetHeader("Origin") == "" {
		c.Next()
		return
	}
	s.cors.HandlerFunc(c.Writer, c.Request)
	if c.Request.Method == http.MethodOptions && c.GetHeader("Access-Control-Request-Method") != "" {
		c.Abort()
		return
	}
	c.Next()
}

// csrf refuses a state-changing request carried by the session cookie alone
// unless it comes from one of our origins. Browsers send Origin on every
// cross-origin POST, and Sec-Fetch-Site where Origin is absent; a request
// with neither is not from a browser, so not a forgery. Requests with an
// Authorization header are exempt: a foreign page cannot make a browser add
// one.
func (s *Server) csrf(c *gin.Context) {
	switch c.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		c.Next()
		return
	}
	if c.GetHeader("Authorization") != "" {
		c.Next()
		return
	}
	allowed := true
	if o := c.GetHeader("Origin"); o != "" {
		allowed = s.returns.AllowsOrigin(normOrigin(o)) || s.origins[normOrigin(o)]
	} else if site := c.GetHeader("Sec-Fetch-Site"); site != "" {
		allowed = site == "same-origin" || site == "none"
	}
	if !allowed {
		c.Abort()
		_ = c.Error(&fault.Error{Status: http.StatusForbidden, Code: "csrf_refused",
			Message: "This request came from a page of another origin; it was refused."})
		return
	}
	c.Next()
}

// strictHop stands before authenticated on the link callback: a provider's
// redirect back that came without the SameSite=Strict session cookie comes
// back once from our own page, which brings it. The second arrival is
// same-site, so this cannot loop.
func (s *Server) strictHop(c *gin.Context) {
	if s.strictCrossSite(c) && c.GetHeader("Authorization") == "" {
		if s.sessionCookie(c) == "" {
			c.Abort()
			s.hop(c, c.Request.URL.RequestURI())
			return
		}
	}
	c.Next()
}

// authenticated requires a session cookie or a bearer token from the login
// issuer and records the identity.
func (s *Server) authenticated(c *gin.Context) {
	id, err := s.identify(c)
	if err != nil {
		c.Abort()
		_ = c.Error(err)
		return
	}
	callOf(c).caller = id
	c.Next()
}

func (s *Server) identify(c *gin.Context) (*auth.Identity, error) {
	if h := c.GetHeader("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return nil, auth.ErrInvalidToken
		}
		return s.auth.Bearer(c.Request.Context(), strings.TrimSpace(tok))
	}
	return s.auth.Session(c.Request.Context(), s.sessionCookie(c))
}

// sessionCookie is the session cookie's value (SESSION_COOKIE_NAME, __Host-
// prefixed over https: sessionCookieName), query-unescaped as gin's
// c.Cookie does; "" when there is none. oneSessionCookie has refused
// requests carrying it twice.
func (s *Server) sessionCookie(c *gin.Context) string {
	v, _ := c.Cookie(s.cookieName)
	return v
}

// identity returns the caller of a route behind authenticated.
func identity(c *gin.Context) *auth.Identity {
	id := callerOf(c)
	if id == nil {
		panic("server: identity called on a route without authenticated")
	}
	return id
}
