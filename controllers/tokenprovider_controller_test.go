package controllers_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/controllers"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/workload"
)

func tokenProvider(ns, name string, spec v1alpha1.TokenProviderSpec) *v1alpha1.TokenProvider {
	return &v1alpha1.TokenProvider{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

// oidcSpec is a TokenProvider of the test OP by issuer, with its client
// secret in the Secret secretName.
func oidcSpec(op *providertest.OP, secretName string) v1alpha1.TokenProviderSpec {
	return v1alpha1.TokenProviderSpec{
		Issuer:          op.Issuer,
		ClientID:        providertest.ClientID,
		ClientSecretRef: &v1alpha1.SecretKeyRef{Name: secretName},
		Metadata:        v1alpha1.Metadata{Name: "Test OP", Description: "in-process OpenID Provider"},
	}
}

func create(tb testing.TB, objs ...client.Object) {
	tb.Helper()
	for _, o := range objs {
		if err := k8sClient.Create(context.Background(), o); err != nil {
			tb.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

func getTP(ns, name string) (*v1alpha1.TokenProvider, error) {
	var tp v1alpha1.TokenProvider
	err := k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &tp)
	return &tp, err
}

// updateTP applies change to the current TokenProvider ns/name, again on
// a fresh copy when the status reconciler wrote in between (a conflict).
func updateTP(tb testing.TB, ns, name string, change func(*v1alpha1.TokenProvider)) {
	tb.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		tp, err := getTP(ns, name)
		if err != nil {
			return err
		}
		change(tp)
		return k8sClient.Update(context.Background(), tp)
	})
	if err != nil {
		tb.Fatalf("updating TokenProvider %s/%s: %v", ns, name, err)
	}
}

// waitCondition waits until the Ready condition has the given status and
// reason for the object's current generation, and returns the object.
func waitCondition(tb testing.TB, ns, name string, status metav1.ConditionStatus, reason string) *v1alpha1.TokenProvider {
	tb.Helper()
	var tp *v1alpha1.TokenProvider
	eventually(tb, wait, fmt.Sprintf("%s/%s Ready=%s reason %s", ns, name, status, reason), func() error {
		var err error
		if tp, err = getTP(ns, name); err != nil {
			return err
		}
		c := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady)
		switch {
		case c == nil:
			return errors.New("no Ready condition")
		case c.Status != status || c.Reason != reason:
			return fmt.Errorf("Ready=%s reason %s: %s", c.Status, c.Reason, c.Message)
		case c.ObservedGeneration != tp.Generation || tp.Status.ObservedGeneration != tp.Generation:
			return fmt.Errorf("observed generation %d, object at %d", c.ObservedGeneration, tp.Generation)
		}
		return nil
	})
	return tp
}

// waitRegistry waits until check accepts the registry's entry for id.
func waitRegistry(tb testing.TB, reg *providers.Registry, id string, check func(p *providers.Provider, ok bool) error) *providers.Provider {
	tb.Helper()
	var p *providers.Provider
	eventually(tb, wait, "registry entry "+id, func() error {
		var ok bool
		p, ok = reg.Get(id)
		return check(p, ok)
	})
	return p
}

func hasSecret(secret string) func(*providers.Provider, bool) error {
	return func(p *providers.Provider, ok bool) error {
		if !ok {
			return errors.New("not in the registry")
		}
		if p.ClientSecret != secret {
			return errors.New("registry holds another client secret")
		}
		return nil
	}
}

func absent(p *providers.Provider, ok bool) error {
	if ok {
		return errors.New("still in the registry")
	}
	return nil
}

func TestControlPlaneSmoke(t *testing.T) {
	ns := newNamespace(t, "smoke")
	var got corev1.Namespace
	if err := k8sClient.Get(context.Background(), types.NamespacedName{Name: ns}, &got); err != nil {
		t.Fatalf("reading back the namespace: %v", err)
	}
	var list v1alpha1.TokenProviderList
	if err := k8sClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("the TokenProvider CRD is not served: %v", err)
	}
}

