// Package fault is tokenstore's one error taxonomy. A refusal that a domain
// service returns carries, once, everything an answer needs: the HTTP
// status, a stable machine code, the RFC 6749 error code and a sentence for
// people. The HTTP layer renders it in one of two shapes: the REST API's
// JSON error ({error, message}) and the OAuth error of RFC 6749 §5.2
// ({error, error_description, reason}) on the token-exchange endpoint.
//
// Domain errors either are *Error values (sentinels compared with
// errors.Is, which matches on Code) or implement Faulter, for errors that
// keep fields of their own (a provider's error code, a cause to log).
// Messages are shown to callers: they never hold a token, a secret or a
// provider's free text (see SafeCode).
//
// The package imports the standard library only, so that every domain
// package may use it.
package fault

import (
	"errors"
	"net/http"
	"strings"
)

// Error is a refusal with its answer.
type Error struct {
	// Status is the REST API's HTTP status.
	Status int
	// Code is the stable machine code: the REST answer's "error", the
	// OAuth answer's "reason" (tokenstore's finer code).
	Code string
	// OAuth is the RFC 6749 / RFC 8693 error code of the OAuth answer;
	// empty means one derived from Status (see OAuthCode).
	OAuth string
	// OAuthStatus is the OAuth answer's status; 0 means the one RFC 6749
	// gives OAuth's code (see OAuthHTTPStatus).
	OAuthStatus int
	// Message is one sentence for people.
	Message string
	// Provider is the provider the refusal is about, if any: the REST
	// answer names it.
	Provider string
	// Relink says the person can put it right by linking the account
	// again: the REST answer then gives the provider's authorize URL.
	Relink bool
	// Err is the cause, for the log; never rendered.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches any *Error with the same Code, so that a sentinel still
// matches a copy made with Because or a Faulter's answer.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code != "" && t.Code == e.Code
}

// Because is a copy of e with a cause to log.
func (e *Error) Because(err error) *Error {
	c := *e
	c.Err = err
	return &c
}

// For is a copy of e about provider.
func (e *Error) For(provider string) *Error {
	c := *e
	c.Provider = provider
	return &c
}

// Faulter is a domain error that keeps fields of its own and says how it
// is answered.
type Faulter interface {
	error
	Fault() *Error
}

// As is the answer err carries: an *Error in its chain, or the Fault of a
// Faulter in it; nil for any other error (answered as an internal error).
func As(err error) *Error {
	var f Faulter
	var e *Error
	// A Faulter first: it may wrap a sentinel *Error it refines.
	if errors.As(err, &f) {
		return f.Fault()
	}
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// OAuthCode is the RFC 6749 error code e is answered with on an OAuth
// endpoint.
func (e *Error) OAuthCode() string {
	if e.OAuth != "" {
		return e.OAuth
	}
	switch {
	case e.Status == http.StatusServiceUnavailable || e.Status == http.StatusBadGateway || e.Status == http.StatusGatewayTimeout:
		return "temporarily_unavailable"
	case e.Status >= 500:
		return "server_error"
	case e.Status == http.StatusForbidden:
		return "access_denied"
	}
	return "invalid_request"
}

// OAuthHTTPStatus is the status of e's OAuth answer: OAuthStatus when set,
// else 400 as RFC 6749 §5.2 has it, 401 for invalid_client, 503 and 500
// for the two codes of a server that cannot answer.
func (e *Error) OAuthHTTPStatus() int {
	if e.OAuthStatus != 0 {
		return e.OAuthStatus
	}
	switch e.OAuthCode() {
	case "temporarily_unavailable":
		return http.StatusServiceUnavailable
	case "server_error":
		return http.StatusInternalServerError
	case "invalid_client":
		return http.StatusUnauthorized
	case "access_denied", "unauthorized_client":
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}

// Internal is the answer to an error nobody foresaw: logged in full where
// it happened, answered without detail.
var Internal = &Error{Status: http.StatusInternalServerError, Code: "internal_error", OAuth: "server_error",
	Message: "Something went wrong on our side; the error was logged."}

// SafeCode keeps an OAuth2 error code a provider sent as a short token of
// safe characters (at most 64), fit for a message, a return URL or a log
// line: a provider (or an attacker) cannot inject through it.
func SafeCode(e string) string {
	var b strings.Builder
	for _, r := range e {
		if b.Len() >= 64 {
			break
		}
		if r == '_' || r == '-' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "error"
	}
	return b.String()
}
