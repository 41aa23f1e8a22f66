// Package resolve turns a TokenProvider (from the Kubernetes source or the
// file source) into the providers.Provider the registry publishes: defaults,
// the client secret from a SecretLookup, discovery, and the status the
// result means. Both sources call Resolve, so they mean the same thing.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/internal/providers"
)

// Defaults that the CRD applies at admission. Resolve applies them again so
// that objects that never went through an API server (the file source, unit
// tests) mean the same thing.
var (
	DefaultScopes = []string{"openid", "email", "offline_access"}
)

const (
	DefaultSecretKey  = "clientSecret"
	DefaultAuthMethod = v1alpha1.AuthMethodClientSecretBasic
	DefaultPKCE       = v1alpha1.PKCES256
)

// Errors a SecretLookup returns for the two configuration problems a person
// must fix; any other error is treated as transient and retried.
var (
	ErrSecretNotFound   = errors.New("secret not found")
	ErrSecretKeyMissing = errors.New("key not found in secret")
)

// SecretLookup returns the value of one key of a Secret in the
// TokenProvider's namespace. It wraps ErrSecretNotFound or
// ErrSecretKeyMissing for those cases.
type SecretLookup func(name, key string) ([]byte, error)

// StaticSecrets is a SecretLookup over Secrets held in memory (the file
// source's). stringData wins over data, as the API server merges it.
func StaticSecrets(secrets ...*corev1.Secret) SecretLookup {
	byName := make(map[string]*corev1.Secret, len(secrets))
	for _, s := range secrets {
		byName[s.Name] = s
	}
	return func(name, key string) ([]byte, error) {
		return SecretValue(byName[name], name, key)
	}
}

// SecretValue reads key from s (nil means not found), with the sentinel
// errors of SecretLookup.
func SecretValue(s *corev1.Secret, name, key string) ([]byte, error) {
	if s == nil {
		return nil, fmt.Errorf("secret %q: %w", name, ErrSecretNotFound)
	}
	if v, ok := s.StringData[key]; ok {
		return []byte(v), nil
	}
	if v, ok := s.Data[key]; ok {
		return v, nil
	}
	return nil, fmt.Errorf("secret %q has no key %q: %w", name, key, ErrSecretKeyMissing)
}

// Result is what Resolve made of a TokenProvider.
type Result struct {
	// Provider is the configuration to publish in the registry. It is nil
	// when nothing usable could be built; it is set with Ready false when
	// discovery failed but an earlier document of the same URL is still
	// known (the provider keeps working on it).
	Provider *providers.Provider
	// Ready, Reason (a v1alpha1.Reason* constant) and Message make the
	// Ready condition. Message never contains the client secret.
	Ready   bool
	Reason  string
	Message string
	// Issuer and Endpoints in use (from Provider), for the status.
	Issuer    string
	Endpoints *v1alpha1.Endpoints
	// LastDiscovery is when the discovery document in use was fetched.
	LastDiscovery time.Time
	// UsesDiscovery is true for providers configured by discoveryURL or
	// issuer; only those need periodic re-checks.
	UsesDiscovery bool
	// DiscoveryFailures counts consecutive failed fetches, for backoff.
	DiscoveryFailures int
}

// Source names a TokenProvider in messages: namespace/name.
func Source(tp *v1alpha1.TokenProvider) string {
	return tp.Namespace + "/" + tp.Name
}

// Origin is the Provider.Source of a TokenProvider read from Kubernetes:
// "TokenProvider namespace/name". The file source adds its file.
func Origin(tp *v1alpha1.TokenProvider) string {
	return "TokenProvider " + Source(tp)
}

