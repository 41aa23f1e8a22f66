package filesource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/testutil"
	"github.com/tokenstore/tokenstore/internal/workload"
)

type harness struct {
	t    *testing.T
	reg  *providers.Registry
	src  *Source
	logs *testutil.SyncBuffer
}

// start runs a Source on path until the test ends.
func start(t *testing.T, path string, tweak func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, reg: providers.NewRegistry(), logs: &testutil.SyncBuffer{}}
	opts := Options{
		Path:       path,
		Registry:   h.reg,
		Logger:     slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Discoverer: providers.NewDiscoverer(nil, providers.DiscovererOptions{FailureTTL: time.Millisecond}),
		Debounce:   20 * time.Millisecond,
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}
	if tweak != nil {
		tweak(&opts)
	}
	src, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.src = src
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-src.ReadyC():
	case <-time.After(20 * time.Second):
		t.Fatal("source not ready after its first load")
	}
	if !h.reg.Ready() {
		t.Error("registry not marked ready after the first load")
	}
	return h
}

// eventually polls cond until it holds; the deadline only guards against a
// hang, it measures nothing.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; statuses %+v; errors %v", what, h.src.Statuses(), h.src.Errors())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) ids() []string {
	var ids []string
	for _, p := range h.reg.List() {
		ids = append(ids, p.ID)
	}
	return ids
}

func (h *harness) status(id string) (ready bool, reason, message string) {
	h.t.Helper()
	st, ok := h.src.Status(id)
	if !ok {
		return false, "<none>", ""
	}
	return st.Ready()
}

