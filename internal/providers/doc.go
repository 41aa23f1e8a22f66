// Package providers is tokenstore's live registry of outside OAuth2 / OpenID
// Connect providers, and the discovery that feeds it.
//
// It holds plain Go values built with go-oidc and x/oauth2 and imports no
// Kubernetes, gin or store package: the controllers and the file source
// translate TokenProvider objects into *Provider values (with
// internal/providers/resolve) and write them here, each through its own
// SourceWriter (Registry.Source), and one rule (Registry.merge) decides what
// is served when two sources claim one id; the HTTP layer reads them through
// Reader and never sees where they came from.
package providers
