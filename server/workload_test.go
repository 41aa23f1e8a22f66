package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload/kubeauth"
)

// testAudience is the audience workloads' tokens are projected with.
const testAudience = "tokenstore.test"

// The zitadel example storage's client-credentials client.
const (
	serviceClientID     = "sid1"
	serviceClientSecret = "verysecret"
)

// wlEnv is env plus a cluster and one tokenstore instance that accepts
// workloads, with a provider "svc" that issues client-credentials tokens.
type wlEnv struct {
	*env
	kube    *cluster
	in      *instance
	ka      *kubeauth.Authenticator
	reviews atomic.Int64 // TokenReviews sent
	cc      atomic.Int64 // client_credentials requests that reached the OP
	// skew moves kubeauth's clock (nanoseconds).
	skew atomic.Int64
	vt   *validatingTransport
	http *http.Client
	svc  *providers.Provider
}

// startWorkloadInstance starts a tokenstore replica that accepts workloads
// (through ka) on the shared database.
func (w *wlEnv) startWorkloadInstance(ka *kubeauth.Authenticator) *instance {
	return w.serve(nil, Options{Workloads: ka, ServiceAccounts: ka}, nil, w.svc)
}

// newWorkloadEnv starts everything. ServiceAccounts "allowed", "other" and
// "app" exist in the cluster namespace; "allowed" may get svc's service
// tokens.
func newWorkloadEnv(t testing.TB, ko kubeauth.Options) *wlEnv {
	t.Helper()
	w := &wlEnv{env: newEnv(t)}
	w.kube = newCluster(t)
	for _, n := range []string{"allowed", "other", "app"} {
		w.kube.serviceAccount(n)
	}
	ko.Audience = testAudience
	ko.Now = func() time.Time { return time.Now().Add(time.Duration(w.skew.Load())) }
	ka, err := kubeauth.New(countingConfig(t, &w.reviews), ko)
	if err != nil {
		t.Fatal(err)
	}
	w.ka = ka

	// svc: the alpha OP's client-credentials client, behind a proxy that
	// counts client_credentials requests.
	alpha := w.providers["alpha"]
	target, _ := url.Parse(alpha.op.Issuer)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if providertest.GrantType(r) == "client_credentials" {
			w.cc.Add(1)
		}
		rp.ServeHTTP(rw, r)
	}))
	t.Cleanup(proxy.Close)
	svc := *alpha.provider
	svc.ID, svc.ClientID, svc.ClientSecret, svc.Version = "svc", serviceClientID, serviceClientSecret, "1"
	tu, _ := url.Parse(svc.Endpoint.TokenURL)
	svc.Endpoint.TokenURL = proxy.URL + tu.Path
	svc.ServiceAccounts = []providers.ServiceAccount{{Namespace: w.kube.ns, Name: "allowed"}}

	w.svc = &svc
	w.in = w.startWorkloadInstance(ka)
	// Every answer of this instance is checked against openapi.yaml.
	w.vt = &validatingTransport{t: t, doc: loadSpec(t), server: w.in.url, seen: map[string]bool{}}
	w.http = &http.Client{Transport: w.vt, Timeout: 30 * time.Second}
	return w
}

// saToken issues a token for a ServiceAccount of the test namespace and
// records it as a secret for the log check.
func (w *wlEnv) saToken(name, audience string) string {
	tok := w.kube.token(name, audience)
	w.see("service_account_token", tok)
	return tok
}

type exchangeAnswer struct {
	status int
	body   []byte
	// success
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       *int64 `json:"expires_in"`
	// error
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Reason      string `json:"reason"`
}

func (w *wlEnv) exchangeForm(form url.Values) exchangeAnswer {
	w.t.Helper()
	return w.exchangeFormAt(w.in, form)
}