// TestAdmissionRejectsMalformed: what can never work is refused by the API
// server (schema and CEL rules of the CRD) with a message that says what to
// fix.
func TestAdmissionRejectsMalformed(t *testing.T) {
	ns := newNamespace(t, "admission")
	ref := &v1alpha1.SecretKeyRef{Name: "s"}
	cases := []struct {
		name string
		spec v1alpha1.TokenProviderSpec
		want string
	}{
		{"no discovery and no endpoints", v1alpha1.TokenProviderSpec{ClientID: "c", ClientSecretRef: ref},
			"set discoveryURL or issuer (OpenID Connect), or endpoints.authorization and endpoints.token (plain OAuth2)"},
		{"only an authorization endpoint", v1alpha1.TokenProviderSpec{ClientID: "c", ClientSecretRef: ref,
			Endpoints: &v1alpha1.Endpoints{Authorization: "https://idp.example.com/authorize"}},
			"or endpoints.authorization and endpoints.token"},
		{"both discoveryURL and issuer", v1alpha1.TokenProviderSpec{ClientID: "c", ClientSecretRef: ref,
			DiscoveryURL: "https://idp.example.com/.well-known/openid-configuration", Issuer: "https://idp.example.com"},
			"set discoveryURL or issuer, not both"},
		{"not a URL", v1alpha1.TokenProviderSpec{ClientID: "c", ClientSecretRef: ref, Issuer: "idp.example.com"},
			"spec.issuer: Invalid value"},
		{"ftp URL", v1alpha1.TokenProviderSpec{ClientID: "c", ClientSecretRef: ref,
			Endpoints: &v1alpha1.Endpoints{Authorization: "ftp://idp.example.com/a", Token: "https://idp.example.com/t"}},
			"must be an absolute http:// or https:// URL"},
		{"unknown auth method", v1alpha1.TokenProviderSpec{ClientID: "c", ClientSecretRef: ref, Issuer: "https://idp.example.com",
			TokenEndpointAuthMethod: "private_key_jwt"},
			`Unsupported value: "private_key_jwt"`},
		{"no secret for a confidential client", v1alpha1.TokenProviderSpec{ClientID: "c", Issuer: "https://idp.example.com"},
			"clientSecretRef is required unless tokenEndpointAuthMethod is none"},
		{"reserved authorization parameter", v1alpha1.TokenProviderSpec{ClientID: "c", ClientSecretRef: ref, Issuer: "https://idp.example.com",
			AuthorizationParams: map[string]string{"redirect_uri": "https://evil.example.com"}},
			"authorizationParams cannot set client_id, redirect_uri"},
		{"no client id", v1alpha1.TokenProviderSpec{ClientSecretRef: ref, Issuer: "https://idp.example.com"},
			"spec.clientID"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := k8sClient.Create(context.Background(), tokenProvider(ns, fmt.Sprintf("bad-%d", i), c.spec))
			if err == nil {
				t.Fatal("accepted")
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("want an Invalid error, got %v", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("message %q does not contain %q", err.Error(), c.want)
			}
			t.Log(err)
		})
	}
	// The shortest valid one is accepted and defaulted.
	ok := tokenProvider(ns, "good", v1alpha1.TokenProviderSpec{ClientID: "c", ClientSecretRef: ref, Issuer: "https://idp.example.com"})
	create(t, ok)
	if ok.Spec.TokenEndpointAuthMethod != v1alpha1.AuthMethodClientSecretBasic || ok.Spec.PKCE != v1alpha1.PKCES256 ||
		strings.Join(ok.Spec.Scopes, " ") != "openid email offline_access" || ok.Spec.ClientSecretRef.Key != "clientSecret" {
		t.Fatalf("defaults not applied: %+v", ok.Spec)
	}
	// A public client needs no secret.
	create(t, tokenProvider(ns, "public", v1alpha1.TokenProviderSpec{ClientID: "c", Issuer: "https://idp.example.com", TokenEndpointAuthMethod: v1alpha1.AuthMethodNone}))
}

// TestOIDCProviderReady: a TokenProvider of a real OpenID Provider becomes
// Ready with its endpoints in status, and the registry entry works for a
// real authorization code flow with PKCE and ID token verification.
func TestOIDCProviderReady(t *testing.T) {
	ns := newNamespace(t, "oidc")
	op := providertest.Start(t, "http://127.0.0.1/callback")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	// The test OP's client secret is its own; the Secret carries it.
	create(t, clientSecret(ns, "op-client", "clientSecret", rememberSecret(op.ClientSecret)),
		tokenProvider(ns, "oidc-ready", oidcSpec(op, "op-client")))

	tp := waitCondition(t, ns, "oidc-ready", metav1.ConditionTrue, v1alpha1.ReasonReady)
	st := tp.Status
	if st.Issuer != op.Issuer || st.Endpoints == nil || !strings.HasPrefix(st.Endpoints.Token, op.Issuer) ||
		st.Endpoints.Authorization == "" || st.Endpoints.JWKS == "" || st.Endpoints.Revocation == "" || st.LastDiscoveryTime == nil {
		t.Fatalf("status lacks what is in use: %+v", st)
	}
	p := waitRegistry(t, rep.registry, "oidc-ready", hasSecret(op.ClientSecret))
	if !p.IsOIDC() || p.Metadata.Name != "Test OP" || p.PKCE != "S256" {
		t.Fatalf("unexpected registry entry %v", p)
	}

	// The registry value is usable as is: log in at the OP with it.
	ctx := context.Background()
	cfg := p.OAuth2Config(op.RedirectURL)
	pkce, nonce := oauth2.GenerateVerifier(), rand.Text()
	q, err := op.Login(ctx, cfg.AuthCodeURL("st", append(p.AuthCodeOptions(), oauth2.S256ChallengeOption(pkce), oidc.Nonce(nonce))...))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.Exchange(oidc.ClientContext(ctx, rep.ctrls.Registry.Discoverer.HTTPClient()), q.Get("code"), oauth2.VerifierOption(pkce))
	if err != nil {
		t.Fatalf("code exchange with the registry's configuration: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if idt, err := p.Verifier.Verify(ctx, raw); err != nil || idt.Nonce != nonce {
		t.Fatalf("ID token not verified with the registry's verifier: %v", err)
	}

	// An event says it became ready.
	waitEvent(t, ns, "oidc-ready", v1alpha1.ReasonReady)
}

func waitEvent(tb testing.TB, ns, name, reason string) {
	tb.Helper()
	eventually(tb, wait, "event "+reason+" for "+name, func() error {
		var list eventsv1.EventList
		if err := k8sClient.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		var seen []string
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Regarding.Kind == "TokenProvider" {
				if e.Reason == reason {
					return nil
				}
				seen = append(seen, e.Reason)
			}
		}
		return fmt.Errorf("events seen: %v", seen)
	})
}

