package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/sync/singleflight"
)

// WellKnownPath is where OpenID Connect discovery documents live below an
// issuer.
const WellKnownPath = "/.well-known/openid-configuration"

// maxDocumentSize bounds what is read from a discovery endpoint; real
// documents are a few kilobytes.
const maxDocumentSize = 1 << 20

// Discovery is the part of an OpenID Provider's discovery document that
// tokenstore uses.
type Discovery struct {
	// URL the document was read from.
	URL string `json:"-"`
	// FetchedAt is when it was read.
	FetchedAt time.Time `json:"-"`

	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	DeviceAuthorizationEndpoint       string   `json:"device_authorization_endpoint,omitempty"`
	UserinfoEndpoint                  string   `json:"userinfo_endpoint,omitempty"`
	RevocationEndpoint                string   `json:"revocation_endpoint,omitempty"`
	IntrospectionEndpoint             string   `json:"introspection_endpoint,omitempty"`
	EndSessionEndpoint                string   `json:"end_session_endpoint,omitempty"`
	JWKSURI                           string   `json:"jwks_uri"`
	IDTokenSigningAlgValuesSupported  []string `json:"id_token_signing_alg_values_supported,omitempty"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported,omitempty"`
	CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported,omitempty"`
	ScopesSupported                   []string `json:"scopes_supported,omitempty"`
	GrantTypesSupported               []string `json:"grant_types_supported,omitempty"`
}

// DiscoveryURLFor returns the discovery URL of an issuer, built the way
// go-oidc builds it (a trailing slash on the issuer is dropped).
func DiscoveryURLFor(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + WellKnownPath
}

// IssuerFor returns the issuer a discovery URL implies: the URL without
// WellKnownPath. ok is false for a URL at an off-spec path, whose issuer
// cannot be derived.
func IssuerFor(discoveryURL string) (issuer string, ok bool) {
	if !strings.HasSuffix(discoveryURL, WellKnownPath) {
		return "", false
	}
	return strings.TrimSuffix(discoveryURL, WellKnownPath), true
}

// DiscoveryError is a failure to read or parse a discovery document.
type DiscoveryError struct {
	URL string
	// Failures counts consecutive failed fetches of URL, for backoff.
	Failures int
	// LastGood is when URL was last read successfully; zero if never.
	LastGood time.Time
	Err      error
}

func (e *DiscoveryError) Error() string {
	return fmt.Sprintf("discovery at %s failed: %v", e.URL, e.Err)
}

func (e *DiscoveryError) Unwrap() error { return e.Err }

// IssuerMismatchError says the discovery document names another issuer than
// the one configured. ID tokens carry the issuer, so accepting the document
// would either break every login or trust the wrong party.
type IssuerMismatchError struct {
	URL      string
	Expected string
	Got      string
}

func (e *IssuerMismatchError) Error() string {
	return fmt.Sprintf("discovery document at %s names issuer %q, expected %q", e.URL, e.Got, e.Expected)
}

// Fetch reads and checks one discovery document, without any cache. It
// checks that the fields every OpenID Provider must publish are present; it
// does not check the issuer (see Discoverer.Discover).
func Fetch(ctx context.Context, client *http.Client, url string) (*Discovery, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("building discovery request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading discovery document: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("unexpected HTTP status %s", resp.Status)
	}
	if len(body) > maxDocumentSize {
		return nil, fmt.Errorf("discovery document larger than %d bytes", maxDocumentSize)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil && mt != "application/json" && !strings.HasSuffix(mt, "+json") {
			// Some providers serve JSON as text/plain; only HTML (a login
			// page, a proxy error) is a sure sign of a wrong URL.
			if mt == "text/html" {
				return nil, fmt.Errorf("got an HTML page, not a discovery document (Content-Type %s)", ct)
			}
		}
	}
	var d Discovery
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("decoding discovery document: %w", err)
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"issuer", d.Issuer},
		{"authorization_endpoint", d.AuthorizationEndpoint},
		{"token_endpoint", d.TokenEndpoint},
		{"jwks_uri", d.JWKSURI},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("discovery document lacks %s", strings.Join(missing, ", "))
	}
	d.URL = url
	return &d, nil
}

// DiscovererOptions tune a Discoverer; zero values take the defaults.
type DiscovererOptions struct {
	// TTL is how long a good document is used before it is read again
	// (default 10 minutes).
	TTL time.Duration
	// FailureTTL is how long a failure is remembered before the URL is tried
	// again, so that many providers sharing one failing URL do not hammer it
	// (default 5 seconds).
	FailureTTL time.Duration
	// Timeout bounds one fetch (default 10 seconds).
	Timeout time.Duration
	// Now is the clock (default time.Now); for tests.
	Now func() time.Time
}

// Discoverer reads discovery documents through a cache keyed by URL, and
// keeps one JWKS key set per URL so that rebuilding a provider does not
// throw away fetched signing keys.
type Discoverer struct {
	client *http.Client
	opts   DiscovererOptions
	group  singleflight.Group

	mu      sync.Mutex
	entries map[string]*discoveryEntry
	keySets map[string]*oidc.RemoteKeySet
}

type discoveryEntry struct {
	good     *Discovery // last good document, kept after failures
	err      error      // last failure, nil after a success
	errAt    time.Time
	failures int
}