// save writes a file the way editors do: a new file renamed over the old
// one, which ends any watch on the old file itself.
func save(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func oidcProvider(name, discoveryURL, secretName string) string {
	return fmt.Sprintf(`---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: %s
spec:
  discoveryURL: %s
  clientID: %s
  clientSecretRef:
    name: %s
  metadata:
    name: %s display name
`, name, discoveryURL, providertest.ClientID, secretName, name)
}

func secret(name, value string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Secret
metadata:
  name: %s
stringData:
  clientSecret: %s
`, name, value)
}

const plainOAuth2 = `---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: github
spec:
  clientID: gh-client
  tokenEndpointAuthMethod: none
  scopes: [repo]
  endpoints:
    authorization: https://github.com/login/oauth/authorize
    token: https://github.com/login/oauth/access_token
`

const invalidProvider = `---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: broken
spec:
  clientID: x
  clientSecretRef: {name: s}
`

func TestSourceLoadsValidAndReportsInvalid(t *testing.T) {
	op := providertest.Start(t, "")
	path := filepath.Join(t.TempDir(), "providers.yaml")
	save(t, path, oidcProvider("idp1", op.DiscoveryURL(), "idp1-client")+secret("idp1-client", op.ClientSecret)+plainOAuth2+invalidProvider)
	h := start(t, path, nil)

	if got := h.ids(); !slices.Equal(got, []string{"github", "idp1"}) {
		t.Fatalf("registry holds %v, want [github idp1]", got)
	}
	p, _ := h.reg.Get("idp1")
	if p.Issuer != op.Issuer || p.Verifier == nil || p.Endpoint.TokenURL == "" {
		t.Errorf("idp1 not discovered: issuer %q, token URL %q", p.Issuer, p.Endpoint.TokenURL)
	}
	if p.ClientSecret != op.ClientSecret || p.ClientID != providertest.ClientID {
		t.Errorf("idp1 client credentials not taken from the manifests")
	}
	// Defaults from the CRD reached the registry.
	if !slices.Equal(p.Scopes, []string{"openid", "email", "offline_access"}) || p.PKCE != "S256" || p.AuthMethod != "client_secret_basic" {
		t.Errorf("defaults not applied: scopes %v pkce %q auth %q", p.Scopes, p.PKCE, p.AuthMethod)
	}
	if f, _ := h.reg.Source(providers.SourceFile).Get("idp1"); p.Metadata.Name != "idp1 display name" || f != p || !strings.HasSuffix(p.Source, " in "+path) {
		t.Errorf("metadata %q, source %q", p.Metadata.Name, p.Source)
	}
	gh, _ := h.reg.Get("github")
	if gh.Issuer != "" || gh.Endpoint.AuthURL != "https://github.com/login/oauth/authorize" || !slices.Equal(gh.Scopes, []string{"repo"}) {
		t.Errorf("plain OAuth2 provider built wrong: %v", gh)
	}

	for _, id := range []string{"idp1", "github"} {
		if ready, reason, msg := h.status(id); !ready || reason != v1alpha1.ReasonReady {
			t.Errorf("%s: ready=%v reason=%s message=%s", id, ready, reason, msg)
		}
	}
	ready, reason, msg := h.status("broken")
	if ready || reason != v1alpha1.ReasonInvalidSpec || !strings.Contains(msg, "set discoveryURL or issuer (OpenID Connect)") {
		t.Errorf("broken: ready=%v reason=%s message=%s", ready, reason, msg)
	}
	errs := h.src.Errors()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `providers.yaml: document 4 (line 33): TokenProvider "broken": spec: Invalid value`) {
		t.Errorf("errors: %v", errs)
	}
	if !strings.Contains(h.logs.String(), "invalid provider manifest") {
		t.Errorf("the invalid manifest was not logged:\n%s", h.logs)
	}
	assertNoSecret(t, h, op.ClientSecret)
}

func assertNoSecret(t *testing.T, h *harness, secret string) {
	t.Helper()
	if strings.Contains(h.logs.String(), secret) {
		t.Errorf("a log line holds the client secret")
	}
	for _, st := range h.src.Statuses() {
		if strings.Contains(fmt.Sprintf("%+v", st), secret) {
			t.Errorf("status of %s holds the client secret", st.ID)
		}
	}
	for _, err := range h.src.Errors() {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("an error holds the client secret")
		}
	}
}

func TestSourceWatchesFile(t *testing.T) {
	op := providertest.Start(t, "")
	path := filepath.Join(t.TempDir(), "providers.yaml")
	// The Secret is missing at first.
	save(t, path, oidcProvider("idp1", op.DiscoveryURL(), "idp1-client")+plainOAuth2)
	h := start(t, path, nil)

	ready, reason, msg := h.status("idp1")
	if ready || reason != v1alpha1.ReasonSecretNotFound || !strings.Contains(msg, `Secret "idp1-client"`) {
		t.Errorf("idp1 without its Secret: ready=%v reason=%s message=%s", ready, reason, msg)
	}
	if _, ok := h.reg.Get("idp1"); ok {
		t.Errorf("idp1 published without its Secret")
	}

	// Adding the Secret makes it ready.
	save(t, path, oidcProvider("idp1", op.DiscoveryURL(), "idp1-client")+secret("idp1-client", op.ClientSecret)+plainOAuth2)
	h.eventually("idp1 ready once its Secret is added", func() bool { _, ok := h.reg.Get("idp1"); return ok })
	if ready, reason, _ := h.status("idp1"); !ready || reason != v1alpha1.ReasonReady {
		t.Errorf("idp1 after adding the Secret: ready=%v reason=%s", ready, reason)
	}

	// An edit reaches the registry.
	edited := strings.Replace(oidcProvider("idp1", op.DiscoveryURL(), "idp1-client"), "idp1 display name", "renamed", 1)
	save(t, path, edited+secret("idp1-client", op.ClientSecret)+plainOAuth2)
	h.eventually("the edit to reach the registry", func() bool {
		p, ok := h.reg.Get("idp1")
		return ok && p.Metadata.Name == "renamed"
	})

	// A rotated client secret too.
	save(t, path, edited+secret("idp1-client", "rotated-"+op.ClientSecret)+plainOAuth2)
	h.eventually("the rotated secret to reach the registry", func() bool {
		p, ok := h.reg.Get("idp1")
		return ok && p.ClientSecret == "rotated-"+op.ClientSecret
	})

	// An invalid edit keeps the last valid configuration serving, as a
	// refused kubectl apply would.
	save(t, path, strings.Replace(edited, "discoveryURL:", "discoveryUrl:", 1)+secret("idp1-client", op.ClientSecret)+plainOAuth2)
	h.eventually("the invalid edit to be reported", func() bool { _, reason, _ := h.status("idp1"); return reason == v1alpha1.ReasonInvalidSpec })
	if _, ok := h.reg.Get("idp1"); !ok {
		t.Errorf("an invalid edit withdrew the last valid configuration")
	}
	if _, _, msg := h.status("idp1"); !strings.Contains(msg, `spec.discoveryUrl: Forbidden: unknown field`) || !strings.Contains(msg, "still serving") {
		t.Errorf("invalid edit message: %s", msg)
	}
	// Fixing it makes it ready again.
	save(t, path, edited+secret("idp1-client", op.ClientSecret)+plainOAuth2)
	h.eventually("idp1 ready after the fix", func() bool { ready, _, _ := h.status("idp1"); return ready })

	// Deleting a document removes its provider, and only that one.
	save(t, path, edited+secret("idp1-client", op.ClientSecret))
	h.eventually("github removed", func() bool { return slices.Equal(h.ids(), []string{"idp1"}) })
	if _, ok := h.src.Status("github"); ok {
		t.Errorf("a removed provider still has a status")
	}

	// Removing the Secret withdraws the provider.
	save(t, path, edited)
	h.eventually("idp1 withdrawn without its Secret", func() bool { return len(h.ids()) == 0 })
	if _, reason, _ := h.status("idp1"); reason != v1alpha1.ReasonSecretNotFound {
		t.Errorf("reason %s, want SecretNotFound", reason)
	}
	assertNoSecret(t, h, op.ClientSecret)
}

func TestSourceFolder(t *testing.T) {
	op := providertest.Start(t, "")
	dir := t.TempDir()
	save(t, filepath.Join(dir, "a.yaml"), oidcProvider("idp1", op.DiscoveryURL(), "shared")+secret("shared", op.ClientSecret))
	save(t, filepath.Join(dir, "b.yml"), oidcProvider("idp2", op.DiscoveryURL(), "shared"))
	save(t, filepath.Join(dir, "c.yaml"), plainOAuth2)
	save(t, filepath.Join(dir, "notes.txt"), "not a manifest")
	// A second declaration of an id is refused.
	save(t, filepath.Join(dir, "d.yaml"), strings.Replace(plainOAuth2, "gh-client", "other", 1))
	h := start(t, dir, nil)

	if got := h.ids(); !slices.Equal(got, []string{"github", "idp1", "idp2"}) {
		t.Fatalf("registry holds %v", got)
	}
	if gh, _ := h.reg.Get("github"); gh.ClientID != "gh-client" {
		t.Errorf("the later duplicate won: %s", gh.ClientID)
	}
	errs := h.src.Errors()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), filepath.Join(dir, "d.yaml")+`: document 1 (line 2): TokenProvider "github": provider id "github" is already declared at `+filepath.Join(dir, "c.yaml")) {
		t.Errorf("errors: %v", errs)
	}

	// A new file is picked up, a removed one's providers go.
	save(t, filepath.Join(dir, "e.yaml"), invalidProvider)
	if err := os.Remove(filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}
	h.eventually("c.yaml's provider gone and d.yaml's taking over", func() bool {
		gh, ok := h.reg.Get("github")
		return ok && gh.ClientID == "other"
	})
	h.eventually("e.yaml read", func() bool { _, ok := h.src.Status("broken"); return ok })
}

func TestSourceDiscoveryRecovers(t *testing.T) {
	op := providertest.Start(t, "")
	op.Stop()
	path := filepath.Join(t.TempDir(), "providers.yaml")
	save(t, path, oidcProvider("idp1", op.DiscoveryURL(), "idp1-client")+secret("idp1-client", op.ClientSecret))
	h := start(t, path, nil)

	ready, reason, msg := h.status("idp1")
	if ready || reason != v1alpha1.ReasonDiscoveryFailed || !strings.Contains(msg, op.DiscoveryURL()) {
		t.Errorf("with the provider down: ready=%v reason=%s message=%s", ready, reason, msg)
	}
	if _, ok := h.reg.Get("idp1"); ok {
		t.Errorf("published without ever being discovered")
	}

	// Nothing changes in the file: the re-check timer alone recovers it.
	if err := op.Restart(); err != nil {
		t.Fatal(err)
	}
	h.eventually("idp1 to recover by itself", func() bool { ready, _, _ := h.status("idp1"); return ready })
	if _, ok := h.reg.Get("idp1"); !ok {
		t.Errorf("recovered but not published")
	}
}

func TestSourceKeepsLastGoodOnDiscoveryFailure(t *testing.T) {
	op := providertest.Start(t, "")
	path := filepath.Join(t.TempDir(), "providers.yaml")
	save(t, path, oidcProvider("idp1", op.DiscoveryURL(), "idp1-client")+secret("idp1-client", op.ClientSecret))
	h := start(t, path, func(o *Options) {
		// Re-check (and re-discover) often, so that the outage is seen.
		o.RefreshInterval = 20 * time.Millisecond
		o.Discoverer = providers.NewDiscoverer(nil, providers.DiscovererOptions{TTL: time.Millisecond, FailureTTL: time.Millisecond})
	})
	if ready, _, _ := h.status("idp1"); !ready {
		t.Fatal("idp1 not ready")
	}
	op.Stop()
	h.eventually("the outage to be reported", func() bool { _, reason, _ := h.status("idp1"); return reason == v1alpha1.ReasonDiscoveryFailed })
	if _, ok := h.reg.Get("idp1"); !ok {
		t.Errorf("a discovery outage withdrew the last good configuration")
	}
	if st, _ := h.src.Status("idp1"); !st.Serving {
		t.Errorf("status does not say the provider is still serving")
	}
	if err := op.Restart(); err != nil {
		t.Fatal(err)
	}
	h.eventually("idp1 ready again", func() bool { ready, _, _ := h.status("idp1"); return ready })
}

// TestSourceTokenEndpointFailing: the file source's statuses show a Ready
// provider whose token endpoint keeps failing for this replica's refreshes
// (as the broker reports them to the registry) as NotReady,
// TokenEndpointFailing, at once and with the first failure as transition
// time; the provider stays published, and a refresh that succeeds makes it
// Ready again.
func TestSourceTokenEndpointFailing(t *testing.T) {
	op := providertest.Start(t, "")
	path := filepath.Join(t.TempDir(), "providers.yaml")
	save(t, path, oidcProvider("idp1", op.DiscoveryURL(), "idp1-client")+secret("idp1-client", op.ClientSecret))
	h := start(t, path, nil)
	if ready, _, _ := h.status("idp1"); !ready {
		t.Fatal("idp1 not ready")
	}
	first := time.Now()
	for range providers.DefaultFailThreshold {
		h.reg.TokenEndpoints().Observe("idp1", "token endpoint answered 503")
	}
	ready, reason, msg := h.status("idp1")
	if ready || reason != v1alpha1.ReasonTokenEndpointFailing || !strings.Contains(msg, "answered 503") {
		t.Fatalf("with the token endpoint failing: ready=%v reason=%s message=%s", ready, reason, msg)
	}
	st, _ := h.src.Status("idp1")
	since := st.Status.Conditions[0].LastTransitionTime.Time
	if since.Before(first.Add(-time.Second)) || since.After(time.Now()) || !st.Serving {
		t.Fatalf("transition time %v (first failure at %v), serving %v", since, first, st.Serving)
	}
	if _, ok := h.reg.Get("idp1"); !ok {
		t.Fatal("a failing token endpoint withdrew the provider")
	}
	h.reg.TokenEndpoints().Observe("idp1", "")
	if ready, reason, _ := h.status("idp1"); !ready {
		t.Fatalf("after a refresh succeeded: reason %s", reason)
	}
}

// TestSourceClientRejected: a provider whose token endpoint refuses
// tokenstore's client shows in the file source's statuses as NotReady,
// ClientRejected, with a message naming the grant and the provider's
// error code, ahead of a failing verdict; it stays published, and a
// success of that grant makes it Ready again. The refusal is the real OP's:
// its web client is not a client-credentials (service) client, so a
// service-token request with it is answered invalid_client.
func TestSourceClientRejected(t *testing.T) {
	op := providertest.Start(t, "")
	path := filepath.Join(t.TempDir(), "providers.yaml")
	save(t, path, oidcProvider("idp1", op.DiscoveryURL(), "idp1-client")+secret("idp1-client", op.ClientSecret))
	h := start(t, path, nil)
	if ready, _, _ := h.status("idp1"); !ready {
		t.Fatal("idp1 not ready")
	}
	p, ok := h.reg.Get("idp1")
	if !ok {
		t.Fatal("idp1 not published")
	}
	first := time.Now()
	st := workload.NewServiceTokens(workload.ServiceTokenOptions{Endpoints: h.reg.TokenEndpoints()})
	var cr *providers.ClientRejectedError
	if _, err := st.Token(t.Context(), p); !errors.As(err, &cr) || cr.Code != "invalid_client" {
		t.Fatalf("service token with the OP's web client: %v, want the client rejected with invalid_client", err)
	}
	for range providers.DefaultFailThreshold {
		h.reg.TokenEndpoints().Observe("idp1", "token endpoint answered 503")
	}
	ready, reason, msg := h.status("idp1")
	if ready || reason != v1alpha1.ReasonClientRejected || !strings.Contains(msg, "client_credentials grant") ||
		!strings.Contains(msg, "with invalid_client") || strings.Contains(msg, op.ClientSecret) {
		t.Fatalf("with the client refused: ready=%v reason=%s message=%s", ready, reason, msg)
	}
	status, _ := h.src.Status("idp1")
	since := status.Status.Conditions[0].LastTransitionTime.Time
	if since.Before(first.Add(-time.Second)) || since.After(time.Now()) || !status.Serving {
		t.Fatalf("transition time %v (refused at %v), serving %v", since, first, status.Serving)
	}
	// A service token obtained (the grant accepted): the refusal ends, and
	// the failing verdict, still there, shows.
	h.reg.TokenEndpoints().Accepted("idp1", providers.GrantClientCredentials)
	if ready, reason, _ := h.status("idp1"); ready || reason != v1alpha1.ReasonTokenEndpointFailing {
		t.Fatalf("after the grant was accepted: ready=%v reason=%s, want the failing verdict", ready, reason)
	}
	h.reg.TokenEndpoints().Observe("idp1", "")
	if ready, reason, _ := h.status("idp1"); !ready {
		t.Fatalf("after a refresh succeeded: reason %s", reason)
	}
}

func TestSourcePathMustExist(t *testing.T) {
	_, err := New(Options{Path: filepath.Join(t.TempDir(), "nope.yaml"), Registry: providers.NewRegistry()})
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("missing path: %v", err)
	}
}

// TestSourceSpecIDAndConflict: a manifest's spec.id is the provider id the
// registry serves it under (with requireSameSubject); when the Kubernetes
// source claims the same id, neither is served and the file's status says
// IDConflict naming the TokenProvider; when that claim goes, the file's
// configuration serves again.
func TestSourceSpecIDAndConflict(t *testing.T) {
	path := filepath.Join(t.TempDir(), "providers.yaml")
	save(t, path, `---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata:
  name: tern-keycloak
spec:
  id: tern_keycloak
  requireSameSubject: true
  clientID: c
  tokenEndpointAuthMethod: none
  endpoints:
    authorization: https://idp.example.com/authorize
    token: https://idp.example.com/token
`)
	h := start(t, path, nil)
	if got := h.ids(); !slices.Equal(got, []string{"tern_keycloak"}) {
		t.Fatalf("registry ids %v, want [tern_keycloak]", got)
	}
	fp, _ := h.reg.Get("tern_keycloak")
	if !fp.RequireSameSubject {
		t.Error("requireSameSubject did not reach the registry")
	}
	if ready, reason, msg := h.status("tern_keycloak"); !ready {
		t.Fatalf("not ready: %s %s", reason, msg)
	}

	kube := h.reg.Source(providers.SourceKubernetes)
	kube.Claim("tern_keycloak", "TokenProvider team/keycloak")
	if _, ok := h.reg.Get("tern_keycloak"); ok {
		t.Fatal("served while the Kubernetes source claims the id too")
	}
	ready, reason, msg := h.status("tern_keycloak")
	if ready || reason != v1alpha1.ReasonIDConflict || !strings.Contains(msg, "TokenProvider team/keycloak (kubernetes source)") {
		t.Fatalf("status %v %s %q, want IDConflict naming the TokenProvider", ready, reason, msg)
	}
	if st, _ := h.src.Status("tern_keycloak"); st.Serving {
		t.Error("Serving while in conflict")
	}
	kube.Delete("tern_keycloak")
	if p, ok := h.reg.Get("tern_keycloak"); !ok || p != fp {
		t.Fatalf("the file's configuration is not served again: %v", p)
	}
	if ready, reason, msg := h.status("tern_keycloak"); !ready {
		t.Fatalf("not ready after the conflict ended: %s %s", reason, msg)
	}
}
