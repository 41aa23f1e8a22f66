package webhooks

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenstore/tokenstore/internal/observability/metrics"
	"github.com/tokenstore/tokenstore/internal/providers"
)

const secret = "whsec-test-0123456789"

// receiver is a real HTTP endpoint that checks signatures as a receiver
// would, and fails the first failFirst attempts with 503.
type receiver struct {
	t         *testing.T
	failFirst int32
	attempts  atomic.Int32
	mu        sync.Mutex
	got       []wireEvent
	done      chan struct{}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	n := rc.attempts.Add(1)
	if err := Verify(secret, r.Header.Get(SignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
		rc.t.Errorf("attempt %d: %v", n, err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/cloudevents+json; charset=utf-8" {
		rc.t.Errorf("Content-Type %q", ct)
	}
	if n <= rc.failFirst {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	// The SDK's decoder refuses a body that is not a valid CloudEvent;
	// wireEvent is what a receiver in any language reads.
	var ce event.Event
	if err := json.Unmarshal(body, &ce); err != nil {
		rc.t.Errorf("body is not a valid CloudEvent: %v", err)
	}
	var e wireEvent
	if err := json.Unmarshal(body, &e); err != nil {
		rc.t.Errorf("body: %v", err)
	}
	rc.mu.Lock()
	rc.got = append(rc.got, e)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
	rc.done <- struct{}{}
}

// wireEvent is a delivery as receivers have always read it: the
// structured-mode attributes and a JSON object as data.
type wireEvent struct {
	SpecVersion     string         `json:"specversion"`
	ID              string         `json:"id"`
	Source          string         `json:"source"`
	Type            string         `json:"type"`
	Subject         string         `json:"subject"`
	Time            time.Time      `json:"time"`
	DataContentType string         `json:"datacontenttype"`
	Data            map[string]any `json:"data"`
}

func newSender(t *testing.T, url string) (*Sender, prometheus.Gatherer) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{URL: url, Secret: secret, Source: "https://tokenstore.example", Metrics: m,
		Backoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, MaxAttempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, reg
}

func wait(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
}

func TestDeliverySignedCloudEvent(t *testing.T) {
	rc := &receiver{t: t, done: make(chan struct{}, 4)}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s, _ := newSender(t, srv.URL)
	s.CredentialEvent(context.Background(), CredentialNeedsReauth, "user-1", "github", map[string]any{"reason": "invalid_grant"})
	wait(t, rc.done)
	rc.mu.Lock()
	e := rc.got[0]
	rc.mu.Unlock()
	if e.SpecVersion != "1.0" || e.Type != "io.tokenstore.credential.needs_reauth" || e.Source != "https://tokenstore.example" ||
		e.ID == "" || e.Time.IsZero() || e.DataContentType != "application/json" || e.Subject != "credentials/github" {
		t.Errorf("CloudEvent attributes: %+v", e)
	}
	if e.Data["user_id"] != "user-1" || e.Data["provider"] != "github" || e.Data["reason"] != "invalid_grant" {
		t.Errorf("data: %v", e.Data)
	}
}

func TestRetriesWithBackoff(t *testing.T) {
	rc := &receiver{t: t, failFirst: 2, done: make(chan struct{}, 4)}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s, reg := newSender(t, srv.URL)
	s.CredentialEvent(context.Background(), CredentialRecovered, "user-2", "google", nil)
	wait(t, rc.done)
	if n := rc.attempts.Load(); n != 3 {
		t.Errorf("%d attempts, want 3 (two failures, one success)", n)
	}
	// The outcome is counted once the worker has finished with the event.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := testutil.GatherAndCount(reg, "tokenstore_webhook_deliveries_total")
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries series: %d, %v", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := `
# HELP tokenstore_webhook_deliveries_total Webhook events by type and final outcome (delivered, failed, dropped).
# TYPE tokenstore_webhook_deliveries_total counter
tokenstore_webhook_deliveries_total{event="io.tokenstore.credential.recovered",outcome="delivered"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenstore_webhook_deliveries_total"); err != nil {
		t.Error(err)
	}
	wantAttempts := `
# HELP tokenstore_webhook_attempts_total Webhook POSTs, by event type and result (2xx, 4xx, 5xx, error).
# TYPE tokenstore_webhook_attempts_total counter
tokenstore_webhook_attempts_total{event="io.tokenstore.credential.recovered",result="2xx"} 1
tokenstore_webhook_attempts_total{event="io.tokenstore.credential.recovered",result="5xx"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(wantAttempts), "tokenstore_webhook_attempts_total"); err != nil {
		t.Error(err)
	}
}

// sendUntilOutcome sends one event to a receiver that always answers
// status and waits (5 s at most) until the event's outcome is recorded; it
// returns how many POSTs the receiver saw and the sender's metrics.
func sendUntilOutcome(t *testing.T, status int) (int32, prometheus.Gatherer) {
	t.Helper()
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		w.WriteHeader(status)
	}))
	defer srv.Close()
	s, reg := newSender(t, srv.URL)
	s.Send(CredentialExpiring, "credentials/x", map[string]any{"provider": "x"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := testutil.GatherAndCount(reg, "tokenstore_webhook_deliveries_total")
		if n == 1 {
			return attempts.Load(), reg
		}
		if time.Now().After(deadline) {
			t.Fatal("no outcome recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRefusedIsNotRetried(t *testing.T) {
	attempts, _ := sendUntilOutcome(t, http.StatusUnauthorized)
	if n := attempts; n != 1 {
		t.Errorf("%d attempts for a 401, want 1", n)
	}
}

func TestVerifyRejects(t *testing.T) {
	body := []byte(`{"a":1}`)
	now := time.Now()
	h := Sign(secret, now, body)
	if err := Verify(secret, h, body, now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if Verify("other", h, body, now, time.Minute) == nil {
		t.Error("wrong secret accepted")
	}
	if Verify(secret, h, []byte(`{"a":2}`), now, time.Minute) == nil {
		t.Error("altered body accepted")
	}
	if Verify(secret, h, body, now.Add(time.Hour), time.Minute) == nil {
		t.Error("stale signature accepted")
	}
}

func TestProviderNotReady(t *testing.T) {
	rc := &receiver{t: t, done: make(chan struct{}, 4)}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s, _ := newSender(t, srv.URL)
	reg := providers.NewRegistry()
	reg.Set(&providers.Provider{ID: "alpha", Version: "v1"})
	reg.Set(&providers.Provider{ID: "beta", Version: "v7"})
	reg.MarkReady()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.WatchProviders(ctx, reg)
	time.Sleep(100 * time.Millisecond) // let the watcher see the full registry
	reg.Delete("beta")
	wait(t, rc.done)
	rc.mu.Lock()
	e := rc.got[0]
	rc.mu.Unlock()
	if e.Type != "io.tokenstore.provider.not_ready" || e.ID != "provider.not_ready/beta/v7" || e.Data["provider"] != "beta" {
		t.Errorf("event: %+v", e)
	}
}

func TestNewRequiresSecret(t *testing.T) {
	if _, err := New(Options{URL: "https://hooks.example/x", Source: "https://tokenstore.example"}); err == nil {
		t.Error("no secret accepted")
	}
	if _, err := New(Options{URL: "not a url", Secret: "s", Source: "https://tokenstore.example"}); err == nil {
		t.Error("bad URL accepted")
	}
	if _, err := New(Options{URL: "https://hooks.example/x", Secret: "s"}); err == nil {
		t.Error("no CloudEvents source accepted")
	}
}

// TestGivesUpAfterMaxAttempts: a receiver that keeps answering 503 gets
// MaxAttempts POSTs, and the event counts as failed.
func TestGivesUpAfterMaxAttempts(t *testing.T) {
	attempts, reg := sendUntilOutcome(t, http.StatusServiceUnavailable)
	if n := attempts; n != 4 {
		t.Errorf("%d attempts, want MaxAttempts (4)", n)
	}
	want := `
# HELP tokenstore_webhook_deliveries_total Webhook events by type and final outcome (delivered, failed, dropped).
# TYPE tokenstore_webhook_deliveries_total counter
tokenstore_webhook_deliveries_total{event="io.tokenstore.credential.expiring",outcome="failed"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokenstore_webhook_deliveries_total"); err != nil {
		t.Error(err)
	}
}
