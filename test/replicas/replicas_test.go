// Package replicas runs tokenstore the way a Deployment with several
// replicas does, at process level (this machine has no kubelet): real
// `tokenstore serve` processes against one real kube-apiserver (envtest) and
// one real PostgreSQL, with real OpenID Providers (zitadel's op package)
// for login and for the token provider.
//
// It shows that two replicas migrating at the same moment are safe, that
// every replica serves a complete registry while exactly one holds the
// status-writer Lease, that sessions and refresh serialization go through
// the database, and that a rolling restart (SIGTERM, replacement, twice)
// loses no request a client retries and no credential, and hands the Lease
// and the status writes to a live replica.
package replicas

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
	"github.com/tokenstore/tokenstore/internal/testutil"
	sqlfiles "github.com/tokenstore/tokenstore/sql"
)

const (
	// leaseName is the leader-election Lease of internal/app/sources.go.
	leaseName = "tokenstore-status-writer"
	// providerID is the TokenProvider's name, the id in every API path.
	providerID = "alpha"
	// externalURL is the one public base URL all replicas share, as behind
	// a Service; the test calls each replica on its own address.
	externalURL = "http://tokenstore.replicas.test"
	// grace is the terminationGracePeriodSeconds a replica gets to exit.
	grace = 30 * time.Second
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// eventually polls cond until it returns nil or timeout passes, then fails
// with cond's last error.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replica is one `tokenstore serve` process.
type replica struct {
	name    string
	url     string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error // valid once done is closed
}

func (r *replica) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// logLines returns the replica's JSON log records (stderr), skipping lines
// that are not JSON.
func (r *replica) logLines() []map[string]any {
	data, err := os.ReadFile(r.logPath)
	if err != nil {
		return nil
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// countMsg counts log records whose msg is msg.
func (r *replica) countMsg(msg string) int {
	n := 0
	for _, l := range r.logLines() {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

// acquiredLease reports whether this process ever became the leader.
func (r *replica) acquiredLease() bool {
	return r.countMsg("Successfully acquired lease") > 0
}

func (r *replica) tail(n int) string {
	data, _ := os.ReadFile(r.logPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// harness is the whole deployment: API server, database, OPs, replicas.
type harness struct {
	t      *testing.T
	ctx    context.Context
	bin    string
	logDir string
	env    []string
	kube   client.Client
	ns     string

	mu       sync.Mutex
	replicas []*replica // every replica started, in order
	live     []*replica // replicas a Service would send traffic to

	// seen are secret values the test handled; none may reach a log line.
	seenMu sync.Mutex
	seen   map[string]string
}

func (h *harness) see(kind, v string) {
	if v == "" {
		return
	}
	h.seenMu.Lock()
	defer h.seenMu.Unlock()
	h.seen[v] = kind
}

func (h *harness) liveReplicas() []*replica {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*replica(nil), h.live...)
}

func (h *harness) setLive(r *replica, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.live[:0:0]
	for _, x := range h.live {
		if x != r {
			out = append(out, x)
		}
	}
	if on {
		out = append(out, r)
	}
	h.live = out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// start launches one replica on a free port; it does not wait for it.
func (h *harness) start(name string) *replica {
	t := h.t
	t.Helper()
	addr := freeAddr(t)
	r := &replica{name: name, url: "http://" + addr, logPath: filepath.Join(h.logDir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(h.bin, "serve")
	r.cmd.Env = append(append([]string(nil), h.env...), "TOKENSTORE_LISTEN_ADDRESS="+addr)
	r.cmd.Stdout = logf
	r.cmd.Stderr = logf
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting replica %s: %v", name, err)
	}
	go func() {
		r.exitErr = r.cmd.Wait()
		logf.Close()
		close(r.done)
	}()
	h.mu.Lock()
	h.replicas = append(h.replicas, r)
	h.mu.Unlock()
	t.Cleanup(func() {
		if r.exited() {
			return
		}
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(grace):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// waitReady waits for /readyz to answer 200, failing early if the process
// exits.
func (h *harness) waitReady(r *replica, timeout time.Duration) {
	t := h.t
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	eventually(t, timeout, "replica "+r.name+" ready", func() error {
		if r.exited() {
			t.Fatalf("replica %s exited before it was ready (%v); its log:\n%s", r.name, r.exitErr, r.tail(40))
		}
		resp, err := c.Get(r.url + "/readyz")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz %d %s", resp.StatusCode, body)
		}
		return nil
	})
}

// terminate stops replica r as the kubelet does in a rolling update, with
// a request in flight: a forced refresh held at the provider proxy when
// SIGTERM arrives. It asserts that the in-flight request is answered, that
// clients reaching r after SIGTERM were turned away and retried elsewhere,
// and that r exits with status 0 within its grace period.
func (h *harness) terminate(r *replica, b *browser, proxy *tokenProxy, stats *loadStats) {
	t := h.t
	t.Helper()
	// A forced request is served by a refresh that began just before it
	// (within the broker's force window, 2 s): let that window pass so
	// that this one reaches the provider.
	eventually(t, 10*time.Second, "the force window after the last refresh", func() error {
		if since := time.Since(time.Unix(0, proxy.last.Load())); since < 3*time.Second {
			return fmt.Errorf("last refresh %s ago", since)
		}
		return nil
	})
	held := proxy.holdRefreshes()
	defer proxy.release()
	inflight := make(chan string, 1)
	go func() {
		resp, err := b.get(r.url + "/api/v1.0/" + providerID + "/token?force_refresh=true")
		switch {
		case err != nil:
			inflight <- err.Error()
		case resp.status != http.StatusOK:
			inflight <- fmt.Sprintf("%d %s", resp.status, resp.body)
		default:
			var ta tokenAnswer
			if json.Unmarshal(resp.body, &ta) != nil || ta.AccessToken == "" {
				inflight <- "undecodable answer"
				return
			}
			h.see("access_token", ta.AccessToken)
			inflight <- ""
		}
	}()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatalf("the forced refresh through %s never reached the provider", r.name)
	}

	begin := time.Now()
	refusedBefore := stats.refusedBy(r.name)
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to %s: %v", r.name, err)
	}
	// The listener closes at once; the Service still lists r for a moment
	// (as endpoints lag a SIGTERM), so clients reach it, are refused, and
	// retry at another replica.
	eventually(t, 20*time.Second, "a client turned away by "+r.name+" after SIGTERM", func() error {
		if r.exited() {
			t.Fatalf("replica %s exited with a request in flight (%v); its log:\n%s", r.name, r.exitErr, r.tail(40))
		}
		if stats.refusedBy(r.name) == refusedBefore {
			return errors.New("no client was refused yet")
		}
		return nil
	})
	proxy.release()
	select {
	case msg := <-inflight:
		if msg != "" {
			t.Fatalf("the request in flight at %s when SIGTERM came failed: %s", r.name, msg)
		}
	case <-time.After(grace):
		t.Fatalf("the request in flight at %s was not answered within the grace period", r.name)
	}
	select {
	case <-r.done:
	case <-time.After(grace - time.Since(begin)):
		_ = r.cmd.Process.Kill()
		<-r.done
		t.Fatalf("replica %s did not exit within its %s grace period after SIGTERM; its log:\n%s", r.name, grace, r.tail(40))
	}
	h.setLive(r, false)
	if r.exitErr != nil {
		t.Fatalf("replica %s exited with %v after SIGTERM, want status 0; its log:\n%s", r.name, r.exitErr, r.tail(40))
	}
	t.Logf("replica %s answered its in-flight request and exited 0, %s after SIGTERM", r.name, time.Since(begin).Round(time.Millisecond))
}

// leaseHolder returns the status-writer Lease's holder ("" while none).
func (h *harness) leaseHolder() (string, error) {
	var l coordinationv1.Lease
	if err := h.kube.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: leaseName}, &l); err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil {
		return "", nil
	}
	return *l.Spec.HolderIdentity, nil
}

// leaders are the live replicas that became leader at some point.
func leaders(rs []*replica) []string {
	var out []string
	for _, r := range rs {
		if !r.exited() && r.acquiredLease() {
			out = append(out, r.name)
		}
	}
	return out
}

// checkReady verifies the TokenProvider's status: Ready=True for the
// current generation.
func (h *harness) checkReady() error {
	var tp v1alpha1.TokenProvider
	if err := h.kube.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: providerID}, &tp); err != nil {
		return err
	}
	c := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady)
	if c == nil {
		return errors.New("no Ready condition yet")
	}
	if c.Status != metav1.ConditionTrue {
		return fmt.Errorf("Ready=%s (%s: %s)", c.Status, c.Reason, c.Message)
	}
	if tp.Status.ObservedGeneration != tp.Generation || c.ObservedGeneration != tp.Generation {
		return fmt.Errorf("status observedGeneration %d, condition observedGeneration %d, generation %d",
			tp.Status.ObservedGeneration, c.ObservedGeneration, tp.Generation)
	}
	return nil
}

// browser is a person's user agent: one cookie jar for every replica (they
// all sit on 127.0.0.1, and cookies ignore ports), redirects not followed.
type browser struct {
	h      *harness
	client *http.Client
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (b *browser) get(u string) (response, error) {
	req, err := http.NewRequestWithContext(b.h.ctx, http.MethodGet, u, nil)
	if err != nil {
		return response{}, err
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	for _, c := range resp.Cookies() {
		b.h.see("cookie", c.Value)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

func (b *browser) mustGet(u string) response {
	b.h.t.Helper()
	r, err := b.get(u)
	if err != nil {
		b.h.t.Fatalf("GET %s: %v", redactQuery(u), err)
	}
	return r
}

func (b *browser) location(u string) string {
	b.h.t.Helper()
	r := b.mustGet(u)
	if r.status != http.StatusFound && r.status != http.StatusSeeOther {
		b.h.t.Fatalf("GET %s: want a redirect, got %d %s", redactQuery(u), r.status, r.body)
	}
	return r.header.Get("Location")
}

// redactQuery drops a URL's query (codes, states) for messages.
func redactQuery(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   *int64 `json:"expires_in"`
}

// token asks replica r for an access token; it fails the test unless 200.
func (b *browser) token(r *replica, query string) string {
	b.h.t.Helper()
	resp := b.mustGet(r.url + "/api/v1.0/" + providerID + "/token" + query)
	if resp.status != http.StatusOK {
		b.h.t.Fatalf("token from %s: %d %s", r.name, resp.status, resp.body)
	}
	var ta tokenAnswer
	if err := json.Unmarshal(resp.body, &ta); err != nil || ta.AccessToken == "" {
		b.h.t.Fatalf("token from %s: undecodable answer (%v)", r.name, err)
	}
	b.h.see("access_token", ta.AccessToken)
	return ta.AccessToken
}

// tokenProxy forwards everything to the provider OP unchanged and counts
// the refresh_token grants that pass (instrumentation, not a fake). While
// held, it keeps refresh grants waiting, so a test can have a request in
// flight inside a replica at a moment of its choosing.
type tokenProxy struct {
	srv       *httptest.Server
	refreshes atomic.Int64
	last      atomic.Int64 // unix nanoseconds of the last refresh grant

	mu   sync.Mutex
	hold chan struct{} // closed to let held grants through; nil: no hold
	held chan struct{} // receives once per held grant
}

func newTokenProxy(t *testing.T, target string) *tokenProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &tokenProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if providertest.GrantType(r) == "refresh_token" {
			p.refreshes.Add(1)
			p.last.Store(time.Now().UnixNano())
			p.mu.Lock()
			hold, held := p.hold, p.held
			p.mu.Unlock()
			if hold != nil {
				held <- struct{}{}
				<-hold
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		p.release()
		p.srv.Close()
	})
	return p
}

// holdRefreshes makes refresh grants wait until release; it returns the
// channel that signals each grant arriving.
func (p *tokenProxy) holdRefreshes() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold, p.held = make(chan struct{}), make(chan struct{}, 16)
	return p.held
}

func (p *tokenProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold != nil {
		close(p.hold)
		p.hold = nil
	}
}

// tokenEndpoint reads the OP's token endpoint from its discovery document.
func tokenEndpoint(t *testing.T, op *providertest.OP) string {
	t.Helper()
	resp, err := http.Get(op.DiscoveryURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.TokenEndpoint == "" {
		t.Fatalf("discovery document of the provider OP: %v", err)
	}
	return doc.TokenEndpoint
}

// loadStats is what the client loop saw.
type loadStats struct {
	mu       sync.Mutex
	total    int
	retries  int
	failures []string
	served   map[string]int
	refused  map[string]int // connection errors and 503s, by replica
}

func (s *loadStats) refusedBy(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused[name]
}

func (s *loadStats) servedBy(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[name]
}

// runLoad fetches tokens from the live replicas in turn until stop closes
// (or limit passes), retrying on a connection error or a 503 at the next
// replica, as a client behind a Service would.
func runLoad(h *harness, b *browser, stop <-chan struct{}, limit time.Duration, s *loadStats) {
	deadline := time.Now().Add(limit)
	for i := 0; time.Now().Before(deadline); i++ {
		select {
		case <-stop:
			return
		default:
		}
		const q = ""
		var (
			ok   bool
			last string
		)
	attempts:
		for attempt := 0; attempt < 10; attempt++ {
			if attempt > 0 {
				s.mu.Lock()
				s.retries++
				s.mu.Unlock()
				time.Sleep(time.Duration(attempt) * 100 * time.Millisecond) // client backoff
			}
			live := h.liveReplicas()
			if len(live) == 0 {
				last = "no live replica"
				continue
			}
			r := live[(i+attempt)%len(live)]
			resp, err := b.get(r.url + "/api/v1.0/" + providerID + "/token" + q)
			switch {
			case err != nil:
				last = fmt.Sprintf("%s: %v", r.name, err)
				s.mu.Lock()
				s.refused[r.name]++
				s.mu.Unlock()
			case resp.status == http.StatusServiceUnavailable:
				last = fmt.Sprintf("%s: 503 %s", r.name, resp.body)
				s.mu.Lock()
				s.refused[r.name]++
				s.mu.Unlock()
			case resp.status == http.StatusOK:
				var ta tokenAnswer
				if err := json.Unmarshal(resp.body, &ta); err != nil || ta.AccessToken == "" {
					last = fmt.Sprintf("%s: 200 with an undecodable answer", r.name)
					break attempts
				}
				h.see("access_token", ta.AccessToken)
				s.mu.Lock()
				s.served[r.name]++
				s.mu.Unlock()
				ok = true
				break attempts
			default:
				// Not a replica going away: a real failure, no retry.
				last = fmt.Sprintf("%s: %d %s", r.name, resp.status, resp.body)
				break attempts
			}
		}
		s.mu.Lock()
		s.total++
		if !ok {
			s.failures = append(s.failures, fmt.Sprintf("request %d%s: %s", i, q, last))
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond) // pacing, so the replicas starting up get CPU
	}
}

func TestReplicas(t *testing.T) {
	began := time.Now()
	root := repoRoot(t)
	work := t.TempDir() // removed last, after the artifacts are kept
	logDir := filepath.Join(work, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var harnessRef *harness
	t.Cleanup(func() {
		if !t.Failed() || harnessRef == nil {
			return
		}
		keepArtifacts(t, root, harnessRef)
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// envtest's own logging is not needed here; the replicas log to files.
	ctrllog.SetLogger(logr.Discard())

	// The control plane and the binary, in parallel.
	assets, err := testutil.EnvtestAssets("etcd", "kube-apiserver", "kubectl")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(work, "tokenstore")
	buildErr := make(chan error, 1)
	go func() {
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/tokenstore")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, out)
		}
		buildErr <- err
	}()
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		<-buildErr
		t.Fatalf("starting envtest with the binaries in %s (built by hack/build-envtest.sh): %v", assets, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	if err := <-buildErr; err != nil {
		t.Fatalf("go build ./cmd/tokenstore: %v", err)
	}
	t.Logf("envtest up and binary built in %s", time.Since(began).Round(time.Millisecond))

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	kube, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	// A kubeconfig file for the processes, as a mounted ServiceAccount
	// token would be in a cluster.
	user, err := env.AddUser(envtest.User{Name: "tokenstore-replicas", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatalf("envtest user: %v", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatalf("envtest kubeconfig: %v", err)
	}
	kubeconfig := filepath.Join(work, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}

	// The login OP and the token provider's OP (behind a counting proxy on
	// its token endpoint), each registering the redirect URI built from the
	// shared EXTERNAL_URL.
	loginOP := providertest.Start(t, externalURL+"/api/oidc/callback")
	providerOP := providertest.Start(t, externalURL+"/api/v1.0/"+providerID+"/redirect_uri")
	proxy := newTokenProxy(t, providerOP.Issuer)
	refreshes := &proxy.refreshes
	te, err := url.Parse(tokenEndpoint(t, providerOP))
	if err != nil {
		t.Fatal(err)
	}
	proxiedTokenURL := proxy.srv.URL + te.Path

	ns := "tokenstore-replicas"
	if err := kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := kube.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alpha-client"},
		StringData: map[string]string{"clientSecret": providerOP.ClientSecret},
	}); err != nil {
		t.Fatal(err)
	}
	tp := &v1alpha1.TokenProvider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: providerID},
		Spec: v1alpha1.TokenProviderSpec{
			Issuer:          providerOP.Issuer,
			Endpoints:       &v1alpha1.Endpoints{Token: proxiedTokenURL},
			ClientID:        providertest.ClientID,
			ClientSecretRef: &v1alpha1.SecretKeyRef{Name: "alpha-client", Key: "clientSecret"},
			Metadata:        v1alpha1.Metadata{Name: "Alpha", Description: "first description"},
		},
	}
	if err := kube.Create(ctx, tp); err != nil {
		t.Fatalf("creating the TokenProvider: %v", err)
	}

	dbURL := pgtest.NewDatabase(t)
	key, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ctx: ctx, bin: bin, logDir: logDir, kube: kube, ns: ns, seen: map[string]string{}}
	harnessRef = h
	h.see("client secret", providerOP.ClientSecret)
	h.see("login client secret", loginOP.ClientSecret)
	h.see("crypto key", key)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TOKENSTORE_") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue // only what this test sets
		}
		h.env = append(h.env, kv)
	}
	h.env = append(h.env,
		"KUBECONFIG="+kubeconfig,
		"TOKENSTORE_MIGRATE_ON_START=true",
		// Several replicas on one machine: no metrics listener (serve's
		// :9090 would clash) and no rate limits (the suite's load is one
		// person's).
		"TOKENSTORE_METRICS_ADDRESS=",
		"TOKENSTORE_RATE_LIMIT_PER_ADDRESS=0",
		"TOKENSTORE_RATE_LIMIT_PER_PRINCIPAL=0",
		"TOKENSTORE_WATCH_NAMESPACE="+ns,
		"TOKENSTORE_LEADER_ELECTION=true",
		"TOKENSTORE_DATABASE_URL="+dbURL,
		"TOKENSTORE_CRYPTOKEY="+key,
		"TOKENSTORE_EXTERNAL_URL="+externalURL,
		"TOKENSTORE_OIDC_DISCOVERY_URL="+loginOP.DiscoveryURL(),
		"TOKENSTORE_OIDC_CLIENT_ID="+providertest.ClientID,
		"TOKENSTORE_OIDC_CLIENT_SECRET="+loginOP.ClientSecret,
		"TOKENSTORE_LOG_FORMAT=json",
		"TOKENSTORE_LOG_LEVEL=info",
	)

	// Two replicas start at the same moment, both migrating an empty
	// database: the advisory lock makes them take turns.
	a, bRep := h.start("a"), h.start("b")
	h.waitReady(a, 60*time.Second)
	h.waitReady(bRep, 60*time.Second)
	h.setLive(a, true)
	h.setLive(bRep, true)
	t.Logf("replicas a and b ready %s after start", time.Since(began).Round(time.Millisecond))

	migrationFiles, err := fs.Glob(sqlfiles.PostgresMigrations(), "*.sql")
	if err != nil || len(migrationFiles) == 0 {
		t.Fatalf("embedded migrations: %v (%d files)", err, len(migrationFiles))
	}
	if na, nb := a.countMsg("applied migration"), bRep.countMsg("applied migration"); na+nb != len(migrationFiles) {
		t.Fatalf("concurrent MIGRATE_ON_START: a applied %d and b %d migrations; want %d in total, each once", na, nb, len(migrationFiles))
	} else {
		t.Logf("concurrent migrations: a applied %d, b %d of %d", na, nb, len(migrationFiles))
	}

	// Exactly one leader, holding the Lease; it wrote Ready=True.
	var firstHolder string
	eventually(t, 45*time.Second, "one leader among a and b", func() error {
		holder, err := h.leaseHolder()
		if err != nil {
			return err
		}
		if holder == "" {
			return errors.New("the Lease has no holder")
		}
		if l := leaders([]*replica{a, bRep}); len(l) != 1 {
			return fmt.Errorf("replicas that acquired the Lease: %v, want exactly one", l)
		}
		firstHolder = holder
		return nil
	})
	leader, other := a, bRep
	if bRep.acquiredLease() {
		leader, other = bRep, a
	}
	t.Logf("leader: replica %s", leader.name)
	eventually(t, 30*time.Second, "TokenProvider Ready=True", h.checkReady)

	// Sessions through the database: log in and link through one replica,
	// use the session on the other.
	jar, _ := cookiejar.New(nil)
	br := &browser{h: h, client: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{MaxIdleConnsPerHost: 16},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	authURL := br.location(a.url + "/api/oidc/login")
	q, err := loginOP.Login(ctx, authURL)
	if err != nil {
		t.Fatalf("login at the login OP: %v", err)
	}
	h.see("code", q.Get("code"))
	br.location(a.url + "/api/oidc/callback?" + q.Encode())
	authURL = br.location(a.url + "/api/v1.0/" + providerID + "/authorize")
	q, err = providerOP.Login(ctx, authURL)
	if err != nil {
		t.Fatalf("login at the provider OP: %v", err)
	}
	h.see("code", q.Get("code"))
	br.location(a.url + "/api/v1.0/" + providerID + "/redirect_uri?" + q.Encode())

	// Every replica serves a complete registry (the list needs a signed-in
	// person).
	listsProvider := func(r *replica, description string) error {
		resp, err := br.get(r.url + "/api/v1.0/authorizations")
		if err != nil {
			return err
		}
		var list []struct {
			Provider string `json:"provider"`
			Metadata struct {
				Description *string `json:"description"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(resp.body, &list); err != nil {
			return fmt.Errorf("%s: authorizations: %d, %v", r.name, resp.status, err)
		}
		for _, p := range list {
			if p.Provider == providerID {
				if p.Metadata.Description == nil || *p.Metadata.Description != description {
					return fmt.Errorf("%s lists %s with an old description", r.name, providerID)
				}
				return nil
			}
		}
		return fmt.Errorf("%s does not list %s (%d providers)", r.name, providerID, len(list))
	}
	for _, r := range []*replica{a, bRep} {
		if err := listsProvider(r, "first description"); err != nil {
			t.Fatal(err)
		}
	}

	tokA := br.token(a, "")
	tokB := br.token(bRep, "")
	if tokA != tokB {
		t.Fatal("replica b served another token than replica a for the same session and credential")
	}
	if n := refreshes.Load(); n != 0 {
		t.Fatalf("%d refreshes at the provider before any was needed", n)
	}

	// Refresh serialization through the database: a forced burst split
	// across both replicas refreshes once.
	const burst = 20
	toks := make([]string, burst)
	var wg sync.WaitGroup
	startBurst := make(chan struct{})
	errs := make(chan string, burst)
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startBurst
			r := []*replica{a, bRep}[i%2]
			resp, err := br.get(r.url + "/api/v1.0/" + providerID + "/token?force_refresh=true")
			if err != nil || resp.status != http.StatusOK {
				errs <- fmt.Sprintf("%s: %v %d %s", r.name, err, resp.status, resp.body)
				return
			}
			var ta tokenAnswer
			if json.Unmarshal(resp.body, &ta) != nil || ta.AccessToken == "" {
				errs <- r.name + ": undecodable answer"
				return
			}
			h.see("access_token", ta.AccessToken)
			toks[i] = ta.AccessToken
		}()
	}
	close(startBurst)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("forced burst: %s", e)
	}
	if t.Failed() {
		t.FailNow()
	}
	if n := refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes at the provider for %d concurrent forced requests across two replicas, want 1", n, burst)
	}
	for _, tk := range toks {
		if tk != toks[0] {
			t.Fatal("the forced burst was served different tokens")
		}
	}
	if toks[0] == tokA {
		t.Fatal("the forced burst was served the token from before the refresh")
	}
	t.Logf("sessions shared and one refresh for %d forced requests across a and b", burst)

	// Rolling restart under load: the leader goes first, then the other
	// original replica; each is replaced by a new process that migrates
	// on start (finding nothing to do).
	stats := &loadStats{served: map[string]int{}, refused: map[string]int{}}
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		runLoad(h, br, stopLoad, 75*time.Second, stats)
	}()
	stopLoadOnce := sync.OnceFunc(func() { close(stopLoad); <-loadDone })
	t.Cleanup(stopLoadOnce)
	eventually(t, 20*time.Second, "load reaching both replicas", func() error {
		if stats.servedBy(a.name) < 5 || stats.servedBy(bRep.name) < 5 {
			return errors.New("fewer than 5 answers from each replica")
		}
		return nil
	})

	refreshesBefore := refreshes.Load()
	h.terminate(leader, br, proxy, stats)
	leaderGone := time.Now()
	c := h.start("c")
	h.waitReady(c, 60*time.Second)
	h.setLive(c, true)
	eventually(t, 45*time.Second, "a new leader after "+leader.name+" stopped", func() error {
		holder, err := h.leaseHolder()
		if err != nil {
			return err
		}
		if holder == "" || holder == firstHolder {
			return errors.New("the Lease is still with the stopped replica or free")
		}
		if l := leaders([]*replica{other, c}); len(l) != 1 {
			return fmt.Errorf("live replicas that acquired the Lease: %v, want exactly one", l)
		}
		return nil
	})
	secondLeader := leaders([]*replica{other, c})[0]
	secondHolder, _ := h.leaseHolder()
	t.Logf("the Lease moved from %s to %s (seen %s after %s exited)", leader.name, secondLeader, time.Since(leaderGone).Round(time.Millisecond), leader.name)
	eventually(t, 20*time.Second, "load reaching replica c", func() error {
		if stats.servedBy(c.name) < 5 {
			return errors.New("fewer than 5 answers from c")
		}
		return nil
	})

	h.terminate(other, br, proxy, stats)
	d := h.start("d")
	h.waitReady(d, 60*time.Second)
	h.setLive(d, true)
	eventually(t, 20*time.Second, "load reaching replica d", func() error {
		if stats.servedBy(d.name) < 5 {
			return errors.New("fewer than 5 answers from d")
		}
		return nil
	})
	stopLoadOnce()

	stats.mu.Lock()
	total, retries, failures, served, refused := stats.total, stats.retries, stats.failures, fmt.Sprint(stats.served), fmt.Sprint(stats.refused)
	stats.mu.Unlock()
	t.Logf("load during the rolling restart: %d requests, %d retries (turned away by %s), %d failed; answers per replica %s",
		total, retries, refused, len(failures), served)
	// Each termination had a forced refresh in flight: the credential was
	// rotated while replicas came and went.
	if n := refreshes.Load() - refreshesBefore; n != 2 {
		t.Errorf("%d refreshes at the provider during the rolling restart, want 2 (one in flight at each SIGTERM)", n)
	}
	for _, f := range failures {
		t.Errorf("a request failed after retries: %s", f)
	}
	if t.Failed() {
		t.FailNow()
	}

	for _, r := range []*replica{c, d} {
		if n := r.countMsg("applied migration"); n != 0 {
			t.Errorf("replacement %s applied %d migrations on an up-to-date database, want 0", r.name, n)
		}
	}

	// The Lease is with a live replica; after a spec change made now that
	// the first leader is gone, the status is written for the new
	// generation (only a leader writes status).
	eventually(t, 45*time.Second, "the Lease with a live replica", func() error {
		holder, err := h.leaseHolder()
		if err != nil {
			return err
		}
		if holder == "" || holder == firstHolder || (secondLeader == other.name && holder == secondHolder) {
			return errors.New("the Lease is free or with a stopped replica")
		}
		if l := leaders([]*replica{c, d}); len(l) != 1 {
			return fmt.Errorf("live replicas that acquired the Lease: %v, want exactly one", l)
		}
		return nil
	})
	t.Logf("final leader: replica %s", leaders([]*replica{c, d})[0])
	eventually(t, 30*time.Second, "spec change applied", func() error {
		var cur v1alpha1.TokenProvider
		if err := kube.Get(ctx, client.ObjectKeyFromObject(tp), &cur); err != nil {
			return err
		}
		cur.Spec.Metadata.Description = "second description"
		return kube.Update(ctx, &cur)
	})
	eventually(t, 45*time.Second, "TokenProvider Ready=True for the new generation", h.checkReady)
	for _, r := range []*replica{c, d} {
		eventually(t, 30*time.Second, "replica "+r.name+" serving the changed provider", func() error {
			return listsProvider(r, "second description")
		})
	}

	// No credential lost: the stored refresh token still refreshes.
	before := refreshes.Load()
	eventually(t, 30*time.Second, "a refresh after the rolling restart", func() error {
		br.token(c, "?force_refresh=true")
		if refreshes.Load() == before {
			return errors.New("served within the force window, no refresh reached the provider yet")
		}
		return nil
	})
	// Replicas reuse a credential row read for up to a second
	// (cached.DefaultTTL, internal/store/cached); after that both serve the new token.
	eventually(t, 15*time.Second, "replicas c and d serving the refreshed token", func() error {
		if br.token(c, "") != br.token(d, "") {
			return errors.New("c and d serve different tokens")
		}
		return nil
	})

	// No secret in any log line.
	for _, r := range h.replicas {
		data, err := os.ReadFile(r.logPath)
		if err != nil {
			t.Fatal(err)
		}
		h.seenMu.Lock()
		for v, kind := range h.seen {
			if len(v) >= 8 && bytes.Contains(data, []byte(v)) {
				t.Errorf("replica %s logged a %s", r.name, kind)
			}
		}
		h.seenMu.Unlock()
	}
	t.Logf("done in %s", time.Since(began).Round(time.Millisecond))
}

// keepArtifacts copies the replicas' logs to $ARTIFACTS_DIR (default
// artifacts/ at the repository root) when the test failed.
func keepArtifacts(t *testing.T, root string, h *harness) {
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(root, "artifacts")
	}
	dir = filepath.Join(dir, "replicas-"+time.Now().UTC().Format("20060102T150405Z"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keeping the replicas' logs: %v", err)
		return
	}
	h.mu.Lock()
	rs := append([]*replica(nil), h.replicas...)
	h.mu.Unlock()
	for _, r := range rs {
		data, err := os.ReadFile(r.logPath)
		if err != nil {
			continue
		}
		_ = os.WriteFile(filepath.Join(dir, r.name+".log"), data, 0o644)
		t.Logf("replica %s, last lines of its log:\n%s", r.name, r.tail(15))
	}
	t.Logf("the replicas' logs are kept in %s", dir)
}
