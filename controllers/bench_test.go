package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/controllers"
	"github.com/tokenstore/tokenstore/server/providers"
	"github.com/tokenstore/tokenstore/server/providers/providertest"
)

const benchProviders = 1000

// BenchmarkCreate1000ProvidersToReady measures, against the envtest API
// server and the in-process OP, with production settings (default
// Options and discovery TTL):
//   - create-s: creating 1,000 TokenProviders (half OpenID Connect through
//     discovery, half plain OAuth2), 8 clients in parallel;
//   - registry-s: from the first create until all 1,000 are in the registry;
//   - ready-s: from the first create until all 1,000 report Ready=True
//     (polled every 250 ms);
//   - spec-p50/p99-ms: from a spec update until the registry serves it;
//   - secret-p50/p99-ms: from a Secret update until the registry serves the
//     new client secret.
//
// Run it with: go test ./controllers -run '^$' -bench Create1000 -benchtime 1x
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
		b.StartTimer()

		start := time.Now()
		createProviders(b, ns, op)
		created := time.Since(start)
		eventually(b, 10*time.Minute, "all providers in the registry", func() error {
			if n := rep.registry.Len(); n != benchProviders {
				return fmt.Errorf("%d of %d", n, benchProviders)
			}
			return nil
		})
		inRegistry := time.Since(start)
		eventually(b, 10*time.Minute, "all providers Ready", func() error {
			var list v1alpha1.TokenProviderList
			if err := k8sClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
				return err
			}
			ready := 0
			for _, tp := range list.Items {
				if meta.IsStatusConditionTrue(tp.Status.Conditions, v1alpha1.ConditionReady) {
					ready++
				}
			}
			if ready != benchProviders {
				time.Sleep(200 * time.Millisecond)
				return fmt.Errorf("%d of %d Ready", ready, benchProviders)
			}
			return nil
		})
		allReady := time.Since(start)
		b.StopTimer()

		b.ReportMetric(created.Seconds(), "create-s")
		b.ReportMetric(inRegistry.Seconds(), "registry-s")
		b.ReportMetric(allReady.Seconds(), "ready-s")

		spec := changeLatencies(b, rep.registry, 100, func(j int) (string, func(*providers.Provider) bool) {
			id := fmt.Sprintf("bench-%04d", j*7%benchProviders)
			name := fmt.Sprintf("renamed %d", j)
			tp, err := getTP(ns, id)
			if err != nil {
				b.Fatal(err)
			}
			tp.Spec.Metadata.Name = name
			if err := k8sClient.Update(context.Background(), tp); err != nil {
				b.Fatal(err)
			}
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

func createProviders(b *testing.B, ns string, op *providertest.OP) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for j := w; j < benchProviders; j += 8 {
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
				if err := k8sClient.Create(context.Background(), tp); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("creating TokenProviders: %v", err)
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
