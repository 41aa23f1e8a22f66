// Package compat checks that a client of the Flask service keeps working
// against tokenstore. It builds the real tokenstore binary and runs it as an
// operator migrating from the Flask service would: the Flask service's
// Python settings file (TOKENSTORE_SETTINGS=settings.py) with its login
// settings, SQLALCHEMY_DATABASE_URI naming PostgreSQL with SQLAlchemy's
// driver suffix, CRYPTOKEY in the Flask service's format, and providers
// from a PROVIDERS_FILE of TokenProvider manifests. The login issuer and
// the token providers are real OpenID providers (providertest, zitadel),
// signed in to and linked through their login flows. The client is plain
// net/http with a cookie jar, as a Flask-era client is: it uses no
// tokenstore package, and each subtest is named after the Flask service's
// behaviour it holds tokenstore to.
package compat

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

// Provider ids as the Flask service's operators named them: clients call
// /api/v1.0/tern_keycloak/token, and a TokenProvider, whose name may not
// hold `_`, carries that id as spec.id.
const (
	keycloak = "tern_keycloak"
	// sameSub is a provider that is the login issuer's realm itself, with
	// requireSameSubject set: the Flask service's subject check.
	sameSub = "login-realm"
	// appOrigin is a browser app allowed as a return URL (ALLOWED_RETURN_URLS).
	appOrigin = "https://app.example.org"
)

type deployment struct {
	ext   string
	login *providertest.OP
	ops   map[string]*providertest.OP
}

