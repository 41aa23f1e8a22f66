package kubeauth

import (
	"encoding/base64"
	"testing"

	"github.com/tokenstore/tokenstore/internal/workload"
)

// The claims are parsed only for early refusal and the cache bound; the
// API server verifies. These are the refusals made without asking it.
func TestParseUnverified(t *testing.T) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, c := range []struct {
		name, token, reason string
	}{
		{"not a JWT", "abc", workload.ReasonMalformed},
		{"two parts", "a.b", workload.ReasonMalformed},
		{"empty part", enc("{}") + ".." + enc("x"), workload.ReasonMalformed},
		{"bad base64", "a.!!!.c", workload.ReasonMalformed},
		{"not JSON", "a." + enc("nope") + ".c", workload.ReasonMalformed},
		{"no exp (legacy token)", "a." + enc(`{"aud":"x"}`) + ".c", workload.ReasonMalformed},
		{"aud string", "a." + enc(`{"aud":"x","exp":5}`) + ".c", ""},
		{"aud list", "a." + enc(`{"aud":["x","y"],"exp":5}`) + ".c", ""},
	} {
		_, err := parseUnverified(c.token)
		if got := workload.ReasonOf(err); got != c.reason {
			t.Errorf("%s: reason %q, want %q (%v)", c.name, got, c.reason, err)
		}
	}
}

func TestSplitUsername(t *testing.T) {
	for u, want := range map[string]bool{
		"system:serviceaccount:ns:name": true,
		"system:serviceaccount:ns":      false,
		"system:serviceaccount::name":   false,
		"system:serviceaccount:ns:a:b":  false,
		"alice":                         false,
		"system:node:n1":                false,
	} {
		if _, _, ok := splitUsername(u); ok != want {
			t.Errorf("%s: %v", u, ok)
		}
	}
}