// Resolve turns a TokenProvider into a registry entry and a status verdict.
// It is the one place where the spec is interpreted, shared by the
// Kubernetes reconcilers and the file source: they differ only in where
// Secrets come from.
//
// Configuration problems (missing Secret, failed discovery, issuer
// mismatch, an impossible spec) are reported in the Result, never as an
// error; the error is for transient failures (a Secret read that failed for
// another reason, a cancelled context) after which the caller retries.
func Resolve(ctx context.Context, tp *v1alpha1.TokenProvider, secrets SecretLookup, d *providers.Discoverer) (Result, error) {
	spec := &tp.Spec
	notReady := func(reason, format string, args ...any) (Result, error) {
		return Result{Reason: reason, Message: fmt.Sprintf(format, args...)}, nil
	}

	hasDiscovery := spec.DiscoveryURL != "" || spec.Issuer != ""
	ep := spec.Endpoints
	if ep == nil {
		ep = &v1alpha1.Endpoints{}
	}
	if spec.DiscoveryURL != "" && spec.Issuer != "" {
		return notReady(v1alpha1.ReasonInvalidSpec, "set discoveryURL or issuer, not both")
	}
	if !hasDiscovery && (ep.Authorization == "" || ep.Token == "") {
		return notReady(v1alpha1.ReasonInvalidSpec, "set discoveryURL or issuer (OpenID Connect), or endpoints.authorization and endpoints.token (plain OAuth2)")
	}
	if spec.ClientID == "" {
		return notReady(v1alpha1.ReasonInvalidSpec, "clientID is required")
	}

	authMethod := string(spec.TokenEndpointAuthMethod)
	if authMethod == "" {
		authMethod = string(DefaultAuthMethod)
	}
	var authStyle oauth2.AuthStyle
	switch authMethod {
	case providers.AuthMethodClientSecretBasic:
		authStyle = oauth2.AuthStyleInHeader
	case providers.AuthMethodClientSecretPost, providers.AuthMethodNone:
		// A public client sends its client_id in the form and no secret.
		authStyle = oauth2.AuthStyleInParams
	default:
		return notReady(v1alpha1.ReasonInvalidSpec, "unknown tokenEndpointAuthMethod %q (use client_secret_basic, client_secret_post or none)", authMethod)
	}
	pkce := string(spec.PKCE)
	if pkce == "" {
		pkce = string(DefaultPKCE)
	}
	switch pkce {
	case providers.PKCES256, providers.PKCEPlain, providers.PKCENone:
	default:
		return notReady(v1alpha1.ReasonInvalidSpec, "unknown pkce method %q (use S256, plain or none)", pkce)
	}

	// The secret comes before discovery: it is the cheaper check and the
	// more common mistake.
	var secret string
	if authMethod != providers.AuthMethodNone {
		ref := spec.ClientSecretRef
		if ref == nil || ref.Name == "" {
			return notReady(v1alpha1.ReasonInvalidSpec, "clientSecretRef is required unless tokenEndpointAuthMethod is none")
		}
		key := ref.Key
		if key == "" {
			key = DefaultSecretKey
		}
		v, err := secrets(ref.Name, key)
		switch {
		case errors.Is(err, ErrSecretNotFound):
			return notReady(v1alpha1.ReasonSecretNotFound, "Secret %q (namespace %q) not found; create it with key %q holding the client secret", ref.Name, tp.Namespace, key)
		case errors.Is(err, ErrSecretKeyMissing):
			return notReady(v1alpha1.ReasonSecretKeyMissing, "Secret %q has no key %q; add the client secret under that key or set clientSecretRef.key", ref.Name, key)
		case err != nil:
			return Result{}, fmt.Errorf("reading client secret of TokenProvider %s: %w", Source(tp), err)
		case len(v) == 0:
			return notReady(v1alpha1.ReasonSecretKeyMissing, "key %q of Secret %q is empty", key, ref.Name)
		}
		secret = string(v)
	}

	var (
		doc     *providers.Discovery
		discErr *providers.DiscoveryError
	)
	if hasDiscovery {
		var err error
		doc, err = d.Discover(ctx, spec.DiscoveryURL, spec.Issuer)
		var mismatch *providers.IssuerMismatchError
		switch {
		case errors.As(err, &mismatch):
			return notReady(v1alpha1.ReasonIssuerMismatch, "%v; set issuer (or discoveryURL) to exactly what the provider names, ID tokens carry it", mismatch)
		case errors.As(err, &discErr):
			if doc == nil {
				return Result{
					Reason:            v1alpha1.ReasonDiscoveryFailed,
					Message:           fmt.Sprintf("%v; retrying", discErr),
					UsesDiscovery:     true,
					DiscoveryFailures: discErr.Failures,
				}, nil
			}
			// Fall through and build on the last good document.
		case err != nil && ctx.Err() != nil:
			return Result{}, fmt.Errorf("discovery for TokenProvider %s: %w", Source(tp), err)
		case err != nil:
			return notReady(v1alpha1.ReasonDiscoveryFailed, "%v", err)
		}
	}

	p := build(tp, secret, authMethod, authStyle, pkce, doc, d)
	res := Result{
		Provider:      p,
		Ready:         true,
		Reason:        v1alpha1.ReasonReady,
		Issuer:        p.Issuer,
		Endpoints:     endpointsOf(p),
		LastDiscovery: p.DiscoveredAt,
		UsesDiscovery: hasDiscovery,
	}
	if p.Issuer != "" {
		res.Message = fmt.Sprintf("OpenID Connect provider %s ready", p.Issuer)
	} else {
		res.Message = "OAuth2 provider ready (explicit endpoints, no ID token checks)"
	}
	if doc != nil {
		if w := warnings(doc, authMethod, pkce); w != "" {
			res.Message += "; " + w
		}
	}
	if discErr != nil {
		res.Ready = false
		res.Reason = v1alpha1.ReasonDiscoveryFailed
		res.DiscoveryFailures = discErr.Failures
		res.Message = fmt.Sprintf("%v; still serving the configuration discovered at %s; retrying",
			discErr, doc.FetchedAt.UTC().Format(time.RFC3339))
	}
	return res, nil
}

