package server

import (
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tokenstore/tokenstore/internal/fault"
	"github.com/tokenstore/tokenstore/internal/settings"
)

// hostPrefix is the cookie name prefix (RFC 6265bis §4.1.3.2) that makes a
// browser keep a cookie only if it is Secure, has Path=/ and no Domain, and
// was set over https: no sibling subdomain and no plain-http page can then
// plant or overwrite the session cookie.
const hostPrefix = "__Host-"

// sessionCookieName is the session cookie's name: SESSION_COOKIE_NAME,
// behind the __Host- prefix whenever the cookie is Secure (EXTERNAL_URL is
// https, or SESSION_COOKIE_SECURE=true). Over plain http (tokenstore dev,
// tests) browsers refuse __Host- cookies, so the name is used as given; a
// name that already has the prefix there is an error. Changing the name
// signs everyone out once: browsers keep sending the old cookie, which is
// no longer read.
func sessionCookieName(s *settings.Settings) (string, error) {
	name := s.SessionCookieName
	if name == "" {
		// Settings built without the loader (embedders, tests): its default.
		name = "tokenstore_session"
	}
	prefixed := strings.HasPrefix(name, hostPrefix)
	switch {
	case s.CookieSecure() && !prefixed:
		return hostPrefix + name, nil
	case !s.CookieSecure() && prefixed:
		return "", fmt.Errorf("SESSION_COOKIE_NAME %q: a %s cookie needs a Secure cookie (an https EXTERNAL_URL)", name, hostPrefix)
	}
	return name, nil
}

// errTwoSessionCookies refuses a request carrying the session cookie twice.
// Browsers send two when another page of the site (a sibling subdomain, or
// an http page before the prefix) planted one beside ours; taking the first
// could sign the person in as whoever planted it.
var errTwoSessionCookies = &fault.Error{Status: http.StatusBadRequest, Code: "duplicate_session_cookie",
	Message: "The request carries the session cookie more than once; sign out, or clear this site's cookies, and sign in again."}

// oneSessionCookie refuses requests with more than one session cookie.
// net/http splits the Cookie headers; a hand-written scan that saved its
// allocations bought less than the 5 % a replacement of the standard
// library must show (docs/performance.md, "Hand-written hot-path code").
func (s *Server) oneSessionCookie(c *gin.Context) {
	if len(c.Request.CookiesNamed(s.cookieName)) > 1 {
		c.Abort()
		_ = c.Error(errTwoSessionCookies)
		return
	}
	c.Next()
}

// errCrossSiteRead refuses a token read that a page of another site made
// the browser send with the session cookie.
var errCrossSiteRead = &fault.Error{Status: http.StatusForbidden, Code: "cross_site_refused",
	Message: "Tokens are not handed out to requests another site's page started; open this address from tokenstore's own page or send a bearer token."}

// sameSiteRead stands before the token endpoint. A cross-site navigation
// (a link, a redirect, a form with method GET) carries the session cookie
// under SameSite=Lax, and with ?force_refresh=true would make tokenstore
// call the provider on the person's behalf. Browsers mark such requests
// Sec-Fetch-Site: cross-site; they are refused unless they are CORS
// requests (with an Origin header) from CORS_ORIGINS or another origin
// the server trusts, which is how a web app of ours reads a token. Bearer
// callers are not browsers riding on a cookie and pass.
func (s *Server) sameSiteRead(c *gin.Context) {
	if c.GetHeader("Authorization") == "" && c.GetHeader("Sec-Fetch-Site") == "cross-site" {
		o := normOrigin(c.GetHeader("Origin"))
		if o == "" || !(s.origins[o] || s.returns.AllowsOrigin(o)) {
			c.Abort()
			_ = c.Error(errCrossSiteRead)
			return
		}
	}
	c.Next()
}

// errNotJSON refuses a request body that is not declared JSON.
var errNotJSON = &fault.Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
	Message: "The request body must be JSON (Content-Type: application/json)."}

// jsonBodies stands before the JSON API's writes: a request with a body
// must declare it application/json. A page of another origin can send a
// cross-origin form post (text/plain, application/x-www-form-urlencoded or
// multipart/form-data) without a CORS preflight, but not a JSON one, so
// CSRF protection does not rest on the Origin check alone. Requests
// without a body (revoke, logout, the DELETEs) need no Content-Type.
func (s *Server) jsonBodies(c *gin.Context) {
	switch c.Request.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		c.Next()
		return
	}
	if (c.Request.ContentLength != 0 || len(c.Request.TransferEncoding) > 0) && !isJSON(c.GetHeader("Content-Type")) {
		c.Abort()
		_ = c.Error(errNotJSON)
		return
	}
	c.Next()
}

// isJSON reports whether a Content-Type is application/json, in any case
// and with any parameters (charset).
func isJSON(ct string) bool {
	if ct == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}