func (w *wlEnv) exchangeFormAt(in *instance, form url.Values) exchangeAnswer {
	w.t.Helper()
	resp, err := w.http.Post(in.url+"/api/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	a := exchangeAnswer{status: resp.StatusCode, body: body}
	if err := json.Unmarshal(body, &a); err != nil {
		w.t.Fatalf("token exchange answer %d is not JSON: %s", resp.StatusCode, body)
	}
	if a.status != http.StatusOK && (a.Error == "" || a.Description == "") {
		w.t.Errorf("error answer without error/error_description: %s", body)
	}
	w.see("access_token", a.AccessToken)
	return a
}

// exchange asks for provider's token with a ServiceAccount token, on
// behalf of subject if not empty.
func (w *wlEnv) exchange(saToken, provider, subject string) exchangeAnswer {
	w.t.Helper()
	return w.exchangeAt(w.in, saToken, provider, subject)
}

func (w *wlEnv) exchangeAt(in *instance, saToken, provider, subject string) exchangeAnswer {
	w.t.Helper()
	f := url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {saToken},
		"subject_token_type": {TokenTypeJWT}, "audience": {provider}}
	if subject != "" {
		f.Set("requested_subject", subject)
	}
	return w.exchangeFormAt(in, f)
}

// redacted is the answer without its access token, for failure messages.
func (a exchangeAnswer) redacted() string {
	if a.AccessToken == "" {
		return string(a.body)
	}
	return strings.ReplaceAll(string(a.body), a.AccessToken, "[access token]")
}

func (a exchangeAnswer) want(t testing.TB, status int, code, reason string) {
	t.Helper()
	if a.status != status || a.Error != code || a.Reason != reason {
		// Not the body: it may hold an access token.
		t.Fatalf("want %d %s/%s, got %d %s/%s (%s)", status, code, reason, a.status, a.Error, a.Reason, a.Description)
	}
}

// forged builds a JWT shaped like a ServiceAccount token for our audience,
// with a signature no API server made.
func forged(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{"aud": []string{testAudience}, "exp": exp.Unix(), "iss": "https://kubernetes.default.svc",
		"sub": "system:serviceaccount:default:default"})
	return enc([]byte(`{"alg":"RS256","kid":"x"}`)) + "." + enc(claims) + "." + enc([]byte("not a signature"))
}

