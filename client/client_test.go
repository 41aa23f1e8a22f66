package client

import (
	"context"
	"testing"
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
