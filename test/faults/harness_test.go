//go:build faults

// Package faults is tokenstore's fault suite: real parts (a throwaway
// PostgreSQL cluster, zitadel OPs, tokenstore servers on loopback) broken
// on purpose under load. Every test is bounded in time and stops by itself.
// Run with `go test -tags faults ./test/faults/...` (make faults).
package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/observability/metrics"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/cached"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
	"github.com/tokenstore/tokenstore/internal/testutil"
	"github.com/tokenstore/tokenstore/server"
)

// ---------------------------------------------------------------------------
// A throwaway PostgreSQL cluster.

// cluster is a PostgreSQL server of the test's own, on its own port and
// data folder, which the test may stop and start. The machine's shared
// server (127.0.0.1:5432) is never touched.
type cluster struct {
	t     testing.TB
	bin   string
	dir   string
	port  int
	runAs bool // run the tools as the postgres user (we are root)
}

func pgBin(t testing.TB) string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		t.Skip("no /usr/lib/postgresql/*/bin/initdb: install postgresql")
	}
	sort.Strings(m)
	return filepath.Dir(m[len(m)-1])
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// newCluster runs initdb into a fresh folder and starts the server.
func newCluster(t testing.TB) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: pgBin(t), port: freePort(t), runAs: os.Geteuid() == 0}
	// Not t.TempDir: its parents are private to root, and initdb refuses to
	// run as root, so the postgres user must reach the folder.
	dir, err := os.MkdirTemp("", "tokenstore-faults-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if c.runAs {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root and there is no postgres user to run initdb as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	c.run("initdb", "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	c.start()
	t.Cleanup(func() { c.pgctl("stop", "-m", "immediate") })
	return c
}

func (c *cluster) run(tool string, args ...string) {
	c.t.Helper()
	name := filepath.Join(c.bin, tool)
	if c.runAs {
		args = append([]string{"-u", "postgres", "--", name}, args...)
		name = "runuser"
	}
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("%s: %v\n%s", tool, err, out.String())
	}
}

func (c *cluster) pgctl(args ...string) {
	c.t.Helper()
	c.run("pg_ctl", append([]string{"-D", filepath.Join(c.dir, "data"), "-w", "-t", "30"}, args...)...)
}

func (c *cluster) start() {
	c.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", c.port, c.dir)
	c.pgctl("start", "-l", filepath.Join(c.dir, "log"), "-o", opts)
}

// stop shuts the server down fast, as a crash or a failover would look to
// clients: connections are cut.
func (c *cluster) stop() { c.pgctl("stop", "-m", "fast") }

// database is the cluster's own postgres database, migrated: the whole
// cluster is the test's, so it needs no database of its own.
func (c *cluster) database(ctx context.Context) string {
	c.t.Helper()
	return migrated(c.t, ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port))
}

// sharedDatabase is a fresh, migrated database on the machine's shared
// server, for tests that break something other than the database.
func sharedDatabase(t testing.TB, ctx context.Context) string {
	t.Helper()
	return migrated(t, ctx, pgtest.NewDatabase(t))
}

