//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

// ---------------------------------------------------------------------------
// An OP that revokes a refresh-token chain when a rotated token comes back.

// chainOP is a real OP (zitadel, which rotates refresh tokens: the one
// presented is deleted, a new one issued) behind a proxy on its token
// endpoint that follows each chain of refresh tokens and, when a token
// that was already rotated is presented again (reuse), revokes the
// chain's current token at the OP, as RFC 9700 §4.14.2 has providers do.
// Requests are finished at the OP even when the caller has gone away (a
// provider does not know its client died), so the proxy always knows each
// chain's head. Tokens are kept in memory only; nothing is logged.
type chainOP struct {
	op         *providertest.OP
	srv        *httptest.Server
	tokenPath  string
	revocation string

	inflight atomic.Int64 // token requests being handled
	refreshN atomic.Int64 // refresh grants received
	refreshO atomic.Int64 // of those, answered 200 (a rotation happened)
	refused  atomic.Int64 // of those, answered invalid_grant

	mu       sync.Mutex
	chainOf  map[string]int    // refresh token -> chain
	head     map[int]string    // chain -> the refresh token the OP holds now
	accessOf map[string]string // refresh token -> access token issued with it
	revoked  map[int]bool      // chains revoked after a reuse
	issued   map[string]bool   // every token value issued, for the log check
	chains   int
}

