//go:build faults

package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/controllers"
	"github.com/tokenstore/tokenstore/internal/observability/metrics"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/testutil"
	"github.com/tokenstore/tokenstore/internal/webhooks"
)

// readyCondition is the Ready condition of a TokenProvider as the API
// server holds it, at one moment.
type readyCondition struct {
	at      time.Time
	phase   int32
	status  metav1.ConditionStatus
	reason  string
	message string
}

// conditionWatch polls a TokenProvider's Ready condition, as `kubectl get
// tokenprovider` shows it, and keeps every change.
type conditionWatch struct {
	mu      sync.Mutex
	changes []readyCondition
	last    readyCondition
}

func (w *conditionWatch) run(ctx context.Context, kube client.Client, key client.ObjectKey, phase *atomic.Int32) {
	for ctx.Err() == nil {
		var tp v1alpha1.TokenProvider
		if err := kube.Get(ctx, key, &tp); err == nil {
			if c := apimeta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady); c != nil {
				rc := readyCondition{at: time.Now(), phase: phase.Load(), status: c.Status, reason: c.Reason, message: c.Message}
				w.mu.Lock()
				if rc.status != w.last.status || rc.reason != w.last.reason || rc.message != w.last.message {
					w.changes = append(w.changes, rc)
				}
				w.last = rc
				w.mu.Unlock()
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *conditionWatch) current() readyCondition {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *conditionWatch) history() []readyCondition {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]readyCondition(nil), w.changes...)
}

// waitFor waits until the condition has status want, and returns when it
// was first seen so.
func (w *conditionWatch) waitFor(t *testing.T, want metav1.ConditionStatus, limit time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if c := w.current(); c.status == want {
			return c.at
		}
		if time.Now().After(deadline) {
			c := w.current()
			t.Fatalf("Ready condition not %s within %v (it is %s %s: %s)", want, limit, c.status, c.reason, c.message)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrapeReady reads tokenstore_provider_ready and the reason series of
// provider id from an instance's /metrics.
func scrapeReady(t *testing.T, base, id string) (ready string, reason string) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, `tokenstore_provider_ready{provider="`+id+`"} `):
			ready = strings.TrimPrefix(line, `tokenstore_provider_ready{provider="`+id+`"} `)
		case strings.HasPrefix(line, `tokenstore_provider_ready_reason{provider="`+id+`",reason="`) && strings.HasSuffix(line, " 1"):
			reason = strings.TrimSuffix(strings.TrimPrefix(line, `tokenstore_provider_ready_reason{provider="`+id+`",reason="`), `"} 1`)
		}
	}
	return ready, reason
}

