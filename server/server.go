// Package server is tokenstore's HTTP API on gin: one constructor that returns
// the handler, every route in routes.go, JSON errors rendered in one place.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenstore/tokenstore/server/config"
	"github.com/tokenstore/tokenstore/server/store"
)

// Options are what the server is built from; cmd wires them.
type Options struct {
	Settings *config.Settings
	Store    store.Store
	Logger   *slog.Logger
	// Ready reports whether the provider registry is complete; nil means
	// there is no registry yet and readiness depends on the store alone.
	Ready func() bool
}

// Server holds the HTTP API's dependencies.
type Server struct {
	opt    Options
	log    *slog.Logger
	engine *gin.Engine
}

// New builds the server and its routes.
func New(opt Options) (*Server, error) {
	if opt.Settings == nil || opt.Store == nil {
		return nil, errors.New("server: settings and store are required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	gin.SetMode(gin.ReleaseMode)
	s := &Server{opt: opt, log: opt.Logger, engine: gin.New()}
	s.routes()
	return s, nil
}

// Handler is the whole HTTP API.
func (s *Server) Handler() http.Handler { return s.engine }

// Serve listens on LISTEN_ADDRESS until ctx ends, then stops taking new
// requests and waits up to 25 s for in-flight ones.
func (s *Server) Serve(ctx context.Context) error {
	srv := &http.Server{
		Addr:              s.opt.Settings.ListenAddress,
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	s.log.Info("listening", "address", s.opt.Settings.ListenAddress, "external_url", s.opt.Settings.ExternalURL)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// apiError is the one JSON shape of every error: a stable code and a sentence.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"error"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// renderErrors turns the first error a handler recorded with c.Error into
// the JSON error answer. Errors that are not *apiError are logged and
// answered as a 500 without detail.
func (s *Server) renderErrors(c *gin.Context) {
	c.Next()
	if len(c.Errors) == 0 || c.Writer.Written() {
		return
	}
	err := c.Errors[0].Err
	var ae *apiError
	if !errors.As(err, &ae) {
		s.log.Error("request failed", "method", c.Request.Method, "route", c.FullPath(), "error", err)
		ae = &apiError{Status: http.StatusInternalServerError, Code: "internal_error", Message: "Something went wrong on our side; the error was logged."}
	}
	c.JSON(ae.Status, ae)
}