// TestSecretLifecycle: a missing Secret makes the provider NotReady
// (SecretNotFound) and keeps it out of the registry; creating, changing,
// emptying and deleting the Secret take effect without a restart.
func TestSecretLifecycle(t *testing.T) {
	ns := newNamespace(t, "secret")
	op := providertest.Start(t, "")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	ctx := context.Background()

	create(t, tokenProvider(ns, "secret-life", oidcSpec(op, "later")))
	waitCondition(t, ns, "secret-life", metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound)
	waitRegistry(t, rep.registry, "secret-life", absent)
	waitEvent(t, ns, "secret-life", v1alpha1.ReasonSecretNotFound)

	first := newSecretValue()
	sec := clientSecret(ns, "later", "clientSecret", first)
	create(t, sec)
	waitCondition(t, ns, "secret-life", metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitRegistry(t, rep.registry, "secret-life", hasSecret(first))
	waitEvent(t, ns, "secret-life", v1alpha1.ReasonReady)

	second := newSecretValue()
	sec.Data = map[string][]byte{"clientSecret": []byte(second)}
	if err := k8sClient.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitRegistry(t, rep.registry, "secret-life", hasSecret(second))

	sec.Data = map[string][]byte{"other": []byte(second)}
	if err := k8sClient.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "secret-life", metav1.ConditionFalse, v1alpha1.ReasonSecretKeyMissing)
	waitRegistry(t, rep.registry, "secret-life", absent)

	if err := k8sClient.Delete(ctx, sec); err != nil {
		t.Fatal(err)
	}
	tp := waitCondition(t, ns, "secret-life", metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound)

	// Nothing the API shows carries a client secret.
	var evs eventsv1.EventList
	if err := k8sClient.List(ctx, &evs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	shown := fmt.Sprintf("%+v %+v", tp.Status, evs.Items)
	for _, s := range []string{first, second} {
		if strings.Contains(shown, s) {
			t.Fatal("a client secret appears in status or events")
		}
	}
}

// TestDiscoveryFailureAndRecovery: when the OP goes away the provider turns
// NotReady (DiscoveryFailed) but the registry keeps serving its last good
// configuration (even taking a new secret); when the OP comes back the
// provider recovers by itself.
func TestDiscoveryFailureAndRecovery(t *testing.T) {
	ns := newNamespace(t, "outage")
	op := providertest.Start(t, "")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	ctx := context.Background()
	first := newSecretValue()
	sec := clientSecret(ns, "outage-client", "clientSecret", first)
	create(t, sec, tokenProvider(ns, "outage", oidcSpec(op, "outage-client")))
	waitCondition(t, ns, "outage", metav1.ConditionTrue, v1alpha1.ReasonReady)
	good := waitRegistry(t, rep.registry, "outage", hasSecret(first))

	op.Stop()
	tp := waitCondition(t, ns, "outage", metav1.ConditionFalse, v1alpha1.ReasonDiscoveryFailed)
	msg := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady).Message
	if !strings.Contains(msg, "still serving") {
		t.Fatalf("message does not say the last configuration is served: %s", msg)
	}
	if tp.Status.Endpoints == nil || tp.Status.Endpoints.Token != good.Endpoint.TokenURL {
		t.Fatalf("endpoints in use not shown during the outage: %+v", tp.Status.Endpoints)
	}
	if p, ok := rep.registry.Get("outage"); !ok || p.Endpoint.TokenURL != good.Endpoint.TokenURL {
		t.Fatal("the last good configuration left the registry during the outage")
	}
	waitEvent(t, ns, "outage", v1alpha1.ReasonDiscoveryFailed)

	// A secret rotated during the outage still reaches the registry.
	second := newSecretValue()
	sec.Data = map[string][]byte{"clientSecret": []byte(second)}
	if err := k8sClient.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	waitRegistry(t, rep.registry, "outage", hasSecret(second))

	// A provider whose discovery never worked is not served: another OP,
	// down from the start.
	op2 := providertest.Start(t, "")
	op2.Stop()
	create(t, tokenProvider(ns, "outage-new", oidcSpec(op2, "outage-client")))
	waitCondition(t, ns, "outage-new", metav1.ConditionFalse, v1alpha1.ReasonDiscoveryFailed)
	waitRegistry(t, rep.registry, "outage-new", absent)

	// Both recover by themselves once their OP is back.
	for _, o := range []*providertest.OP{op, op2} {
		if err := o.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	waitCondition(t, ns, "outage", metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitCondition(t, ns, "outage-new", metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitRegistry(t, rep.registry, "outage-new", hasSecret(second))
	waitEvent(t, ns, "outage", v1alpha1.ReasonReady)
}

func TestIssuerMismatch(t *testing.T) {
	ns := newNamespace(t, "mismatch")
	op := providertest.Start(t, "")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	spec := oidcSpec(op, "mm-client")
	spec.Issuer = op.Issuer + "/" // the OP names itself without the slash
	create(t, clientSecret(ns, "mm-client", "clientSecret", newSecretValue()), tokenProvider(ns, "mismatch", spec))
	tp := waitCondition(t, ns, "mismatch", metav1.ConditionFalse, v1alpha1.ReasonIssuerMismatch)
	if msg := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady).Message; !strings.Contains(msg, op.Issuer) {
		t.Fatalf("message does not name the discovered issuer: %s", msg)
	}
	waitRegistry(t, rep.registry, "mismatch", absent)
}

// TestPlainOAuth2Provider: a GitHub-style provider with explicit endpoints
// and no discovery is Ready without any network call.
func TestPlainOAuth2Provider(t *testing.T) {
	ns := newNamespace(t, "plain")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	secret := newSecretValue()
	create(t, clientSecret(ns, "gh", "clientSecret", secret), tokenProvider(ns, "github-test", v1alpha1.TokenProviderSpec{
		Endpoints: &v1alpha1.Endpoints{
			Authorization: "https://github.com/login/oauth/authorize",
			Token:         "https://github.com/login/oauth/access_token",
			Userinfo:      "https://api.github.com/user",
		},
		ClientID:                "Iv1.test",
		ClientSecretRef:         &v1alpha1.SecretKeyRef{Name: "gh"},
		TokenEndpointAuthMethod: v1alpha1.AuthMethodClientSecretPost,
		Scopes:                  []string{"read:user"},
		AuthorizationParams:     map[string]string{"allow_signup": "false"},
		Metadata:                v1alpha1.Metadata{Name: "GitHub", Logo: "https://github.com/logo.png"},
		WorkloadAccess: &v1alpha1.WorkloadAccess{ServiceAccounts: []v1alpha1.ServiceAccountRef{
			{Name: "robot"}, {Namespace: "other", Name: "bot"},
		}},
	}))
	tp := waitCondition(t, ns, "github-test", metav1.ConditionTrue, v1alpha1.ReasonReady)
	if tp.Status.Issuer != "" || tp.Status.LastDiscoveryTime != nil || tp.Status.Endpoints.Token != "https://github.com/login/oauth/access_token" {
		t.Fatalf("unexpected status for a plain OAuth2 provider: %+v", tp.Status)
	}
	p := waitRegistry(t, rep.registry, "github-test", hasSecret(secret))
	if p.IsOIDC() || p.Endpoint.AuthStyle != oauth2.AuthStyleInParams || p.AuthorizationParams["allow_signup"] != "false" ||
		strings.Join(p.Scopes, " ") != "read:user" || p.UserinfoURL != "https://api.github.com/user" || p.Metadata.Logo == "" {
		t.Fatalf("unexpected registry entry: %+v", *p)
	}
	if !p.AllowsServiceAccount(ns, "robot") || !p.AllowsServiceAccount("other", "bot") || p.AllowsServiceAccount(ns, "bot") {
		t.Fatalf("service accounts not resolved: %+v", p.ServiceAccounts)
	}
}

// TestSpecChangeAndDelete: a spec change reaches the registry and the
// status' observedGeneration; a deleted provider leaves the registry.
func TestSpecChangeAndDelete(t *testing.T) {
	ns := newNamespace(t, "change")
	op := providertest.Start(t, "")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	ctx := context.Background()
	tp := tokenProvider(ns, "changing", oidcSpec(op, "ch-client"))
	create(t, clientSecret(ns, "ch-client", "clientSecret", newSecretValue()), tp)
	waitCondition(t, ns, "changing", metav1.ConditionTrue, v1alpha1.ReasonReady)

	updateTP(t, ns, "changing", func(tp *v1alpha1.TokenProvider) {
		tp.Spec.AuthorizationParams = map[string]string{"prompt": "consent", "access_type": "offline"}
		tp.Spec.Metadata.Name = "Renamed"
	})
	waitRegistry(t, rep.registry, "changing", func(p *providers.Provider, ok bool) error {
		if !ok || p.Metadata.Name != "Renamed" || p.AuthorizationParams["prompt"] != "consent" {
			return errors.New("spec change not in the registry")
		}
		return nil
	})
	got := waitCondition(t, ns, "changing", metav1.ConditionTrue, v1alpha1.ReasonReady)
	if got.Generation < 2 {
		t.Fatalf("generation %d after an update", got.Generation)
	}

	if err := k8sClient.Delete(ctx, tp); err != nil {
		t.Fatal(err)
	}
	waitRegistry(t, rep.registry, "changing", absent)
}

// TestIDConflict: two TokenProviders that claim one provider id (by name,
// in different namespaces) are both not served and both say IDConflict,
// naming the other; when one goes, the other serves.
func TestIDConflict(t *testing.T) {
	ns1, ns2 := newNamespace(t, "dup"), newNamespace(t, "dup")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns1, ns2}})
	older := tokenProvider(ns1, "dup-id", plainSpec("dup", "https://idp.example.com/older"))
	create(t, clientSecret(ns1, "dup", "clientSecret", newSecretValue()), clientSecret(ns2, "dup", "clientSecret", newSecretValue()), older)
	waitCondition(t, ns1, "dup-id", metav1.ConditionTrue, v1alpha1.ReasonReady)
	create(t, tokenProvider(ns2, "dup-id", plainSpec("dup", "https://idp.example.com/newer")))
	first := waitCondition(t, ns1, "dup-id", metav1.ConditionFalse, v1alpha1.ReasonIDConflict)
	second := waitCondition(t, ns2, "dup-id", metav1.ConditionFalse, v1alpha1.ReasonIDConflict)
	wantInMessage(t, first, "TokenProvider "+ns2+"/dup-id")
	wantInMessage(t, second, "TokenProvider "+ns1+"/dup-id")
	waitRegistry(t, rep.registry, "dup-id", absent)
	if err := k8sClient.Delete(context.Background(), older); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns2, "dup-id", metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitRegistry(t, rep.registry, "dup-id", func(p *providers.Provider, ok bool) error {
		if !ok || p.Endpoint.TokenURL != "https://idp.example.com/newer" {
			return errors.New("the remaining TokenProvider did not take over")
		}
		return nil
	})
}