// build is the pure spec (+ secret, + discovery) to Provider translation.
// Explicit endpoints override discovered ones.
func build(tp *v1alpha1.TokenProvider, secret, authMethod string, authStyle oauth2.AuthStyle, pkce string, doc *providers.Discovery, d *providers.Discoverer) *providers.Provider {
	spec := &tp.Spec
	ep := v1alpha1.Endpoints{}
	if spec.Endpoints != nil {
		ep = *spec.Endpoints
	}
	p := &providers.Provider{
		ID:                 tp.ProviderID(),
		Source:             Origin(tp),
		RequireSameSubject: spec.RequireSameSubject,
		ClientID:           spec.ClientID,
		AuthMethod:         authMethod,
		PKCE:               pkce,
		Metadata: providers.Metadata{
			Name:        spec.Metadata.Name,
			Description: spec.Metadata.Description,
			URL:         spec.Metadata.URL,
			Icon:        spec.Metadata.Icon,
			Logo:        spec.Metadata.Logo,
		},
	}
	if authMethod != providers.AuthMethodNone {
		p.ClientSecret = secret
	}
	var deviceURL string
	var algs []string
	if doc != nil {
		p.Issuer = doc.Issuer
		p.DiscoveredAt = doc.FetchedAt
		deviceURL = doc.DeviceAuthorizationEndpoint
		algs = doc.IDTokenSigningAlgValuesSupported
		ep.Authorization = or(ep.Authorization, doc.AuthorizationEndpoint)
		ep.Token = or(ep.Token, doc.TokenEndpoint)
		ep.Revocation = or(ep.Revocation, doc.RevocationEndpoint)
		ep.Userinfo = or(ep.Userinfo, doc.UserinfoEndpoint)
		ep.JWKS = or(ep.JWKS, doc.JWKSURI)
	}
	p.Endpoint = oauth2.Endpoint{AuthURL: ep.Authorization, TokenURL: ep.Token, DeviceAuthURL: deviceURL, AuthStyle: authStyle}
	p.RevocationURL, p.UserinfoURL, p.JWKSURL = ep.Revocation, ep.Userinfo, ep.JWKS
	if p.Issuer != "" && p.JWKSURL != "" {
		p.OIDC, p.Verifier = d.NewOIDC(oidc.ProviderConfig{
			IssuerURL: p.Issuer, AuthURL: p.Endpoint.AuthURL, TokenURL: p.Endpoint.TokenURL,
			DeviceAuthURL: deviceURL, UserInfoURL: p.UserinfoURL, JWKSURL: p.JWKSURL, Algorithms: algs,
		}, p.ClientID)
	}

	p.Scopes = slices.Clone(spec.Scopes)
	if spec.Scopes == nil {
		p.Scopes = slices.Clone(DefaultScopes)
	}
	if len(spec.AuthorizationParams) > 0 {
		p.AuthorizationParams = maps.Clone(spec.AuthorizationParams)
	}
	if spec.RefreshTokenIdleTimeout != nil {
		p.RefreshIdleTimeout = spec.RefreshTokenIdleTimeout.Duration
	}
	if wa := spec.WorkloadAccess; wa != nil {
		for _, sa := range wa.ServiceAccounts {
			ns := sa.Namespace
			if ns == "" {
				ns = tp.Namespace
			}
			p.ServiceAccounts = append(p.ServiceAccounts, providers.ServiceAccount{Namespace: ns, Name: sa.Name})
		}
		p.ServiceScopes = slices.Clone(wa.Scopes)
	}
	p.Version = providers.Fingerprint(p)
	return p
}