// TestProviderReadinessUnderOutage: the TokenProvider controllers run
// against a real kube-apiserver (envtest) and fill the registry a
// tokenstore instance serves from, while people ask for tokens. The
// provider's token endpoint answers 500, then the whole provider answers
// 500, then it is down, then back. What the readiness probe is: OpenID
// discovery (the .well-known document), re-read every refresh interval
// (10 minutes in serve, 1 s here) and, while it fails, with backoff (5 s to
// 5 min in serve, 0.5–1 s here); and the token endpoint as the replica's
// own refreshes find it (providers.TokenEndpointHealth: three failed in a
// row make it failing, a success clears it), which it never probes.
//
// So: a token endpoint answering 500 behind a healthy discovery document
// turns the Ready condition False (TokenEndpointFailing) within seconds
// of the failing refreshes (they answer 502, as in
// TestProviderDownUnderLoad); the provider answering 500 altogether, and
// the provider down, keep it False (DiscoveryFailed), as kubectl, the
// tokenstore_provider_ready metric and the provider.not_ready webhook
// show (one event: the condition stays False throughout); it turns True
// again once the provider is back and a refresh succeeds. Throughout,
// the registry keeps the last good configuration: valid tokens are served,
// nothing is changed or deleted.
func TestProviderReadinessUnderOutage(t *testing.T) {
	began := time.Now()
	ctx := testContext(t, 3*time.Minute)
	ctrllog.SetLogger(logr.Discard())
	assets, err := testutil.EnvtestAssets("etcd", "kube-apiserver", "kubectl")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest with the binaries in %s: %v", assets, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
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
	t.Logf("envtest up in %v", time.Since(began).Round(time.Millisecond))

	d := newDeployment(t, ctx, sharedDatabase(t, ctx), "alpha")
	tp := d.providers["alpha"]
	const ns = "tokenstore-faults"
	if err := kube.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := kube.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alpha-client"},
		StringData: map[string]string{"clientSecret": tp.op.ClientSecret}}); err != nil {
		t.Fatal(err)
	}
	// Discovery at the OP itself; the token endpoint through the
	// switchable proxy, so that it alone can answer 500.
	if err := kube.Create(ctx, &v1alpha1.TokenProvider{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alpha"},
		Spec: v1alpha1.TokenProviderSpec{
			Issuer:          tp.op.Issuer,
			Endpoints:       &v1alpha1.Endpoints{Token: tp.provider.Endpoint.TokenURL},
			ClientID:        providertest.ClientID,
			ClientSecretRef: &v1alpha1.SecretKeyRef{Name: "alpha-client", Key: "clientSecret"},
		},
	}); err != nil {
		t.Fatal(err)
	}

	// The controllers as serve wires them (internal/app/sources.go),
	// with the re-check intervals shortened from minutes to a second.
	const refreshInterval, minBackoff, maxBackoff = time.Second, 500 * time.Millisecond, time.Second
	reg := providers.NewRegistry()
	disc := providers.NewDiscoverer(nil, providers.DiscovererOptions{TTL: refreshInterval, FailureTTL: 200 * time.Millisecond, Timeout: 2 * time.Second})
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controllers.SetupWithManager(mgr, reg, disc, controllers.Options{
		RefreshInterval: refreshInterval, MinBackoff: minBackoff, MaxBackoff: maxBackoff}); err != nil {
		t.Fatal(err)
	}
	mctx, stopMgr := context.WithCancel(ctx)
	mgrDone := make(chan error, 1)
	go func() { mgrDone <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		stopMgr()
		<-mgrDone
	})
	select {
	case <-reg.ReadyC():
	case <-time.After(time.Minute):
		t.Fatal("the registry was not filled within a minute")
	}
	if _, ok := reg.Get("alpha"); !ok {
		t.Fatal("alpha is not in the registry after the first fill")
	}

	// Readiness as serve reads it for /metrics and the webhook
	// (providerSources.Readiness): the TokenProviders' Ready conditions.
	readiness := func(ctx context.Context) []metrics.ProviderReadiness {
		var l v1alpha1.TokenProviderList
		if err := mgr.GetClient().List(ctx, &l, client.InNamespace(ns)); err != nil {
			return nil
		}
		var out []metrics.ProviderReadiness
		for _, p := range l.Items {
			c := apimeta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
			if c == nil || c.Status == metav1.ConditionUnknown {
				_, serving := reg.Get(p.Name)
				out = append(out, metrics.ProviderReadiness{ID: p.Name, Ready: serving, Reason: metrics.ReasonUnknown})
				continue
			}
			out = append(out, metrics.ProviderReadiness{ID: p.Name, Ready: c.Status == metav1.ConditionTrue, Reason: c.Reason, Since: c.LastTransitionTime.Time})
		}
		return out
	}
	if d.metrics, err = metrics.New(metrics.Options{Providers: reg, Readiness: readiness}); err != nil {
		t.Fatal(err)
	}
	// The provider.not_ready webhook, to a receiver of the test's.
	var hookMu sync.Mutex
	var hooks []string
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			Type string          `json:"type"`
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		b, _ := io.ReadAll(r.Body)
		if json.Unmarshal(b, &ev) == nil {
			hookMu.Lock()
			hooks = append(hooks, ev.Type+" "+ev.ID)
			hookMu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	sender, err := webhooks.New(webhooks.Options{URL: receiver.URL, Secret: "faults-webhook-secret", Source: d.ext, Metrics: d.metrics})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = sender.Run(mctx) }()
	go sender.WatchReadiness(mctx, reg, readiness, 200*time.Millisecond)

	d.registry = reg
	in := d.start()
	var people []*person
	for i := range 3 {
		p := d.newPerson(fmt.Sprintf("person-%d", i))
		p.link("alpha")
		people = append(people, p)
	}
	before := snapshotCredentials(t, ctx, in.store, people, "alpha")

	var phase atomic.Int32 // 0 token endpoint 500, 1 provider 500, 2 provider down, 3 back
	names := []string{"token endpoint answering 500", "provider answering 500", "provider down", "back"}
	var watch conditionWatch
	go watch.run(mctx, kube, client.ObjectKey{Namespace: ns, Name: "alpha"}, &phase)
	watch.waitFor(t, metav1.ConditionTrue, 30*time.Second)
	if r, reason := scrapeReady(t, in.metricsURL, "alpha"); r != "1" || reason != v1alpha1.ReasonReady {
		t.Fatalf("before the outage: tokenstore_provider_ready %q, reason %q", r, reason)
	}

	var tokens seen
	valid := make([]tally, 4)
	forced := make([]tally, 4)
	stop := make(chan struct{})
	// A request counts for a phase only if it began and ended in it: one
	// in flight while the provider comes back may rightly succeed.
	wg := load(4, 2*time.Minute, stop, func(w int) {
		ph := phase.Load()
		p := people[w%len(people)]
		if w == 0 {
			tok, r := p.token(in, "alpha", "force_refresh=true")
			tokens.add(tok)
			if phase.Load() == ph {
				forced[ph].add(outcome(r))
			}
			time.Sleep(100 * time.Millisecond)
			return
		}
		tok, r := p.token(in, "alpha", "")
		tokens.add(tok)
		if phase.Load() == ph {
			valid[ph].add(outcome(r))
		}
	})

	// 0: only the token endpoint fails; discovery is fine (several
	// re-checks pass, one a second). The refreshes failing make it
	// NotReady, TokenEndpointFailing.
	tp.mode.Store(int32(answer500))
	at0 := time.Now()
	hits0 := tp.op.DiscoveryHits()
	tokenEndpointNotReadyAt := watch.waitFor(t, metav1.ConditionFalse, 15*time.Second)
	for p0 := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if n := tp.op.DiscoveryHits() - hits0; (n >= 3 && time.Since(p0) >= 3*time.Second) || time.Since(p0) >= 10*time.Second {
			break
		}
	}
	rechecks := tp.op.DiscoveryHits() - hits0
	c0 := watch.current()
	m0, reason0 := scrapeReady(t, in.metricsURL, "alpha")

	// 1: the whole provider answers 500: the OP stops and a server on its
	// address answers every request, discovery included, with 500.
	phase.Store(1)
	tp.mode.Store(int32(passThrough))
	tp.op.Stop()
	addr := strings.TrimPrefix(tp.op.Issuer, "http://")
	var ln net.Listener
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		if i == 50 {
			t.Fatalf("listening on the OP's address: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	failing := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":"server_error"}`)
	})}
	go func() { _ = failing.Serve(ln) }()
	at1 := time.Now()
	// Already False (TokenEndpointFailing); a discovery re-check makes it
	// DiscoveryFailed. One in the moment between the OP's stop and the
	// 500 server's start would see "refused"; wait for one that saw the
	// 500.
	var notReadyAt time.Time
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c := watch.current()
		if c.reason == v1alpha1.ReasonDiscoveryFailed {
			if notReadyAt.IsZero() {
				notReadyAt = c.at
			}
			if strings.Contains(c.message, "500") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no re-check saw the provider answer 500: %+v", c)
		}
	}
	c1 := watch.current()
	m1, reason1 := scrapeReady(t, in.metricsURL, "alpha")
	time.Sleep(time.Second)

	// 2: down: nothing listens on the provider's address.
	phase.Store(2)
	failing.Close()
	at2 := time.Now()
	// A re-check while it is down says so (connection refused).
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(watch.current().message, "refused") {
		if time.Now().After(deadline) {
			t.Fatalf("no re-check while the provider was down: %+v", watch.current())
		}
		time.Sleep(20 * time.Millisecond)
	}
	downSeen := time.Since(at2)
	c2 := watch.current()
	m2, reason2 := scrapeReady(t, in.metricsURL, "alpha")
	mid := snapshotCredentials(t, ctx, in.store, people, "alpha")
	_, stillServed := reg.Get("alpha")
	time.Sleep(time.Second)

	// 3: back.
	if err := tp.op.Restart(); err != nil {
		t.Fatal(err)
	}
	phase.Store(3)
	at3 := time.Now()
	readyAt := watch.waitFor(t, metav1.ConditionTrue, 15*time.Second)
	m3, reason3 := scrapeReady(t, in.metricsURL, "alpha")
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	for _, c := range watch.history() {
		t.Logf("Ready=%s %-15s during %-28q at %v: %s", c.status, c.reason, names[c.phase], c.at.Sub(began).Round(time.Millisecond), c.message)
	}
	for i := range names {
		t.Logf("%-28s valid: %v  forced: %v", names[i], valid[i].snapshot(), forced[i].snapshot())
	}
	t.Logf("token endpoint answering 500: NotReady %v after it began; %d discovery re-checks meanwhile",
		tokenEndpointNotReadyAt.Sub(at0).Round(time.Millisecond), rechecks)
	t.Logf("provider 500: DiscoveryFailed %v after it began; down: a re-check said refused %v after; back: Ready %v after the restart",
		notReadyAt.Sub(at1).Round(time.Millisecond), downSeen.Round(time.Millisecond), readyAt.Sub(at3).Round(time.Millisecond))
	t.Logf("tokenstore_provider_ready: %s (%s) while 500, %s (%s) while down, %s (%s) after", m1, reason1, m2, reason2, m3, reason3)

	// 0: NotReady, TokenEndpointFailing, while discovery still answers;
	// the metric says so.
	if c0.status != metav1.ConditionFalse || c0.reason != v1alpha1.ReasonTokenEndpointFailing || !strings.Contains(c0.message, "500") {
		t.Errorf("%s: Ready=%s %s %q, want False TokenEndpointFailing saying 500", names[0], c0.status, c0.reason, c0.message)
	}
	if m0 != "0" || reason0 != v1alpha1.ReasonTokenEndpointFailing {
		t.Errorf("tokenstore_provider_ready while the token endpoint failed: %q %q, want 0 TokenEndpointFailing", m0, reason0)
	}
	for _, c := range watch.history() {
		if c.phase == 0 && c.at.After(tokenEndpointNotReadyAt) && c.status != metav1.ConditionFalse {
			t.Errorf("Ready=%s (%s) again while the token endpoint still failed", c.status, c.reason)
		}
	}
	if rechecks < 2 {
		t.Errorf("only %d discovery re-checks while the token endpoint failed: discovery was not shown answering", rechecks)
	}
	// 1 and 2: NotReady, DiscoveryFailed, and the metric says so.
	for i, c := range []readyCondition{c1, c2} {
		if c.status != metav1.ConditionFalse || c.reason != v1alpha1.ReasonDiscoveryFailed {
			t.Errorf("%s: Ready=%s %s, want False DiscoveryFailed", names[i+1], c.status, c.reason)
		}
	}
	for _, c := range watch.history() {
		if (c.phase == 1 && c.at.After(notReadyAt)) || c.phase == 2 {
			if c.status != metav1.ConditionFalse {
				t.Errorf("Ready=%s during %q", c.status, names[c.phase])
			}
		}
	}
	if m1 != "0" || reason1 != v1alpha1.ReasonDiscoveryFailed || m2 != "0" || reason2 != v1alpha1.ReasonDiscoveryFailed {
		t.Errorf("tokenstore_provider_ready while failing: %q %q / %q %q, want 0 DiscoveryFailed", m1, reason1, m2, reason2)
	}
	// 3: Ready again.
	if m3 != "1" || reason3 != v1alpha1.ReasonReady {
		t.Errorf("tokenstore_provider_ready after: %q %q", m3, reason3)
	}
	// One provider.not_ready event for the one transition.
	hookMu.Lock()
	var notReady []string
	for _, h := range hooks {
		if strings.HasPrefix(h, webhooks.TypePrefix+webhooks.ProviderNotReady+" ") {
			notReady = append(notReady, h)
		}
	}
	hookMu.Unlock()
	if len(notReady) != 1 {
		t.Errorf("provider.not_ready events: %v, want one", notReady)
	} else {
		t.Logf("webhook: %s", notReady[0])
	}

	// Meanwhile, as TestProviderDownUnderLoad: served from the last good
	// configuration, refreshes 502, nothing changed or deleted.
	if !stillServed {
		t.Error("the provider left the registry while its discovery failed")
	}
	checkOutagePhases(t, names, valid, forced, 3)
	for id, b := range before {
		if !sameCredential(b, mid[id]) {
			t.Errorf("%s's credential was changed while the provider was failing", id)
		}
	}
	for _, p := range people {
		c, err := in.store.GetCredential(ctx, p.id, "alpha")
		if err != nil || c.State != store.StateActive {
			t.Errorf("%s's credential after the outage: %v %v", p.id, err, c.State)
		}
	}
	d.checkNoTokensLogged(tokens.m)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("ran out of time")
	}
}