// TestSpecID: spec.id is the provider id when the name cannot be (the Flask
// service's "tern_keycloak"); two objects of different names that claim one
// id conflict until one of them changes its spec.id; requireSameSubject
// reaches the registry.
func TestSpecID(t *testing.T) {
	ns := newNamespace(t, "specid")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	spec := plainSpec("specid", "https://idp.example.com/tern")
	spec.ID = "tern_keycloak"
	spec.RequireSameSubject = true
	create(t, clientSecret(ns, "specid", "clientSecret", newSecretValue()), tokenProvider(ns, "tern-keycloak", spec))
	waitCondition(t, ns, "tern-keycloak", metav1.ConditionTrue, v1alpha1.ReasonReady)
	p := waitRegistry(t, rep.registry, "tern_keycloak", func(p *providers.Provider, ok bool) error {
		if !ok {
			return errors.New("not served under spec.id")
		}
		return nil
	})
	if !p.RequireSameSubject || p.Source != "TokenProvider "+ns+"/tern-keycloak" {
		t.Fatalf("RequireSameSubject %v, Source %q", p.RequireSameSubject, p.Source)
	}
	if _, ok := rep.registry.Get("tern-keycloak"); ok {
		t.Fatal("also served under its name")
	}

	other := plainSpec("specid", "https://idp.example.com/other")
	other.ID = "tern_keycloak"
	create(t, tokenProvider(ns, "second", other))
	a := waitCondition(t, ns, "tern-keycloak", metav1.ConditionFalse, v1alpha1.ReasonIDConflict)
	b := waitCondition(t, ns, "second", metav1.ConditionFalse, v1alpha1.ReasonIDConflict)
	wantInMessage(t, a, "TokenProvider "+ns+"/second")
	wantInMessage(t, b, "TokenProvider "+ns+"/tern-keycloak")
	waitRegistry(t, rep.registry, "tern_keycloak", absent)

	// The second one moves to an id of its own: both serve.
	tp, err := getTP(ns, "second")
	if err != nil {
		t.Fatal(err)
	}
	tp.Spec.ID = "second_id"
	if err := k8sClient.Update(context.Background(), tp); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ns, "tern-keycloak", metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitCondition(t, ns, "second", metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitRegistry(t, rep.registry, "tern_keycloak", hasTokenURL("https://idp.example.com/tern"))
	waitRegistry(t, rep.registry, "second_id", hasTokenURL("https://idp.example.com/other"))

	// An id that is not one URL path segment is refused at admission.
	bad := plainSpec("specid", "https://idp.example.com/bad")
	bad.ID = "../admin"
	if err := k8sClient.Create(context.Background(), tokenProvider(ns, "bad", bad)); err == nil || !strings.Contains(err.Error(), "spec.id") {
		t.Fatalf("spec.id ../admin accepted (%v)", err)
	}
}

// TestIDConflictWithFile: an id that the providers file claims too (its
// writer in the same registry) is served by neither source; the
// TokenProvider says IDConflict naming the file's entry, and serves again
// when the file lets the id go.
func TestIDConflictWithFile(t *testing.T) {
	ns := newNamespace(t, "filedup")
	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	create(t, clientSecret(ns, "filedup", "clientSecret", newSecretValue()), tokenProvider(ns, "shared", plainSpec("filedup", "https://idp.example.com/kube")))
	waitCondition(t, ns, "shared", metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitRegistry(t, rep.registry, "shared", hasTokenURL("https://idp.example.com/kube"))

	file := rep.registry.Source(providers.SourceFile)
	fp := &providers.Provider{ID: "shared", Source: "TokenProvider default/shared in /etc/tokenstore/providers.yaml", ClientID: "f"}
	fp.Version = providers.Fingerprint(fp)
	file.Put(fp)
	tp := waitCondition(t, ns, "shared", metav1.ConditionFalse, v1alpha1.ReasonIDConflict)
	wantInMessage(t, tp, "TokenProvider default/shared in /etc/tokenstore/providers.yaml (file source)")
	if _, ok := rep.registry.Get("shared"); ok {
		t.Fatal("an id claimed by both sources is served")
	}
	file.Delete("shared")
	waitCondition(t, ns, "shared", metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitRegistry(t, rep.registry, "shared", hasTokenURL("https://idp.example.com/kube"))
}

// plainSpec is a plain OAuth2 TokenProvider (no discovery) whose client
// secret is in the Secret secretName.
func plainSpec(secretName, tokenURL string) v1alpha1.TokenProviderSpec {
	return v1alpha1.TokenProviderSpec{
		Endpoints:       &v1alpha1.Endpoints{Authorization: "https://idp.example.com/authorize", Token: tokenURL},
		ClientID:        "c",
		ClientSecretRef: &v1alpha1.SecretKeyRef{Name: secretName},
	}
}

func hasTokenURL(u string) func(*providers.Provider, bool) error {
	return func(p *providers.Provider, ok bool) error {
		if !ok || p.Endpoint.TokenURL != u {
			return fmt.Errorf("registry entry %v, want token URL %s", p, u)
		}
		return nil
	}
}

// wantInMessage checks the Ready condition's message of tp.
func wantInMessage(tb testing.TB, tp *v1alpha1.TokenProvider, want string) {
	tb.Helper()
	c := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady)
	if c == nil || !strings.Contains(c.Message, want) {
		tb.Fatalf("Ready message of %s/%s = %v, want it to name %q", tp.Namespace, tp.Name, c, want)
	}
}

// TestRegistryReadyAfterInitialFill: a replica starting with providers
// already declared reports ready only once every one of them was
// reconciled.
func TestRegistryReadyAfterInitialFill(t *testing.T) {
	ns := newNamespace(t, "fill")
	op := providertest.Start(t, "")
	create(t, clientSecret(ns, "fill", "clientSecret", newSecretValue()))
	const n = 20
	for i := 0; i < n; i++ {
		create(t, tokenProvider(ns, fmt.Sprintf("fill-%02d", i), oidcSpec(op, "fill")))
	}
	// One that cannot be resolved must not hold readiness back forever.
	create(t, tokenProvider(ns, "fill-broken", oidcSpec(op, "missing")))

	rep := startReplica(t, replicaConfig{namespaces: []string{ns}})
	check := controllers.ReadyzCheck(rep.registry)
	select {
	case <-rep.registry.ReadyC():
	case <-time.After(wait):
		t.Fatalf("registry not ready after %s (%d entries): %v", wait, rep.registry.Len(), check(nil))
	}
	if got := rep.registry.Len(); got != n {
		t.Fatalf("ready with %d providers, want %d", got, n)
	}
	if err := check(nil); err != nil {
		t.Fatalf("readyz check fails after the fill: %v", err)
	}
	if err := controllers.ReadyzCheck(providers.NewRegistry())(nil); err == nil {
		t.Fatal("readyz check passes on an empty, unfilled registry")
	}
}

// TestTwoReplicasLeaderElection: two managers with leader election against
// one API server both keep a complete registry, but only the leader writes
// status; when the leader goes, the other takes over status writing.
func TestTwoReplicasLeaderElection(t *testing.T) {
	ns := newNamespace(t, "ha")
	op := providertest.Start(t, "")
	a := startReplica(t, replicaConfig{namespaces: []string{ns}, leaderElection: true, leaseNamespace: ns, fieldOwner: "tokenstore-a"})
	b := startReplica(t, replicaConfig{namespaces: []string{ns}, leaderElection: true, leaseNamespace: ns, fieldOwner: "tokenstore-b"})

	var leader, follower *replica
	var leaderOwner, followerOwner string
	select {
	case <-a.mgr.Elected():
		leader, follower, leaderOwner, followerOwner = a, b, "tokenstore-a", "tokenstore-b"
	case <-b.mgr.Elected():
		leader, follower, leaderOwner, followerOwner = b, a, "tokenstore-b", "tokenstore-a"
	case <-time.After(wait):
		t.Fatal("no leader elected")
	}
	select {
	case <-follower.mgr.Elected():
		t.Fatal("both replicas elected")
	default:
	}

	create(t, clientSecret(ns, "ha", "clientSecret", newSecretValue()))
	const n = 5
	for i := 0; i < n; i++ {
		create(t, tokenProvider(ns, fmt.Sprintf("ha-%d", i), oidcSpec(op, "ha")))
	}
	for i := 0; i < n; i++ {
		waitCondition(t, ns, fmt.Sprintf("ha-%d", i), metav1.ConditionTrue, v1alpha1.ReasonReady)
	}
	for _, r := range []*replica{a, b} {
		eventually(t, wait, "complete registry on both replicas", func() error {
			if got := r.registry.Len(); got != n {
				return fmt.Errorf("%d of %d providers", got, n)
			}
			if !r.registry.Ready() {
				return errors.New("not ready")
			}
			return nil
		})
	}
	if runs := follower.ctrls.Status.Runs(); runs != 0 {
		t.Fatalf("the follower's status reconciler ran %d times", runs)
	}
	statusWriters := func(name string) ([]string, error) {
		tp, err := getTP(ns, name)
		if err != nil {
			return nil, err
		}
		var w []string
		for _, mf := range tp.ManagedFields {
			if mf.Subresource == "status" {
				w = append(w, mf.Manager)
			}
		}
		return w, nil
	}
	for i := 0; i < n; i++ {
		w, err := statusWriters(fmt.Sprintf("ha-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if len(w) != 1 || w[0] != leaderOwner {
			t.Fatalf("status written by %v, want only %s", w, leaderOwner)
		}
	}

	// The leader goes away; the follower takes over status writing.
	leader.stop()
	select {
	case <-follower.mgr.Elected():
	case <-time.After(wait):
		t.Fatal("the follower was not elected after the leader stopped")
	}
	updateTP(t, ns, "ha-0", func(tp *v1alpha1.TokenProvider) { tp.Spec.Metadata.Name = "after failover" })
	waitCondition(t, ns, "ha-0", metav1.ConditionTrue, v1alpha1.ReasonReady)
	eventually(t, wait, "status written by the new leader", func() error {
		w, err := statusWriters("ha-0")
		if err != nil {
			return err
		}
		for _, m := range w {
			if m == followerOwner {
				return nil
			}
		}
		return fmt.Errorf("status writers %v", w)
	})
	waitRegistry(t, follower.registry, "ha-0", func(p *providers.Provider, ok bool) error {
		if !ok || p.Metadata.Name != "after failover" {
			return errors.New("change not in the new leader's registry")
		}
		return nil
	})
}

// readyWithTracker starts a replica as rc says (its namespace and options
// filled in), with a Ready provider id of a test OP, and returns the
// namespace, the replica and a func that reports DefaultFailThreshold
// failed refreshes of id to the replica's token-endpoint tracker.
// Discovery is re-checked only every 10 minutes: what changes the
// condition within seconds is the tracker waking the reconciler.
func readyWithTracker(t *testing.T, prefix, id string, rc replicaConfig) (string, *replica, func()) {
	t.Helper()
	ns := newNamespace(t, prefix)
	op := providertest.Start(t, "http://127.0.0.1/callback")
	opts := testOptions
	opts.RefreshInterval = 10 * time.Minute
	rc.namespaces, rc.opts = []string{ns}, &opts
	rep := startReplica(t, rc)
	create(t, clientSecret(ns, "op-client", "clientSecret", rememberSecret(op.ClientSecret)),
		tokenProvider(ns, id, oidcSpec(op, "op-client")))
	waitCondition(t, ns, id, metav1.ConditionTrue, v1alpha1.ReasonReady)
	return ns, rep, func() {
		for range providers.DefaultFailThreshold {
			rep.registry.TokenEndpoints().Observe(id, "token endpoint answered 500 server_error")
		}
	}
}

// TestTokenEndpointFailing: a Ready provider whose token endpoint keeps
// failing for this replica's refreshes (the broker reports each to the
// registry's TokenEndpoints) turns Ready=False, reason
// TokenEndpointFailing, within seconds and not at the next re-check, with
// a Warning event; it stays in the registry (valid tokens are served);
// the first refresh that succeeds makes it Ready again, and so does the
// verdict lapsing when no refresh is tried.
func TestTokenEndpointFailing(t *testing.T) {
	// hold is long enough for the reconciler, woken by the tracker, to
	// write the False condition before the verdict lapses, even with the
	// rest of the suite loading both cores (3 s was not, once in CI).
	const hold = 10 * time.Second
	health := providers.NewTokenEndpointHealth(providers.HealthOptions{FailHold: hold})
	const id = "te"
	ns, rep, fail := readyWithTracker(t, "tokenendpoint", id, replicaConfig{health: health})
	fail()
	tp := waitCondition(t, ns, id, metav1.ConditionFalse, v1alpha1.ReasonTokenEndpointFailing)
	c := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady)
	if !strings.Contains(c.Message, "last 3 refreshes") || !strings.Contains(c.Message, "answered 500") {
		t.Fatalf("condition message %q does not say what failed", c.Message)
	}
	waitEvent(t, ns, id, v1alpha1.ReasonTokenEndpointFailing)
	if _, ok := rep.registry.Get(id); !ok {
		t.Fatal("a failing token endpoint took the provider out of the registry")
	}

	// A refresh that succeeds.
	rep.registry.TokenEndpoints().Observe(id, "")
	waitCondition(t, ns, id, metav1.ConditionTrue, v1alpha1.ReasonReady)

	// No refresh at all after the failures: the verdict lapses after hold.
	fail()
	failedAt := time.Now()
	waitCondition(t, ns, id, metav1.ConditionFalse, v1alpha1.ReasonTokenEndpointFailing)
	waitCondition(t, ns, id, metav1.ConditionTrue, v1alpha1.ReasonReady)
	if d := time.Since(failedAt); d < hold {
		t.Fatalf("Ready again %v after the failures, before the %v hold", d, hold)
	}
}

// TestClientRejected: the real OP refuses a service-token request of a
// Ready provider (its client is the OP's web client, not a
// client-credentials one) with invalid_client; the service-token cache
// reports it to the replica's token-endpoint tracker, and the provider
// turns Ready=False, reason ClientRejected, within seconds, with a message
// naming the grant and the OP's error code (never the secret) and a
// Warning event, ahead of a failing verdict; it stays in the registry. A
// service token obtained makes it Ready again, and so does the verdict
// lapsing when no one asks again.
func TestClientRejected(t *testing.T) {
	const hold = 10 * time.Second
	health := providers.NewTokenEndpointHealth(providers.HealthOptions{RejectHold: hold})
	const id = "cr"
	ns, rep, fail := readyWithTracker(t, "clientrejected", id, replicaConfig{health: health})
	p, ok := rep.registry.Get(id)
	if !ok {
		t.Fatal("provider not in the registry")
	}
	st := workload.NewServiceTokens(workload.ServiceTokenOptions{Endpoints: rep.registry.TokenEndpoints()})
	refuse := func() {
		t.Helper()
		var cr *providers.ClientRejectedError
		if _, err := st.Token(context.Background(), p); !errors.As(err, &cr) || cr.Code != "invalid_client" {
			t.Fatalf("service token with the OP's web client: %v, want the client rejected with invalid_client", err)
		}
	}
	refuse()
	fail() // a failing verdict as well: the refusal is what the condition says
	tp := waitCondition(t, ns, id, metav1.ConditionFalse, v1alpha1.ReasonClientRejected)
	c := meta.FindStatusCondition(tp.Status.Conditions, v1alpha1.ConditionReady)
	if !strings.Contains(c.Message, "client_credentials grant") || !strings.Contains(c.Message, "with invalid_client") ||
		strings.Contains(c.Message, p.ClientSecret) {
		t.Fatalf("condition message %q does not say which grant and code", c.Message)
	}
	waitEvent(t, ns, id, v1alpha1.ReasonClientRejected)
	if _, ok := rep.registry.Get(id); !ok {
		t.Fatal("a refused client took the provider out of the registry")
	}

	// A service token obtained (the grant accepted), and a refresh that
	// succeeds: Ready.
	rep.registry.TokenEndpoints().Accepted(id, providers.GrantClientCredentials)
	rep.registry.TokenEndpoints().Observe(id, "")
	waitCondition(t, ns, id, metav1.ConditionTrue, v1alpha1.ReasonReady)

	// Refused again and nobody asks after: the verdict lapses after hold.
	refuse()
	refusedAt := time.Now()
	waitCondition(t, ns, id, metav1.ConditionFalse, v1alpha1.ReasonClientRejected)
	waitCondition(t, ns, id, metav1.ConditionTrue, v1alpha1.ReasonReady)
	if d := time.Since(refusedAt); d < hold {
		t.Fatalf("Ready again %v after the refusal, before the %v hold", d, hold)
	}
}

// laggingClient is the status reconciler's cache running behind: armed
// with an older copy of an object, its next Get of that object returns the
// copy instead of what the cache holds.
type laggingClient struct {
	client.Client
	mu     sync.Mutex
	old    *v1alpha1.TokenProvider
	served bool
}

func (c *laggingClient) lagWith(old *v1alpha1.TokenProvider) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.old, c.served = old.DeepCopy(), false
}

func (c *laggingClient) servedOld() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.served
}

