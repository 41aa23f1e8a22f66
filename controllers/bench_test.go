package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/controllers"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
)

const (
	benchProviders = 1000
	// benchCreators is how many clients create the TokenProviders at once,
	// as a `kubectl apply --server-side` of a folder or a GitOps tool
	// (several workers) would; each has its own connection and rate
	// limiter, so creation is bound by the API server, not by one client.
	benchCreators = 8
)

// BenchmarkCreate1000ProvidersToReady measures, against the envtest API
// server and the in-process OP, one replica with production settings
// (default Options and discovery TTL) already running while 1,000
// TokenProviders (half OpenID Connect through discovery, half plain OAuth2,
// all referencing one Secret) are created by benchCreators clients in
// parallel:
//   - create-s: the create calls, first sent to last answered;
//   - registry-s, ready-s: from the first create until all 1,000 are in the
//     registry, and until all 1,000 report Ready=True in .status;
//   - registry-after-create-s, ready-after-create-s: the same, counted from
//     the moment the last object exists (its create answered);
//   - spec-p50/p99-ms: from a spec update until the registry serves it;
//   - secret-p50/p99-ms: from a Secret update until the registry serves the
//     new client secret.
//
// Readiness is followed through one watch on the namespace (the events the
// API server sends anyway), not by listing 1,000 objects in a loop, which
// would load the same API server the controller writes to. With -v the
// benchmark also logs the reconciles, API calls and client-side throttling
// of the run and the CPU time of the API server, etcd and the test process.
//
// Run it with: go test ./controllers -run '^$' -bench 1000 -benchtime 1x
// (-cpuprofile for this process; TOKENSTORE_BENCH_APISERVER_PROFILE=file
// also writes a CPU profile of the API server during the timed part).
func BenchmarkCreate1000ProvidersToReady(b *testing.B) {
	op := providertest.Start(b, "")
	opts := controllers.Options{}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := newNamespace(b, "bench")
		rep := startReplica(b, replicaConfig{
			namespaces: []string{ns},
			opts:       &opts,
			discoverer: providers.NewDiscoverer(nil, providers.DiscovererOptions{}),
		})
		<-rep.registry.ReadyC()
		create(b, clientSecret(ns, "shared", "clientSecret", newSecretValue()))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		readyAt := watchReady(b, ctx, ns, benchProviders)
		registryAt := watchRegistry(ctx, rep.registry, benchProviders)
		before := takeSample()
		profiled := profileAPIServer(b)
		b.StartTimer()

		start := time.Now()
		createProviders(b, ns, op)
		created := time.Now()
		inRegistry := waitFor(b, registryAt, "all providers in the registry")
		allReady := waitFor(b, readyAt, "all providers Ready")
		b.StopTimer()
		cancel()
		<-profiled
		takeSample().since(before).log(b)

		b.ReportMetric(created.Sub(start).Seconds(), "create-s")
		b.ReportMetric(inRegistry.Sub(start).Seconds(), "registry-s")
		b.ReportMetric(allReady.Sub(start).Seconds(), "ready-s")
		b.ReportMetric(max(inRegistry.Sub(created), 0).Seconds(), "registry-after-create-s")
		b.ReportMetric(max(allReady.Sub(created), 0).Seconds(), "ready-after-create-s")

		spec := changeLatencies(b, rep.registry, 100, func(j int) (string, func(*providers.Provider) bool) {
			id := fmt.Sprintf("bench-%04d", j*7%benchProviders)
			name := fmt.Sprintf("renamed %d", j)
			updateTP(b, ns, id, func(tp *v1alpha1.TokenProvider) { tp.Spec.Metadata.Name = name })
			return id, func(p *providers.Provider) bool { return p.Metadata.Name == name }
		})
		// A provider with a Secret of its own, so that a Secret change
		// concerns one provider.
		sec := clientSecret(ns, "own", "clientSecret", newSecretValue())
		tp := tokenProvider(ns, "bench-own-secret", oidcSpec(op, "own"))
		create(b, sec, tp)
		waitRegistry(b, rep.registry, tp.Name, func(_ *providers.Provider, ok bool) error {
			if !ok {
				return errors.New("not yet")
			}
			return nil
		})
		secret := changeLatencies(b, rep.registry, 100, func(j int) (string, func(*providers.Provider) bool) {
			v := newSecretValue()
			sec.Data = map[string][]byte{"clientSecret": []byte(v)}
			if err := k8sClient.Update(context.Background(), sec); err != nil {
				b.Fatal(err)
			}
			return tp.Name, func(p *providers.Provider) bool { return p.ClientSecret == v }
		})
		b.ReportMetric(ms(percentile(spec, 50)), "spec-p50-ms")
		b.ReportMetric(ms(percentile(spec, 99)), "spec-p99-ms")
		b.ReportMetric(ms(percentile(secret, 50)), "secret-p50-ms")
		b.ReportMetric(ms(percentile(secret, 99)), "secret-p99-ms")

		rep.stop()
		if err := k8sClient.DeleteAllOf(context.Background(), &v1alpha1.TokenProvider{}, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStart1000ProvidersToReady measures the controller alone: 1,000
// TokenProviders (as above) exist, without status, before the replica
// starts (a first install over existing objects, or a new leader that finds
// work). Timed from the manager's start:
//   - registry-s: until the registry holds all 1,000 and is marked filled
//     (/readyz passes);
//   - ready-s: until all 1,000 report Ready=True in .status;
//   - restart-registry-s: a second replica started afterwards, whose status
//     writes are all no-ops, until its registry is filled.
func BenchmarkStart1000ProvidersToReady(b *testing.B) {
	op := providertest.Start(b, "")
	opts := controllers.Options{}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := newNamespace(b, "bench")
		create(b, clientSecret(ns, "shared", "clientSecret", newSecretValue()))
		createProviders(b, ns, op)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		readyAt := watchReady(b, ctx, ns, benchProviders)
		before := takeSample()
		b.StartTimer()

		start := time.Now()
		rep := startReplica(b, replicaConfig{
			namespaces: []string{ns},
			opts:       &opts,
			discoverer: providers.NewDiscoverer(nil, providers.DiscovererOptions{}),
		})
		filled := waitFor(b, closedAt(ctx, rep.registry.ReadyC()), "registry filled")
		if n := rep.registry.Len(); n != benchProviders {
			b.Fatalf("registry filled with %d of %d providers", n, benchProviders)
		}
		allReady := waitFor(b, readyAt, "all providers Ready")
		b.StopTimer()
		cancel()
		takeSample().since(before).log(b)
		rep.stop()

		start2 := time.Now()
		rep2 := startReplica(b, replicaConfig{
			namespaces: []string{ns},
			opts:       &opts,
			discoverer: providers.NewDiscoverer(nil, providers.DiscovererOptions{}),
		})
		<-rep2.registry.ReadyC()
		refilled := time.Since(start2)
		rep2.stop()

		b.ReportMetric(filled.Sub(start).Seconds(), "registry-s")
		b.ReportMetric(allReady.Sub(start).Seconds(), "ready-s")
		b.ReportMetric(refilled.Seconds(), "restart-registry-s")
		if err := k8sClient.DeleteAllOf(context.Background(), &v1alpha1.TokenProvider{}, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
	}
}

func createProviders(tb testing.TB, ns string, op *providertest.OP) {
	var wg sync.WaitGroup
	errs := make(chan error, benchCreators)
	for w := 0; w < benchCreators; w++ {
		// One client each: a client's rate limiter is shared by everything
		// that uses it.
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for j := w; j < benchProviders; j += benchCreators {
				var spec v1alpha1.TokenProviderSpec
				if j%2 == 0 {
					spec = oidcSpec(op, "shared")
				} else {
					spec = v1alpha1.TokenProviderSpec{
						Endpoints: &v1alpha1.Endpoints{
							Authorization: "https://idp.example.com/authorize",
							Token:         "https://idp.example.com/token",
						},
						ClientID:        fmt.Sprintf("client-%d", j),
						ClientSecretRef: &v1alpha1.SecretKeyRef{Name: "shared"},
					}
				}
				tp := &v1alpha1.TokenProvider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("bench-%04d", j)}, Spec: spec}
				if err := c.Create(context.Background(), tp); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatalf("creating TokenProviders: %v", err)
	}
}

// watchReady follows the TokenProviders of ns through a watch and sends
// the time at which n of them first report Ready=True for their current
// generation. The API server may end a watch at any time (it drops
// watchers that fall behind a burst of events); each new watch starts with
// the current state of every object.
func watchReady(tb testing.TB, ctx context.Context, ns string, n int) <-chan time.Time {
	tb.Helper()
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		tb.Fatal(err)
	}
	out := make(chan time.Time, 1)
	go func() {
		for ctx.Err() == nil {
			w, err := wc.Watch(ctx, &v1alpha1.TokenProviderList{}, client.InNamespace(ns))
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if countReady(w, n) {
				out <- time.Now()
				return
			}
		}
	}()
	return out
}