func migrated(t testing.TB, ctx context.Context, dbURL string) string {
	t.Helper()
	m, err := storeopen.NewMigrator(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	return dbURL
}

// ---------------------------------------------------------------------------
// A token provider behind a switchable proxy.

type proxyMode int32

const (
	passThrough proxyMode = iota
	answer500             // the proxy answers every request 500 server_error
)

// tokenProvider is a real OP (zitadel) behind a reverse proxy that counts
// refresh-token grants and refusals and can answer 500 instead.
type tokenProvider struct {
	op       *providertest.OP
	proxy    *httptest.Server
	mode     atomic.Int32
	refresh  atomic.Int64 // refresh_token grants that reached the proxy
	refused  atomic.Int64 // of those, answered invalid_grant by the OP
	provider *providers.Provider
}

func newTokenProvider(t testing.TB, ctx context.Context, id, ext string) *tokenProvider {
	t.Helper()
	tp := &tokenProvider{op: providertest.Start(t, ext+"/api/v1.0/"+id+"/redirect_uri")}
	target, _ := url.Parse(tp.op.Issuer)
	rp := httputil.NewSingleHostReverseProxy(target)
	// Refused dials while the OP is stopped are the point of some tests.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	tp.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if proxyMode(tp.mode.Load()) == answer500 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"error":"server_error"}`)
			return
		}
		if providertest.GrantType(r) != "refresh_token" {
			rp.ServeHTTP(w, r)
			return
		}
		tp.refresh.Add(1)
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		if rec.Code == http.StatusBadRequest && bytes.Contains(rec.Body.Bytes(), []byte("invalid_grant")) {
			tp.refused.Add(1)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(tp.proxy.Close)
	op, err := oidc.NewProvider(ctx, tp.op.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Revocation string `json:"revocation_endpoint"`
	}
	_ = op.Claims(&doc)
	ep := op.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInHeader
	tu, _ := url.Parse(ep.TokenURL)
	ep.TokenURL = tp.proxy.URL + tu.Path
	tp.provider = &providers.Provider{
		ID: id, Source: "test", ClientID: providertest.ClientID, ClientSecret: tp.op.ClientSecret,
		AuthMethod: providers.AuthMethodClientSecretBasic, Endpoint: ep, RevocationURL: doc.Revocation,
		Issuer: tp.op.Issuer, OIDC: op, Verifier: op.Verifier(&oidc.Config{ClientID: providertest.ClientID}),
		Scopes: []string{"openid", "email", "offline_access"}, PKCE: providers.PKCES256, Version: "1",
	}
	return tp
}

// ---------------------------------------------------------------------------
// tokenstore instances on one database.

type deployment struct {
	t         testing.TB
	ctx       context.Context
	dbURL     string
	ext       string
	keys      *crypto.KeyRing
	settings  *settings.Settings
	providers map[string]*tokenProvider
	instances []*instance
	logs      *testutil.SyncBuffer
	first     net.Listener
	// registry, when set, is what the instances serve from (a registry the
	// controllers fill) instead of one holding the providers above as they
	// are; metrics, when set, is the instances' metrics.
	registry *providers.Registry
	metrics  *metrics.Metrics
}

type instance struct {
	srv   *server.Server
	store store.Store
	url   string
	// metricsURL serves the instance's /metrics, apart from the API as
	// METRICS_ADDRESS does.
	metricsURL string
}

// newDeployment prepares keys, settings and token providers for dbURL; the
// first instance's address (EXTERNAL_URL) is fixed now, as the OPs' redirect
// URIs are built from it.
func newDeployment(t testing.TB, ctx context.Context, dbURL string, providerIDs ...string) *deployment {
	t.Helper()
	d := &deployment{t: t, ctx: ctx, dbURL: dbURL, providers: map[string]*tokenProvider{}, logs: &testutil.SyncBuffer{}}
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if d.keys, err = crypto.ParseKeyRing(key); err != nil {
		t.Fatal(err)
	}
	if d.first, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	d.ext = "http://" + d.first.Addr().String()
	for _, id := range providerIDs {
		d.providers[id] = newTokenProvider(t, ctx, id, d.ext)
	}
	d.settings = &settings.Settings{
		ExternalURL: d.ext, SessionCookieName: "tokenstore_session", SessionCookieSecure: "auto", SessionCookieSameSite: "Lax",
		SessionLifetime: 24 * time.Hour, SessionIdleTimeout: time.Hour,
	}
	return d
}

// start starts one more instance, with the per-replica cache as serve runs it.
func (d *deployment) start() *instance {
	t := d.t
	st, err := storeopen.Open(d.ctx, d.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := d.registry
	if reg == nil {
		reg = providers.NewRegistry()
		for _, tp := range d.providers {
			reg.Set(tp.provider)
		}
		reg.MarkReady()
	}
	logger := slog.New(slog.NewTextHandler(d.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := server.New(server.Options{Settings: d.settings, Store: cached.New(st, cached.Options{TTL: cached.DefaultTTL}), Keys: d.keys,
		Providers: reg, Logger: logger, Metrics: d.metrics})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	if d.first != nil {
		hs.Listener.Close()
		hs.Listener, d.first = d.first, nil
	}
	hs.Start()
	t.Cleanup(hs.Close)
	ms := httptest.NewServer(srv.MetricsHandler())
	t.Cleanup(ms.Close)
	in := &instance{srv: srv, store: st, url: hs.URL, metricsURL: ms.URL}
	d.instances = append(d.instances, in)
	return in
}

// person is a signed-in user with a cookie jar.
type person struct {
	d      *deployment
	id     string
	client *http.Client
}

// newPerson creates a session in the store, as login would (the OPs have
// one test user; this is how several people get identities).
func (d *deployment) newPerson(id string) *person {
	t := d.t
	cookie := auth.RandomValue()
	now := time.Now()
	st := d.instances[0].store
	if err := st.CreateSession(d.ctx, store.Session{ID: auth.Hash(cookie), UserID: id,
		Claims: []byte(fmt.Sprintf(`{"sub":%q}`, id)), CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(d.ext)
	jar.SetCookies(u, []*http.Cookie{{Name: "tokenstore_session", Value: cookie, Path: "/"}})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &person{d: d, id: id, client: &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type response struct {
	status int
	body   []byte
	err    error
}

func (r response) code() string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(r.body, &e)
	return e.Error
}

func (p *person) get(u string) response {
	req, err := http.NewRequestWithContext(p.d.ctx, http.MethodGet, u, nil)
	if err != nil {
		return response{err: err}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return response{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: b}
}

// link links the person's account at provider id through instance 0 (the
// callback goes to EXTERNAL_URL), playing the OP's login.
func (p *person) link(id string) {
	t := p.d.t
	t.Helper()
	r, err := p.client.Get(p.d.instances[0].url + "/api/v1.0/" + id + "/authorize")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d", r.StatusCode)
	}
	q, err := p.d.providers[id].op.Login(p.d.ctx, r.Header.Get("Location"))
	if err != nil {
		t.Fatalf("login at %s: %v", id, err)
	}
	cb := p.get(p.d.instances[0].url + "/api/v1.0/" + id + "/redirect_uri?" + q.Encode())
	if cb.status != http.StatusFound && cb.status != http.StatusSeeOther {
		t.Fatalf("link callback: %d %s", cb.status, cb.body)
	}
}

// token asks in for an access token; it returns the token (empty unless 200).
func (p *person) token(in *instance, id, query string) (string, response) {
	u := in.url + "/api/v1.0/" + id + "/token"
	if query != "" {
		u += "?" + query
	}
	r := p.get(u)
	if r.status != http.StatusOK {
		return "", r
	}
	var ta struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(r.body, &ta); err != nil {
		return "", response{status: r.status, err: err}
	}
	return ta.AccessToken, r
}

// tally counts outcomes of requests made under load.
// checkOutagePhases: in every phase each request for a still-valid token
// answered 200; in the first failing phases (the provider failing) every
// forced refresh answered 502 provider_unavailable, and some were tried;
// in the phase after them some forced refresh succeeded again.
func checkOutagePhases(t *testing.T, names []string, valid, forced []tally, failing int) {
	t.Helper()
	for i := range names {
		for k, n := range valid[i].snapshot() {
			if k != "200" {
				t.Errorf("%s: %d requests for a valid token answered %q", names[i], n, k)
			}
		}
	}
	for i := range failing {
		f := forced[i].snapshot()
		for k, n := range f {
			if k != "502 provider_unavailable" {
				t.Errorf("%s: %d forced refreshes answered %q, want 502 provider_unavailable", names[i], n, k)
			}
		}
		if f["502 provider_unavailable"] == 0 {
			t.Errorf("%s: no forced refresh reached the provider", names[i])
		}
	}
	if forced[failing].snapshot()["200"] == 0 {
		t.Error("no forced refresh succeeded after the provider came back")
	}
}

type tally struct {
	mu sync.Mutex
	m  map[string]int
}

func (t *tally) add(k string) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[k]++
	t.mu.Unlock()
}

func (t *tally) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.m))
	for k, v := range t.m {
		out[k] = v
	}
	return out
}

// outcome is a request's tally key: status and error code, or the
// transport error's kind.
func outcome(r response) string {
	if r.err != nil {
		return "transport_error"
	}
	if r.status == http.StatusOK {
		return "200"
	}
	return fmt.Sprintf("%d %s", r.status, r.code())
}

// load runs workers that call fn in a loop until stop is closed or the
// deadline passes, whichever comes first.
func load(workers int, deadline time.Duration, stop <-chan struct{}, fn func(worker int)) *sync.WaitGroup {
	var wg sync.WaitGroup
	end := time.Now().Add(deadline)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				select {
				case <-stop:
					return
				default:
				}
				fn(w)
				time.Sleep(2 * time.Millisecond) // bounded load, not a flood
			}
		}()
	}
	return &wg
}