func TestFlaskCompat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := start(t)

	t.Run("not_signed_in_is_403", func(t *testing.T) {
		r := newClient(t, d).do(ctx, http.MethodGet, "/api/v1.0/"+keycloak+"/token", nil)
		if r.status != http.StatusForbidden {
			t.Fatalf("a Flask client not signed in got 403 from GET /api/v1.0/{provider}/token; tokenstore answers %d: %q", r.status, r.code())
		}
		if r.code() != "unauthenticated" {
			t.Errorf("the 403 names error %q; want unauthenticated", r.code())
		}
		if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
			t.Errorf("the 403 to a caller without credentials carries WWW-Authenticate %q; want %q", got, "Bearer")
		}
	})

	t.Run("bearer_refused_is_401_with_challenge", func(t *testing.T) {
		r := newClient(t, d).do(ctx, http.MethodGet, "/api/v1.0/"+keycloak+"/token", map[string]string{"Authorization": "Bearer not-a-token-of-the-login-issuer"})
		if r.status != http.StatusUnauthorized {
			t.Fatalf("a Flask client whose bearer token was refused got 401; tokenstore answers %d: %q", r.status, r.code())
		}
		if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") || !strings.Contains(got, `error="invalid_token"`) {
			t.Errorf("the 401 carries WWW-Authenticate %q; a client reading the challenge wants Bearer error=\"invalid_token\"", got)
		}
	})

	alice := newClient(t, d)
	alice.signIn(ctx, t)

	t.Run("token_without_linked_account_is_400", func(t *testing.T) {
		r := alice.do(ctx, http.MethodGet, "/api/v1.0/"+keycloak+"/token", nil)
		if r.status != http.StatusBadRequest {
			t.Fatalf("a Flask client asking for a token of an account it never linked got 400; tokenstore answers %d: %q", r.status, r.code())
		}
		var e map[string]any
		r.json(t, &e)
		if e["error"] != "not_linked" || e["provider"] != keycloak || e["authorize_url"] != d.ext+"/api/v1.0/"+keycloak+"/authorize" {
			t.Errorf("the 400 is %s; want error not_linked, provider %s and its authorize_url", r.body, keycloak)
		}
	})

	t.Run("whoami_has_flask_keys", func(t *testing.T) {
		// Signed in: the login's ID token claims (this issuer puts no
		// email or name in its ID tokens, only in userinfo).
		w := whoami(ctx, t, alice, nil)
		claims, _ := w["claims"].(map[string]any)
		if claims["sub"] != w["sub"] || claims["iss"] != d.login.Issuer {
			t.Errorf("whoami's claims %v are not the login's ID token claims", w["claims"])
		}
		if w["issuer"] != d.login.Issuer || w["auth_method"] != "session" {
			t.Errorf("whoami's issuer %v, auth_method %v; want %s, session", w["issuer"], w["auth_method"], d.login.Issuer)
		}
		if w["email"] != str(claims["email"]) || w["email_verified"] != (claims["email_verified"] == true) {
			t.Errorf("whoami's email %v, email_verified %v disagree with the login claims %v", w["email"], w["email_verified"], claims)
		}
		// With the login issuer's access token, as a Flask-era API client
		// calls: the userinfo answer's claims, email among them.
		w = whoami(ctx, t, newClient(t, d), map[string]string{"Authorization": "Bearer " + d.loginAccessToken(ctx, t)})
		if w["auth_method"] != "bearer" || w["id"] != "id2" {
			t.Errorf("whoami with a bearer token: auth_method %v, id %v; want bearer, id2", w["auth_method"], w["id"])
		}
		if w["email"] != "test-user2@zitadel.ch" || w["email_verified"] != true {
			t.Errorf("whoami with a bearer token: email %v, email_verified %v; the login issuer says test-user2@zitadel.ch, verified", w["email"], w["email_verified"])
		}
		if claims, _ := w["claims"].(map[string]any); claims["email"] != "test-user2@zitadel.ch" {
			t.Errorf("whoami with a bearer token: claims %v lack the userinfo answer's email", w["claims"])
		}
	})

	t.Run("authorizations_shape", func(t *testing.T) {
		r := alice.do(ctx, http.MethodGet, "/api/v1.0/authorizations", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /api/v1.0/authorizations: %d %s", r.status, r.body)
		}
		var list []map[string]any
		r.json(t, &list)
		var got map[string]any
		for _, a := range list {
			if a["provider"] == keycloak {
				got = a
			}
		}
		if got == nil {
			t.Fatalf("the Flask service listed every provider; %s is missing from %s", keycloak, r.body)
		}
		if got["active"] != false {
			t.Errorf("active is %v before linking; want false", got["active"])
		}
		actions, _ := got["actions"].(map[string]any)
		base := d.ext + "/api/v1.0/" + keycloak + "/"
		for _, a := range []string{"authorize", "token", "revoke"} {
			if actions[a] != base+a {
				t.Errorf("actions.%s is %v; the Flask service gave the absolute URL %s", a, actions[a], base+a)
			}
		}
		md, _ := got["metadata"].(map[string]any)
		if md["name"] != "TERN Keycloak" || md["description"] != "TERN's own login" {
			t.Errorf("metadata is %v; the Flask service gave the provider's MD_* settings (name, description)", got["metadata"])
		}
	})

	t.Run("authorize_falls_back_to_allowed_Referer", func(t *testing.T) {
		ref := appOrigin + "/projects?tab=data"
		loc := alice.link(ctx, t, keycloak, providertest.Username, map[string]string{"Referer": ref})
		if loc != ref {
			t.Fatalf("a Flask client opening authorize from %s without return_url was sent back there; tokenstore sends it to %q", ref, loc)
		}
	})

	t.Run("token_answer_has_flask_keys", func(t *testing.T) {
		r := alice.do(ctx, http.MethodGet, "/api/v1.0/"+keycloak+"/token", nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET token after linking: %d %s", r.status, r.body)
		}
		var tok map[string]any
		r.json(t, &tok)
		for _, k := range []string{"access_token", "expires_in", "token_type", "expires_at"} {
			if _, ok := tok[k]; !ok {
				t.Errorf("the token answer lacks %q, which a Flask client reads (keys %v)", k, keys(tok))
			}
		}
		if s, _ := tok["access_token"].(string); s == "" {
			t.Error("access_token is empty")
		}
		if !strings.EqualFold(fmt.Sprint(tok["token_type"]), "bearer") {
			t.Errorf("token_type is %v; want Bearer", tok["token_type"])
		}
		if in, ok := tok["expires_in"].(float64); !ok || in <= 0 {
			t.Errorf("expires_in is %v; want a positive number of seconds", tok["expires_in"])
		}
		if at, ok := tok["expires_at"].(float64); !ok || int64(at) < time.Now().Unix() {
			t.Errorf("expires_at is %v; want unix seconds in the future", tok["expires_at"])
		}
		if _, ok := tok["refresh_token"]; ok {
			t.Error("the token answer holds the refresh token; neither service ever gave it out")
		}
	})

	t.Run("revoke_answers_Token_revoked", func(t *testing.T) {
		r := alice.do(ctx, http.MethodPost, "/api/v1.0/"+keycloak+"/revoke", nil)
		if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `"Token revoked"` {
			t.Fatalf(`a Flask client revoking got 200 with the JSON string "Token revoked"; tokenstore answers %d: %s`, r.status, r.body)
		}
		if r := alice.do(ctx, http.MethodGet, "/api/v1.0/"+keycloak+"/token", nil); r.status != http.StatusBadRequest {
			t.Errorf("after revoking, GET token answers %d (%q); the Flask service answered 400", r.status, r.code())
		}
	})

	t.Run("authorize_ignores_foreign_Referer", func(t *testing.T) {
		loc := alice.link(ctx, t, keycloak, providertest.Username, map[string]string{"Referer": "https://evil.example/phish"})
		if strings.HasPrefix(loc, "https://evil.example") {
			t.Fatalf("authorize followed a Referer outside ALLOWED_RETURN_URLS to %s (an open redirect)", loc)
		}
		if !strings.HasPrefix(loc, d.ext+"/") {
			t.Errorf("after linking from a foreign page the browser goes to %q; want tokenstore's own page under %s", loc, d.ext)
		}
	})

	t.Run("token_cached_unless_force_refresh", func(t *testing.T) {
		// The Flask service refreshed on every call; tokenstore hands out
		// the access token it holds while it stays valid min_valid seconds.
		first := accessToken(ctx, t, alice, "")
		if again := accessToken(ctx, t, alice, ""); again != first {
			t.Error("a second GET token within the token's life got another access token; tokenstore documents a cached one")
		}
		if fresh := accessToken(ctx, t, alice, "?force_refresh=true"); fresh == first {
			t.Error("GET token?force_refresh=true gave the cached access token; it forces a refresh")
		}
	})

	t.Run("token_when_provider_down_is_502_and_kept", func(t *testing.T) {
		// The Flask service answered 500 (an unhandled exception).
		op := d.ops[keycloak]
		// min_valid beyond the token's life (the provider's are 5 minutes)
		// makes tokenstore refresh; force_refresh may be met by the refresh
		// the previous subtest just made.
		op.Stop()
		r := alice.do(ctx, http.MethodGet, "/api/v1.0/"+keycloak+"/token?min_valid=900", nil)
		if err := op.Restart(); err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusBadGateway || !strings.Contains(string(r.body), `"provider_unavailable"`) {
			// The body may hold an access token: only its error code is shown.
			t.Fatalf("GET token while the provider is down answers %d %q; tokenstore documents 502 provider_unavailable", r.status, r.code())
		}
		if tok := accessToken(ctx, t, alice, "?force_refresh=true"); tok == "" {
			t.Error("after the provider came back the stored authorization gave no token")
		}
	})

	t.Run("authorize_refuses_foreign_return_url", func(t *testing.T) {
		r := alice.do(ctx, http.MethodGet, "/api/v1.0/"+keycloak+"/authorize?return_url="+url.QueryEscape("https://evil.example/x"), nil)
		if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `"invalid_return_url"`) {
			t.Fatalf("authorize with a return_url outside ALLOWED_RETURN_URLS answers %d %s (Location %q); tokenstore documents 400 invalid_return_url", r.status, r.body, r.header.Get("Location"))
		}
	})

	t.Run("revoke_with_Accept_json_answers_object", func(t *testing.T) {
		r := alice.do(ctx, http.MethodPost, "/api/v1.0/"+keycloak+"/revoke", map[string]string{"Accept": "application/json"})
		if r.status != http.StatusOK {
			t.Fatalf("revoke with Accept: application/json: %d %s", r.status, r.body)
		}
		var o map[string]any
		if err := json.Unmarshal(r.body, &o); err != nil {
			t.Fatalf("revoke with Accept: application/json answers %s; want an object", r.body)
		}
		if o["provider"] != keycloak || o["revoked"] != true {
			t.Errorf("revoke answers %s; want provider %s, revoked true", r.body, keycloak)
		}
		if _, ok := o["revoked_at_provider"].(bool); !ok {
			t.Errorf("revoke answers %s; want revoked_at_provider (bool)", r.body)
		}
	})

	t.Run("api_root_leads_to_swagger_ui", func(t *testing.T) {
		c := newClient(t, d)
		r := c.do(ctx, http.MethodGet, "/api/v1.0/", nil)
		if r.status/100 != 3 || r.header.Get("Location") != "/api/" && r.header.Get("Location") != d.ext+"/api/" {
			t.Fatalf("the Flask service's API root /api/v1.0/ showed Swagger UI; tokenstore answers %d Location %q, want a redirect to /api/", r.status, r.header.Get("Location"))
		}
		r = c.do(ctx, http.MethodGet, "/api/", nil)
		if r.status != http.StatusOK || !strings.Contains(strings.ToLower(string(r.body)), "swagger-ui") {
			t.Fatalf("/api/ answers %d without Swagger UI: %.300s", r.status, r.body)
		}
	})

	t.Run("root_is_the_web_page", func(t *testing.T) {
		// The Flask service's / redirected to its API root; tokenstore's /
		// is its web page (documented; the reference moved to /api/).
		r := newClient(t, d).do(ctx, http.MethodGet, "/", nil)
		if r.status != http.StatusOK || !strings.Contains(r.header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET / answers %d %s; tokenstore documents its web page there", r.status, r.header.Get("Content-Type"))
		}
	})

	t.Run("cors_any_origin_without_credentials", func(t *testing.T) {
		// Flask-Cors' defaults, which the Flask service ran with: any
		// origin, no credentials. A browser app on another origin calling
		// with a bearer token sends this preflight first.
		const origin = "https://dashboard.other.example"
		c := newClient(t, d)
		r := c.do(ctx, http.MethodOptions, "/api/v1.0/authorizations", map[string]string{
			"Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization",
		})
		allow := r.header.Get("Access-Control-Allow-Origin")
		if allow != "*" && allow != origin {
			t.Errorf("a browser app on %s calling the Flask service passed its CORS preflight; tokenstore answers %d with Access-Control-Allow-Origin %q", origin, r.status, allow)
		}
		if r.header.Get("Access-Control-Allow-Credentials") == "true" {
			t.Error("the preflight allows credentials to any origin; Flask-Cors' defaults never did")
		}
		r = c.do(ctx, http.MethodGet, "/api/v1.0/authorizations", map[string]string{"Origin": origin})
		if allow := r.header.Get("Access-Control-Allow-Origin"); allow != "*" && allow != origin {
			t.Errorf("a cross-origin GET gets Access-Control-Allow-Origin %q (status %d); the browser would hide the answer from the app", allow, r.status)
		}
		if r.header.Get("Access-Control-Allow-Credentials") == "true" {
			t.Error("a cross-origin GET allows credentials to any origin")
		}
	})

	t.Run("link_refused_on_subject_mismatch_when_required", func(t *testing.T) {
		// The Flask service refused (403) a link whose subject at the
		// provider was not the signed-in person's. tokenstore does so for
		// providers with spec.requireSameSubject.
		bob := newClient(t, d)
		bob.signIn(ctx, t)
		// Without it, another subject links (the documented difference:
		// several people may share one account at a provider).
		if loc := bob.link(ctx, t, keycloak, d.ops[keycloak].OtherUsername(), nil); !strings.HasPrefix(loc, d.ext+"/") {
			t.Errorf("linking %s (no requireSameSubject) as another subject ends at %q", keycloak, loc)
		}
		if r := bob.do(ctx, http.MethodGet, "/api/v1.0/authorizations", nil); !strings.Contains(string(r.body), `"provider":"`+sameSub+`"`) {
			t.Fatalf("the provider %s with spec.requireSameSubject is not served (is the field on main yet? tokenstore refuses unknown fields): %s", sameSub, r.body)
		}
		r := bob.linkResponse(ctx, t, sameSub, d.ops[sameSub].OtherUsername(), nil)
		if r.status != http.StatusForbidden {
			t.Fatalf("linking %s (requireSameSubject) as another person than the one signed in: the Flask service answered 403; tokenstore answers %d Location %q: %s",
				sameSub, r.status, r.header.Get("Location"), r.body)
		}
		var e map[string]any
		r.json(t, &e)
		if e["error"] != "subject_mismatch" {
			t.Errorf("the 403 names error %v; want subject_mismatch", e["error"])
		}
		if r := bob.do(ctx, http.MethodGet, "/api/v1.0/"+sameSub+"/token", nil); r.status != http.StatusBadRequest {
			t.Errorf("after the refused link GET token answers %d (%q); nothing may have been linked (400)", r.status, r.code())
		}
		// The same person is linked.
		if loc := bob.link(ctx, t, sameSub, providertest.Username, nil); !strings.HasPrefix(loc, d.ext+"/") {
			t.Errorf("linking %s as the signed-in person ends at %q", sameSub, loc)
		}
		if r := bob.do(ctx, http.MethodGet, "/api/v1.0/"+sameSub+"/token", nil); r.status != http.StatusOK {
			t.Errorf("after linking as the same person GET token answers %d: %s", r.status, r.body)
		}
	})
}