// countReady reads w until n objects are Ready (true) or it ends (false).
func countReady(w watch.Interface, n int) bool {
	defer w.Stop()
	ready := map[string]bool{}
	count := 0
	for ev := range w.ResultChan() {
		tp, ok := ev.Object.(*v1alpha1.TokenProvider)
		if !ok {
			return false // an error event: watch again
		}
		c := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady)
		now := ev.Type != watch.Deleted && c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == tp.Generation
		if was := ready[tp.Name]; was != now {
			ready[tp.Name] = now
			if now {
				count++
			} else {
				count--
			}
		}
		if count >= n {
			return true
		}
	}
	return false
}

// watchRegistry sends the time at which reg first holds n providers; the
// registry's change channel wakes it, so no polling delay is added.
func watchRegistry(ctx context.Context, reg *providers.Registry, n int) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		for {
			ch := reg.Changed()
			if reg.Len() >= n {
				out <- time.Now()
				return
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func closedAt(ctx context.Context, c <-chan struct{}) <-chan time.Time {
	out := make(chan time.Time, 1)
	go func() {
		select {
		case <-c:
			out <- time.Now()
		case <-ctx.Done():
		}
	}()
	return out
}

func waitFor(tb testing.TB, c <-chan time.Time, what string) time.Time {
	tb.Helper()
	select {
	case t := <-c:
		return t
	case <-time.After(10 * time.Minute):
		tb.Fatalf("%s: not after 10 minutes", what)
		return time.Time{}
	}
}

// changeLatencies makes n changes one after the other and measures, for
// each, the time from before the API call until the registry serves it.
// The registry's change channel wakes the wait, so no polling delay is
// added.
func changeLatencies(b *testing.B, reg *providers.Registry, n int, change func(j int) (string, func(*providers.Provider) bool)) []time.Duration {
	out := make([]time.Duration, 0, n)
	for j := 0; j < n; j++ {
		start := time.Now()
		id, served := change(j)
		timeout := time.After(time.Minute)
		for {
			ch := reg.Changed()
			if p, ok := reg.Get(id); ok && served(p) {
				break
			}
			select {
			case <-ch:
			case <-timeout:
				b.Fatalf("change %d of %s not served after a minute", j, id)
			}
		}
		out = append(out, time.Since(start))
	}
	return out
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// profileAPIServer takes a 30-second CPU profile of the envtest API server
// (which serves /debug/pprof) and writes it to
// $TOKENSTORE_BENCH_APISERVER_PROFILE. The returned channel is closed when
// it is written; at once when the variable is unset.
func profileAPIServer(tb testing.TB) <-chan struct{} {
	done := make(chan struct{})
	file := os.Getenv("TOKENSTORE_BENCH_APISERVER_PROFILE")
	if file == "" {
		close(done)
		return done
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		defer close(done)
		resp, err := hc.Get(strings.TrimSuffix(cfg.Host, "/") + "/debug/pprof/profile?seconds=30")
		if err != nil {
			tb.Errorf("API server profile: %v", err)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			tb.Errorf("API server profile: %s %v", resp.Status, err)
			return
		}
		if err := os.WriteFile(file, body, 0o644); err != nil {
			tb.Error(err)
		}
	}()
	return done
}

// sample is what a benchmark run cost besides wall time: the CPU time of
// this process and of the envtest processes it started (Linux /proc), and
// the controller-runtime metrics (reconciles, work queue, API calls and
// time spent in client-side rate limiters).
type sample struct {
	cpu     map[string]time.Duration
	metrics map[string]float64
}

var registerClientMetrics sync.Once

func takeSample() sample {
	registerClientMetrics.Do(func() {
		crmetrics.RegisterRESTClientMetrics(crmetrics.MetricRateLimiterLatency, crmetrics.MetricRequestLatency)
	})
	s := sample{cpu: processCPU(), metrics: map[string]float64{}}
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		return s
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "controller_runtime_reconcile_total") &&
			!strings.HasPrefix(name, "controller_runtime_reconcile_errors_total") &&
			!strings.HasPrefix(name, "workqueue_adds_total") &&
			!strings.HasPrefix(name, "workqueue_retries_total") &&
			!strings.HasPrefix(name, "workqueue_queue_duration_seconds") &&
			!strings.HasPrefix(name, "rest_client_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				if l.GetName() == "host" {
					continue
				}
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.GetCounter() != nil:
				s.metrics[key] += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				s.metrics[key+" count"] += float64(m.GetHistogram().GetSampleCount())
				s.metrics[key+" sum"] += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return s
}

func (s sample) since(before sample) sample {
	d := sample{cpu: map[string]time.Duration{}, metrics: map[string]float64{}}
	for k, v := range s.cpu {
		d.cpu[k] = v - before.cpu[k]
	}
	for k, v := range s.metrics {
		if v -= before.metrics[k]; v != 0 {
			d.metrics[k] = v
		}
	}
	return d
}

func (s sample) log(tb testing.TB) {
	var lines []string
	for k, v := range s.cpu {
		lines = append(lines, fmt.Sprintf("cpu %-16s %6.1f s", k, v.Seconds()))
	}
	sort.Strings(lines)
	var counters []string
	for k, v := range s.metrics {
		counters = append(counters, fmt.Sprintf("%s = %.3f", k, v))
	}
	sort.Strings(counters)
	tb.Logf("cost of the run:\n  %s\n  %s", strings.Join(lines, "\n  "), strings.Join(counters, "\n  "))
}

// processCPU returns the user+system CPU time of this process and of its
// direct children (the envtest etcd and kube-apiserver), by command name.
// Empty where /proc is not available.
func processCPU() map[string]time.Duration {
	out := map[string]time.Duration{}
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15), fields after comm
		// counted from state = 3.
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		pid, comm := strings.TrimSpace(s[:open]), s[open+1:closing]
		fields := strings.Fields(s[closing+1:])
		if len(fields) < 13 {
			continue
		}
		if pid != self && fields[1] != self {
			continue
		}
		if pid == self {
			comm = "test process"
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		// USER_HZ is 100 on Linux.
		out[comm] += time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return out
}
