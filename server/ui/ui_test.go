package ui

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func TestPageAndAssets(t *testing.T) {
	h := Handler(Options{Title: `tokenstore <dev>`})
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html", `<script src="/ui/app.js" defer></script>`},
		{"/ui/app.js", "javascript", "'use strict'"},
		{"/ui/app.css", "text/css", ".providers"},
		{"/ui/img/demo-drive.svg", "image/svg+xml", "<svg"},
		{"/ui/img/demo-calendar.svg", "image/svg+xml", "<svg"},
		{"/ui/img/provider.svg", "image/svg+xml", "<svg"},
		{"/ui/img/tokenstore.svg", "image/svg+xml", "<svg"},
	} {
		rec := get(t, h, tc.path)
		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: %d", tc.path, rec.Code)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); !strings.Contains(ct, tc.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(rec.Body.String(), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		csp := rec.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: CSP %q", tc.path, csp)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", tc.path)
		}
	}
	// The title is escaped, not trusted.
	if body := get(t, h, "/").Body.String(); !strings.Contains(body, "tokenstore &lt;dev&gt;") {
		t.Errorf("the title is not escaped in the page")
	}
}

func TestNotFound(t *testing.T) {
	h := Handler(Options{})
	for _, p := range []string{"/ui/", "/ui/img/", "/ui/nope.js", "/ui/../ui.go", "/ui/templates/index.html", "/elsewhere"} {
		if rec := get(t, h, p); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
}

// TestServes: the server hands the page only reads of / and /ui/...; the
// API's paths and every write stay with the API.
func TestServes(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/", true},
		{"HEAD", "/", true},
		{"GET", "/ui/app.js", true},
		{"POST", "/", false},
		{"DELETE", "/ui/app.js", false},
		{"GET", "/api/whoami", false},
		{"GET", "/uix", false},
		{"GET", "/index.html", false},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if got := Serves(r); got != tc.want {
			t.Errorf("Serves(%s %s) = %v, want %v", tc.method, tc.path, got, tc.want)
		}
	}
}

// TestScriptAvoidsInnerHTML: provider metadata and error messages reach the
// page as data; the script must set text, never parse HTML from them.
func TestScriptAvoidsInnerHTML(t *testing.T) {
	js := get(t, Handler(Options{}), "/ui/app.js").Body.String()
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	if strings.Contains(js, "refresh_token") {
		t.Errorf("app.js mentions refresh_token; the page never handles one")
	}
}
