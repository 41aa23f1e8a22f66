package workload

import "testing"

func TestParseServiceAccount(t *testing.T) {
	for _, c := range []struct {
		in       string
		ns, name string
		ok       bool
	}{
		{"team-a/builder", "team-a", "builder", true},
		{"team-a/builder.v2", "team-a", "builder.v2", true},
		{"team-a", "", "", false},
		{"a/b/c", "", "", false},
		{"/b", "", "", false},
		{"a/", "", "", false},
		{"Team/b", "", "", false},
		{"a/-b", "", "", false},
		{"a/b_c", "", "", false},
		{"a-/b", "", "", false},
	} {
		ns, name, err := ParseServiceAccount(c.in)
		if (err == nil) != c.ok || ns != c.ns || name != c.name {
			t.Errorf("%q: got %q %q %v", c.in, ns, name, err)
		}
	}
}
