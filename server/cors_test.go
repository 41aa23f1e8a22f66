package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenstore/tokenstore/internal/settings"
)

// corsEngine is the CORS middleware of a Server with these settings in
// front of a token route and a revoke route.
func corsEngine(st *settings.Settings) *gin.Engine {
	s := &Server{cors: newCORS(st)}
	r := gin.New()
	r.Use(s.corsHeaders)
	r.GET("/api/v1.0/:provider/token", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"access_token": "x"}) })
	r.POST("/api/v1.0/:provider/revoke", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"revoked": true}) })
	return r
}

func corsDo(r http.Handler, method, path string, h map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	for k, v := range h {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

func corsSettings(origins []string, credentials bool) *settings.Settings {
	return &settings.Settings{CORSOrigins: origins, CORSAllowHeaders: []string{"Authorization", "Content-Type", "X-CSRF-Token"},
		CORSMaxAge: 10 * time.Minute, CORSSupportsCredentials: credentials}
}

// TestCORSAnyOrigin: CORS_ORIGINS=* answers as Flask-Cors' default does:
// every origin, Access-Control-Allow-Origin: *, never credentials (not even
// when CORS_SUPPORTS_CREDENTIALS is set), so a browser app elsewhere that
// sends a bearer token works.
func TestCORSAnyOrigin(t *testing.T) {
	for _, creds := range []bool{false, true} {
		r := corsEngine(corsSettings([]string{"*"}, creds))
		pre := corsDo(r, http.MethodOptions, "/api/v1.0/alpha/token", map[string]string{"Origin": "https://app.example",
			"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
		h := pre.Header()
		if pre.Code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" ||
			h.Get("Access-Control-Allow-Methods") != "GET" || h.Get("Access-Control-Allow-Headers") != "authorization" ||
			h.Get("Access-Control-Max-Age") != "600" || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("credentials setting %v: preflight %d %v", creds, pre.Code, h)
		}
		for _, m := range []string{"POST", "DELETE"} {
			pre := corsDo(r, http.MethodOptions, "/api/v1.0/alpha/revoke", map[string]string{"Origin": "https://app.example", "Access-Control-Request-Method": m})
			if pre.Header().Get("Access-Control-Allow-Methods") != m {
				t.Errorf("preflight for %s: %v", m, pre.Header())
			}
		}
		act := corsDo(r, http.MethodGet, "/api/v1.0/alpha/token", map[string]string{"Origin": "https://other.example", "Authorization": "Bearer t"})
		if act.Code != http.StatusOK || act.Header().Get("Access-Control-Allow-Origin") != "*" || act.Header().Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("credentials setting %v: request %d %v", creds, act.Code, act.Header())
		}
	}
}

// TestCORSOriginList: with an explicit list and CORS_SUPPORTS_CREDENTIALS,
// a listed origin is echoed with credentials and Vary: Origin; another
// origin gets no CORS headers, on preflight or request.
func TestCORSOriginList(t *testing.T) {
	r := corsEngine(corsSettings([]string{"https://app.example/", "https://B.example"}, true))
	for _, o := range []string{"https://app.example", "https://b.example"} {
		pre := corsDo(r, http.MethodOptions, "/api/v1.0/alpha/revoke", map[string]string{"Origin": o,
			"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"})
		h := pre.Header()
		if pre.Code != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != o || h.Get("Access-Control-Allow-Credentials") != "true" ||
			h.Get("Access-Control-Allow-Methods") != "POST" || h.Get("Vary") == "" {
			t.Errorf("preflight from %s: %d %v", o, pre.Code, h)
		}
		act := corsDo(r, http.MethodGet, "/api/v1.0/alpha/token", map[string]string{"Origin": o})
		h = act.Header()
		if act.Code != http.StatusOK || h.Get("Access-Control-Allow-Origin") != o || h.Get("Access-Control-Allow-Credentials") != "true" || h.Get("Vary") != "Origin" {
			t.Errorf("request from %s: %d %v", o, act.Code, h)
		}
	}
	pre := corsDo(r, http.MethodOptions, "/api/v1.0/alpha/token", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
	if h := pre.Header(); h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Credentials") != "" || h.Get("Access-Control-Allow-Methods") != "" {
		t.Errorf("preflight from a refused origin: %v", h)
	}
	act := corsDo(r, http.MethodGet, "/api/v1.0/alpha/token", map[string]string{"Origin": "https://evil.example"})
	if h := act.Header(); h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("request from a refused origin: %v", h)
	}
	// A header outside CORS_ALLOW_HEADERS fails the preflight.
	pre = corsDo(r, http.MethodOptions, "/api/v1.0/alpha/token", map[string]string{"Origin": "https://app.example",
		"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-other"})
	if pre.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight asking for an unlisted header: %v", pre.Header())
	}
	// Without CORS_SUPPORTS_CREDENTIALS the list is answered without them.
	r = corsEngine(corsSettings([]string{"https://app.example"}, false))
	act = corsDo(r, http.MethodGet, "/api/v1.0/alpha/token", map[string]string{"Origin": "https://app.example"})
	if h := act.Header(); h.Get("Access-Control-Allow-Origin") != "https://app.example" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("list without credentials: %v", h)
	}
}

// TestCORSNone: CORS_ORIGINS empty answers no CORS at all.
func TestCORSNone(t *testing.T) {
	r := corsEngine(corsSettings(nil, false))
	act := corsDo(r, http.MethodGet, "/api/v1.0/alpha/token", map[string]string{"Origin": "https://app.example"})
	if act.Header().Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("no origins configured: %v", act.Header())
	}
}
