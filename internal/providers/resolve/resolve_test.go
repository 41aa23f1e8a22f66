package resolve_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/providers/resolve"
)

// TestResolveWithoutKubernetes: the file source calls Resolve with Secrets
// from memory and objects that never saw an API server (no defaults).
func TestResolveWithoutKubernetes(t *testing.T) {
	op := providertest.Start(t, "")
	d := providers.NewDiscoverer(nil, providers.DiscovererOptions{})
	ctx := context.Background()
	secret := newSecretValue()
	secrets := resolve.StaticSecrets(&corev1.Secret{
		ObjectMeta: metaNamed("file-secret"),
		StringData: map[string]string{"clientSecret": secret},
	})
	tp := tokenProvider("", "from-file", v1alpha1.TokenProviderSpec{
		DiscoveryURL:    op.DiscoveryURL(),
		ClientID:        providertest.ClientID,
		ClientSecretRef: &v1alpha1.SecretKeyRef{Name: "file-secret"},
	})
	res, err := resolve.Resolve(ctx, tp, secrets, d)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ready || res.Provider == nil {
		t.Fatalf("not ready: %s %s", res.Reason, res.Message)
	}
	p := res.Provider
	if p.ClientSecret != secret || p.AuthMethod != "client_secret_basic" || p.PKCE != "S256" ||
		strings.Join(p.Scopes, " ") != "openid email offline_access" || p.Issuer != op.Issuer {
		t.Fatalf("defaults not applied: %v %v %v", p, p.Scopes, p.PKCE)
	}
	if res.NextCheck(time.Minute, time.Second, time.Hour) != time.Minute {
		t.Fatal("a discovered provider must be re-checked at the refresh interval")
	}
	// Resolving again gives the same version: nothing changed.
	again, _ := resolve.Resolve(ctx, tp, secrets, d)
	if again.Provider.Version != p.Version {
		t.Fatal("version not stable")
	}

	var st v1alpha1.TokenProviderStatus
	if !res.ApplyStatus(&st, 3, time.Now()) {
		t.Fatal("first status must count as a readiness change")
	}
	if res.ApplyStatus(&st, 3, time.Now()) {
		t.Fatal("same readiness counted as a change")
	}
	if st.ObservedGeneration != 3 || st.Conditions[0].ObservedGeneration != 3 || st.Issuer != op.Issuer || st.LastDiscoveryTime == nil {
		t.Fatalf("status not filled: %+v", st)
	}

	for _, c := range []struct {
		name    string
		secrets resolve.SecretLookup
		reason  string
	}{
		{"no secret", resolve.StaticSecrets(), v1alpha1.ReasonSecretNotFound},
		{"no key", resolve.StaticSecrets(&corev1.Secret{ObjectMeta: metaNamed("file-secret"), Data: map[string][]byte{"x": []byte("y")}}), v1alpha1.ReasonSecretKeyMissing},
	} {
		res, err := resolve.Resolve(ctx, tp, c.secrets, d)
		if err != nil || res.Ready || res.Reason != c.reason || res.Provider != nil {
			t.Errorf("%s: got %v %+v", c.name, err, res)
		}
		if c.reason == v1alpha1.ReasonSecretNotFound && res.NextCheck(time.Minute, time.Second, time.Hour) != 0 {
			t.Errorf("a missing Secret needs no polling: its creation is an event")
		}
	}
	// A lookup failure other than not-found is transient: an error.
	boom := func(string, string) ([]byte, error) { return nil, errors.New("API server unavailable") }
	if _, err := resolve.Resolve(ctx, tp, boom, d); err == nil {
		t.Fatal("a transient Secret read failure must be returned as an error")
	}
	// Specs the CRD would have refused are still refused.
	bad := tokenProvider("", "bad", v1alpha1.TokenProviderSpec{ClientID: "c", TokenEndpointAuthMethod: v1alpha1.AuthMethodNone})
	if res, _ := resolve.Resolve(ctx, bad, secrets, d); res.Reason != v1alpha1.ReasonInvalidSpec {
		t.Fatalf("want InvalidSpec, got %s", res.Reason)
	}
}

func TestNextCheckBackoff(t *testing.T) {
	r := resolve.Result{Reason: v1alpha1.ReasonDiscoveryFailed, UsesDiscovery: true}
	var got []time.Duration
	for f := 1; f <= 6; f++ {
		r.DiscoveryFailures = f
		got = append(got, r.NextCheck(10*time.Minute, time.Second, 10*time.Second))
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoff %v, want %v seconds", got, want)
		}
	}
}

func tokenProvider(ns, name string, spec v1alpha1.TokenProviderSpec) *v1alpha1.TokenProvider {
	return &v1alpha1.TokenProvider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func metaNamed(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

func newSecretValue() string { return "s3cr3t-" + rand.Text() }
