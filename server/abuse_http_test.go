package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/settings"
)

// The HTTP layer's defences against abuse (docs/security.md), each against
// a real server on loopback: timeouts, rate limits, cross-site token
// reads, the session cookie's prefix and uniqueness, JSON bodies, and
// /metrics kept off the API's port.

// listenAPI serves srv's API as Serve does (apiServer: its timeouts) on a
// loopback port, returning host:port.
func listenAPI(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.apiServer()
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// withSettings starts one more instance on e's database with its settings
// changed by change (e's own settings stay as they were).
func withSettings(e *env, change func(*settings.Settings)) *instance {
	old := e.settings
	s := *old
	change(&s)
	e.settings = &s
	defer func() { e.settings = old }()
	return e.serve(nil, Options{}, nil)
}

// TestAbuseTimeouts: a request body trickled a byte at a time is cut off
// at HTTP_READ_TIMEOUT, and an idle keep-alive connection is closed at
// HTTP_IDLE_TIMEOUT.
func TestAbuseTimeouts(t *testing.T) {
	e := newEnv(t)
	in := withSettings(e, func(s *settings.Settings) {
		s.HTTPReadTimeout, s.HTTPWriteTimeout, s.HTTPIdleTimeout = time.Second, 5*time.Second, time.Second
	})
	addr := listenAPI(t, in.srv)

	t.Run("slow body", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := io.WriteString(conn, "POST /api/oauth2/token HTTP/1.1\r\nHost: "+addr+
			"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		// One byte every 100 ms, for up to 20 s, until the server hangs up.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for range 200 {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if _, err := conn.Write([]byte("a")); err != nil {
					return
				}
			}
		}()
		_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err = io.ReadAll(conn) // whatever the server answers, then its close
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the connection was still open after %v", time.Since(start))
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the slow body was cut off after %v, want about the 1 s read timeout", d)
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("healthz: %d, close %v", resp.StatusCode, resp.Close)
		}
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("idle connection: %v after %v, want the server to close it (EOF)", err, time.Since(start))
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("idle connection closed after %v, want about the 1 s idle timeout", d)
		}
	})
}

