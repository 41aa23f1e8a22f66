package auth

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenstore/tokenstore/internal/fault"
)

// ErrBadReturnURL: return_url points somewhere not allowed (an open redirect).
var ErrBadReturnURL = &fault.Error{Status: http.StatusBadRequest, Code: "invalid_return_url",
	Message: "return_url must be a path on this service or an allowed origin."}

// MaxReturnURL bounds return_url: a link back to a page needs no more, and
// the pending login or link keeps it until the browser returns.
const MaxReturnURL = 2048

// ErrReturnURLTooLong: return_url is longer than MaxReturnURL.
var ErrReturnURLTooLong = &fault.Error{Status: http.StatusBadRequest, Code: "invalid_return_url",
	Message: "return_url must be at most 2048 characters long."}

// ReturnURLs decides where browsers may be sent after login and linking:
// EXTERNAL_URL's origin and the ALLOWED_RETURN_URLS origins, nothing else.
type ReturnURLs struct {
	base    *url.URL
	origins map[string]bool
}

// NewReturnURLs builds the allow-list. Entries that do not parse are
// skipped (config validates them at start).
func NewReturnURLs(externalURL string, allowed []string) (*ReturnURLs, error) {
	base, err := url.Parse(externalURL)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, errors.New("EXTERNAL_URL must be an absolute URL")
	}
	r := &ReturnURLs{base: base, origins: map[string]bool{origin(base): true}}
	for _, a := range allowed {
		if u, err := url.Parse(strings.TrimSpace(a)); err == nil && u.Scheme != "" && u.Host != "" {
			r.origins[origin(u)] = true
		}
	}
	return r, nil
}

func origin(u *url.URL) string { return strings.ToLower(u.Scheme + "://" + u.Host) }

// AllowsOrigin reports whether an Origin header value is one of ours.
func (r *ReturnURLs) AllowsOrigin(o string) bool { return r.origins[strings.ToLower(o)] }

// Default is where browsers go when no return_url was given.
func (r *ReturnURLs) Default() string {
	return strings.TrimSuffix(r.base.String(), "/") + "/"
}

// Check returns the absolute URL to redirect to, or ErrBadReturnURL. A
// relative path is taken relative to EXTERNAL_URL; scheme-relative
// ("//evil") and backslash tricks are refused.
func (r *ReturnURLs) Check(raw string) (string, error) {
	if raw == "" {
		return r.Default(), nil
	}
	if len(raw) > MaxReturnURL {
		return "", ErrReturnURLTooLong
	}
	if strings.ContainsAny(raw, "\\\r\n\t") || strings.HasPrefix(raw, "//") {
		return "", ErrBadReturnURL
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", ErrBadReturnURL
	}
	if u.Scheme == "" && u.Host == "" {
		if !strings.HasPrefix(u.Path, "/") {
			return "", ErrBadReturnURL
		}
		return r.base.ResolveReference(u).String(), nil
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return "", ErrBadReturnURL
	}
	if !r.origins[origin(u)] {
		return "", ErrBadReturnURL
	}
	return u.String(), nil
}

// WithParams adds query parameters to an (already checked) return URL, for
// reporting an outcome such as ?error=access_denied&provider=x.
func WithParams(returnURL string, kv ...string) string {
	u, err := url.Parse(returnURL)
	if err != nil {
		return returnURL
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}
