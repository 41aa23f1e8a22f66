package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// The exchanges themselves are tested against a real tokenstore, API server
// and OpenID Provider in server/workload_client_test.go; these are the
// checks made before any request.
func TestOptions(t *testing.T) {
	for _, o := range []Options{
		{Provider: "p"},
		{URL: "http://x"},
		{URL: "ftp://x", Provider: "p"},
		{URL: "tokenstore", Provider: "p"},
	} {
		if _, err := New(context.Background(), o); err == nil {
			t.Errorf("%+v: accepted", o)
		}
		if _, err := TokenSource(context.Background(), o).Token(); err == nil {
			t.Errorf("%+v: TokenSource gave no error", o)
		}
	}
	x, err := New(context.Background(), Options{URL: "https://ts.example/prefix/", Provider: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if x.endpoint != "https://ts.example/prefix/api/oauth2/token" || x.opt.TokenFile != DefaultTokenFile {
		t.Errorf("endpoint %s, file %s", x.endpoint, x.opt.TokenFile)
	}
}

// TestPermanent: what the retrying TokenSource repeats (failures that pass)
// and what it returns at once and holds (everything else tokenstore
// refuses). The exchanges themselves, with retries and refusals, are in
// server/workload_client_test.go.
func TestPermanent(t *testing.T) {
	for _, tc := range []struct {
		e         Error
		permanent bool
	}{
		{Error{StatusCode: 503, Code: "temporarily_unavailable", Reason: "provider_unavailable"}, false},
		{Error{StatusCode: 503, Code: "temporarily_unavailable", Reason: "kubernetes_unavailable"}, false},
		{Error{StatusCode: 500, Code: "server_error"}, false},
		{Error{StatusCode: 502, Code: "invalid_response"}, false}, // a proxy's error page
		{Error{StatusCode: 429, Code: "invalid_response"}, false},
		{Error{StatusCode: 408, Code: "invalid_response"}, false},
		{Error{StatusCode: 400, Code: "invalid_target", Reason: "provider_rejected_client"}, true},
		{Error{StatusCode: 400, Code: "invalid_target", Reason: "unknown_provider"}, true},
		{Error{StatusCode: 403, Code: "unauthorized_client", Reason: "no_grant"}, true},
		{Error{StatusCode: 401, Code: "invalid_request", Reason: "wrong_audience"}, true},
		{Error{StatusCode: 404, Code: "invalid_response"}, true}, // a wrong URL
	} {
		e := tc.e
		if e.Permanent() != tc.permanent || e.Temporary() == tc.permanent {
			t.Errorf("%+v: permanent %v, want %v", e, e.Permanent(), tc.permanent)
		}
		if IsPermanent(fmt.Errorf("wrapped: %w", &e)) != tc.permanent {
			t.Errorf("%+v: IsPermanent of the wrapped error is not %v", e, tc.permanent)
		}
	}
	if IsPermanent(errors.New("dial tcp: connection refused")) {
		t.Error("a network error is permanent")
	}
	for in, want := range map[string]time.Duration{"3": 3 * time.Second, " 1 ": time.Second, "": 0, "-1": 0, "Wed, 21 Oct 2015 07:28:00 GMT": 0} {
		if got := parseRetryAfter(in); got != want {
			t.Errorf("Retry-After %q read as %v, want %v", in, got, want)
		}
	}
}
