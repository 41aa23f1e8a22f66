package providers

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Token endpoint authentication methods (RFC 8414 names).
const (
	AuthMethodClientSecretBasic = "client_secret_basic"
	AuthMethodClientSecretPost  = "client_secret_post"
	AuthMethodNone              = "none"
)

// PKCE code challenge methods.
const (
	PKCES256  = "S256"
	PKCEPlain = "plain"
	PKCENone  = "none"
)

// Metadata is what UIs show about a provider (the Flask service's IDPn_MD_*).
// Empty strings mean "unset"; the API renders them as null.
type Metadata struct {
	Name        string
	Description string
	URL         string
	Icon        string
	Logo        string
}

// ServiceAccount names a Kubernetes ServiceAccount allowed to obtain service
// (client-credentials) tokens. Namespace is always filled in by the builder.
type ServiceAccount struct {
	Namespace string
	Name      string
}

// Provider is one usable provider configuration. Values in the registry are
// immutable once published: writers build a new *Provider and Set it, so
// readers may keep and use a pointer without locking.
type Provider struct {
	// ID is the provider id used in API paths (the TokenProvider's
	// spec.id, else its name).
	ID string
	// Source says where the configuration came from, for logs and for the
	// message of an id conflict: "TokenProvider namespace/name" from
	// Kubernetes, with " in <file>" added by the file source. Which source
	// wrote it is the registry's business (SourceWriter), not this text's.
	Source string

	ClientID string
	// ClientSecret is never logged: String, GoString and LogValue leave it
	// out, and it is excluded from JSON.
	ClientSecret string `json:"-"`
	// AuthMethod is one of the AuthMethod* constants.
	AuthMethod string

	// Endpoint carries the authorization, token and device endpoints and the
	// auth style matching AuthMethod.
	Endpoint      oauth2.Endpoint
	RevocationURL string
	UserinfoURL   string
	JWKSURL       string

	// Issuer is set for OpenID Connect providers; empty for plain OAuth2.
	Issuer string
	// Verifier checks ID tokens (signature, issuer, audience = ClientID,
	// expiry); nil for plain OAuth2 providers, whose ID tokens are not used.
	Verifier *oidc.IDTokenVerifier
	// OIDC is the go-oidc view of the provider (userinfo, claims); nil for
	// plain OAuth2.
	OIDC *oidc.Provider

	// Scopes requested when a person links an account.
	Scopes []string
	// AuthorizationParams are extra query parameters of the authorization
	// request (e.g. access_type=offline, prompt=consent).
	AuthorizationParams map[string]string
	// PKCE is one of the PKCE* constants.
	PKCE string

	Metadata Metadata

	// ServiceAccounts may obtain service tokens; ServiceScopes are requested
	// for them.
	ServiceAccounts []ServiceAccount
	ServiceScopes   []string

	// RequireSameSubject refuses an account link whose subject at the
	// provider differs from the signed-in person's subject (the
	// TokenProvider's spec.requireSameSubject).
	RequireSameSubject bool

	// RefreshIdleTimeout is how long the provider keeps an unused refresh
	// token; zero means no idle expiry.
	RefreshIdleTimeout time.Duration

	// Version changes whenever anything above changes (including the client
	// secret, through a keyed hash that cannot be reversed). Readers use it
	// to drop anything they derived from an older configuration.
	Version string
	// DiscoveredAt is when the discovery document in use was fetched; zero
	// without discovery.
	DiscoveredAt time.Time
}

// IsOIDC reports whether ID tokens from this provider can be verified.
func (p *Provider) IsOIDC() bool { return p.Verifier != nil }

// OAuth2Config returns a fresh oauth2.Config for this provider with the given
// redirect URL; callers may modify it.
func (p *Provider) OAuth2Config(redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     p.ClientID,
		ClientSecret: p.ClientSecret,
		Endpoint:     p.Endpoint,
		RedirectURL:  redirectURL,
		Scopes:       slices.Clone(p.Scopes),
	}
}

// AuthCodeOptions returns the extra authorization parameters as options for
// oauth2.Config.AuthCodeURL, in a stable order.
func (p *Provider) AuthCodeOptions() []oauth2.AuthCodeOption {
	keys := make([]string, 0, len(p.AuthorizationParams))
	for k := range p.AuthorizationParams {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	opts := make([]oauth2.AuthCodeOption, 0, len(keys))
	for _, k := range keys {
		opts = append(opts, oauth2.SetAuthURLParam(k, p.AuthorizationParams[k]))
	}
	return opts
}

// AllowsServiceAccount reports whether the ServiceAccount namespace/name may
// obtain service tokens from this provider.
func (p *Provider) AllowsServiceAccount(namespace, name string) bool {
	for _, sa := range p.ServiceAccounts {
		if sa.Namespace == namespace && sa.Name == name {
			return true
		}
	}
	return false
}

// String describes the provider without its client secret, so that a
// Provider printed with %v or %+v cannot leak it.
func (p *Provider) String() string {
	if p == nil {
		return "<nil provider>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Provider{ID:%q Source:%q ClientID:%q AuthMethod:%s", p.ID, p.Source, p.ClientID, p.AuthMethod)
	if p.Issuer != "" {
		fmt.Fprintf(&b, " Issuer:%q", p.Issuer)
	}
	fmt.Fprintf(&b, " AuthURL:%q TokenURL:%q Version:%s}", p.Endpoint.AuthURL, p.Endpoint.TokenURL, p.Version)
	return b.String()
}

// GoString covers %#v, which would otherwise print every field.
func (p *Provider) GoString() string { return p.String() }

// MarshalLog keeps the secret out of logr loggers (zapr, funcr), which
// would otherwise encode the struct field by field.
func (p *Provider) MarshalLog() any {
	if p == nil {
		return nil
	}
	return struct {
		ID, Source, ClientID, Issuer, Version string
	}{p.ID, p.Source, p.ClientID, p.Issuer, p.Version}
}

// LogValue keeps the secret out of structured logs.
func (p *Provider) LogValue() slog.Value {
	if p == nil {
		return slog.StringValue("<nil provider>")
	}
	return slog.GroupValue(
		slog.String("id", p.ID),
		slog.String("source", p.Source),
		slog.String("clientID", p.ClientID),
		slog.String("issuer", p.Issuer),
		slog.String("version", p.Version),
	)
}