func newChainOP(t *testing.T, redirectURL string) *chainOP {
	t.Helper()
	c := &chainOP{op: providertest.Start(t, redirectURL), chainOf: map[string]int{}, head: map[int]string{},
		accessOf: map[string]string{}, revoked: map[int]bool{}, issued: map[string]bool{}}
	resp, err := http.Get(c.op.DiscoveryURL())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Token      string `json:"token_endpoint"`
		Revocation string `json:"revocation_endpoint"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || doc.Token == "" || doc.Revocation == "" {
		t.Fatalf("OP discovery: %v (%+v)", err, doc)
	}
	tu, _ := url.Parse(doc.Token)
	c.tokenPath, c.revocation = tu.Path, doc.Revocation
	target, _ := url.Parse(c.op.Issuer)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.inflight.Add(1)
		defer c.inflight.Add(-1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			// The caller died while sending: nothing reached the OP.
			http.Error(w, "incomplete request", http.StatusBadRequest)
			return
		}
		form, _ := url.ParseQuery(string(body))
		grant := form.Get("grant_type")
		presented := form.Get("refresh_token")
		if grant == "refresh_token" {
			c.refreshN.Add(1)
			c.detectReuse(presented)
		}
		// Detached from the caller: the OP finishes what it was sent.
		req := r.Clone(context.WithoutCancel(r.Context()))
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK {
			var ans struct {
				Access  string `json:"access_token"`
				Refresh string `json:"refresh_token"`
			}
			if json.Unmarshal(rec.Body.Bytes(), &ans) == nil && ans.Refresh != "" {
				c.record(grant, presented, ans.Refresh, ans.Access)
			}
			if grant == "refresh_token" {
				c.refreshO.Add(1)
			}
		} else if grant == "refresh_token" && bytes.Contains(rec.Body.Bytes(), []byte("invalid_grant")) {
			c.refused.Add(1)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// record notes a token answer: a new chain for a code exchange, the next
// head of the presented token's chain for a refresh.
func (c *chainOP) record(grant, presented, refresh, access string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.issued[refresh], c.issued[access] = true, true
	c.accessOf[refresh] = access
	chain, ok := c.chainOf[presented]
	if grant != "refresh_token" || !ok {
		c.chains++
		chain = c.chains
	}
	c.chainOf[refresh] = chain
	c.head[chain] = refresh
}

// detectReuse revokes the chain of a presented refresh token that is not
// its chain's head any more.
func (c *chainOP) detectReuse(presented string) {
	c.mu.Lock()
	chain, known := c.chainOf[presented]
	head := c.head[chain]
	reuse := known && head != presented && !c.revoked[chain]
	if reuse {
		c.revoked[chain] = true
	}
	c.mu.Unlock()
	if !reuse {
		return
	}
	f := url.Values{"token": {head}, "token_type_hint": {"refresh_token"}}
	req, _ := http.NewRequest(http.MethodPost, c.revocation, strings.NewReader(f.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(providertest.ClientID, c.op.ClientSecret)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// chainState says where a stored refresh token stands at the OP.
type chainState int

const (
	chainHead    chainState = iota // the token the OP holds: the next refresh works
	chainStale                     // rotated at the OP, the new one never saved: lost
	chainRevoked                   // the chain was revoked after a reuse
	chainUnknown                   // not a token this OP issued
)

func (c *chainOP) state(rt string) (chainState, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	chain, ok := c.chainOf[rt]
	switch {
	case !ok:
		return chainUnknown, 0
	case c.revoked[chain]:
		return chainRevoked, chain
	case c.head[chain] != rt:
		return chainStale, chain
	}
	return chainHead, chain
}

func (c *chainOP) isRevoked(chain int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.revoked[chain]
}

func mustOpen(keys *crypto.KeyRing, owner string, sealed []byte) string {
	v, _ := keys.Open(sealed, crypto.Binding{Owner: owner, Provider: "alpha", Purpose: crypto.PurposeRefreshToken})
	return string(v)
}

func (c *chainOP) revokedChains() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.revoked)
}

func (c *chainOP) accessIssuedWith(rt string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accessOf[rt]
}

func (c *chainOP) issuedValues() map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]bool, len(c.issued))
	for k := range c.issued {
		out[k] = true
	}
	return out
}

// waitIdle waits until no token request is being handled.
func (c *chainOP) waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("token requests still in flight at the OP 30 s after the kill")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// `tokenstore serve` processes.

type serveProc struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
	log  string
}

func (p *serveProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

type serveRunner struct {
	t      *testing.T
	bin    string
	env    []string
	logDir string
	n      int
	procs  []*serveProc
}

// buildTokenstore builds ./cmd/tokenstore once into dir.
func buildTokenstore(t *testing.T, dir string) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tokenstore")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/tokenstore")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/tokenstore: %v\n%s", err, out)
	}
	return bin
}

func (s *serveRunner) start() *serveProc {
	t := s.t
	t.Helper()
	s.n++
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := &serveProc{url: "http://" + addr, done: make(chan struct{}), log: filepath.Join(s.logDir, fmt.Sprintf("serve-%03d.log", s.n))}
	lf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(s.bin, "serve")
	p.cmd.Env = append(append([]string(nil), s.env...), "TOKENSTORE_LISTEN_ADDRESS="+addr)
	p.cmd.Stdout, p.cmd.Stderr = lf, lf
	if err := p.cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("starting tokenstore serve: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	return p
}

// waitReady polls /readyz until it answers 200.
func (s *serveRunner) waitReady(p *serveProc) time.Duration {
	t := s.t
	t.Helper()
	began := time.Now()
	c := &http.Client{Timeout: 2 * time.Second}
	for {
		if p.exited() {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("tokenstore serve exited before it was ready; its log:\n%s", tailLines(string(b), 30))
		}
		if resp, err := c.Get(p.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(began)
			}
		}
		if time.Since(began) > 30*time.Second {
			t.Fatal("tokenstore serve not ready within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (p *serveProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop ends a process as the kubelet would, SIGTERM then SIGKILL.
func (p *serveProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

// serveAppName is the application_name of the serve processes' database
// connections.
const serveAppName = "tokenstore-faults-serve"

// waitBackendsGone waits until the server has no connection of a serve
// process left, and returns how long after the kill that was.
func waitBackendsGone(t *testing.T, ctx context.Context, conn *pgx.Conn, killedAt time.Time) time.Duration {
	t.Helper()
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, serveAppName).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return time.Since(killedAt)
		}
		if time.Since(killedAt) > 30*time.Second {
			t.Fatalf("%d connections of a killed serve process still open at the database 30 s later", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// People, through any serve process.

type killPerson struct {
	id     string
	cookie string
	client *http.Client
	chains map[int]bool // the OP chains this person's links started
}

func newKillPerson(t *testing.T, ctx context.Context, st store.Store, id string) *killPerson {
	t.Helper()
	cookie := auth.RandomValue()
	now := time.Now()
	if err := st.CreateSession(ctx, store.Session{ID: auth.Hash(cookie), UserID: id,
		Claims: []byte(fmt.Sprintf(`{"sub":%q}`, id)), CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(2 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	// Cookies are not bound to a port: every serve process on 127.0.0.1
	// gets this one.
	jar.SetCookies(&url.URL{Scheme: "http", Host: "127.0.0.1"}, []*http.Cookie{{Name: "tokenstore_session", Value: cookie, Path: "/"}})
	return &killPerson{id: id, cookie: cookie, chains: map[int]bool{}, client: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (p *killPerson) do(ctx context.Context, c *http.Client, u string) response {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return response{err: err}
	}
	if c == nil {
		c = p.client
	} else {
		req.AddCookie(&http.Cookie{Name: "tokenstore_session", Value: p.cookie})
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: b}
}

// link links the person's account at alpha through serve process sp,
// playing the OP's login, as a person does after reauthorization_required.
func (p *killPerson) link(t *testing.T, ctx context.Context, op *chainOP, sp *serveProc, st store.Store) {
	t.Helper()
	r, err := p.client.Get(sp.url + "/api/v1.0/alpha/authorize")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d", r.StatusCode)
	}
	q, err := op.op.Login(ctx, r.Header.Get("Location"))
	if err != nil {
		t.Fatalf("login at the OP: %v", err)
	}
	cb := p.do(ctx, nil, sp.url+"/api/v1.0/alpha/redirect_uri?"+q.Encode())
	if cb.status != http.StatusFound && cb.status != http.StatusSeeOther {
		t.Fatalf("link callback: %d %s", cb.status, cb.body)
	}
}

// ---------------------------------------------------------------------------

// credentialCheck opens every sealed field of c and checks that the row is
// whole: both ciphertexts under the primary key, a refresh token the OP
// issued in one of the person's chains, and, for an active credential, the
// access token the OP issued together with that refresh token (so the row
// is one token answer, not parts of two). It returns the refresh token's
// state at the OP, or an error describing what is wrong with the row.
func credentialCheck(keys *crypto.KeyRing, op *chainOP, p *killPerson, c store.Credential) (chainState, error) {
	if c.UserID != p.id || c.Provider != "alpha" {
		return 0, fmt.Errorf("row addressed to %s/%s", c.UserID, c.Provider)
	}
	if c.KeyID != keys.PrimaryKeyID() {
		return 0, errors.New("key id is not the primary key's")
	}
	rt, err := keys.Open(c.RefreshToken, crypto.Binding{Owner: p.id, Provider: "alpha", Purpose: crypto.PurposeRefreshToken})
	if err != nil {
		return 0, fmt.Errorf("refresh token does not open: %w", err)
	}
	st, chain := op.state(string(rt))
	if st == chainUnknown {
		return 0, errors.New("refresh token is not one the OP issued")
	}
	if !p.chains[chain] {
		return 0, errors.New("refresh token belongs to another person's chain")
	}
	switch c.State {
	case store.StateActive:
		at, err := keys.Open(c.AccessToken, crypto.Binding{Owner: p.id, Provider: "alpha", Purpose: crypto.PurposeAccessToken})
		if err != nil {
			return 0, fmt.Errorf("access token does not open: %w", err)
		}
		if want := op.accessIssuedWith(string(rt)); string(at) != want {
			return 0, errors.New("access token was not issued with the stored refresh token (half-written row)")
		}
		if c.AccessExpiresAt == nil || c.StateReason != "" {
			return 0, errors.New("active row without access expiry, or with a state reason")
		}
	case store.StateNeedsReauth:
		if len(c.AccessToken) != 0 {
			return 0, errors.New("needs_reauth row still holds an access token")
		}
		if c.StateReason == "" {
			return 0, errors.New("needs_reauth row without a reason")
		}
	default:
		return 0, fmt.Errorf("unknown state %q", c.State)
	}
	return st, nil
}

// TestSIGKILLDuringRefresh kills `tokenstore serve` with SIGKILL while
// several clients force refreshes, 50 times, against an OP that rotates
// refresh tokens and revokes a chain on reuse. After every kill each
// credential row must open with the key ring and be one whole token answer,
// versions must only grow, and audit events must match the rows. At the
// end a fresh process refreshes every credential: it works, or, where a
// kill landed after the OP rotated the token but before the new one was
// committed (so the stored one was spent), the credential is marked
// needs_reauth and the answer says to link again. No credential may be
// unreadable.
func TestSIGKILLDuringRefresh(t *testing.T) {
	began := time.Now()
	kills := 50
	if v, err := strconv.Atoi(os.Getenv("FAULTS_KILLS")); err == nil && v > 0 {
		kills = min(v, 500)
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("FAULTS_SEED"), 10, 64); err == nil {
		seed = v
	}
	t.Logf("seed %d (FAULTS_SEED to repeat the kill delays and request mix)", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// The OP logs every refused refresh token (dozens here) on the
	// process's default logger; the test counts them instead.
	prevLog := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { slog.SetDefault(prevLog) })
	ctx := testContext(t, 4*time.Minute)

	work := t.TempDir()
	logDir := filepath.Join(work, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := buildTokenstore(t, work)
	built := time.Since(began)

	const ext = "http://tokenstore.faults.test"
	const people = 12
	const workers = 8
	op := newChainOP(t, ext+"/api/v1.0/alpha/redirect_uri")
	loginOP := providertest.Start(t, ext+"/api/oidc/callback")
	dbURL := sharedDatabase(t, ctx)
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := crypto.ParseKeyRing(key)
	if err != nil {
		t.Fatal(err)
	}
	manifests := filepath.Join(work, "providers.yaml")
	if err := os.WriteFile(manifests, []byte(fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: alpha-client
stringData:
  clientSecret: %s
---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: alpha
spec:
  issuer: %s
  endpoints:
    token: %s
  clientID: %s
  clientSecretRef:
    name: alpha-client
    key: clientSecret
`, op.op.ClientSecret, op.op.Issuer, op.srv.URL+op.tokenPath, providertest.ClientID)), 0o600); err != nil {
		t.Fatal(err)
	}
	sr := &serveRunner{t: t, bin: bin, logDir: logDir}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TOKENSTORE_") && !strings.HasPrefix(kv, "KUBECONFIG=") {
			sr.env = append(sr.env, kv)
		}
	}
	// The serve processes' connections carry their own application_name,
	// so that the test can see when the server has dropped a dead one's.
	du, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := du.Query()
	q.Set("application_name", serveAppName)
	du.RawQuery = q.Encode()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	sr.env = append(sr.env,
		// Several processes on one machine: no metrics listener (serve's
		// :9090 would clash) and no rate limits (the suite's load is one
		// person's).
		"TOKENSTORE_METRICS_ADDRESS=",
		"TOKENSTORE_RATE_LIMIT_PER_ADDRESS=0",
		"TOKENSTORE_RATE_LIMIT_PER_PRINCIPAL=0",
		"TOKENSTORE_DATABASE_URL="+du.String(),
		"TOKENSTORE_CRYPTOKEY="+key,
		"TOKENSTORE_EXTERNAL_URL="+ext,
		"TOKENSTORE_PROVIDERS_FILE="+manifests,
		"TOKENSTORE_OIDC_DISCOVERY_URL="+loginOP.DiscoveryURL(),
		"TOKENSTORE_OIDC_CLIENT_ID="+providertest.ClientID,
		"TOKENSTORE_OIDC_CLIENT_SECRET="+loginOP.ClientSecret,
		// The background refresher would refresh on its own schedule; off,
		// every refresh is one the test asked for.
		"TOKENSTORE_REFRESHER_INTERVAL=0",
		"TOKENSTORE_LOG_FORMAT=json",
		"TOKENSTORE_LOG_LEVEL=info",
	)
	t.Cleanup(func() {
		for _, p := range sr.procs {
			if !p.exited() {
				p.kill()
			}
		}
	})

	st, err := storeopen.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	var ps []*killPerson
	for i := range people {
		ps = append(ps, newKillPerson(t, ctx, st, fmt.Sprintf("person-%02d", i)))
	}
	// linkAll links the given people through sp and notes their new chains.
	links := 0
	linkAll := func(sp *serveProc, who []*killPerson) {
		for _, p := range who {
			p.link(t, ctx, op, sp, st)
			c, err := st.GetCredential(ctx, p.id, "alpha")
			if err != nil {
				t.Fatalf("%s's credential after linking: %v", p.id, err)
			}
			rt, err := keys.Open(c.RefreshToken, crypto.Binding{Owner: p.id, Provider: "alpha", Purpose: crypto.PurposeRefreshToken})
			if err != nil {
				t.Fatalf("%s's new credential does not open: %v", p.id, err)
			}
			s, chain := op.state(string(rt))
			if s != chainHead {
				t.Fatalf("%s's new credential does not hold the OP's new refresh token (%d)", p.id, s)
			}
			p.chains[chain] = true
			links++
		}
	}
	first := sr.start()
	sr.waitReady(first)
	linkAll(first, ps)
	first.stop()
	waitBackendsGone(t, ctx, conn, time.Now())
	t.Logf("binary built in %v; %d people linked through serve, %v since the start", built.Round(time.Millisecond), people,
		time.Since(began).Round(time.Millisecond))

	// lastVersion etc. are what the previous snapshot saw, for monotonicity.
	type seenRow struct {
		version   int64
		updated   time.Time
		refreshed time.Time
	}
	last := map[string]seenRow{}
	unreadable := 0
	// snapshot checks every row between processes and returns how many
	// hold a refresh token the OP has already rotated away (lost), and the
	// people whose credential needs re-authorization.
	history := map[string][]string{} // per person, what each snapshot saw, for failures
	lostOf := map[string]int{}
	snapshot := func(round int) (stale map[string]bool, dead []*killPerson) {
		stale = map[string]bool{}
		for _, p := range ps {
			c, err := st.GetCredential(ctx, p.id, "alpha")
			if err != nil {
				t.Fatalf("round %d: reading %s's credential: %v", round, p.id, err)
			}
			s, err := credentialCheck(keys, op, p, c)
			if err != nil {
				unreadable++
				t.Errorf("round %d: %s's credential: %v", round, p.id, err)
				continue
			}
			prev, ok := last[p.id]
			var lr time.Time
			if c.LastRefreshedAt != nil {
				lr = *c.LastRefreshedAt
			}
			if ok && (c.Version < prev.version || c.UpdatedAt.Before(prev.updated)) {
				t.Errorf("round %d: %s's credential went back: version %d -> %d", round, p.id, prev.version, c.Version)
			}
			// A re-link clears last_refreshed_at; otherwise it only grows.
			if ok && c.Version > prev.version && !lr.IsZero() && lr.Before(prev.refreshed) {
				t.Errorf("round %d: %s's last refresh went back", round, p.id)
			}
			last[p.id] = seenRow{c.Version, c.UpdatedAt, lr}
			_, chain := op.state(mustOpen(keys, p.id, c.RefreshToken))
			history[p.id] = append(history[p.id], fmt.Sprintf("r%d v%d %s chain %d:%d", round, c.Version, c.State, chain, s))
			if s != chainHead && c.State == store.StateActive {
				stale[p.id] = true
			}
			if c.State == store.StateNeedsReauth {
				dead = append(dead, p)
			}
		}
		return stale, dead
	}
	snapshot(0)
	versions := func() map[string]int64 {
		out := map[string]int64{}
		for _, p := range ps {
			if c, err := st.GetCredential(ctx, p.id, "alpha"); err == nil {
				out[p.id] = c.Version
			}
		}
		return out
	}

	// The kills.
	type roundStat struct {
		delay                     time.Duration
		ready                     time.Duration
		settle                    time.Duration
		commitsAfterKill          int
		inflightAtKill            int64
		rotatedNotSaved           int // stale rows this round added
		cut, served, reauth, errs int
		grants, grantsOK          int64
	}
	var stats []roundStat
	var staleBefore map[string]bool
	var reauthRelinks int
	var readyTimes []time.Duration
	for round := 1; round <= kills; round++ {
		sp := sr.start()
		rs := roundStat{ready: sr.waitReady(sp)}
		readyTimes = append(readyTimes, rs.ready)
		// People told reauthorization_required link again, as they would.
		_, dead := snapshot(round)
		if len(dead) > 0 {
			linkAll(sp, dead)
			reauthRelinks += len(dead)
		}
		staleBefore, _ = snapshot(round)
		g0, o0 := op.refreshN.Load(), op.refreshO.Load()
		tr := &http.Transport{MaxIdleConnsPerHost: workers}
		client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		var killed atomic.Bool
		var cut, served, reauth, errs atomic.Int64
		var wg sync.WaitGroup
		picks := make([][]int, workers)
		for w := range picks {
			for range 64 {
				picks[w] = append(picks[w], rng.IntN(people))
			}
		}
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !killed.Load(); i++ {
					p := ps[picks[w][i%len(picks[w])]]
					r := p.do(ctx, client, sp.url+"/api/v1.0/alpha/token?min_valid=86400")
					switch {
					case r.err != nil:
						if !killed.Load() || !strings.Contains(r.err.Error(), "connection refused") {
							cut.Add(1) // in flight when the process died
						}
						return
					case r.status == http.StatusOK:
						served.Add(1)
					case r.status == http.StatusConflict && r.code() == "reauthorization_required":
						reauth.Add(1)
					default:
						if errs.Add(1) <= 3 {
							t.Errorf("round %d: token answer %d %s", round, r.status, r.body)
						}
					}
				}
			}()
		}
		// A few to tens of milliseconds: long enough for refreshes to be
		// at the OP or between its answer and the commit, short enough
		// that most are.
		rs.delay = time.Duration(2+rng.IntN(58)) * time.Millisecond
		time.Sleep(rs.delay)
		rs.inflightAtKill = op.inflight.Load()
		killed.Store(true)
		sp.kill()
		killedAt := time.Now()
		wg.Wait()
		tr.CloseIdleConnections()
		op.waitIdle(t)
		// What the dead process sent before it died is still executed
		// by the server: a COMMIT in its socket lands after the kill.
		// The rows are read once its connections are gone.
		atKill := versions()
		rs.settle = waitBackendsGone(t, ctx, conn, killedAt)
		for id, v := range versions() {
			if v != atKill[id] {
				rs.commitsAfterKill++
			}
		}
		rs.cut, rs.served, rs.reauth, rs.errs = int(cut.Load()), int(served.Load()), int(reauth.Load()), int(errs.Load())
		rs.grants, rs.grantsOK = op.refreshN.Load()-g0, op.refreshO.Load()-o0
		// A row turns stale only when a kill lands between the OP's answer
		// and the commit; one stale before stays stale or is found (and
		// marked needs_reauth) by a later refresh.
		staleNow, _ := snapshot(round)
		for id := range staleNow {
			if !staleBefore[id] {
				rs.rotatedNotSaved++
				lostOf[id]++
			}
		}
		stats = append(stats, rs)
		if t.Failed() {
			t.Fatalf("round %d failed; logs in %s", round, logDir)
		}
	}

	// Figures.
	var atOP, interrupted, lostRounds, cutTotal, servedTotal, reauthTotal, lostTotal int
	var grantsTotal, grantsOKTotal int64
	var afterKill, afterKillRounds int
	var settles []time.Duration
	for _, rs := range stats {
		afterKill += rs.commitsAfterKill
		if rs.commitsAfterKill > 0 {
			afterKillRounds++
		}
		settles = append(settles, rs.settle)
		if rs.inflightAtKill > 0 {
			atOP++
		}
		if rs.inflightAtKill > 0 || rs.cut > 0 || rs.rotatedNotSaved > 0 {
			interrupted++
		}
		if rs.rotatedNotSaved > 0 {
			lostRounds++
		}
		cutTotal += rs.cut
		servedTotal += rs.served
		reauthTotal += rs.reauth
		lostTotal += rs.rotatedNotSaved
		grantsTotal += rs.grants
		grantsOKTotal += rs.grantsOK
	}
	sort.Slice(readyTimes, func(i, j int) bool { return readyTimes[i] < readyTimes[j] })
	sort.Slice(settles, func(i, j int) bool { return settles[i] < settles[j] })
	t.Logf("after %d of the kills %d commits sent by the dead process landed after the kill; its connections were gone "+
		"from the server %v after the kill (median; max %v)", afterKillRounds, afterKill,
		settles[len(settles)/2].Round(time.Millisecond), settles[len(settles)-1].Round(time.Millisecond))
	t.Logf("%d kills: %d landed with refreshes in flight (%d with a refresh grant at the OP at that instant), %d left a rotated refresh token unsaved (%d tokens); "+
		"%d token requests served, %d cut by the kill, %d answered reauthorization_required; %d refresh grants at the OP, %d rotated; "+
		"%d re-links after reauthorization_required; start to ready median %v",
		kills, interrupted, atOP, lostRounds, lostTotal, servedTotal, cutTotal, reauthTotal, grantsTotal, grantsOKTotal,
		reauthRelinks, readyTimes[len(readyTimes)/2].Round(time.Millisecond))
	if atOP == 0 && lostTotal == 0 {
		t.Error("no kill landed while a refresh grant was at the OP or before its answer was committed")
	}
	if interrupted < kills/5 {
		t.Errorf("only %d of %d kills landed with refreshes in flight: the kills are not testing refreshes", interrupted, kills)
	}
	if servedTotal == 0 || grantsOKTotal == 0 {
		t.Fatal("no refresh was served between the kills")
	}

	// Every credential through a fresh process: it refreshes, or the OP
	// refuses its spent refresh token and it is marked for re-linking.
	staleSet, _ := snapshot(kills + 1)
	stale := len(staleSet)
	final := sr.start()
	sr.waitReady(final)
	var works, needsReauth, other []string
	for _, p := range ps {
		c, _ := st.GetCredential(ctx, p.id, "alpha")
		rt, _ := keys.Open(c.RefreshToken, crypto.Binding{Owner: p.id, Provider: "alpha", Purpose: crypto.PurposeRefreshToken})
		before, _ := op.state(string(rt))
		r := p.do(ctx, nil, final.url+"/api/v1.0/alpha/token?min_valid=86400")
		switch {
		case r.status == http.StatusOK:
			works = append(works, p.id)
			if before != chainHead {
				t.Errorf("%s: refreshed with a refresh token the OP had rotated away (%d)", p.id, before)
			}
		case r.status == http.StatusConflict && r.code() == "reauthorization_required":
			needsReauth = append(needsReauth, p.id)
			var e struct {
				Message      string `json:"message"`
				AuthorizeURL string `json:"authorize_url"`
			}
			_ = json.Unmarshal(r.body, &e)
			if !strings.Contains(e.Message, "link the account again") {
				t.Errorf("%s: reauthorization_required without a clear message: %s", p.id, r.body)
			}
			if before == chainHead && c.State == store.StateActive {
				t.Errorf("%s: marked needs_reauth although its refresh token was still good at the OP", p.id)
			}
		default:
			other = append(other, p.id)
			t.Errorf("%s: final refresh answered %d %s (%v)", p.id, r.status, r.body, r.err)
		}
	}
	final.stop()
	waitBackendsGone(t, ctx, conn, time.Now())
	t.Logf("final refresh through a fresh process: %d of %d work, %d need re-authorization (%d of them held a rotated-away token "+
		"not yet noticed), %d other", len(works), people, len(needsReauth), stale, len(other))
	staleAfter, _ := snapshot(kills + 2)
	if len(staleAfter) != 0 {
		t.Errorf("%d credentials still hold a spent refresh token while marked active", len(staleAfter))
	}
	// tokenstore presented a rotated-away refresh token only where a kill
	// had lost its successor: the OP saw exactly one reuse per lost token.
	if rev := op.revokedChains(); rev != lostTotal {
		t.Errorf("the OP revoked %d chains after reuse, but %d rotated tokens were lost to kills", rev, lostTotal)
		for _, p := range ps {
			n := 0
			for ch := range p.chains {
				if op.isRevoked(ch) {
					n++
				}
			}
			if n != lostOf[p.id] {
				t.Logf("%s: %d chains revoked, %d losses seen: %s", p.id, n, lostOf[p.id], strings.Join(history[p.id], ", "))
			}
		}
	} else {
		t.Logf("the OP saw %d reuses of a refresh token, one per token lost to a kill; %d refreshes refused", rev, op.refused.Load())
	}

	// The audit trail against the rows: every write of a credential bumps
	// its version by one; links and refreshes record the version they
	// wrote, a needs_reauth marking is recorded without one. The event is
	// written in the write's own transaction, so a kill keeps both or
	// neither: one event per write, none for a write that did not happen.
	var audited, writes, unaudited int
	for _, p := range ps {
		c, err := st.GetCredential(ctx, p.id, "alpha")
		if err != nil {
			t.Fatal(err)
		}
		evs, err := st.ListAudit(ctx, p.id, 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		versions := map[int64]bool{}
		marks := 0
		for _, e := range evs {
			switch e.Action {
			case broker.ActionNeedsReauth:
				marks++
				continue
			case broker.ActionLink, broker.ActionRefresh:
			default:
				continue
			}
			var d struct {
				Version int64 `json:"version"`
			}
			if err := json.Unmarshal(e.Detail, &d); err != nil || d.Version <= 0 {
				marks++ // an event that names no version: counted, not matched
				continue
			}
			if d.Version > c.Version {
				t.Errorf("%s: %s event for version %d, but the row is at %d", p.id, e.Action, d.Version, c.Version)
			}
			if versions[d.Version] {
				t.Errorf("%s: two events for version %d", p.id, d.Version)
			}
			versions[d.Version] = true
		}
		n := len(versions) + marks
		if int64(n) > c.Version {
			t.Errorf("%s: %d audit events for %d writes", p.id, n, c.Version)
		}
		audited += n
		writes += int(c.Version)
		unaudited += int(c.Version) - n
	}
	t.Logf("audit: %d writes of %d credentials, %d audited", writes, people, audited)
	if unaudited != 0 {
		t.Errorf("%d credential writes have no audit event", unaudited)
	}

	// Whole-table checks straight in SQL: one row per person, none without
	// a refresh token.
	var rows, empty int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE refresh_token = ''::bytea) FROM credentials`).Scan(&rows, &empty); err != nil {
		t.Fatal(err)
	}
	if rows != people || empty != 0 {
		t.Errorf("credentials table: %d rows (want %d), %d without a refresh token", rows, people, empty)
	}
	if unreadable != 0 {
		t.Errorf("%d unreadable credential rows", unreadable)
	}

	// No token value in any process's log.
	issued := op.issuedValues()
	var logs bytes.Buffer
	for _, p := range sr.procs {
		b, err := os.ReadFile(p.log)
		if err != nil {
			t.Fatalf("reading a serve process's log for the secret check: %v", err)
		}
		logs.Write(b)
	}
	if logs.Len() == 0 || len(issued) == 0 {
		t.Fatalf("nothing to check for secrets: %d bytes of serve logs, %d token values issued", logs.Len(), len(issued))
	}
	for v := range issued {
		if len(v) >= 8 && bytes.Contains(logs.Bytes(), []byte(v)) {
			t.Error("a token value appears in the serve logs")
			break
		}
	}
	if bytes.Contains(logs.Bytes(), []byte(op.op.ClientSecret)) || bytes.Contains(logs.Bytes(), []byte(key)) {
		t.Error("a secret appears in the serve logs")
	}
	t.Logf("%d serve processes, binary built in %v, whole test %v", len(sr.procs), built.Round(time.Millisecond),
		time.Since(began).Round(time.Millisecond))
}