// TestWorkloadServiceTokens: an allowed ServiceAccount gets the provider's
// client-credentials token, shared and cached; every kind of bad token is
// refused with its own code.
func TestWorkloadServiceTokens(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	good := w.saToken("allowed", testAudience)

	a := w.exchange(good, "svc", "")
	if a.status != http.StatusOK || a.AccessToken == "" || a.IssuedTokenType != TokenTypeAccessToken || a.ExpiresIn == nil || *a.ExpiresIn <= 0 {
		t.Fatalf("service token: %d %s", a.status, a.redacted())
	}
	first := a.AccessToken
	// N requests: one TokenReview, one client-credentials request.
	for i := 0; i < 20; i++ {
		if b := w.exchange(good, "svc", ""); b.status != http.StatusOK || b.AccessToken != first {
			t.Fatalf("request %d: %d %s (same token expected)", i, b.status, b.redacted())
		}
	}
	if n := w.reviews.Load(); n != 1 {
		t.Errorf("21 requests with one token made %d TokenReviews, want 1", n)
	}
	if n := w.cc.Load(); n != 1 {
		t.Errorf("21 requests made %d client-credentials requests, want 1", n)
	}
	// A changed TokenProvider (new Version) is not handed the token of its
	// old configuration: one new client-credentials request, then cached.
	changed := *w.svc
	changed.Version = "2"
	w.in.reg.Set(&changed)
	for i := range 3 {
		if b := w.exchange(good, "svc", ""); b.status != http.StatusOK {
			t.Fatalf("after the provider changed, request %d: %d %s", i, b.status, b.redacted())
		}
	}
	if n := w.cc.Load(); n != 2 {
		t.Errorf("3 requests after the provider changed made %d client-credentials requests in all, want 2", n)
	}
	// resource works as well as audience, also as the provider's URL.
	if b := w.exchangeForm(url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {good}, "subject_token_type": {TokenTypeJWT},
		"resource": {w.ext + "/api/v1.0/svc"}}); b.status != http.StatusOK {
		t.Fatalf("resource as URL: %d %s", b.status, b.redacted())
	}

	// Another ServiceAccount of the same namespace is not on the list.
	w.exchange(w.saToken("other", testAudience), "svc", "").want(t, http.StatusForbidden, "unauthorized_client", "service_account_not_allowed")
	// A token for another audience (say, the API server's).
	w.exchange(w.saToken("allowed", "https://kubernetes.default.svc"), "svc", "").want(t, http.StatusUnauthorized, "invalid_request", "wrong_audience")
	// Not JWTs.
	w.exchange("not-a-token", "svc", "").want(t, http.StatusUnauthorized, "invalid_request", "malformed_token")
	w.exchange("a.b.c", "svc", "").want(t, http.StatusUnauthorized, "invalid_request", "malformed_token")
	// Expired (the claims say so; nothing to ask the API server).
	w.exchange(forged(time.Now().Add(-time.Minute)), "svc", "").want(t, http.StatusUnauthorized, "invalid_request", "token_expired")
	// Well-formed, right audience, not signed by the cluster: TokenReview
	// refuses it.
	// One token for both requests: two forged at different instants differ
	// when a second boundary falls between them (exp is in seconds).
	forgery := forged(time.Now().Add(time.Hour))
	before := w.reviews.Load()
	w.exchange(forgery, "svc", "").want(t, http.StatusUnauthorized, "invalid_request", "token_rejected")
	if w.reviews.Load() != before+1 {
		t.Errorf("a forged token should be reviewed once")
	}
	// Refusals are cached briefly too.
	w.exchange(forgery, "svc", "").want(t, http.StatusUnauthorized, "invalid_request", "token_rejected")
	if w.reviews.Load() != before+1 {
		t.Errorf("a refused token should not be reviewed again at once")
	}
	// Unknown provider, bad requests.
	w.exchange(good, "nope", "").want(t, http.StatusBadRequest, "invalid_target", "unknown_provider")
	w.exchangeForm(url.Values{"grant_type": {"client_credentials"}}).want(t, http.StatusBadRequest, "unsupported_grant_type", "")
	w.exchangeForm(url.Values{"grant_type": {GrantTypeTokenExchange}, "audience": {"svc"}}).want(t, http.StatusBadRequest, "invalid_request", "")
	w.exchangeForm(url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {good}, "subject_token_type": {"urn:x"}, "audience": {"svc"}}).
		want(t, http.StatusBadRequest, "invalid_request", "unsupported_token_type")
	w.exchangeForm(url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {good}, "subject_token_type": {TokenTypeJWT}, "audience": {"svc"}, "resource": {"alpha"}}).
		want(t, http.StatusBadRequest, "invalid_target", "")
	// Parameters in the URL are refused (they would reach access logs).
	resp, err := w.http.Post(w.in.url+"/api/oauth2/token?subject_token=x", "application/x-www-form-urlencoded", strings.NewReader("grant_type="+url.QueryEscape(GrantTypeTokenExchange)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("query parameters: %d", resp.StatusCode)
	}
	w.checkLogs()
}

// TestWorkloadConcurrentRequests: many workloads asking at once cause one
// TokenReview per token and one client-credentials request in all.
func TestWorkloadConcurrentRequests(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	tok := w.saToken("allowed", testAudience)
	const n = 40
	var wg sync.WaitGroup
	got := make([]exchangeAnswer, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			got[i] = w.exchange(tok, "svc", "")
		})
	}
	close(start)
	wg.Wait()
	for i, a := range got {
		if a.status != http.StatusOK || a.AccessToken != got[0].AccessToken {
			t.Fatalf("request %d: %d %s", i, a.status, a.redacted())
		}
	}
	if c := w.cc.Load(); c != 1 {
		t.Errorf("%d concurrent requests made %d client-credentials requests, want 1", n, c)
	}
	if r := w.reviews.Load(); r != 1 {
		t.Errorf("%d concurrent requests made %d TokenReviews, want 1", n, r)
	}
}