// snapshotCredentials reads every person's credential at provider.
func snapshotCredentials(t testing.TB, ctx context.Context, st store.Store, people []*person, provider string) map[string]store.Credential {
	t.Helper()
	out := map[string]store.Credential{}
	for _, p := range people {
		c, err := st.GetCredential(ctx, p.id, provider)
		if err != nil {
			t.Fatalf("reading %s's credential: %v", p.id, err)
		}
		out[p.id] = c
	}
	return out
}

func sameCredential(a, b store.Credential) bool {
	eqTime := func(x, y *time.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(*y)) }
	return a.ID == b.ID && a.Version == b.Version && a.KeyID == b.KeyID && a.State == b.State &&
		bytes.Equal(a.RefreshToken, b.RefreshToken) && bytes.Equal(a.AccessToken, b.AccessToken) &&
		a.UpdatedAt.Equal(b.UpdatedAt) && eqTime(a.AccessExpiresAt, b.AccessExpiresAt) &&
		eqTime(a.LastRefreshedAt, b.LastRefreshedAt)
}

// checkNoTokensLogged fails if a token value served during the test shows
// up in the instances' logs.
func (d *deployment) checkNoTokensLogged(seen map[string]bool) {
	d.t.Helper()
	logs := d.logs.String()
	if logs == "" || len(seen) == 0 {
		d.t.Fatalf("nothing to check for secrets: %d bytes of logs, %d token values seen", len(logs), len(seen))
	}
	for v := range seen {
		if len(v) >= 8 && strings.Contains(logs, v) {
			d.t.Error("a token value appears in the logs")
			return
		}
	}
}