// start builds tokenstore, writes a Flask operator's settings.py and a
// providers file, migrates a fresh PostgreSQL database and serves.
func start(t *testing.T) *deployment {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "tokenstore")
	build := exec.Command("go", "build", "-o", bin, "./cmd/tokenstore")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building tokenstore: %v\n%s", err, out)
	}

	addr := testutil.FreeAddr(t)
	d := &deployment{ext: "http://" + addr, ops: map[string]*providertest.OP{}}
	d.login = providertest.Start(t, d.ext+"/api/oidc/callback")
	for _, id := range []string{keycloak, sameSub} {
		d.ops[id] = providertest.Start(t, d.ext+"/api/v1.0/"+id+"/redirect_uri")
	}

	dbURL, err := url.Parse(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	// The Flask service's CRYPTOKEY: comma-separated 32-byte keys, base64
	// (44 characters) or hex (64); the first encrypts.
	k1, k2 := make([]byte, 32), make([]byte, 32)
	_, _ = rand.Read(k1)
	_, _ = rand.Read(k2)
	settingsPy := fmt.Sprintf(`"""tokenstore settings, as deployed with the Flask service."""
SECRET_KEY = b"flask-cookie-key"
SESSION_TYPE = "filesystem"
PERMANENT_SESSION_LIFETIME = 86400

SQLALCHEMY_DATABASE_URI = "postgresql+psycopg2://postgres@127.0.0.1:5432%s"
SQLALCHEMY_TRACK_MODIFICATIONS = False

OIDC_DISCOVERY_URL = (
    %q
)
OIDC_CLIENT_ID = %q
OIDC_CLIENT_SECRET = %q
# The login issuer's access tokens are opaque: the one setting a Flask-era
# deployment adds so that programs' bearer tokens keep working (RFC 7662
# introspection; the Flask service asked userinfo, which BEARER_OPAQUE =
# "userinfo" still does, with the risk docs/security.md describes).
BEARER_OPAQUE = "introspection"

CRYPTOKEY = "%s, %s"

ALLOWED_RETURN_URLS = [%q]

LISTEN_ADDRESS = %q
EXTERNAL_URL = %q
PROVIDERS_FILE = %q
`, dbURL.Path, d.login.DiscoveryURL(), providertest.ClientID, d.login.ClientSecret,
		base64.StdEncoding.EncodeToString(k1), hex.EncodeToString(k2),
		appOrigin, addr, d.ext, filepath.Join(dir, "providers"))
	writeFile(t, filepath.Join(dir, "settings.py"), settingsPy)

	// One file per provider: a document tokenstore refuses (requireSameSubject
	// before that field exists) must not take the others down with it.
	if err := os.Mkdir(filepath.Join(dir, "providers"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "providers", keycloak+".yaml"), manifest(keycloak, d.ops[keycloak], "TERN Keycloak", "TERN's own login", ""))
	writeFile(t, filepath.Join(dir, "providers", sameSub+".yaml"), manifest(sameSub, d.ops[sameSub], "Login realm", "The login issuer's own realm", "  requireSameSubject: true\n"))

	env := append(os.Environ(), "TOKENSTORE_SETTINGS="+filepath.Join(dir, "settings.py"))
	migrate := exec.Command(bin, "migrate", "up")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("tokenstore migrate up with the Flask settings file: %v\n%s", err, out)
	}

	out := &testutil.SyncBuffer{}
	srv := exec.Command(bin, "serve")
	srv.Env = env
	srv.Stdout, srv.Stderr = out, out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = srv.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = srv.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("tokenstore serve output:\n%s", out)
		}
	})
	if err := testutil.WaitReady(d.ext+"/readyz", exited, 60*time.Second); err != nil {
		t.Fatalf("tokenstore serve with the Flask settings file: %v; its output:\n%s", err, out)
	}
	return d
}

