//go:build dev

package devidp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

const redirect = "http://127.0.0.1:1/callback"

func start(t *testing.T) (*IDP, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	d, err := New(Options{Issuer: issuer, Users: DemoUsers(), Clients: []Client{
		{ID: "login", Secret: "login-secret", RedirectURIs: []string{redirect}},
		{ID: "demo-drive", Secret: "drive-secret", RedirectURIs: []string{redirect}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return d, issuer
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// login plays the browser: the authorization request, the login form, and
// the redirects up to the client's callback, whose query it returns.
func login(t *testing.T, issuer, authURL, user, password string) url.Values {
	t.Helper()
	resp, err := noRedirects.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := resp.Location()
	id := loc.Query().Get("authRequestID")
	if id == "" {
		t.Fatalf("authorization request went to %v, not the login page", loc)
	}
	page, err := http.Get(loc.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if !strings.Contains(string(body), `name="password"`) {
		t.Fatalf("login page: %s", body)
	}
	resp, err = noRedirects.PostForm(issuer+"/login/username", url.Values{"id": {id}, "username": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for i := 0; i < 5 && resp.StatusCode == http.StatusFound; i++ {
		loc, _ = resp.Location()
		if strings.HasPrefix(loc.String(), redirect) {
			return loc.Query()
		}
		if resp, err = noRedirects.Get(loc.String()); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	t.Fatalf("login ended with %s", resp.Status)
	return nil
}

func claims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT (%d parts)", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCodeFlowAndRotation: a demo provider client gets a JWT access token
// with the user's subject and a refresh token that rotates: the spent one is
// refused with invalid_grant, as real rotating providers do.
func TestCodeFlowAndRotation(t *testing.T) {
	_, issuer := start(t)
	ctx := context.Background()
	p, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := oauth2.Config{ClientID: "demo-drive", ClientSecret: "drive-secret", Endpoint: p.Endpoint(), RedirectURL: redirect,
		Scopes: []string{"openid", "email", "offline_access", "files.read"}}
	verifier := oauth2.GenerateVerifier()
	q := login(t, issuer, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)), "alice", "alice-demo")
	if q.Get("state") != "st" || q.Get("code") == "" {
		t.Fatalf("callback query %v", q)
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	c := claims(t, tok.AccessToken)
	if c["sub"] != "alice" || fmt.Sprint(c["aud"]) != "[demo-drive]" {
		t.Errorf("access token claims %v", c)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	old := tok.RefreshToken
	tok.Expiry = tok.Expiry.Add(-24 * 3600e9) // make the source refresh
	fresh, err := cfg.TokenSource(ctx, tok).Token()
	if err != nil {
		t.Fatal(err)
	}
	if fresh.RefreshToken == "" || fresh.RefreshToken == old {
		t.Errorf("the refresh token did not rotate")
	}
	_, err = cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: old}).Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("replaying a spent refresh token: %v, want invalid_grant", err)
	}
}

func TestWrongPassword(t *testing.T) {
	_, issuer := start(t)
	resp, err := http.PostForm(issuer+"/login/username", url.Values{"id": {"unknown"}, "username": {"alice"}, "password": {"nope"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "start again") {
		t.Errorf("unknown request: %s %s", resp.Status, body)
	}
}

// TestDevToken: the terminal's way to a bearer token of the login client.
func TestDevToken(t *testing.T) {
	_, issuer := start(t)
	ask := func(user, pass string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, issuer+"/dev/token", nil)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, strings.TrimSpace(string(b))
	}
	if resp, _ := ask("alice", "wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong password: %s", resp.Status)
	}
	if resp, _ := ask("mallory", "x"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unknown user: %s", resp.Status)
	}
	resp, tok := ask("bob", "bob-demo")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("dev token: %s %s", resp.Status, tok)
	}
	c := claims(t, tok)
	if c["sub"] != "bob" || c["iss"] != issuer {
		t.Errorf("dev token claims %v", c)
	}
	aud, _ := c["aud"].([]any)
	if len(aud) != 1 || aud[0] != "login" {
		t.Errorf("dev token audience %v, want the login client", c["aud"])
	}
}
