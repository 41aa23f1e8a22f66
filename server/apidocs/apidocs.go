// Package apidocs is the API reference page: Swagger UI, from its npm
// package swagger-ui-dist at the version pinned in package.json (copied into
// dist/ by hack/apidocs.sh, checked by make verify), embedded in the binary
// and showing the server's own OpenAPI document. Nothing is loaded from a
// CDN.
//
// The Flask service's /, /api/ and /api/v1.0/ led to its Swagger UI; here
// the page is at /api/ (/api/v1.0/ redirects to it) and / is tokenstore's
// web page, which links to it.
package apidocs

import (
	"bytes"
	"embed"
	"net/http"
	"strings"
	"time"
)

//go:embed index.html init.js dist/swagger-ui-bundle.js dist/swagger-ui.css dist/VERSION
var files embed.FS

// Path is where the page is served; its files are under Path + "docs/".
const Path = "/api/"

// legacyPath is the Flask service's API root, redirected to Path.
const legacyPath = "/api/v1.0/"

// assets are the page's files by the name they are served under.
var assets = map[string]struct{ file, contentType string }{
	"swagger-ui-bundle.js": {"dist/swagger-ui-bundle.js", "text/javascript; charset=utf-8"},
	"swagger-ui.css":       {"dist/swagger-ui.css", "text/css; charset=utf-8"},
	"init.js":              {"init.js", "text/javascript; charset=utf-8"},
}

// Version is the embedded Swagger UI's version.
func Version() string {
	v, _ := files.ReadFile("dist/VERSION")
	return strings.TrimSpace(string(v))
}

// Serves reports whether r is for the page: GET or HEAD of Path, of the
// Flask service's API root, or of one of the page's files.
func Serves(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	return p == Path || p == legacyPath || strings.HasPrefix(p, Path+"docs/")
}

// Handler serves the page, its files and the redirect from the Flask
// service's API root.
func Handler() http.Handler {
	started := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Swagger UI sets style attributes and shows data: images; its
		// scripts are this server's files only, and it fetches only the
		// API here.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
		name := strings.TrimPrefix(r.URL.Path, Path+"docs/")
		switch {
		case r.URL.Path == legacyPath:
			http.Redirect(w, r, Path, http.StatusFound)
		case r.URL.Path == Path:
			serve(w, r, "index.html", "text/html; charset=utf-8", started)
		case assets[name].file != "":
			serve(w, r, assets[name].file, assets[name].contentType, started)
		default:
			http.NotFound(w, r)
		}
	})
}

func serve(w http.ResponseWriter, r *http.Request, file, contentType string, modified time.Time) {
	b, err := files.ReadFile(file)
	if err != nil {
		http.Error(w, "The API reference could not be read.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	// The files change only with the binary: revalidate, by modification
	// time (the process start), rather than cache blindly.
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, file, modified, bytes.NewReader(b))
}