// warnings names settings the discovery document says will not work; the
// provider is still published (documents are often incomplete).
func warnings(doc *providers.Discovery, authMethod, pkce string) string {
	var w []string
	if m := doc.TokenEndpointAuthMethodsSupported; len(m) > 0 && authMethod != providers.AuthMethodNone && !slices.Contains(m, authMethod) {
		w = append(w, fmt.Sprintf("the provider does not list tokenEndpointAuthMethod %s (it lists %v)", authMethod, m))
	}
	if m := doc.CodeChallengeMethodsSupported; len(m) > 0 && pkce != providers.PKCENone && !slices.Contains(m, pkce) {
		w = append(w, fmt.Sprintf("the provider does not list PKCE method %s (it lists %v)", pkce, m))
	}
	if len(w) == 0 {
		return ""
	}
	return "warning: " + strings.Join(w, "; ")
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func endpointsOf(p *providers.Provider) *v1alpha1.Endpoints {
	return &v1alpha1.Endpoints{
		Authorization: p.Endpoint.AuthURL,
		Token:         p.Endpoint.TokenURL,
		Revocation:    p.RevocationURL,
		Userinfo:      p.UserinfoURL,
		JWKS:          p.JWKSURL,
	}
}

// NextCheck is when the TokenProvider should be resolved again without any
// change: after refresh when discovery is in use (the document may change),
// with exponential backoff from minBackoff to maxBackoff while discovery
// fails, and never (0) otherwise: Secret and spec changes arrive as events.
func (r Result) NextCheck(refresh, minBackoff, maxBackoff time.Duration) time.Duration {
	switch {
	case r.Reason == v1alpha1.ReasonDiscoveryFailed:
		d := minBackoff
		for i := 1; i < r.DiscoveryFailures && d < maxBackoff; i++ {
			d *= 2
		}
		return min(d, maxBackoff)
	case r.UsesDiscovery:
		return refresh
	}
	return 0
}

// ApplyStatus writes the result into status for the given generation and
// reports whether readiness (the Ready condition's status or reason)
// changed, which is when an event is due.
func (r Result) ApplyStatus(status *v1alpha1.TokenProviderStatus, generation int64, now time.Time) (readinessChanged bool) {
	cond := metav1.Condition{
		Type:               v1alpha1.ConditionReady,
		Status:             metav1.ConditionFalse,
		Reason:             r.Reason,
		Message:            truncate(r.Message, 32768),
		ObservedGeneration: generation,
		LastTransitionTime: metav1.NewTime(now),
	}
	if r.Ready {
		cond.Status = metav1.ConditionTrue
	}
	old := meta.FindStatusCondition(status.Conditions, v1alpha1.ConditionReady)
	readinessChanged = old == nil || old.Status != cond.Status || old.Reason != cond.Reason
	meta.SetStatusCondition(&status.Conditions, cond)
	status.ObservedGeneration = generation
	status.Issuer = r.Issuer
	status.Endpoints = r.Endpoints
	if !r.LastDiscovery.IsZero() {
		// Second precision: that is what the API server stores, and a finer
		// value here would make every comparison with the stored status
		// differ.
		t := metav1.NewTime(r.LastDiscovery.Truncate(time.Second))
		status.LastDiscoveryTime = &t
	}
	return readinessChanged
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
