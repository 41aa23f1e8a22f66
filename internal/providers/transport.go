package providers

import (
	"net/http"
	"sync"
	"time"
)

// MaxIdleConnsPerHost is how many idle keep-alive connections Transport
// keeps to one provider. net/http's default (2) is far below the number of
// refreshes that call one provider at once under load: every call past the
// second then opens a new TCP (and TLS) connection and the one before it is
// closed, costing a handshake per refresh on both ends.
const MaxIdleConnsPerHost = 64

// NewTransport returns the transport to call providers (token, revocation,
// discovery and key endpoints) with: http.DefaultTransport's settings
// (proxy from the environment, dial and TLS timeouts, HTTP/2), with enough
// idle connections per provider to reuse them under concurrent refreshes.
func NewTransport() *http.Transport {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		// Replaced by someone (a test): start from net/http's settings.
		t = &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true,
			TLSHandshakeTimeout: 10 * time.Second, ExpectContinueTimeout: time.Second}
	}
	t = t.Clone()
	t.MaxIdleConnsPerHost = MaxIdleConnsPerHost
	if t.MaxIdleConns < 4*MaxIdleConnsPerHost {
		t.MaxIdleConns = 4 * MaxIdleConnsPerHost
	}
	if t.IdleConnTimeout == 0 || t.IdleConnTimeout > 90*time.Second {
		t.IdleConnTimeout = 90 * time.Second
	}
	return t
}

// Transport returns one NewTransport, the same on every call, so that idle
// connections to a provider are pooled process-wide.
var Transport = sync.OnceValue(NewTransport)
