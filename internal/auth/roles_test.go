package auth

import (
	"encoding/json"
	"slices"
	"testing"
)

// A Keycloak ID token's claims, as JSON decodes them.
const keycloakClaims = `{
  "sub": "f3b1", "iss": "https://kc.example/realms/r",
  "realm_access": {"roles": ["offline_access", "tokenstore-admin", "uma_authorization"]},
  "resource_access": {
    "tokenstore": {"roles": ["operator", "tokenstore-admin"]},
    "my.app": {"roles": ["dotted-client-role"]},
    "other": {"roles": ["not-ours"]}
  },
  "groups": ["/ops", "/ops/oncall"],
  "roles": "single-role",
  "scope": "openid email profile",
  "weird": {"roles": [1, {"x": "y"}, "", "kept"]}
}`

func claimsOf(t *testing.T, js string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRoles(t *testing.T) {
	cl := claimsOf(t, keycloakClaims)
	for _, c := range []struct {
		name     string
		paths    []string
		clientID string
		want     []string
	}{
		{"default, Keycloak client", nil, "tokenstore",
			[]string{"offline_access", "tokenstore-admin", "uma_authorization", "operator", "single-role", "/ops", "/ops/oncall"}},
		{"default, another client's roles stay out", nil, "nobody",
			[]string{"offline_access", "tokenstore-admin", "uma_authorization", "single-role", "/ops", "/ops/oncall"}},
		{"a client id with dots is one segment", []string{"resource_access.{client_id}.roles"}, "my.app", []string{"dotted-client-role"}},
		{"only groups", []string{"groups"}, "tokenstore", []string{"/ops", "/ops/oncall"}},
		{"non-strings and empty names are skipped", []string{"weird.roles"}, "", []string{"kept"}},
		{"a path through a non-object ends", []string{"groups.x", "scope.roles", "missing.roles"}, "tokenstore", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Roles(cl, c.paths, c.clientID); !slices.Equal(got, c.want) {
				t.Errorf("Roles = %q\n\twant %q", got, c.want)
			}
		})
	}
	if got := Roles(nil, nil, "x"); got != nil {
		t.Errorf("Roles of no claims = %q", got)
	}
}

func TestScopesAndHasAnyRole(t *testing.T) {
	if got := scopesOf(claimsOf(t, keycloakClaims)); !slices.Equal(got, []string{"openid", "email", "profile"}) {
		t.Errorf("scope claim: %q", got)
	}
	if got := scopesOf(claimsOf(t, `{"scp": ["a", "", "b"]}`)); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("scp claim: %q", got)
	}
	if got := scopesOf(claimsOf(t, `{"scope": " "}`)); got != nil {
		t.Errorf("blank scope: %q", got)
	}
	id := &Identity{Roles: []string{"viewer", "tokenstore-admin"}}
	if !id.HasAnyRole([]string{"x", "tokenstore-admin"}) || id.HasAnyRole([]string{"admin"}) || id.HasAnyRole(nil) {
		t.Error("HasAnyRole matched wrongly")
	}
	var none *Identity
	if none.HasAnyRole([]string{"viewer"}) {
		t.Error("a nil identity has a role")
	}
}

// A session keeps whatever claims login stored; roles and scopes come
// from them on every read, with the settings of the moment.
func TestDecodeClaimsOfOldAndNewSessions(t *testing.T) {
	old := decodeClaims([]byte(`{"iss":"i","sub":"s","name":"N","email":"e@x","preferred_username":"p"}`))
	if claimString(old, "name") != "N" || claimString(old, "iss") != "i" || Roles(old, nil, "c") != nil {
		t.Errorf("an old session's claims: %v", old)
	}
	if bad := decodeClaims([]byte(`not json`)); len(bad) != 0 {
		t.Errorf("undecodable claims gave %v", bad)
	}
	if claimString(claimsOf(t, keycloakClaims), "realm_access") != "" {
		t.Error("claimString returned a non-string claim")
	}
}
