package broker

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
)

// nonRotatingProxy stands in front of the real OP's token endpoint and drops
// refresh_token from answers to refresh requests, as providers that do not
// rotate (Google, among others) answer. It does not make tokens up: every
// other byte is the OP's.
func nonRotatingProxy(t *testing.T, target string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	var stripped atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Header.Get("X-Test-Grant") != "refresh_token" || resp.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return err
		}
		if _, ok := m["refresh_token"]; ok {
			delete(m, "refresh_token")
			stripped.Add(1)
		}
		body, _ = json.Marshal(m)
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Note the grant type for ModifyResponse, leaving the body intact.
		r.Header.Set("X-Test-Grant", providertest.GrantType(r))
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &stripped
}

// A provider that answers a refresh without a new refresh token: the new
// access token is served and the old refresh token is kept, not lost.
func TestRefreshWithoutNewRefreshTokenKeepsTheOldOne(t *testing.T) {
	f := newFixture(t)
	tok := f.codes()
	if err := f.b.Link(f.ctx, "u", "p", "", "test", tok); err != nil {
		t.Fatal(err)
	}
	// From now on the provider's token endpoint is reached through the proxy.
	proxy, stripped := nonRotatingProxy(t, f.prov.Endpoint.TokenURL)
	tokenURL, _ := url.Parse(f.prov.Endpoint.TokenURL)
	f.prov.Endpoint.TokenURL = proxy.URL + tokenURL.Path

	got, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if stripped.Load() != 1 {
		t.Fatalf("the refresh did not go through the non-rotating provider (%d answers changed)", stripped.Load())
	}
	if got.AccessToken == "" || got.AccessToken == tok.AccessToken {
		t.Fatal("no new access token after the refresh")
	}
	c, err := f.st.GetCredential(f.ctx, "u", "p")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.RefreshToken) == 0 {
		t.Fatal("the refresh token was dropped")
	}
	rt, err := f.b.opt.Keys.Open(c.RefreshToken, crypto.Binding{Owner: "u", Provider: "p", Purpose: crypto.PurposeRefreshToken})
	if err != nil {
		t.Fatal(err)
	}
	if string(rt) != tok.RefreshToken {
		t.Fatal("the stored refresh token is not the one the provider issued at linking")
	}
	// The access token now stored is the new one.
	again, err := f.b.Token(f.ctx, Request{UserID: "u", Provider: "p"})
	if err != nil || again.AccessToken != got.AccessToken {
		t.Fatalf("cached token after refresh: %v", err)
	}
}
