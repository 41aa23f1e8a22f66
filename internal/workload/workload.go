// Package workload is the workload side of tokenstore: how the HTTP layer
// learns which Kubernetes ServiceAccount is calling, and the shared cache of
// service (client-credentials) tokens.
//
// The HTTP layer depends only on the interfaces here (Authenticator,
// Directory), never on Kubernetes types: the implementation with client-go
// (TokenReview, ServiceAccount lookups) lives in workload/kubeauth and is
// wired by cmd.
package workload

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"
)

// Identity is a workload proven by its ServiceAccount token.
type Identity struct {
	Namespace      string
	ServiceAccount string
	// UID is the ServiceAccount's uid: a ServiceAccount deleted and created
	// again under the same name has another one.
	UID string
	// Pod is the pod the token is bound to, when it is bound to one (a
	// projected token always is).
	Pod string
	// ExpiresAt is when the presented token lapses (its exp claim).
	ExpiresAt time.Time
}

// String is namespace/name, the form used in grants and audit events.
func (i Identity) String() string { return i.Namespace + "/" + i.ServiceAccount }

// Authenticator proves a workload's identity from its ServiceAccount token.
// Implementations must be safe for concurrent use and must never put the
// token into an error or a log line.
type Authenticator interface {
	// Authenticate returns the identity behind token, or an error that is
	// (or wraps) an *AuthError when the token is refused, or an
	// *UnavailableError when the verdict could not be obtained.
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// Directory answers whether a ServiceAccount exists, so that a grant to a
// misspelt one is refused when it is made rather than silently never used,
// and gives its uid, which the grant is bound to: a ServiceAccount deleted
// and created again under the same name (another uid) does not inherit it.
type Directory interface {
	// ServiceAccountUID returns the ServiceAccount's uid and true, or
	// false when there is no such ServiceAccount.
	ServiceAccountUID(ctx context.Context, namespace, name string) (uid string, exists bool, err error)
}

// Reasons a ServiceAccount token is refused; stable codes the API returns.
const (
	// ReasonExpired: the token's exp has passed.
	ReasonExpired = "token_expired"
	// ReasonWrongAudience: the token was not issued for tokenstore's audience.
	ReasonWrongAudience = "wrong_audience"
	// ReasonMalformed: not a JWT at all (or one without exp).
	ReasonMalformed = "malformed_token"
	// ReasonRejected: the API server does not accept the token: forged,
	// signed by another cluster, or revoked (its ServiceAccount, Pod or
	// Secret was deleted).
	ReasonRejected = "token_rejected"
	// ReasonNotServiceAccount: the token is valid but names a user that is
	// not a ServiceAccount.
	ReasonNotServiceAccount = "not_service_account"
)

// AuthError is a refused ServiceAccount token. Reason is one of the Reason*
// constants; Detail is a token-free explanation for logs and answers.
type AuthError struct {
	Reason string
	Detail string
}

func (e *AuthError) Error() string {
	if e.Detail == "" {
		return "service account token refused: " + e.Reason
	}
	return "service account token refused: " + e.Reason + ": " + e.Detail
}

// UnavailableError says the verdict could not be obtained (the API server
// did not answer); the token may well be good, so a retry may succeed.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string { return "token review unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error { return e.Err }

// Fault: the token may be good; ask again shortly.
func (e *UnavailableError) Fault() *fault.Error {
	return &fault.Error{Status: http.StatusServiceUnavailable, Code: "kubernetes_unavailable", OAuth: "temporarily_unavailable", Err: e.Err,
		Message: "The ServiceAccount token could not be checked with the Kubernetes API; try again shortly."}
}

// Fault is a 401: RFC 8693 §2.2.2 names invalid_request for an
// unacceptable subject_token; the status says what it is, not
// authenticated.
func (e *AuthError) Fault() *fault.Error {
	return &fault.Error{Status: http.StatusUnauthorized, Code: e.Reason, OAuth: "invalid_request", OAuthStatus: http.StatusUnauthorized,
		Message: "The ServiceAccount token was refused: " + e.Detail + "."}
}

// ReasonOf returns the refusal reason of err, or "" when err is not an
// *AuthError.
func ReasonOf(err error) string {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return ""
}

// ParseServiceAccount reads "namespace/name" (the form grants are written
// in) and checks both halves are DNS labels / subdomains as Kubernetes
// requires, so that nonsense is refused with a clear message.
func ParseServiceAccount(s string) (namespace, name string, err error) {
	ns, n, ok := cutOnce(s, '/')
	if !ok {
		return "", "", fmt.Errorf("service account %q: want namespace/name", s)
	}
	if err := CheckServiceAccount(ns, n); err != nil {
		return "", "", err
	}
	return ns, n, nil
}

// CheckServiceAccount validates a namespace (DNS-1123 label) and a
// ServiceAccount name (DNS-1123 subdomain).
func CheckServiceAccount(namespace, name string) error {
	if !dnsLabel(namespace, 63) {
		return fmt.Errorf("namespace %q is not a valid Kubernetes namespace name", namespace)
	}
	if !dnsSubdomain(name) {
		return fmt.Errorf("service account name %q is not a valid Kubernetes name", name)
	}
	return nil
}

func cutOnce(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			rest := s[i+1:]
			for j := 0; j < len(rest); j++ {
				if rest[j] == sep {
					return "", "", false
				}
			}
			return s[:i], rest, true
		}
	}
	return "", "", false
}

func dnsLabel(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

func dnsSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if !dnsLabel(s[start:i], 63) {
				return false
			}
			start = i + 1
		}
	}
	return true
}
