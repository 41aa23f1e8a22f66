package kubeauth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tokenstore/tokenstore/internal/workload"
)

// parseDetails are the only details parseUnverified gives: none quotes the
// token.
var parseDetails = []string{
	"not a JWT (header.payload.signature)",
	"the JWT payload is not base64url",
	"the JWT payload is not a JSON claims set",
	"the token has no exp claim; use a projected service account token",
}

// FuzzParseUnverified: the unverified read of a workload's ServiceAccount
// token (outside input, before the API server sees it) never panics; a
// refusal is malformed_token with one of the fixed details (no token bytes
// in it); an accepted token is three non-empty parts whose payload is a
// JSON object with a positive numeric exp and an aud (string or list) that
// parseUnverified reports exactly.
func FuzzParseUnverified(f *testing.F) {
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	hdr := enc(`{"alg":"RS256","kid":"k1"}`)
	for _, p := range []string{
		`{"aud":["tokenstore"],"exp":1900000000,"iat":1700000000,"iss":"https://kubernetes.default.svc","sub":"system:serviceaccount:ns:sa","kubernetes.io":{"namespace":"ns"}}`,
		`{"aud":"tokenstore","exp":5}`, `{"aud":[],"exp":1e300}`, `{"exp":-1}`, `{"exp":"5"}`, `{"exp":1,"aud":[1]}`,
		`{"exp":1,"aud":null}`, `{"exp":1,"aud":{"x":1}}`, `{"exp":0.5,"aud":"a","aud":"b"}`, `null`, `[]`, `{}`, `{"exp":1e400}`,
	} {
		f.Add(hdr + "." + enc(p) + ".c2lnbmF0dXJl")
		f.Add(hdr + "." + enc(p) + "==.sig")
	}
	for _, s := range []string{"", "a.b", "..", "a..c", "a.!!!.c", "a.b.c.d", strings.Repeat(".", 100), "secret-token-without-dots",
		hdr + "." + base64.StdEncoding.EncodeToString([]byte(`{"exp":5,"aud":"?>"}`)) + ".s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := parseUnverified(token)
		if err != nil {
			var ae *workload.AuthError
			if !errors.As(err, &ae) || ae.Reason != workload.ReasonMalformed || !slices.Contains(parseDetails, ae.Detail) {
				t.Fatalf("parseUnverified(%q): %T %v", token, err, err)
			}
			return
		}
		parts := strings.Split(token, ".")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			t.Fatalf("accepted %q, which is not three non-empty parts", token)
		}
		payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
		if err != nil {
			t.Fatalf("accepted %q, whose payload is not base64url: %v", token, err)
		}
		// Which members count is encoding/json's matching (case-insensitive,
		// last one wins); what they must hold is checked here.
		var m struct {
			Exp json.RawMessage `json:"exp"`
			Aud json.RawMessage `json:"aud"`
		}
		if err := json.Unmarshal(payload, &m); err != nil || !strings.HasPrefix(strings.TrimSpace(string(payload)), "{") {
			t.Fatalf("accepted %q, whose payload %q is not a JSON object: %v", token, payload, err)
		}
		var exp float64
		if err := json.Unmarshal(m.Exp, &exp); err != nil || !(exp > 0) || exp != c.Exp {
			t.Fatalf("accepted %q: exp %s read as %v", token, m.Exp, c.Exp)
		}
		var aud []string
		if raw := m.Aud; len(raw) > 0 && string(raw) != "null" {
			var one string
			if json.Unmarshal(raw, &one) == nil {
				aud = []string{one}
			} else if err := json.Unmarshal(raw, &aud); err != nil {
				t.Fatalf("accepted %q, whose aud %s is neither a string nor a list of strings", token, raw)
			}
		}
		if string(m.Aud) == "null" && slices.Equal(c.Aud, []string{""}) {
			// "aud": null reads as one empty audience, which no configured
			// audience (never empty) matches: the same as none.
			aud = c.Aud
		}
		if !slices.Equal(aud, c.Aud) {
			t.Fatalf("accepted %q: aud %q read as %q", token, aud, c.Aud)
		}
	})
}
