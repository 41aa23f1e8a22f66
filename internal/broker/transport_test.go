package broker

import (
	"net/http"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
)

// TestProviderTransport: a client on net/http's default transport (2 idle
// connections per host) is given the providers' transport; any other is
// kept as it is, and the caller's client is not modified.
func TestProviderTransport(t *testing.T) {
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := crypto.ParseKeyRing(key)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	custom := &http.Transport{}
	for _, tc := range []struct {
		name   string
		client *http.Client
		want   http.RoundTripper
	}{
		{"nil client", nil, providers.Transport()},
		{"nil transport", &http.Client{Timeout: time.Second}, providers.Transport()},
		{"default transport", &http.Client{Timeout: time.Second, Transport: http.DefaultTransport}, providers.Transport()},
		{"own transport", &http.Client{Timeout: time.Second, Transport: custom}, custom},
	} {
		var before http.RoundTripper
		if tc.client != nil {
			before = tc.client.Transport
		}
		b, err := New(Options{Store: f.st, Keys: ring, Providers: providers.NewRegistry(), HTTPClient: tc.client})
		if err != nil {
			t.Fatal(err)
		}
		if b.opt.HTTPClient.Transport != tc.want {
			t.Errorf("%s: transport %T %p, want %p", tc.name, b.opt.HTTPClient.Transport, b.opt.HTTPClient.Transport, tc.want)
		}
		if tc.client != nil && tc.client.Transport != before {
			t.Errorf("%s: the caller's client was changed", tc.name)
		}
		if tc.client != nil && b.opt.HTTPClient.Timeout != tc.client.Timeout {
			t.Errorf("%s: timeout %v, want the caller's %v", tc.name, b.opt.HTTPClient.Timeout, tc.client.Timeout)
		}
	}
	if n := providers.Transport().MaxIdleConnsPerHost; n < 32 {
		t.Errorf("providers.Transport keeps %d idle connections per host", n)
	}
}
