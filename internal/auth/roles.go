package auth

import (
	"slices"
	"strings"
)

// ClientIDPlaceholder in a roles claim path stands for the login client id
// (OIDC_CLIENT_ID), as one whole path segment: client ids may hold dots.
const ClientIDPlaceholder = "{client_id}"

// DefaultRolesClaims are the claim paths roles are read from when
// ROLES_CLAIM is not set: Keycloak's realm roles and the login client's
// roles, and the flat `roles` and `groups` claims other issuers use
// (Entra ID, Dex, Zitadel with a mapper). A path that is absent from a
// token adds nothing, so the default serves all of them.
var DefaultRolesClaims = []string{
	"realm_access.roles",
	"resource_access." + ClientIDPlaceholder + ".roles",
	"roles",
	"groups",
}

// Roles returns the roles a person's claims (an ID token's, an access
// token's or a userinfo answer's, decoded from JSON) hold at paths: each
// path is claim names separated by dots, walked through nested objects
// (realm_access.roles is claims["realm_access"]["roles"]), and a segment
// equal to ClientIDPlaceholder is clientID. The value found may be an
// array of strings or one string; anything else (a number, an object, a
// path that ends early) adds nothing. paths empty means
// DefaultRolesClaims. The result keeps first-seen order, without
// duplicates or empty names; nil when there is none.
func Roles(claims map[string]any, paths []string, clientID string) []string {
	if len(paths) == 0 {
		paths = DefaultRolesClaims
	}
	var out []string
	add := func(r string) {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	for _, p := range paths {
		var v any = claims
		for seg := range strings.SplitSeq(p, ".") {
			if seg == ClientIDPlaceholder {
				seg = clientID
			}
			m, ok := v.(map[string]any)
			if !ok {
				v = nil
				break
			}
			v = m[seg]
		}
		switch x := v.(type) {
		case string:
			add(x)
		case []any:
			for _, e := range x {
				if s, ok := e.(string); ok {
					add(s)
				}
			}
		case []string:
			for _, s := range x {
				add(s)
			}
		}
	}
	return out
}

// scopesOf is the scopes a token's claims grant: the `scope` claim (RFC
// 8693 / RFC 9068: one space-separated string) or, where an issuer uses
// it, `scp` (a list or a string).
func scopesOf(claims map[string]any) []string {
	for _, k := range []string{"scope", "scp"} {
		switch x := claims[k].(type) {
		case string:
			if f := strings.Fields(x); len(f) > 0 {
				return f
			}
		case []any:
			var out []string
			for _, e := range x {
				if s, ok := e.(string); ok && s != "" {
					out = append(out, s)
				}
			}
			if len(out) > 0 {
				return out
			}
		}
	}
	return nil
}

// HasAnyRole reports whether id holds one of roles (exact match); false
// for a nil identity or no roles.
func (id *Identity) HasAnyRole(roles []string) bool {
	if id == nil {
		return false
	}
	return slices.ContainsFunc(id.Roles, func(r string) bool { return slices.Contains(roles, r) })
}
