package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
)

// TestMetricsAddress: with METRICS_ADDRESS, /metrics is served there and
// not on the API's listener, which a Service or Ingress exposes.
func TestMetricsAddress(t *testing.T) {
	api, metrics := freeAddress(t), freeAddress(t)
	op := providertest.Start(t, "http://"+api+"/api/oidc/callback")
	key, _ := crypto.GenerateKey()
	t.Setenv("TOKENSTORE_DATABASE_URL", "sqlite://"+filepath.Join(t.TempDir(), "ts.db"))
	t.Setenv("TOKENSTORE_MIGRATE_ON_START", "true")
	t.Setenv("TOKENSTORE_CRYPTOKEY", key)
	t.Setenv("TOKENSTORE_LISTEN_ADDRESS", api)
	t.Setenv("TOKENSTORE_METRICS_ADDRESS", metrics)
	t.Setenv("TOKENSTORE_EXTERNAL_URL", "http://"+api)
	t.Setenv("TOKENSTORE_OIDC_DISCOVERY_URL", op.DiscoveryURL())
	t.Setenv("TOKENSTORE_OIDC_CLIENT_ID", providertest.ClientID)
	t.Setenv("TOKENSTORE_OIDC_CLIENT_SECRET", op.ClientSecret)
	t.Setenv("TOKENSTORE_REFRESHER_INTERVAL", "0")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"serve"})
		done <- root.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	get := func(u string) (int, string) {
		resp, err := http.Get(u)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := get("http://" + api + "/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not become ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get("http://" + metrics + "/metrics"); code != http.StatusOK || !strings.Contains(body, "tokenstore_") {
		t.Errorf("/metrics on METRICS_ADDRESS: %d, tokenstore series present: %v", code, strings.Contains(body, "tokenstore_"))
	}
	if code, _ := get("http://" + api + "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the API listener answered %d with METRICS_ADDRESS set, want 404", code)
	}
	if code, _ := get("http://" + metrics + "/api/_health"); code != http.StatusNotFound {
		t.Errorf("the metrics listener serves the API (%d for /api/_health)", code)
	}
}
