package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/storetest/pgtest"
	"github.com/tokenstore/tokenstore/internal/webhooks"
)

const hookSecret = "whsec-ops-test-0123456789"

// hookReceiver is a real webhook endpoint that checks every signature as a
// receiver must and keeps the events.
type hookReceiver struct {
	t  *testing.T
	mu sync.Mutex
	ev []hookEvent
}

// hookEvent is the part of a delivered CloudEvent these tests read.
type hookEvent struct {
	ID      string         `json:"id"`
	Type    string         `json:"type"`
	Subject string         `json:"subject"`
	Data    map[string]any `json:"data"`
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhooks.Verify(hookSecret, r.Header.Get(webhooks.SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
		h.t.Errorf("webhook signature: %v", err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var e hookEvent
	if err := json.Unmarshal(body, &e); err != nil {
		h.t.Errorf("webhook body: %v", err)
	}
	h.mu.Lock()
	h.ev = append(h.ev, e)
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) of(typ string) []hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []hookEvent
	for _, e := range h.ev {
		if e.Type == webhooks.TypePrefix+typ {
			out = append(out, e)
		}
	}
	return out
}

// opsService builds a whole Service (New, as `serve` does) against a
// fresh PostgreSQL database, a providers file and a webhook receiver.
func opsService(t *testing.T, providersFile, hookURL string) *Service {
	t.Helper()
	op := providertest.Start(t, "")
	key, _ := crypto.GenerateKey()
	env := map[string]string{
		"TOKENSTORE_DATABASE_URL":       pgtest.NewDatabase(t),
		"TOKENSTORE_CRYPTOKEY":          key,
		"TOKENSTORE_LISTEN_ADDRESS":     "127.0.0.1:0",
		"TOKENSTORE_METRICS_ADDRESS":    "127.0.0.1:0",
		"TOKENSTORE_OIDC_DISCOVERY_URL": op.DiscoveryURL(),
		"TOKENSTORE_OIDC_CLIENT_ID":     providertest.ClientID,
		"TOKENSTORE_OIDC_CLIENT_SECRET": op.ClientSecret,
		"TOKENSTORE_PROVIDERS_FILE":     providersFile,
		"TOKENSTORE_WEBHOOK_URL":        hookURL,
		"TOKENSTORE_WEBHOOK_SECRET":     hookSecret,
		"TOKENSTORE_REFRESHER_INTERVAL": "0",
	}
	s, err := settings.Load(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	svc, err := New(t.Context(), s, log, Options{Version: "dev", Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

func scrapeMetrics(t *testing.T, svc *Service) string {
	t.Helper()
	rec := httptest.NewRecorder()
	svc.Metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNeverReadyProviderInMetricsAndWebhook: a provider declared with a
// Secret that does not exist never reaches the registry; it still shows as
// not ready in /metrics (with its reason) and causes one provider.not_ready
// webhook, while its well-configured neighbour is ready.
func TestNeverReadyProviderInMetricsAndWebhook(t *testing.T) {
	op := providertest.Start(t, "")
	rc := &hookReceiver{t: t}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	dir := t.TempDir()
	manifests := fmt.Sprintf(`---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata: {name: good}
spec:
  discoveryURL: %[1]s
  clientID: %[2]s
  clientSecretRef: {name: good-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: good-secret}
stringData: {clientSecret: %[3]s}
---
apiVersion: tokenstore.io/v1alpha1
kind: TokenProvider
metadata: {name: nosecret}
spec:
  discoveryURL: %[1]s
  clientID: %[2]s
  clientSecretRef: {name: missing-secret}
`, op.DiscoveryURL(), providertest.ClientID, op.ClientSecret)
	path := filepath.Join(dir, "providers.yaml")
	if err := os.WriteFile(path, []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := opsService(t, path, hook.URL)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	eventually(t, "provider.not_ready", func() bool { return len(rc.of(webhooks.ProviderNotReady)) > 0 })
	text := scrapeMetrics(t, svc)
	for _, want := range []string{
		`tokenstore_provider_ready{provider="good"} 1`,
		`tokenstore_provider_ready{provider="nosecret"} 0`,
		`tokenstore_provider_ready_reason{provider="nosecret",reason="SecretNotFound"} 1`,
		`tokenstore_providers{ready="false"} 1`,
		`tokenstore_providers{ready="true"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, op.ClientSecret) {
		t.Error("/metrics contains the client secret")
	}
	// Several polls later, still one event: once per transition.
	time.Sleep(6 * time.Second)
	got := rc.of(webhooks.ProviderNotReady)
	if len(got) != 1 {
		t.Fatalf("%d provider.not_ready events, want 1: %+v", len(got), got)
	}
	e := got[0]
	if e.Subject != "providers/nosecret" || e.Data["provider"] != "nosecret" || e.Data["reason"] != "SecretNotFound" ||
		!strings.HasPrefix(e.ID, "provider.not_ready/nosecret/") {
		t.Errorf("event: %+v", e)
	}
}

// TestExpiringScanOnce: a credential whose refresh token expires in 3 days
// is announced once as credential.expiring across two scans, with an event
// id that names the credential and the expiry (the same on every replica);
// one expiring in 30 days is not announced.
func TestExpiringScanOnce(t *testing.T) {
	rc := &hookReceiver{t: t}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "providers.yaml")
	if err := os.WriteFile(path, []byte("# none\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := opsService(t, path, hook.URL)
	if svc.Expiring == nil {
		t.Fatal("no expiring scanner with WEBHOOK_URL set")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = svc.Webhooks.Run(ctx) }()

	exp := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Second)
	later := time.Now().Add(30 * 24 * time.Hour)
	soon, err := svc.Store.UpsertCredential(ctx, store.Credential{UserID: "person-a", Provider: "p", KeyID: "k",
		RefreshToken: []byte("ciphertext"), RefreshExpiresAt: &exp})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Store.UpsertCredential(ctx, store.Credential{UserID: "person-b", Provider: "p", KeyID: "k",
		RefreshToken: []byte("ciphertext"), RefreshExpiresAt: &later}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		n, err := svc.Expiring.ScanOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := 1 - i; n != want {
			t.Errorf("scan %d announced %d, want %d", i+1, n, want)
		}
	}
	eventually(t, "credential.expiring", func() bool { return len(rc.of(webhooks.CredentialExpiring)) > 0 })
	time.Sleep(300 * time.Millisecond)
	got := rc.of(webhooks.CredentialExpiring)
	if len(got) != 1 {
		t.Fatalf("%d credential.expiring events, want 1: %+v", len(got), got)
	}
	e := got[0]
	wantID := fmt.Sprintf("credential.expiring/%d/%d", soon.ID, exp.Unix())
	if e.ID != wantID || e.Data["user_id"] != "person-a" || e.Data["provider"] != "p" ||
		e.Data["refresh_expires_at"] != exp.Format(time.RFC3339) {
		t.Errorf("event %+v, want id %s", e, wantID)
	}
	b, _ := json.Marshal(e)
	if bytes.Contains(b, []byte("ciphertext")) {
		t.Error("event carries the token")
	}
}
