package settings

import (
	"slices"
	"strings"
	"testing"
)

// ROLES_CLAIM and ADMIN_ROLES: off by default, lists when set, a
// malformed claim path refused by name.
func TestRolesSettings(t *testing.T) {
	s, err := Load(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if s.RolesClaim != nil || s.AdminRoles != nil {
		t.Errorf("defaults: ROLES_CLAIM %q, ADMIN_ROLES %q; want both empty (built-in paths, admin API off)", s.RolesClaim, s.AdminRoles)
	}
	s, err = Load(nil, env(map[string]string{
		"TOKENSTORE_ROLES_CLAIM": "realm_access.roles, resource_access.{client_id}.roles",
		"TOKENSTORE_ADMIN_ROLES": "tokenstore-admin,/ops",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.RolesClaim, []string{"realm_access.roles", "resource_access.{client_id}.roles"}) ||
		!slices.Equal(s.AdminRoles, []string{"tokenstore-admin", "/ops"}) {
		t.Errorf("ROLES_CLAIM %q, ADMIN_ROLES %q", s.RolesClaim, s.AdminRoles)
	}
	_, err = Load(nil, env(map[string]string{"TOKENSTORE_ROLES_CLAIM": "realm_access..roles"}))
	if err == nil || !strings.Contains(err.Error(), "ROLES_CLAIM") || !strings.Contains(err.Error(), "realm_access..roles") {
		t.Errorf("a malformed claim path: %v", err)
	}
}