// NewDiscoverer returns a Discoverer using client (http.DefaultClient if
// nil) for discovery and for fetching signing keys.
func NewDiscoverer(client *http.Client, opts DiscovererOptions) *Discoverer {
	if client == nil {
		client = http.DefaultClient
	}
	if opts.TTL <= 0 {
		opts.TTL = 10 * time.Minute
	}
	if opts.FailureTTL <= 0 {
		opts.FailureTTL = 5 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Discoverer{
		client:  client,
		opts:    opts,
		entries: map[string]*discoveryEntry{},
		keySets: map[string]*oidc.RemoteKeySet{},
	}
}

// HTTPClient is the client used for discovery and keys; token requests to the
// same provider should use it too.
func (d *Discoverer) HTTPClient() *http.Client { return d.client }

// TTL is how long a good document is cached.
func (d *Discoverer) TTL() time.Duration { return d.opts.TTL }

// Discover returns the discovery document of a provider configured either by
// discoveryURL (the full .well-known URL) or by issuer; exactly one must be
// set. The document's issuer must equal the configured issuer, or for a
// discoveryURL, the URL without WellKnownPath (a URL at an off-spec path is
// not checked: its issuer cannot be derived).
//
// When a refresh fails but the URL was read successfully before, Discover
// returns that last good document together with a *DiscoveryError, so that
// the caller can keep serving it while it reports the failure. An
// *IssuerMismatchError comes with no document.
func (d *Discoverer) Discover(ctx context.Context, discoveryURL, issuer string) (*Discovery, error) {
	var url, expected string
	switch {
	case discoveryURL != "" && issuer != "":
		return nil, errors.New("set a discovery URL or an issuer, not both")
	case discoveryURL != "":
		url = discoveryURL
		expected, _ = IssuerFor(discoveryURL)
	case issuer != "":
		url, expected = DiscoveryURLFor(issuer), issuer
	default:
		return nil, errors.New("no discovery URL or issuer")
	}
	doc, err := d.lookup(ctx, url)
	if doc != nil && expected != "" && doc.Issuer != expected {
		return nil, &IssuerMismatchError{URL: url, Expected: expected, Got: doc.Issuer}
	}
	return doc, err
}

// lookup returns the cached document for url, fetching it when the cache is
// stale; concurrent lookups of one URL share one fetch.
func (d *Discoverer) lookup(ctx context.Context, url string) (*Discovery, error) {
	now := d.opts.Now()
	d.mu.Lock()
	e := d.entries[url]
	if e != nil {
		if e.err == nil && e.good != nil && now.Sub(e.good.FetchedAt) < d.opts.TTL {
			d.mu.Unlock()
			return e.good, nil
		}
		if e.err != nil && now.Sub(e.errAt) < d.opts.FailureTTL {
			good, err := e.good, d.errorLocked(url, e)
			d.mu.Unlock()
			return good, err
		}
	}
	d.mu.Unlock()

	ch := d.group.DoChan(url, func() (any, error) {
		// The fetch is shared by every caller waiting on this URL, so one
		// caller giving up must not cancel it for the others.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.Timeout)
		defer cancel()
		doc, err := Fetch(fctx, d.client, url)
		d.mu.Lock()
		defer d.mu.Unlock()
		e := d.entries[url]
		if e == nil {
			e = &discoveryEntry{}
			d.entries[url] = e
		}
		if err != nil {
			e.err, e.errAt = err, d.opts.Now()
			e.failures++
			return nil, err
		}
		doc.FetchedAt = d.opts.Now()
		e.good, e.err, e.failures = doc, nil, 0
		return doc, nil
	})
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for discovery at %s: %w", url, ctx.Err())
	case res := <-ch:
		if res.Err == nil {
			return res.Val.(*Discovery), nil
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		e := d.entries[url]
		return e.good, d.errorLocked(url, e)
	}
}

// errorLocked wraps an entry's failure; d.mu held.
func (d *Discoverer) errorLocked(url string, e *discoveryEntry) error {
	de := &DiscoveryError{URL: url, Failures: e.failures, Err: e.err}
	if e.good != nil {
		de.LastGood = e.good.FetchedAt
	}
	return de
}

// KeySet returns the shared key set of a JWKS URL. go-oidc fetches keys
// lazily and again when it meets an unknown key id, so one long-lived set per
// URL is what it wants.
func (d *Discoverer) KeySet(jwksURL string) oidc.KeySet {
	d.mu.Lock()
	defer d.mu.Unlock()
	ks, ok := d.keySets[jwksURL]
	if !ok {
		ks = oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), d.client), jwksURL)
		d.keySets[jwksURL] = ks
	}
	return ks
}

// NewOIDC returns the go-oidc provider and an ID token verifier for a
// discovered (or explicitly configured) OpenID Provider and client id.
func (d *Discoverer) NewOIDC(cfg oidc.ProviderConfig, clientID string) (*oidc.Provider, *oidc.IDTokenVerifier) {
	p := cfg.NewProvider(oidc.ClientContext(context.Background(), d.client))
	v := oidc.NewVerifier(cfg.IssuerURL, d.KeySet(cfg.JWKSURL), &oidc.Config{
		ClientID:             clientID,
		SupportedSigningAlgs: supportedAlgs(cfg.Algorithms),
	})
	return p, v
}

// supportedAlgs keeps the algorithms go-oidc can verify; nil lets go-oidc
// default to RS256, as the OpenID Connect spec does.
func supportedAlgs(algs []string) []string {
	known := map[string]bool{
		oidc.RS256: true, oidc.RS384: true, oidc.RS512: true,
		oidc.ES256: true, oidc.ES384: true, oidc.ES512: true,
		oidc.PS256: true, oidc.PS384: true, oidc.PS512: true,
		oidc.EdDSA: true,
	}
	var out []string
	for _, a := range algs {
		if known[a] {
			out = append(out, a)
		}
	}
	return out
}
