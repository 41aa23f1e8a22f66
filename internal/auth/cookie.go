package auth

import (
	"net/http"
	"net/textproto"
	"strings"
)

// SessionCookie returns the value of r's first cookie called name, as
// r.Cookie(name) does (empty when there is none), without r.Cookie's
// allocations (a slice and a whole http.Cookie per request) in the case
// that matters: a name and value of plain characters, which every session
// cookie this service sets is (base64url). Anything else that matches,
// such as a quoted value, is left to net/http, so the answer is always
// net/http's; a fuzz test holds the two together.
func SessionCookie(r *http.Request, name string) string {
	if name == "" || !plain(name, false) {
		return slowCookie(r, name)
	}
	for _, line := range r.Header["Cookie"] {
		line = textproto.TrimString(line)
		for len(line) > 0 {
			var part string
			part, line, _ = strings.Cut(line, ";")
			part = textproto.TrimString(part)
			n, v, _ := strings.Cut(part, "=")
			if textproto.TrimString(n) != name {
				continue
			}
			if !plain(n, false) || !plain(v, true) {
				return slowCookie(r, name)
			}
			return v
		}
	}
	return ""
}

// plain: letters, digits and -._~+ only, and in a value also / and =;
// what net/http takes unchanged as a cookie name (a token) or value.
func plain(s string, value bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '_', c == '.', c == '~', c == '+', value && (c == '/' || c == '='):
		default:
			return false
		}
	}
	return true
}

func slowCookie(r *http.Request, name string) string {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}
