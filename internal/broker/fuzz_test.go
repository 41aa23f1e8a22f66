package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
)

// fuzzRT and fuzzClientSecret are what the refresh request carries; neither
// may come back in an error.
const (
	fuzzRT           = "rt-0123456789-stored-refresh-token"
	fuzzClientSecret = "cs-0123456789-client-secret"
)

// answer is an in-memory token endpoint: no network.
type answer struct {
	status      int
	contentType string
	body        []byte
}

func (a answer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	h := http.Header{}
	if a.contentType != "" {
		h.Set("Content-Type", a.contentType)
	}
	return &http.Response{StatusCode: a.status, Header: h, Body: io.NopCloser(bytes.NewReader(a.body)), Request: r}, nil
}

// FuzzTokenResponse feeds a provider's token endpoint answer (status,
// Content-Type, body: JSON, form-encoded as GitHub sends, or anything)
// through the refresh path: x/oauth2's parsing, callRefresh's checks, then
// classify (errors) or seal (the credential row). Properties: no panic; an
// error is a refused grant (only for invalid_grant, invalid_request below
// 500), a rejected client (only for providers.RejectsClient's codes below
// 500, 429 aside) or a provider outage and never carries
// the refresh token or client secret; a success yields a row whose
// ciphertexts open to exactly the answer's tokens under their bindings, whose
// scopes have no empty entries, and whose refresh expiry, when the answer
// gives refresh_expires_in > 0, lies that many seconds ahead (never in the
// past through an overflow).
func FuzzTokenResponse(f *testing.F) {
	ring, err := crypto.NewKeyRing(bytes.Repeat([]byte("b"), crypto.KeySize))
	if err != nil {
		f.Fatal(err)
	}
	const js, form = "application/json", "application/x-www-form-urlencoded"
	for _, s := range []struct {
		status int
		ct     string
		body   string
	}{
		{200, js, `{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-2","scope":"openid email"}`},
		{200, js + "; charset=utf-8", `{"access_token":"at","expires_in":"3600","refresh_expires_in":1800,"id_token":"a.b.c"}`},
		{200, form, "access_token=gho_x&scope=repo%2Cgist&token_type=bearer"},
		{200, form, "access_token=ghu_x&expires_in=28800&refresh_token=ghr_y&refresh_token_expires_in=15897600&scope=&token_type=bearer"},
		{200, "text/plain", "access_token=a&expires_in=99999999999999"},
		{200, js, `{"access_token":"a","expires_in":1e99,"refresh_expires_in":1e99}`},
		{200, js, `{"access_token":"a","refresh_expires_in":1e10}`},
		{200, js, `{"access_token":"a","refresh_expires_in":0.5,"scope":"  a   b "}`},
		{200, js, `{"access_token":"a","expires_in":-5,"refresh_expires_in":-1,"scope":7}`},
		{200, js, `{"access_token":"","refresh_token":"x"}`},
		{200, js, `{"error":"invalid_grant"}`},
		{400, js, `{"error":"invalid_grant","error_description":"Token ` + fuzzRT + ` is revoked"}`},
		{400, js, `{"error":"invalid_client","error_description":"bad secret ` + fuzzClientSecret + `"}`},
		{401, form, "error=unauthorized_client&error_description=" + fuzzRT},
		{429, "", "slow down"},
		{500, js, `{"error":"invalid_grant"}`},
		{503, "text/html", "<html>" + fuzzRT + "</html>"},
		{200, "", "not json " + fuzzRT},
		{200, form, "access_token=%zz" + fuzzRT},
		{302, js, ""},
		{200, js, `{"access_token":{"x":1}}`},
	} {
		f.Add(uint16(s.status), s.ct, []byte(s.body))
	}
	p := &providers.Provider{ID: "drive", ClientID: "client", ClientSecret: fuzzClientSecret,
		Endpoint: oauth2.Endpoint{TokenURL: "https://op.example/token", AuthStyle: oauth2.AuthStyleInParams}}
	now := time.Unix(1_700_000_000, 0).UTC()
	f.Fuzz(func(t *testing.T, status uint16, contentType string, body []byte) {
		st := int(status)
		if st < 100 || st > 599 {
			st = 100 + st%500
		}
		a := answer{status: st, contentType: contentType, body: body}
		client := &http.Client{Transport: a}
		b := &Broker{opt: Options{Keys: ring, HTTPClient: client, Now: func() time.Time { return now }}}
		tok, err := b.callRefresh(context.Background(), p, fuzzRT)
		if err != nil {
			checkRefreshError(t, a, p, err)
			return
		}
		if tok.AccessToken == "" {
			t.Fatal("success without an access token")
		}
		c := store.Credential{UserID: "u", Provider: p.ID}
		if err := b.seal(&c, tok, now); err != nil {
			t.Fatal(err)
		}
		if got, err := ring.Open(c.AccessToken, binding("u", p.ID, crypto.PurposeAccessToken)); err != nil || string(got) != tok.AccessToken {
			t.Fatalf("access token does not round-trip: %v", err)
		}
		if tok.RefreshToken == "" {
			if c.RefreshToken != nil {
				t.Fatal("a refresh token was stored that the answer did not hold")
			}
		} else if got, err := ring.Open(c.RefreshToken, binding("u", p.ID, crypto.PurposeRefreshToken)); err != nil || string(got) != tok.RefreshToken {
			t.Fatalf("refresh token does not round-trip: %v", err)
		}
		if c.KeyID != ring.PrimaryKeyID() || c.State != store.StateActive {
			t.Fatalf("key id %q state %q", c.KeyID, c.State)
		}
		for _, s := range c.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\n") {
				t.Fatalf("scope entry %q", s)
			}
		}
		if tok.Expiry.IsZero() != (c.AccessExpiresAt == nil) || c.AccessExpiresAt != nil && !c.AccessExpiresAt.Equal(tok.Expiry) {
			t.Fatalf("access expiry %v, answer's %v", c.AccessExpiresAt, tok.Expiry)
		}
		v, isNum := tok.Extra("refresh_expires_in").(float64)
		if !isNum || !(v > 0) {
			if c.RefreshExpiresAt != nil {
				t.Fatalf("refresh expiry %v without a positive refresh_expires_in", c.RefreshExpiresAt)
			}
			return
		}
		const maxSeconds = float64(math.MaxInt64 / int64(time.Second))
		if c.RefreshExpiresAt == nil {
			if v < maxSeconds {
				t.Fatalf("refresh_expires_in %v was dropped", v)
			}
			return // beyond what a time.Duration holds: no known expiry
		}
		got := c.RefreshExpiresAt.Sub(now).Seconds()
		if math.Abs(got-v) > 1 {
			t.Fatalf("refresh_expires_in %v recorded as %v from now (%v)", v, got, c.RefreshExpiresAt)
		}
	})
}

