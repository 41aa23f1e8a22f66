package server

import (
	"context"
	"net/http"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/gin-gonic/gin"

	"github.com/tokenstore/tokenstore/server/apidocs"
	"github.com/tokenstore/tokenstore/server/ui"
)

// routes lists every route of the API. The OpenAPI document
// (openapi/openapi.yaml) describes exactly these; a test keeps them in step.
func (s *Server) routes() {
	r := s.engine
	r.Use(gin.Recovery(), s.requestID, s.traceRequests, s.countRequests, s.logRequests, s.renderErrors, s.corsHeaders, s.csrf,
		s.oneSessionCookie)
	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	// No /metrics here: it is served on METRICS_ADDRESS alone (Serve),
	// never on the port the Service and Ingress expose.

	api := r.Group("/api")
	api.GET("/_health", s.readyz)
	api.GET("/openapi.yaml", s.openapiYAML)
	api.GET("/openapi.json", s.openapiJSON)
	api.GET("/whoami", s.authenticated, s.whoami)

	login := api.Group("/oidc")
	login.GET("/login", s.limitAddress, s.login)
	login.GET("/callback", s.limitAddress, s.loginCallback)
	login.POST("/logout", s.jsonBodies, s.logout)

	// The provider's redirect back may arrive without a Strict session
	// cookie (strictHop); everything else under /v1.0 needs a caller.
	// The rate-limited routes (ratelimit.go) spend the client address's
	// bucket until a principal is known, then the principal's.
	api.GET("/v1.0/:provider/redirect_uri", s.strictHop, s.limitUnidentified, s.authenticated, s.limitPrincipal, s.linkCallback)
	api.GET("/v1.0/:provider/token", s.limitUnidentified, s.authenticated, s.limitPrincipal, s.sameSiteRead, s.token)
	v1 := api.Group("/v1.0", s.authenticated, s.jsonBodies)
	v1.GET("/authorizations", s.authorizations)
	v1.GET("/:provider/authorize", s.authorize)
	v1.POST("/:provider/revoke", s.revoke)
	v1.POST("/:provider/grants", s.createGrant)
	v1.GET("/grants", s.listGrants)
	v1.DELETE("/grants/:id", s.revokeGrant)
	v1.GET("/audit", s.listAudit)

	// Incident response (internal/admin): callers holding one of
	// ADMIN_ROLES only; off (404) without it.
	adm, ah := v1.Group("/admin", s.adminOnly), s.adminAPI()
	adm.GET("/users/:user", ah.person)
	adm.GET("/users/:user/credentials", ah.credentials)
	adm.DELETE("/users/:user/credentials", ah.revokeCredentials)
	adm.DELETE("/users/:user/credentials/:provider", ah.revokeCredential)
	adm.GET("/users/:user/grants", ah.grants)
	adm.DELETE("/users/:user/grants", ah.revokeGrants)
	adm.DELETE("/users/:user/sessions", ah.endSessions)
	adm.DELETE("/grants/:id", ah.revokeGrant)
	adm.GET("/serviceaccounts/:namespace/:name/grants", ah.serviceAccountGrants)
	adm.DELETE("/serviceaccounts/:namespace/:name/grants", ah.revokeServiceAccountGrants)

	// RFC 8693 token exchange: workloads and people present their own token
	// (no session, no cookie); its answers use the OAuth error format.
	r.POST(exchangeRoute, s.tokenExchange)

	// The web page (/ and /ui/...) is mounted outside the API's routes, so
	// the OpenAPI document describes the API alone.
	// So is the API reference page (/api/, Swagger UI on that document).
	page := ui.Handler(ui.Options{})
	reference := apidocs.Handler()
	r.NoRoute(func(c *gin.Context) {
		switch {
		case ui.Serves(c.Request):
			page.ServeHTTP(c.Writer, c.Request)
			return
		case apidocs.Serves(c.Request):
			reference.ServeHTTP(c.Writer, c.Request)
			return
		}
		_ = c.Error(&fault.Error{Status: http.StatusNotFound, Code: "not_found", Message: "No such endpoint."})
	})
}

// exchangeRoute is the token-exchange endpoint's route. It rate-limits in
// the handler, as it authenticates there (exchange).
const exchangeRoute = "/api/oauth2/token"

// healthz answers while the process runs: liveness only.
func (s *Server) healthz(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) }

// readyz answers 200 when the database answers and the provider registry is
// complete, so a load balancer sends people only to replicas that can serve.
func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	checks := gin.H{"database": "ok", "providers": "ok"}
	ok := true
	if err := s.opt.Store.Ping(ctx); err != nil {
		checks["database"] = "unreachable"
		ok = false
	}
	if s.opt.Ready != nil && !s.opt.Ready() {
		checks["providers"] = "syncing"
		ok = false
	}
	if !ok {
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "unavailable", "checks": checks})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok", "checks": checks})
}
