/*
Copyright 2026 The tokenstore Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TokenEndpointAuthMethod is how the client authenticates at the token endpoint.
// +kubebuilder:validation:Enum=client_secret_basic;client_secret_post;none
type TokenEndpointAuthMethod string

const (
	AuthMethodClientSecretBasic TokenEndpointAuthMethod = "client_secret_basic"
	AuthMethodClientSecretPost  TokenEndpointAuthMethod = "client_secret_post"
	AuthMethodNone              TokenEndpointAuthMethod = "none"
)

// PKCEMethod is the PKCE code challenge method.
// +kubebuilder:validation:Enum=S256;plain;none
type PKCEMethod string

const (
	PKCES256  PKCEMethod = "S256"
	PKCEPlain PKCEMethod = "plain"
	PKCENone  PKCEMethod = "none"
)

// Endpoints are a provider's OAuth2 endpoints, given explicitly for plain
// OAuth2 providers without discovery (GitHub-style), or to override what
// discovery returns.
type Endpoints struct {
	// Authorization endpoint URL.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="must be an absolute http:// or https:// URL"
	// +optional
	Authorization string `json:"authorization,omitempty"`
	// Token endpoint URL.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="must be an absolute http:// or https:// URL"
	// +optional
	Token string `json:"token,omitempty"`
	// Revocation endpoint URL (RFC 7009); without it, revoking only forgets.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="must be an absolute http:// or https:// URL"
	// +optional
	Revocation string `json:"revocation,omitempty"`
	// Userinfo endpoint URL.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="must be an absolute http:// or https:// URL"
	// +optional
	Userinfo string `json:"userinfo,omitempty"`
	// JWKS URL, for checking ID tokens when there is no discovery.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="must be an absolute http:// or https:// URL"
	// +optional
	JWKS string `json:"jwks,omitempty"`
}

// SecretKeyRef names one key of a Secret in the TokenProvider's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Key in the Secret's data.
	// +kubebuilder:default=clientSecret
	// +optional
	Key string `json:"key,omitempty"`
}

// Metadata is shown to people by UIs (the Flask service's IDPn_MD_* settings).
type Metadata struct {
	// Name to display.
	// +optional
	Name string `json:"name,omitempty"`
	// Description to display.
	// +optional
	Description string `json:"description,omitempty"`
	// URL of the provider's home page.
	// +optional
	URL string `json:"url,omitempty"`
	// Icon URL.
	// +optional
	Icon string `json:"icon,omitempty"`
	// Logo URL.
	// +optional
	Logo string `json:"logo,omitempty"`
}

// ServiceAccountRef names a Kubernetes ServiceAccount.
type ServiceAccountRef struct {
	// Namespace of the ServiceAccount; empty means the TokenProvider's own.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Name of the ServiceAccount.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// WorkloadAccess says which in-cluster workloads may use this provider
// without a person.
type WorkloadAccess struct {
	// ServiceAccounts that may obtain client-credentials (service) tokens
	// from this provider.
	// +optional
	// +listType=atomic
	ServiceAccounts []ServiceAccountRef `json:"serviceAccounts,omitempty"`
	// Scopes requested for service tokens; defaults to none.
	// +optional
	// +listType=atomic
	Scopes []string `json:"scopes,omitempty"`
}

// TokenProviderSpec declares an outside OAuth2 / OpenID Connect provider.
// +kubebuilder:validation:XValidation:rule="has(self.discoveryURL) || has(self.issuer) || (has(self.endpoints) && has(self.endpoints.authorization) && has(self.endpoints.token))",message="set discoveryURL or issuer (OpenID Connect), or endpoints.authorization and endpoints.token (plain OAuth2)"
// +kubebuilder:validation:XValidation:rule="!(has(self.discoveryURL) && has(self.issuer))",message="set discoveryURL or issuer, not both"
// +kubebuilder:validation:XValidation:rule="self.tokenEndpointAuthMethod == 'none' || has(self.clientSecretRef)",message="clientSecretRef is required unless tokenEndpointAuthMethod is none"
type TokenProviderSpec struct {
	// ID is the provider id that clients use in API paths
	// (/api/v1.0/{id}/token) and that credentials are stored under; it
	// defaults to metadata.name. Set it when the id cannot be a Kubernetes
	// name, e.g. the Flask service's `tern_keycloak` or `Google`. Letters,
	// digits, '_', '-' and '.', starting with a letter, digit or '_' (so
	// that it is one URL path segment as it is, never "." or ".."), at
	// most 63 characters. Ids are unique across every source of the
	// registry: two providers that claim one id are both not served and
	// both Ready=False with reason IDConflict.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`
	// +optional
	ID string `json:"id,omitempty"`

	// DiscoveryURL is the full URL of the provider's
	// .well-known/openid-configuration document (the Flask service's IDPn_DISCOVERY_URL).
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="must be an absolute http:// or https:// URL"
	// +optional
	DiscoveryURL string `json:"discoveryURL,omitempty"`
	// Issuer is the OpenID Connect issuer; discovery is read from
	// {issuer}/.well-known/openid-configuration and the issuer it names must match.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",message="must be an absolute http:// or https:// URL"
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// Endpoints given explicitly (plain OAuth2), or overriding discovery.
	// +optional
	Endpoints *Endpoints `json:"endpoints,omitempty"`

	// ClientID registered at the provider.
	// +kubebuilder:validation:MinLength=1
	ClientID string `json:"clientID"`
	// ClientSecretRef points at the client secret, in a Secret of this namespace.
	// +optional
	ClientSecretRef *SecretKeyRef `json:"clientSecretRef,omitempty"`
	// TokenEndpointAuthMethod is how the client authenticates at the token endpoint.
	// +kubebuilder:default=client_secret_basic
	// +optional
	TokenEndpointAuthMethod TokenEndpointAuthMethod `json:"tokenEndpointAuthMethod,omitempty"`

	// Scopes requested when a person links an account.
	// +kubebuilder:default={openid,email,offline_access}
	// +optional
	// +listType=atomic
	Scopes []string `json:"scopes,omitempty"`
	// AuthorizationParams are extra query parameters of the authorization
	// request, e.g. access_type=offline and prompt=consent for Google.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['client_id', 'redirect_uri', 'response_type', 'scope', 'state', 'nonce', 'code_challenge', 'code_challenge_method']))",message="authorizationParams cannot set client_id, redirect_uri, response_type, scope, state, nonce, code_challenge or code_challenge_method: tokenstore sets them (use scopes and pkce)"
	AuthorizationParams map[string]string `json:"authorizationParams,omitempty"`
	// PKCE code challenge method; S256 unless the provider cannot do it.
	// +kubebuilder:default=S256
	// +optional
	PKCE PKCEMethod `json:"pkce,omitempty"`

	// RefreshTokenIdleTimeout is how long the provider keeps an unused refresh
	// token alive (e.g. 2160h for Microsoft's 90 days); credentials are
	// refreshed before that. Empty means no idle expiry.
	// +optional
	RefreshTokenIdleTimeout *metav1.Duration `json:"refreshTokenIdleTimeout,omitempty"`

	// Metadata returned by the API for UIs.
	// +optional
	Metadata Metadata `json:"metadata,omitempty"`

	// WorkloadAccess lists the ServiceAccounts that may get service tokens.
	// +optional
	WorkloadAccess *WorkloadAccess `json:"workloadAccess,omitempty"`

	// RequireSameSubject refuses an account link (the redirect_uri
	// callback answers 403) when the subject the provider reports differs
	// from the signed-in person's subject, so that nobody links another
	// person's account at a provider that shares its subjects with the
	// login. The Flask service always did this.
	// +optional
	RequireSameSubject bool `json:"requireSameSubject,omitempty"`
}

// Condition types and reasons of a TokenProvider.
const (
	// ConditionReady is True when the provider is in the registry and usable.
	ConditionReady = "Ready"

	ReasonReady            = "Ready"
	ReasonSecretNotFound   = "SecretNotFound"
	ReasonSecretKeyMissing = "SecretKeyMissing"
	ReasonDiscoveryFailed  = "DiscoveryFailed"
	ReasonIssuerMismatch   = "IssuerMismatch"
	ReasonInvalidSpec      = "InvalidSpec"
	// ReasonIDConflict: another provider (a TokenProvider, or an entry of
	// the providers file) claims the same provider id; neither is served
	// until one of them changes its id or goes away.
	ReasonIDConflict = "IDConflict"
	// ReasonTokenEndpointFailing: discovery answers, but the last refreshes
	// tokenstore's leader made at the token endpoint failed (5xx, 429, no
	// answer). Valid tokens are still served.
	ReasonTokenEndpointFailing = "TokenEndpointFailing"
	// ReasonClientRejected: the provider's token endpoint refused
	// tokenstore's client itself (invalid_client, unauthorized_client,
	// unsupported_grant_type, invalid_scope) for a grant tokenstore makes:
	// a configuration problem that retrying does not fix. Valid tokens are
	// still served.
	ReasonClientRejected = "ClientRejected"
)

// TokenProviderStatus is what the controller observed.
type TokenProviderStatus struct {
	// Conditions: Ready, with the reason behind it.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Issuer in use (from discovery), if any.
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// Endpoints in use, after discovery and overrides.
	// +optional
	Endpoints *Endpoints `json:"endpoints,omitempty"`
	// LastDiscoveryTime is when discovery last succeeded.
	// +optional
	LastDiscoveryTime *metav1.Time `json:"lastDiscoveryTime,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=tp;tps,categories=tokenstore
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Issuer",type=string,JSONPath=`.status.issuer`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// TokenProvider is an outside OAuth2 / OpenID Connect provider at which
// people link accounts; its provider id (spec.id, else its name) is the
// one used in API paths.
type TokenProvider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TokenProviderSpec   `json:"spec"`
	Status TokenProviderStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// TokenProviderList is a list of TokenProviders.
type TokenProviderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TokenProvider `json:"items"`
}

// ProviderID is the provider id the TokenProvider claims: spec.id, or its
// name when spec.id is empty.
func (tp *TokenProvider) ProviderID() string {
	if tp.Spec.ID != "" {
		return tp.Spec.ID
	}
	return tp.Name
}