// TestWorkloadTokenExpiryAndRevocation: a token past its exp is refused
// whatever the cache holds; a token whose ServiceAccount was deleted is
// refused once the cached verdict lapses (CacheTTL).
func TestWorkloadTokenExpiryAndRevocation(t *testing.T) {
	ttl := 300 * time.Millisecond
	w := newWorkloadEnv(t, kubeauth.Options{CacheTTL: ttl, NegativeTTL: ttl})
	tok := w.saToken("allowed", testAudience)
	if a := w.exchange(tok, "svc", ""); a.status != http.StatusOK {
		t.Fatalf("%d %s", a.status, a.redacted())
	}
	// Eleven minutes later the ten-minute token has expired.
	w.skew.Store(int64(11 * time.Minute))
	w.exchange(tok, "svc", "").want(t, http.StatusUnauthorized, "invalid_request", "token_expired")
	w.skew.Store(0)
	if a := w.exchange(tok, "svc", ""); a.status != http.StatusOK {
		t.Fatalf("%d %s", a.status, a.redacted())
	}

	// Deleting the ServiceAccount revokes its tokens at the API server,
	// which itself caches successful authentications for 10 s; after that
	// and our CacheTTL the token is refused.
	w.kube.deleteServiceAccount("allowed")
	deleted := time.Now()
	for {
		a := w.exchange(tok, "svc", "")
		if a.status != http.StatusOK {
			a.want(t, http.StatusUnauthorized, "invalid_request", "token_rejected")
			t.Logf("revocation took effect after %v", time.Since(deleted).Round(100*time.Millisecond))
			break
		}
		if time.Since(deleted) > 20*time.Second {
			t.Fatal("the token of a deleted ServiceAccount still works after 20 s")
		}
		time.Sleep(ttl)
	}
	w.checkLogs()
}

