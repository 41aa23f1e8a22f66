package server

import (
	"context"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// routes lists every route of the API.
func (s *Server) routes() {
	r := s.engine
	r.Use(gin.Recovery(), s.renderErrors)
	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	r.GET("/api/_health", s.readyz)
	r.NoRoute(func(c *gin.Context) {
		_ = c.Error(&apiError{Status: http.StatusNotFound, Code: "not_found", Message: "No such endpoint."})
	})
}

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