// TestAbuseRateLimits floods the token endpoint as one person, sign-in
// and the token exchange from one address, and sees 429 with Retry-After
// and the metric, while another person, and a signed-in person at the
// flooding address, are still served.
func TestAbuseRateLimits(t *testing.T) {
	e := newEnv(t)
	in := withSettings(e, func(s *settings.Settings) {
		s.RateLimitPerAddress, s.RateLimitPerPrincipal, s.RateLimitBurst = 1, 1, 5
	})
	a, b := e.browser(), e.browser()
	a.sessionFor(in, "user-a")
	b.sessionFor(in, "user-b")

	// Person a: five in the burst (not linked: 400), then 429.
	for i := range 5 {
		if _, r := a.token(in, "alpha", ""); r.status == http.StatusTooManyRequests {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	_, r := a.token(in, "alpha", "")
	if r.status != http.StatusTooManyRequests || r.errorCode(t) != "rate_limited" {
		t.Fatalf("flooding person: %d %s", r.status, r.body)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
		t.Errorf("Retry-After %q, want 1-60 s (one request a minute)", r.header.Get("Retry-After"))
	}
	// Person b, at the same address, is not affected.
	if _, r := b.token(in, "alpha", ""); r.status == http.StatusTooManyRequests {
		t.Fatalf("another person was limited: %d %s", r.status, r.body)
	}

	// Sign-in from one address: five, then 429.
	anon := e.browser()
	for i := range 5 {
		if r := anon.get(in.url + "/api/oidc/login"); r.status != http.StatusFound {
			t.Fatalf("login %d: %d %s", i+1, r.status, r.body)
		}
	}
	if r := anon.get(in.url + "/api/oidc/login"); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("flooded login: %d %s", r.status, r.body)
	}
	// The address's bucket is empty, but a signed-in person there spends
	// their own.
	if _, r := b.token(in, "alpha", ""); r.status == http.StatusTooManyRequests {
		t.Fatalf("a signed-in person at a flooding address was limited: %d %s", r.status, r.body)
	}
	// Unauthenticated requests to the token endpoint and the exchange
	// meet the empty address bucket; the exchange answers in OAuth's shape.
	if r := anon.get(in.url + "/api/v1.0/alpha/token"); r.status != http.StatusTooManyRequests {
		t.Fatalf("anonymous token request from the flooding address: %d %s", r.status, r.body)
	}
	form := url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {"garbage"},
		"subject_token_type": {TokenTypeAccessToken}, "audience": {"alpha"}}
	resp, err := http.Post(in.url+"/api/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), `"reason":"rate_limited"`) ||
		resp.Header.Get("Retry-After") == "" {
		t.Fatalf("exchange from the flooding address: %d %s", resp.StatusCode, body)
	}

	m := scrape(t, in)
	for _, series := range []string{
		`tokenstore_rate_limited_total{kind="principal",route="/api/v1.0/:provider/token"}`,
		`tokenstore_rate_limited_total{kind="address",route="/api/oidc/login"}`,
		`tokenstore_rate_limited_total{kind="address",route="/api/oauth2/token"}`,
	} {
		if !strings.Contains(m, series) {
			t.Errorf("%s missing from /metrics", series)
		}
	}
	if strings.Contains(m, "user-a") || strings.Contains(m, "127.0.0.1") {
		t.Error("a user id or address is in /metrics")
	}
}

// TestAbuseExchangeFloodFailedAuth: requests to the token exchange whose
// subject token is refused spend the address's bucket until it is empty.
func TestAbuseExchangeFloodFailedAuth(t *testing.T) {
	e := newEnv(t)
	in := withSettings(e, func(s *settings.Settings) {
		s.RateLimitPerAddress, s.RateLimitBurst = 1, 3
	})
	form := url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {"garbage"},
		"subject_token_type": {TokenTypeAccessToken}, "audience": {"alpha"}}.Encode()
	var codes []int
	for range 5 {
		resp, err := http.Post(in.url+"/api/oauth2/token", "application/x-www-form-urlencoded", strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	for i, c := range codes {
		if want := i >= 3; (c == http.StatusTooManyRequests) != want {
			t.Fatalf("statuses %v: want refusals (401/400) three times, then 429", codes)
		}
	}
}

// TestAbuseCrossSiteTokenRead: a cross-site navigation carrying the
// session cookie gets no token and forces no refresh; the same request
// from our own page, a CORS request from an allowed origin, and a bearer
// call are served.
func TestAbuseCrossSiteTokenRead(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	br := e.browser()
	br.loginAt(in, "")
	br.link(in, "alpha")
	tp := e.providers["alpha"]

	before := tp.refresh.Load()
	nav := map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
	r := br.do(http.MethodGet, in.url+"/api/v1.0/alpha/token?force_refresh=true", nav)
	if r.status != http.StatusForbidden || r.errorCode(t) != "cross_site_refused" {
		t.Fatalf("cross-site navigation: %d %s", r.status, r.body)
	}
	if n := tp.refresh.Load(); n != before {
		t.Fatalf("a cross-site navigation forced %d refreshes", n-before)
	}
	// A page of another site posing as an allowed origin cannot: the
	// browser sets Origin, and a navigation has none.
	r = br.do(http.MethodGet, in.url+"/api/v1.0/alpha/token", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
	if r.status != http.StatusForbidden {
		t.Fatalf("cross-site request from a foreign origin: %d %s", r.status, r.body)
	}
	for name, hdr := range map[string]map[string]string{
		"same-origin":            {"Sec-Fetch-Site": "same-origin"},
		"typed into the tab":     {"Sec-Fetch-Site": "none"},
		"CORS from CORS_ORIGINS": {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Origin": "https://app.example"},
		"no fetch metadata":      {},
	} {
		if r := br.do(http.MethodGet, in.url+"/api/v1.0/alpha/token?force_refresh=true", hdr); r.status != http.StatusOK {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if tp.refresh.Load() == before {
		t.Error("no forced refresh reached the provider from the allowed requests")
	}
}

// TestAbuseSessionCookie: two session cookies are refused, not the first
// taken; over https the cookie is __Host-tokenstore_session and the bare
// name is not read.
func TestAbuseSessionCookie(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	br := e.browser()
	br.sessionFor(in, "user-a")
	u, _ := url.Parse(in.url)
	cookie := br.client.Jar.Cookies(u)[0].Value

	two := e.browser()
	r := two.do(http.MethodGet, in.url+"/api/whoami", map[string]string{"Cookie": "tokenstore_session=" + cookie + "; tokenstore_session=planted"})
	if r.status != http.StatusBadRequest || r.errorCode(t) != "duplicate_session_cookie" {
		t.Fatalf("two session cookies: %d %s", r.status, r.body)
	}
	r = two.do(http.MethodGet, in.url+"/api/whoami", map[string]string{"Cookie": "other=1; tokenstore_session=" + cookie})
	if r.status != http.StatusOK {
		t.Fatalf("one session cookie among others: %d %s", r.status, r.body)
	}

	secure := withSettings(e, func(s *settings.Settings) { s.SessionCookieSecure = "true" })
	if secure.srv.cookieName != "__Host-tokenstore_session" {
		t.Fatalf("cookie name over https: %q", secure.srv.cookieName)
	}
	r = two.do(http.MethodGet, secure.url+"/api/whoami", map[string]string{"Cookie": "tokenstore_session=" + cookie})
	if r.status != http.StatusForbidden {
		t.Fatalf("the unprefixed cookie was read over https: %d %s", r.status, r.body)
	}
	r = two.do(http.MethodGet, secure.url+"/api/whoami", map[string]string{"Cookie": "__Host-tokenstore_session=" + cookie})
	if r.status != http.StatusOK {
		t.Fatalf("__Host- cookie: %d %s", r.status, r.body)
	}
	// Logout clears it with the attributes the prefix demands.
	r = two.do(http.MethodPost, secure.url+"/api/oidc/logout", map[string]string{"Cookie": "__Host-tokenstore_session=" + cookie})
	sc := r.header.Get("Set-Cookie")
	if r.status != http.StatusOK || !strings.HasPrefix(sc, "__Host-tokenstore_session=;") || !strings.Contains(sc, "Path=/;") ||
		!strings.Contains(sc, "Secure") || strings.Contains(sc, "Domain") {
		t.Fatalf("logout over https: %d %q", r.status, sc)
	}

	for _, c := range []struct {
		name, secure string
		want         string
		fails        bool
	}{
		{"tokenstore_session", "false", "tokenstore_session", false},
		{"tokenstore_session", "true", "__Host-tokenstore_session", false},
		{"__Host-s", "true", "__Host-s", false},
		{"__Host-s", "false", "", true},
	} {
		got, err := sessionCookieName(&settings.Settings{SessionCookieName: c.name, SessionCookieSecure: c.secure})
		if got != c.want || (err != nil) != c.fails {
			t.Errorf("%s secure=%s: %q %v", c.name, c.secure, got, err)
		}
	}
}

// TestAbuseJSONBodies: a form post (text/plain, as a cross-site page can
// send without a preflight) to a JSON route is refused with 415, even
// from our own origin; bodiless writes need no Content-Type.
func TestAbuseJSONBodies(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	br := e.browser()
	br.sessionFor(in, "user-a")
	post := func(path, ct, body string) response {
		t.Helper()
		req, _ := http.NewRequestWithContext(e.ctx, http.MethodPost, in.url+path, strings.NewReader(body))
		req.Header.Set("Origin", e.ext)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := br.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{status: resp.StatusCode, header: resp.Header, body: b}
	}
	grant := `{"service_account":"ns/sa"}`
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""} {
		if r := post("/api/v1.0/alpha/grants", ct, grant); r.status != http.StatusUnsupportedMediaType || r.errorCode(t) != "unsupported_media_type" {
			t.Errorf("grant as %q: %d %s", ct, r.status, r.body)
		}
	}
	if r := post("/api/v1.0/alpha/grants", "application/json; charset=utf-8", grant); r.status == http.StatusUnsupportedMediaType {
		t.Errorf("grant as JSON: %d %s", r.status, r.body)
	}
	if r := post("/api/oidc/logout", "text/plain", "x"); r.status != http.StatusUnsupportedMediaType {
		t.Errorf("logout with a text/plain body: %d %s", r.status, r.body)
	}
	if r := post("/api/v1.0/alpha/revoke", "", ""); r.status == http.StatusUnsupportedMediaType {
		t.Errorf("bodiless revoke: %d %s", r.status, r.body)
	}
}

// TestAbuseMetricsNotOnAPI: the API's port has no /metrics; Serve puts it
// on METRICS_ADDRESS alone.
func TestAbuseMetricsNotOnAPI(t *testing.T) {
	e := newEnv(t)
	in := e.instances[0]
	if r := e.browser().get(in.url + "/metrics"); r.status != http.StatusNotFound {
		t.Fatalf("/metrics on the API's port: %d", r.status)
	}
	in2 := withSettings(e, func(s *settings.Settings) { s.MetricsAddress = "127.0.0.1:0" })
	ms := in2.srv.metricsServer()
	rec := httptest.NewRecorder()
	ms.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "tokenstore_") {
		t.Fatalf("metrics listener: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	ms.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/_health", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("the metrics listener serves the API: %d", rec.Code)
	}
	if s := withSettings(e, func(s *settings.Settings) { s.MetricsAddress = "" }); s.srv.metricsServer() != nil {
		t.Fatal("METRICS_ADDRESS empty still serves metrics")
	}
}