func (c *laggingClient) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	tp, isTP := obj.(*v1alpha1.TokenProvider)
	c.mu.Lock()
	old := c.old
	lagging := isTP && old != nil && client.ObjectKeyFromObject(old) == key
	if lagging {
		c.old, c.served = nil, true
	}
	c.mu.Unlock()
	if lagging {
		old.DeepCopyInto(tp)
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// TestStatusWriteAheadOfCache: the status reconciler is not woken by its
// own writes, so a reconcile can read a cached copy that predates its last
// status patch. Ready went False, True, and is to go False again with the
// very same message; a cache still showing the first False must not make
// the reconciler skip the write and leave the object True (what
// TestTokenEndpointFailing once hit in CI).
func TestStatusWriteAheadOfCache(t *testing.T) {
	// A stopped clock: both failing verdicts say "since" the same second,
	// so the two False conditions are equal. The verdict's re-check
	// (at its lapse) is far beyond the wait.
	stopped := time.Now()
	health := providers.NewTokenEndpointHealth(providers.HealthOptions{FailHold: time.Hour, Now: func() time.Time { return stopped }})
	lag := &laggingClient{}
	const id = "lag"
	ns, rep, fail := readyWithTracker(t, "statuslag", id, replicaConfig{health: health,
		statusClient: func(c client.Client) client.Client { lag.Client = c; return lag }})
	fail()
	failing := waitCondition(t, ns, id, metav1.ConditionFalse, v1alpha1.ReasonTokenEndpointFailing)
	rep.registry.TokenEndpoints().Observe(id, "")
	waitCondition(t, ns, id, metav1.ConditionTrue, v1alpha1.ReasonReady)

	lag.lagWith(failing)
	fail()
	waitCondition(t, ns, id, metav1.ConditionFalse, v1alpha1.ReasonTokenEndpointFailing)
	if !lag.servedOld() {
		t.Fatal("the reconciler never read the lagging copy: the test did not test the lag")
	}
}