// TestGrantsAndDelegatedTokens is the authorization matrix: person /
// workload, with and without grant, other ServiceAccount, other provider,
// revoked, expired.
func TestGrantsAndDelegatedTokens(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	in := w.in
	br, user := w.person(in, "alpha", "beta")
	origin := map[string]string{"Origin": w.ext, "Content-Type": "application/json"}
	post := func(b *browser, provider, body string) response {
		t.Helper()
		req, _ := http.NewRequestWithContext(w.ctx, http.MethodPost, in.url+"/api/v1.0/"+provider+"/grants", strings.NewReader(body))
		for k, v := range origin {
			req.Header.Set(k, v)
		}
		resp, err := b.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return response{status: resp.StatusCode, header: resp.Header, body: rb}
	}
	ns := w.kube.ns

	// Refused grants.
	for _, c := range []struct{ provider, body, code string }{
		{"nope", `{"service_account":"` + ns + `/app"}`, "unknown_provider"},
		{"alpha", `{"service_account":"` + ns + `/ghost"}`, "unknown_service_account"},
		{"alpha", `{"service_account":"nonsense"}`, "invalid_service_account"},
		{"alpha", `{"service_account":{"namespace":"Bad_NS","name":"app"}}`, "invalid_service_account"},
		{"alpha", `{}`, "invalid_service_account"},
		{"alpha", `{"service_account":"` + ns + `/app","expires_at":"2001-01-01T00:00:00Z"}`, "invalid_expires_at"},
		{"alpha", `not json`, "invalid_request"},
	} {
		r := post(br, c.provider, c.body)
		if r.status != http.StatusBadRequest || r.errorCode(t) != c.code {
			t.Errorf("grant %s %s: want 400 %s, got %d %s", c.provider, c.body, c.code, r.status, r.body)
		}
	}
	// A cross-origin page cannot make grants with the cookie.
	if r := br.do(http.MethodPost, in.url+"/api/v1.0/alpha/grants", map[string]string{"Origin": "https://evil.example"}); r.status != http.StatusForbidden {
		t.Errorf("cross-origin grant: %d %s", r.status, r.body)
	}

	// Without a grant: refused.
	app := w.saToken("app", testAudience)
	w.exchange(app, "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")

	// Grant app access to alpha (object form; camelCase accepted).
	r := post(br, "alpha", `{"serviceAccount":{"namespace":"`+ns+`","name":"app"}}`)
	if r.status != http.StatusCreated {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	var g grantJSON
	r.json(t, &g)
	if g.State != "active" || g.Provider != "alpha" || g.ServiceAccount.Namespace != ns || g.ServiceAccount.Name != "app" || g.ExpiresAt != nil || g.ID == 0 {
		t.Fatalf("grant: %s", r.body)
	}

	// With the grant: the person's token, the same one the person gets.
	a := w.exchange(app, "alpha", user)
	if a.status != http.StatusOK {
		t.Fatalf("delegated: %d %s", a.status, a.redacted())
	}
	mine, _ := br.token(in, "alpha", "")
	if a.AccessToken != mine.AccessToken {
		t.Errorf("the delegated token differs from the person's cached one")
	}
	// Refresh semantics are the broker's: an expired token is refreshed once.
	refreshes := w.providers["alpha"].refresh.Load()
	w.expire(user, "alpha")
	a2 := w.exchange(app, "alpha", user)
	if a2.status != http.StatusOK || a2.AccessToken == a.AccessToken {
		t.Fatalf("delegated after expiry: %d %s", a2.status, a2.redacted())
	}
	if w.providers["alpha"].refresh.Load() != refreshes+1 {
		t.Errorf("want one refresh")
	}
	w.credential(user, "alpha")
	// The matrix around the grant.
	w.exchange(w.saToken("other", testAudience), "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	w.exchange(app, "beta", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	w.exchange(app, "alpha", "someone-else").want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	// A service token for app is not implied by a grant.
	w.exchange(app, "svc", "").want(t, http.StatusForbidden, "unauthorized_client", "service_account_not_allowed")

	// A second replica (its own TokenReview cache) serves the grant too...
	ka2, err := kubeauth.New(kubeConfig(t), kubeauth.Options{Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	replica := w.startWorkloadInstance(ka2)
	if a := w.exchangeAt(replica, app, "alpha", user); a.status != http.StatusOK {
		t.Fatalf("delegated at the second replica: %d %s", a.status, a.redacted())
	}

	// Another person cannot see or revoke the grant.
	mallory := w.browser()
	mallory.client.Transport = w.vt
	mallory.sessionFor(in, "mallory")
	if r := mallory.get(in.url + "/api/v1.0/grants"); r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("mallory's grants: %d %s", r.status, r.body)
	}
	del := func(b *browser, id int64) response {
		return b.do(http.MethodDelete, in.url+"/api/v1.0/grants/"+jsonNumber(id), map[string]string{"Origin": w.ext})
	}
	if r := del(mallory, g.ID); r.status != http.StatusNotFound || r.errorCode(t) != "grant_not_found" {
		t.Errorf("mallory revoking: %d %s", r.status, r.body)
	}

	// Revoked: refused at once.
	if r := del(br, g.ID); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	} else {
		var rg grantJSON
		r.json(t, &rg)
		if rg.State != "revoked" || rg.RevokedAt == nil {
			t.Errorf("revoked grant: %s", r.body)
		}
	}
	w.exchange(app, "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	// ...and stops at once there as well: these instances run without the
	// per-replica cache (TestWorkloadGrantCache has the cached case: within
	// CacheTTL on another replica).
	w.exchangeAt(replica, app, "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	if r := del(br, g.ID); r.status != http.StatusOK {
		t.Errorf("revoking twice: %d %s", r.status, r.body)
	}

	// Expiring: works until expires_at, refused right after.
	until := time.Now().Add(1500 * time.Millisecond).UTC()
	r = post(br, "beta", `{"service_account":"`+ns+`/app","expires_at":"`+until.Format(time.RFC3339Nano)+`"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("expiring grant: %d %s", r.status, r.body)
	}
	if a := w.exchange(app, "beta", user); a.status != http.StatusOK {
		t.Fatalf("delegated before expiry: %d %s", a.status, a.redacted())
	}
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	w.exchange(app, "beta", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")

	// The list shows every grant with its state.
	var list []grantJSON
	lr := br.get(in.url + "/api/v1.0/grants")
	lr.json(t, &list)
	states := map[string]string{}
	for _, x := range list {
		states[x.Provider] = x.State
	}
	if len(list) != 2 || states["alpha"] != "revoked" || states["beta"] != "expired" {
		t.Errorf("grants: %s", lr.body)
	}

	// The audit trail: who, which provider, when — never a token.
	var page auditPage
	ar := br.get(in.url + "/api/v1.0/audit?limit=500")
	if ar.status != http.StatusOK {
		t.Fatalf("audit: %d %s", ar.status, ar.body)
	}
	ar.json(t, &page)
	count := map[string]int{}
	for _, e := range page.Events {
		count[e.Action]++
		if e.Action == ActionGrantUse && e.Actor != "serviceaccount:"+ns+"/app" {
			t.Errorf("grant.use by %s", e.Actor)
		}
	}
	if count[ActionGrantCreate] != 2 || count[ActionGrantRevoke] != 1 || count[ActionGrantUse] != 4 {
		t.Errorf("audit counts %v: %s", count, ar.body)
	}
	w.seenMu.Lock()
	for v := range w.seen {
		if len(v) >= 8 && bytes.Contains(ar.body, []byte(v)) {
			t.Errorf("a secret appears in the audit listing")
		}
	}
	w.seenMu.Unlock()
	// Paging.
	if r := br.get(in.url + "/api/v1.0/audit?limit=2"); r.status == http.StatusOK {
		var p auditPage
		r.json(t, &p)
		if len(p.Events) != 2 || p.Next == nil {
			t.Errorf("first page: %s", r.body)
		} else if r2 := br.get(in.url + "/api/v1.0/audit?limit=2&before=" + jsonNumber(*p.Next)); r2.status != http.StatusOK {
			t.Errorf("second page: %d", r2.status)
		}
	}
	if r := br.get(in.url + "/api/v1.0/audit?limit=0"); r.status != http.StatusBadRequest {
		t.Errorf("limit=0: %d", r.status)
	}

	for _, want := range []string{
		"POST /api/v1.0/{provider}/grants 201", "POST /api/v1.0/{provider}/grants 400", "POST /api/v1.0/{provider}/grants 403",
		"GET /api/v1.0/grants 200", "DELETE /api/v1.0/grants/{id} 200", "DELETE /api/v1.0/grants/{id} 404",
		"GET /api/v1.0/audit 200", "GET /api/v1.0/audit 400",
		"POST /api/oauth2/token 200", "POST /api/oauth2/token 403",
	} {
		if !w.vt.seen[want] {
			t.Errorf("the flow did not exercise %s", want)
		}
	}
	w.checkLogs()
}

func jsonNumber(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestTokenExchangeWithPersonsToken: a person's own access token from the
// login issuer is exchanged for their own credential, nobody else's.
func TestTokenExchangeWithPersonsToken(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	in := w.in
	br := w.browser()
	br.loginAt(in, "")
	user := br.whoami(in)
	br.link(in, "alpha")
	at := w.loginAccessToken()
	ask := func(subject string) exchangeAnswer {
		f := url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {at}, "subject_token_type": {TokenTypeAccessToken}, "resource": {"alpha"}}
		if subject != "" {
			f.Set("requested_subject", subject)
		}
		return w.exchangeForm(f)
	}
	a := ask("")
	if a.status != http.StatusOK || a.IssuedTokenType != TokenTypeAccessToken {
		t.Fatalf("own token: %d %s", a.status, a.redacted())
	}
	if mine, _ := br.token(in, "alpha", ""); mine.AccessToken != a.AccessToken {
		t.Errorf("not the person's token")
	}
	if a := ask(user); a.status != http.StatusOK {
		t.Fatalf("own token, naming oneself: %d %s", a.status, a.redacted())
	}
	ask("someone-else").want(t, http.StatusForbidden, "unauthorized_client", "not_own_credential")
	w.exchangeForm(url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {at}, "subject_token_type": {TokenTypeAccessToken}, "resource": {"beta"}}).
		want(t, http.StatusBadRequest, "invalid_grant", "not_linked")
	w.exchangeForm(url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {"garbage"}, "subject_token_type": {TokenTypeAccessToken}, "resource": {"alpha"}}).
		want(t, http.StatusUnauthorized, "invalid_request", "invalid_token")
	// A ServiceAccount token is not a login token, whatever its type says.
	w.exchangeForm(url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {w.saToken("app", testAudience)}, "subject_token_type": {TokenTypeAccessToken}, "resource": {"alpha"}}).
		want(t, http.StatusUnauthorized, "invalid_request", "invalid_token")
	w.checkLogs()
}

// loginAccessToken obtains an access token for the test user from the login
// issuer, as a person's program would.
func (e *env) loginAccessToken() string {
	t := e.t
	t.Helper()
	cfg := oauth2Config(e)
	q, err := e.login.Login(e.ctx, cfg.AuthCodeURL("state-"+time.Now().Format("150405.000000")))
	if err != nil {
		t.Fatal(err)
	}
	e.seeQuery(q)
	tok, err := cfg.Exchange(e.ctx, q.Get("code"))
	if err != nil {
		t.Fatal(err)
	}
	e.see("access_token", tok.AccessToken)
	e.see("refresh_token", tok.RefreshToken)
	return tok.AccessToken
}

func oauth2Config(e *env) *oauth2.Config {
	return &oauth2.Config{ClientID: providertest.ClientID, ClientSecret: e.login.ClientSecret,
		Endpoint:    oauth2.Endpoint{AuthURL: e.login.Issuer + "/authorize", TokenURL: e.login.Issuer + "/oauth/token", AuthStyle: oauth2.AuthStyleInHeader},
		RedirectURL: e.ext + "/api/oidc/callback", Scopes: []string{"openid"}}
}

// TestAuthorizationMatrix: who gets which token, as one table. The person
// has linked alpha and beta; app holds a grant at alpha, a revoked one at
// beta; other holds an expired one at alpha; "allowed" may get svc's
// service tokens; a second namespace has ServiceAccounts of the same names
// and no grants.
func TestAuthorizationMatrix(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	in := w.in
	br := w.browser()
	br.loginAt(in, "")
	user := br.whoami(in)
	br.link(in, "alpha")
	br.link(in, "beta")
	ns := w.kube.ns
	now := time.Now()
	past := now.Add(-time.Minute)
	mk := func(provider, sa string, exp *time.Time) store.Grant {
		g, err := in.store.CreateGrant(w.ctx, store.Grant{UserID: user, Provider: provider, ServiceAccountNamespace: ns, ServiceAccountName: sa, ExpiresAt: exp})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	mk("alpha", "app", nil)
	revoked := mk("beta", "app", nil)
	if err := in.store.RevokeGrant(w.ctx, user, revoked.ID, now); err != nil {
		t.Fatal(err)
	}
	mk("alpha", "other", &past)
	elsewhere := newCluster(t)
	elsewhere.serviceAccount("app")
	elsewhere.serviceAccount("allowed")
	tok := func(k *cluster, sa string) string {
		v := k.token(sa, testAudience)
		w.see("service_account_token", v)
		return v
	}
	person := w.loginAccessToken()

	type req struct {
		subjectToken, subjectType, provider, requested string
	}
	sa := func(k *cluster, name, provider, requested string) req {
		return req{tok(k, name), TokenTypeJWT, provider, requested}
	}
	for _, c := range []struct {
		name   string
		r      req
		status int
		code   string
		reason string
	}{
		{"person, own credential", req{person, TokenTypeAccessToken, "alpha", ""}, 200, "", ""},
		{"person, naming themselves", req{person, TokenTypeAccessToken, "beta", user}, 200, "", ""},
		{"person, someone else's credential", req{person, TokenTypeAccessToken, "alpha", "bob"}, 403, "unauthorized_client", "not_own_credential"},
		{"workload with grant", sa(w.kube, "app", "alpha", user), 200, "", ""},
		{"workload, revoked grant", sa(w.kube, "app", "beta", user), 403, "unauthorized_client", "no_grant"},
		{"workload, expired grant", sa(w.kube, "other", "alpha", user), 403, "unauthorized_client", "no_grant"},
		{"workload without grant", sa(w.kube, "allowed", "alpha", user), 403, "unauthorized_client", "no_grant"},
		{"same name, other namespace", sa(elsewhere, "app", "alpha", user), 403, "unauthorized_client", "no_grant"},
		{"workload, grant of another person", sa(w.kube, "app", "alpha", "bob"), 403, "unauthorized_client", "no_grant"},
		{"service token, allowed", sa(w.kube, "allowed", "svc", ""), 200, "", ""},
		{"service token, not allowed", sa(w.kube, "app", "svc", ""), 403, "unauthorized_client", "service_account_not_allowed"},
		{"service token, other namespace", sa(elsewhere, "allowed", "svc", ""), 403, "unauthorized_client", "service_account_not_allowed"},
		{"unknown provider", sa(w.kube, "app", "gamma", user), 400, "invalid_target", "unknown_provider"},
		{"expired ServiceAccount token", req{forged(past), TokenTypeJWT, "alpha", user}, 401, "invalid_request", "token_expired"},
		{"forged ServiceAccount token", req{forged(now.Add(time.Hour)), TokenTypeJWT, "alpha", user}, 401, "invalid_request", "token_rejected"},
		{"wrong audience", req{w.saToken("app", "other-audience"), TokenTypeJWT, "alpha", user}, 401, "invalid_request", "wrong_audience"},
		{"ServiceAccount token as a person's", req{tok(w.kube, "app"), TokenTypeAccessToken, "alpha", ""}, 401, "invalid_request", "invalid_token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {c.r.subjectToken}, "subject_token_type": {c.r.subjectType}, "audience": {c.r.provider}}
			if c.r.requested != "" {
				f.Set("requested_subject", c.r.requested)
			}
			a := w.exchangeForm(f)
			if c.status == http.StatusOK {
				if a.status != http.StatusOK || a.AccessToken == "" {
					t.Fatalf("want a token, got %d %s", a.status, a.redacted())
				}
				return
			}
			a.want(t, c.status, c.code, c.reason)
		})
	}
	w.checkLogs()
}

// TestWorkloadReviewRenewedAhead: a workload calling steadily does not wait
// for a TokenReview every CacheTTL. A cached acceptance used in the last
// tenth of its life is served at once and renewed by one background review,
// so the call after the first verdict would have lapsed needs no review.
// kubeauth's clock is moved (skew) rather than slept on.
func TestWorkloadReviewRenewedAhead(t *testing.T) {
	ttl := time.Minute
	w := newWorkloadEnv(t, kubeauth.Options{CacheTTL: ttl, NegativeTTL: ttl})
	tok := w.saToken("allowed", testAudience)
	if a := w.exchange(tok, "svc", ""); a.status != http.StatusOK {
		t.Fatalf("%d %s", a.status, a.redacted())
	}
	if r := w.reviews.Load(); r != 1 {
		t.Fatalf("first exchange made %d TokenReviews, want 1", r)
	}
	// Before the last tenth: nothing to renew.
	w.skew.Store(int64(ttl / 2))
	if a := w.exchange(tok, "svc", ""); a.status != http.StatusOK {
		t.Fatalf("%d %s", a.status, a.redacted())
	}
	time.Sleep(200 * time.Millisecond)
	if r := w.reviews.Load(); r != 1 {
		t.Fatalf("%d TokenReviews at half the cache's life, want 1", r)
	}
	// In the last tenth: served from the cache, one review in the
	// background however many calls arrive.
	w.skew.Store(int64(ttl - ttl/20))
	for range 5 {
		if a := w.exchange(tok, "svc", ""); a.status != http.StatusOK {
			t.Fatalf("%d %s", a.status, a.redacted())
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.reviews.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if r := w.reviews.Load(); r != 2 {
		t.Fatalf("%d TokenReviews after calls in the verdict's last tenth, want 2 (one renewal)", r)
	}
	// Past the first verdict's lapse: the renewed one answers.
	w.skew.Store(int64(ttl + ttl/10))
	if a := w.exchange(tok, "svc", ""); a.status != http.StatusOK {
		t.Fatalf("%d %s", a.status, a.redacted())
	}
	if r := w.reviews.Load(); r != 2 {
		t.Errorf("%d TokenReviews after the first verdict lapsed, want 2: the renewal was not used", r)
	}
	w.checkLogs()
}