func manifest(id string, op *providertest.OP, name, desc, extra string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: %[8]s-client
stringData:
  clientSecret: %[2]q
---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: %[8]s
spec:
  id: %[1]s
  discoveryURL: %[3]q
  clientID: %[4]q
  clientSecretRef: {name: %[8]s-client, key: clientSecret}
  metadata: {name: %[5]q, description: %[6]q}
%[7]s`, id, op.ClientSecret, op.DiscoveryURL(), providertest.ClientID, name, desc, extra, strings.ReplaceAll(id, "_", "-"))
}

// client is a Flask-era API client: net/http with a cookie jar, not
// following redirects so each hop can be checked.
type client struct {
	d    *deployment
	http *http.Client
}

func newClient(t *testing.T, d *deployment) *client {
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{d: d, http: &http.Client{Jar: jar, Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// code is an error answer's error code; tests show it rather than a body
// that may hold a token.
func (r response) code() string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %d is not the JSON expected (%v): %s", r.status, err, r.body)
	}
}

// do requests path (under EXTERNAL_URL) or an absolute URL.
func (c *client) do(ctx context.Context, method, path string, headers map[string]string) response {
	u := path
	if strings.HasPrefix(path, "/") {
		u = c.d.ext + path
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return response{status: -1, body: []byte(err.Error())}
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{status: -1, body: []byte(err.Error()), header: http.Header{}}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// signIn plays the login: /api/oidc/login → the login issuer → /api/oidc/callback.
func (c *client) signIn(ctx context.Context, t *testing.T) {
	t.Helper()
	r := c.do(ctx, http.MethodGet, "/api/oidc/login", nil)
	if r.status != http.StatusFound {
		t.Fatalf("GET /api/oidc/login: %d %s", r.status, r.body)
	}
	q, err := c.d.login.Login(ctx, r.header.Get("Location"))
	if err != nil {
		t.Fatalf("signing in at the login issuer: %v", err)
	}
	r = c.do(ctx, http.MethodGet, "/api/oidc/callback?"+q.Encode(), nil)
	if r.status != http.StatusFound {
		t.Fatalf("GET /api/oidc/callback: %d %s", r.status, r.body)
	}
	if r := c.do(ctx, http.MethodGet, "/api/whoami", nil); r.status != http.StatusOK {
		t.Fatalf("whoami after signing in: %d %s", r.status, r.body)
	}
}

// linkResponse plays linking: /api/v1.0/{id}/authorize (with headers) → the
// provider's login as username → redirect_uri, whose answer it returns.
func (c *client) linkResponse(ctx context.Context, t *testing.T, id, username string, headers map[string]string) response {
	t.Helper()
	r := c.do(ctx, http.MethodGet, "/api/v1.0/"+id+"/authorize", headers)
	if r.status != http.StatusFound {
		t.Fatalf("GET /api/v1.0/%s/authorize: %d %s", id, r.status, r.body)
	}
	q, err := c.d.ops[id].LoginAs(ctx, r.header.Get("Location"), username)
	if err != nil {
		t.Fatalf("logging in at %s: %v", id, err)
	}
	return c.do(ctx, http.MethodGet, "/api/v1.0/"+id+"/redirect_uri?"+q.Encode(), nil)
}

// link links and returns where the browser is sent back to.
func (c *client) link(ctx context.Context, t *testing.T, id, username string, headers map[string]string) string {
	t.Helper()
	r := c.linkResponse(ctx, t, id, username, headers)
	if r.status != http.StatusFound {
		t.Fatalf("GET /api/v1.0/%s/redirect_uri: %d %s", id, r.status, r.body)
	}
	loc := r.header.Get("Location")
	if u, err := url.Parse(loc); err == nil && u.Query().Get("error") != "" {
		t.Fatalf("linking %s came back with an error: %s", id, loc)
	}
	return loc
}

// accessToken is GET token (with query) for the Flask keys' access_token.
func accessToken(ctx context.Context, t *testing.T, c *client, query string) string {
	t.Helper()
	r := c.do(ctx, http.MethodGet, "/api/v1.0/"+keycloak+"/token"+query, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET token%s: %d %s", query, r.status, r.code())
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	r.json(t, &tok)
	return tok.AccessToken
}

// whoami answers GET /api/whoami and checks the keys every answer has.
func whoami(ctx context.Context, t *testing.T, c *client, headers map[string]string) map[string]any {
	t.Helper()
	r := c.do(ctx, http.MethodGet, "/api/whoami", headers)
	if r.status != http.StatusOK {
		t.Fatalf("GET /api/whoami: %d %s", r.status, r.body)
	}
	var w map[string]any
	r.json(t, &w)
	for _, k := range []string{"id", "email", "email_verified", "name", "claims", "roles", "scopes", "user_id", "issuer", "sub", "auth_method"} {
		if _, ok := w[k]; !ok {
			t.Errorf("whoami lacks %q, which a Flask client reads (body %s)", k, r.body)
		}
	}
	if w["id"] != w["user_id"] || w["id"] != w["sub"] || w["id"] == "" {
		t.Errorf("whoami's id %v is not the user id (user_id %v, sub %v)", w["id"], w["user_id"], w["sub"])
	}
	if _, ok := w["email_verified"].(bool); !ok {
		t.Errorf("whoami's email_verified is %v; want a boolean", w["email_verified"])
	}
	claims, ok := w["claims"].(map[string]any)
	if !ok {
		t.Errorf("whoami's claims is %v; want an object", w["claims"])
	}
	for k, v := range claims {
		if s, ok := v.(string); ok && strings.Count(s, ".") == 2 && len(s) > 100 {
			t.Errorf("whoami's claim %q holds what looks like a token", k)
		}
	}
	for _, k := range []string{"roles", "scopes"} {
		if _, ok := w[k].([]any); !ok {
			t.Errorf("whoami's %s is %v; a Flask client iterates an array ([] when none)", k, w[k])
		}
	}
	return w
}

// loginAccessToken is an access token of the login issuer for the test
// user, got as an API client of the Flask era got one: the authorization
// code flow of a client of that issuer (here the login client itself).
func (d *deployment) loginAccessToken(ctx context.Context, t *testing.T) string {
	t.Helper()
	var doc struct {
		Auth  string `json:"authorization_endpoint"`
		Token string `json:"token_endpoint"`
	}
	r := newClient(t, d).do(ctx, http.MethodGet, d.login.DiscoveryURL(), nil)
	r.json(t, &doc)
	cfg := oauth2.Config{ClientID: providertest.ClientID, ClientSecret: d.login.ClientSecret, RedirectURL: d.ext + "/api/oidc/callback",
		Endpoint: oauth2.Endpoint{AuthURL: doc.Auth, TokenURL: doc.Token}, Scopes: []string{"openid", "email", "profile"}}
	verifier := oauth2.GenerateVerifier()
	q, err := d.login.Login(ctx, cfg.AuthCodeURL("compat-state", oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		t.Fatalf("logging in at the login issuer for an access token: %v", err)
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchanging the login issuer's code: %v", err)
	}
	return tok.AccessToken
}

func str(v any) string { s, _ := v.(string); return s }

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// repoRoot is the module root: tests run in their package's folder.
func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}