func checkRefreshError(t *testing.T, a answer, p *providers.Provider, err error) {
	t.Helper()
	msg := err.Error()
	// What the provider itself put in its error code is the one part of
	// the answer an error repeats; x/oauth2 parses it again here to see.
	code, st := "", 0
	cfg := p.OAuth2Config("")
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: a})
	_, raw := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: fuzzRT}).Token()
	var re *oauth2.RetrieveError
	if errors.As(raw, &re) {
		code, st = re.ErrorCode, re.Response.StatusCode
	}
	for _, secret := range []string{fuzzRT, fuzzClientSecret} {
		if strings.Contains(msg, secret) && !strings.Contains(code, secret) {
			t.Fatalf("error %q carries a secret", msg)
		}
	}
	var gr *grantRefused
	var cr *providers.ClientRejectedError
	var ue *UnavailableError
	switch {
	case errors.As(err, &gr):
		if re == nil || st >= 500 || (code != "invalid_grant" && code != "invalid_request") {
			t.Fatalf("status %d code %q taken for a refused grant: %v", st, code, err)
		}
	case errors.As(err, &cr):
		if re == nil || !providers.RejectsClient(st, code) || cr.Code != code || cr.Provider != p.ID {
			t.Fatalf("status %d code %q taken for a rejected client: %v", st, code, err)
		}
	case errors.As(err, &ue):
		if ue.Provider != p.ID {
			t.Fatalf("unavailable error names %q", ue.Provider)
		}
	default:
		t.Fatalf("unclassified error %T: %v", err, err)
	}
}
