// Package ui is tokenstore's web page: one HTML page (Go html/template)
// with embedded CSS, JavaScript and images, no framework and no build step.
// The page talks to the JSON API from the browser, with the session cookie,
// so it works the same against the development provider and real ones.
//
// It imports the standard library only; the server mounts it outside the
// API's routes (see Serves), so the OpenAPI document describes the API alone.
package ui

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed templates/index.html
var templatesFS embed.FS

// index is parsed at start: a broken embedded template fails every test.
var index = template.Must(template.ParseFS(templatesFS, "templates/index.html"))

//go:embed assets
var assetsFS embed.FS

// AssetsPrefix is where the page's static files are served.
const AssetsPrefix = "/ui/"

// Options configure Handler.
type Options struct {
	// Title is the page's heading; empty means "tokenstore".
	Title string
}

// Serves reports whether r is for the page: GET or HEAD of / or of a path
// under AssetsPrefix.
func Serves(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	return r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, AssetsPrefix)
}

// Handler serves the page at / and its assets under AssetsPrefix.
func Handler(opt Options) http.Handler {
	if opt.Title == "" {
		opt.Title = "tokenstore"
	}
	var page bytes.Buffer
	// The page has no per-request data: render it once. Title is the only
	// input and html/template escapes it, so Execute cannot fail on it.
	renderErr := index.Execute(&page, opt)
	assets, _ := fs.Sub(assetsFS, "assets")
	files := http.StripPrefix(strings.TrimSuffix(AssetsPrefix, "/"), http.FileServerFS(assets))
	started := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Logos may come from any https origin (TokenProvider metadata);
		// scripts and styles only from here; fetches only to the API here.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' https: data:; script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
		switch {
		case r.URL.Path == "/" && renderErr != nil:
			http.Error(w, "The page could not be rendered.", http.StatusInternalServerError)
		case r.URL.Path == "/":
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Cache-Control", "no-cache")
			http.ServeContent(w, r, "index.html", started, bytes.NewReader(page.Bytes()))
		// Files only: no folder listings, and no index.html (the file server
		// would redirect it to its folder).
		case strings.HasPrefix(r.URL.Path, AssetsPrefix) && path.Ext(r.URL.Path) != "" && path.Ext(r.URL.Path) != ".html":
			h.Set("Cache-Control", "no-cache")
			files.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}
