package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// fuzzGoodSAToken is the one ServiceAccount token fuzzWorkloads accepts
// (as ns/sa, which no provider allows and nobody granted anything).
const fuzzGoodSAToken = "sa-token-accepted-by-the-fake-review"

type fuzzWorkloads struct{}

func (fuzzWorkloads) Authenticate(_ context.Context, token string) (workload.Identity, error) {
	if token == fuzzGoodSAToken {
		return workload.Identity{Namespace: "ns", ServiceAccount: "sa", ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
	return workload.Identity{}, &workload.AuthError{Reason: workload.ReasonRejected, Detail: "the API server did not authenticate it"}
}

// grantlessStore answers the one Store method the exchange reaches without a
// grant: there is none.
type grantlessStore struct{ store.Store }

func (grantlessStore) FindUsableGrant(context.Context, string, string, string, string, string, time.Time) (store.Grant, error) {
	return store.Grant{}, store.ErrNotFound
}

// oauthErrorCodes are the RFC 6749 §5.2 and RFC 8693 §2.2.2 codes.
var oauthErrorCodes = []string{"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "invalid_target", "temporarily_unavailable", "server_error"}

// FuzzTokenExchangeRequest sends POST /api/oauth2/token (RFC 8693) with any
// Content-Type, query and body to a server whose provider allows no
// ServiceAccount, where nobody granted anything and login is not configured,
// so no request may obtain a token. Properties: no panic and no 500; never
// 200; always a JSON RFC 6749 error with Cache-Control: no-store (and a
// WWW-Authenticate challenge with 401); and the answer does not depend on
// the subject_token or actor_token bytes (sending other bytes of the same
// length gives the very same answer), so no token is ever echoed. Nothing
// leaves the process: no network, no database.
func FuzzTokenExchangeRequest(f *testing.F) {
	reg := providers.NewRegistry()
	reg.Set(&providers.Provider{ID: "drive", ClientID: "c", ClientSecret: "cs-never-shown", AuthMethod: providers.AuthMethodClientSecretBasic})
	reg.MarkReady()
	ring, err := crypto.NewKeyRing(bytes.Repeat([]byte("x"), crypto.KeySize))
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Options{
		Settings: &settings.Settings{ExternalURL: "https://tokens.example", SessionCookieName: "tokenstore_session",
			SessionCookieSecure: "auto", SessionCookieSameSite: "Lax", SessionLifetime: time.Hour},
		Store: grantlessStore{}, Keys: ring, Providers: reg, Workloads: fuzzWorkloads{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	const form = "application/x-www-form-urlencoded"
	v := func(kv ...string) string {
		q := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			q.Add(kv[i], kv[i+1])
		}
		return q.Encode()
	}
	for _, s := range [][3]string{
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT, "subject_token", fuzzGoodSAToken, "resource", "drive")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT, "subject_token", fuzzGoodSAToken, "audience", "drive", "requested_subject", "alice")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT, "subject_token", "eyJhbGciOi.eyJleHAi.c2ln", "resource", "https://tokens.example/api/v1.0/drive/")},
		{form + "; charset=utf-8", "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeAccessToken, "subject_token", "person-access-token-123", "resource", "drive", "audience", "drive")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeAccessToken, "subject_token", "pat", "requested_subject", "bob", "audience", "drive")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT, "subject_token", "t", "resource", "drive", "audience", "other")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", "urn:x", "subject_token", "secret-in-unknown-type", "resource", "nope")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token", "a", "subject_token", "b", "resource", "drive")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "actor_token", "actor-secret-token", "resource", "drive")},
		{form, "", v("grant_type", "client_credentials", "requested_token_type", "urn:ietf:params:oauth:token-type:id_token")},
		{form, "subject_token=in-the-url", v("grant_type", GrantTypeTokenExchange)},
		{form, "", "grant_type=%zz&subject_token=%"},
		{form, "", "a;b=c&" + strings.Repeat("x", 100)},
		{"application/json", "", `{"grant_type":"` + GrantTypeTokenExchange + `","subject_token":"json-secret"}`},
		{"", "", ""},
		{"multipart/form-data; boundary=x", "", "--x\r\nContent-Disposition: form-data; name=\"subject_token\"\r\n\r\nmp-secret\r\n--x--"},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT, "subject_token", "t", "resource", "https://evil.example/api/v1.0/drive/x")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT, "subject_token", "t", "resource", "/api/v1.0/drive")},
		{form, "", v("grant_type", GrantTypeTokenExchange, "subject_token_type", TokenTypeJWT, "subject_token", "t", strings.Repeat("\xff", 50), "1", strings.Repeat("\xff", 50), "2")},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, contentType, query, body string) {
		status, hdr, resp := postToken(t, h, contentType, query, body)
		checkOAuthError(t, body, status, hdr, resp)
		// The same request with other token bytes must get the very same
		// answer. Only for a well-formed form without repeated parameters
		// (a repeated one is named in the answer, and which one is named
		// depends on map order).
		mt, _, _ := mime.ParseMediaType(contentType)
		q, err := url.ParseQuery(body)
		if mt != "application/x-www-form-urlencoded" || query != "" || err != nil || len(body) > maxFormBody/2 {
			return
		}
		changed := false
		for k, vs := range q {
			if len(vs) > 1 {
				return
			}
			if k != "subject_token" && k != "actor_token" || vs[0] == "" || vs[0] == fuzzGoodSAToken {
				continue
			}
			other := strings.Repeat("Q", len(vs[0]))
			if other == vs[0] || other == fuzzGoodSAToken {
				other = strings.Repeat("W", len(vs[0]))
			}
			q.Set(k, other)
			changed = true
		}
		if !changed {
			return
		}
		// The original body re-encoded, so the two differ only in the tokens.
		orig, _ := url.ParseQuery(body)
		s1, _, r1 := postToken(t, h, contentType, "", orig.Encode())
		s2, _, r2 := postToken(t, h, contentType, "", q.Encode())
		if s1 != s2 || !bytes.Equal(r1, r2) {
			t.Fatalf("the answer depends on the token bytes:\n%d %s\n%d %s", s1, r1, s2, r2)
		}
	})
}

func postToken(t *testing.T, h http.Handler, contentType, query, body string) (int, http.Header, []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/api/oauth2/token", strings.NewReader(body))
	req.URL.RawQuery = query
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code, w.Header(), w.Body.Bytes()
}

func checkOAuthError(t *testing.T, body string, status int, hdr http.Header, resp []byte) {
	t.Helper()
	switch status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusServiceUnavailable:
	default:
		t.Fatalf("body %q: status %d: %s", body, status, resp)
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(resp, &e); err != nil || !slices.Contains(oauthErrorCodes, e.Error) || e.Description == "" {
		t.Fatalf("body %q: %d %s is not an RFC 6749 error (%v)", body, status, resp, err)
	}
	if !strings.Contains(hdr.Get("Cache-Control"), "no-store") {
		t.Fatalf("body %q: Cache-Control %q", body, hdr.Get("Cache-Control"))
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("body %q: 401 without a Bearer challenge", body)
	}
}
