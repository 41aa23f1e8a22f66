package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/workload/kubeauth"
)

// writeAtomically replaces the token file the way the kubelet does: a new
// file renamed over the old one.
func writeAtomically(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestGoClient: a Go program plugs tokenstore into oauth2.NewClient with
// the client package; the token file is re-read on each exchange, so a
// rotated token is used without a restart.
func TestGoClient(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	in := w.in
	br := w.browser()
	br.loginAt(in, "")
	user := br.whoami(in)
	br.link(in, "alpha")
	req, _ := http.NewRequestWithContext(w.ctx, http.MethodPost, in.url+"/api/v1.0/alpha/grants",
		strings.NewReader(`{"service_account":"`+w.kube.ns+`/app"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", w.ext)
	resp, err := br.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("grant: %d", resp.StatusCode)
	}

	file := filepath.Join(t.TempDir(), "token")
	writeAtomically(t, file, w.saToken("app", testAudience)+"\n")
	// Exchanges are counted on the way (grant.use events are not: repeats
	// of one token value share one).
	var exchanges atomic.Int64
	counting := &http.Client{Timeout: 10 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == "/api/oauth2/token" {
			exchanges.Add(1)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	ctx := context.WithValue(w.ctx, oauth2.HTTPClient, &http.Client{Timeout: 10 * time.Second})
	ts := client.TokenSource(ctx, client.Options{URL: in.url, Provider: "alpha", Subject: user, TokenFile: file, HTTPClient: counting})

	// The delegated token is the person's real token at alpha: the OP's
	// userinfo endpoint accepts it.
	hc := oauth2.NewClient(ctx, ts)
	for i := 0; i < 5; i++ {
		resp, err := hc.Get(w.providers["alpha"].provider.UserinfoURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("userinfo with the delegated token: %d", resp.StatusCode)
		}
	}
	if n := exchanges.Load(); n != 1 {
		t.Errorf("5 requests through the cached token source made %d exchanges, want 1", n)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	w.see("access_token", tok.AccessToken)

	// Rotation: each exchange reads the file again. The Exchanger (the
	// uncached source) shows it: another ServiceAccount's token in the file
	// is refused (no grant), the rotated app token works.
	x, err := client.New(ctx, client.Options{URL: in.url, Provider: "alpha", Subject: user, TokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	writeAtomically(t, file, w.saToken("other", testAudience))
	var ce *client.Error
	if _, err := x.Token(); !errors.As(err, &ce) || ce.StatusCode != http.StatusForbidden || ce.Code != "unauthorized_client" || ce.Reason != "no_grant" {
		t.Fatalf("with another ServiceAccount's token: %v", err)
	}
	writeAtomically(t, file, w.saToken("app", testAudience))
	if tok, err := x.Token(); err != nil || tok.AccessToken == "" || tok.Expiry.IsZero() {
		t.Fatalf("after rotation: %v", err)
	}
	// A refused token surfaces as *client.Error through oauth2 too.
	writeAtomically(t, file, "garbage")
	bad := client.TokenSource(ctx, client.Options{URL: in.url, Provider: "alpha", TokenFile: file})
	if _, err := bad.Token(); !errors.As(err, &ce) || ce.StatusCode != http.StatusUnauthorized || ce.Reason != "malformed_token" {
		t.Fatalf("garbage token: %v", err)
	}
	// Missing file, bad options.
	if _, err := client.TokenSource(ctx, client.Options{URL: in.url, Provider: "alpha", TokenFile: file + ".missing"}).Token(); err == nil {
		t.Error("missing token file: no error")
	}
	if _, err := client.TokenSource(ctx, client.Options{Provider: "alpha"}).Token(); err == nil {
		t.Error("no URL: no error")
	}
	w.checkLogs()
}

// BenchmarkWorkloadTokenExchange measures POST /api/oauth2/token for a
// service token when the TokenReview verdict and the service token are both
// cached: form parsing, a SHA-256 and two map lookups, through the whole gin
// handler (no network socket, no database).
func BenchmarkWorkloadTokenExchange(b *testing.B) {
	w := newWorkloadEnv(b, kubeauth.Options{CacheTTL: time.Hour})
	tok := w.saToken("allowed", testAudience)
	body := "grant_type=" + GrantTypeTokenExchange + "&subject_token=" + tok +
		"&subject_token_type=" + TokenTypeJWT + "&audience=svc"
	h := w.in.srv.Handler()
	req := func() int {
		r, _ := http.NewRequest(http.MethodPost, "/api/oauth2/token", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	if c := req(); c != http.StatusOK {
		b.Fatalf("token exchange: %d", c)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c := req(); c != http.StatusOK {
				b.Fatalf("token exchange: %d", c)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if c := req(); c != http.StatusOK {
					b.Errorf("token exchange: %d", c)
					return
				}
			}
		})
	})
	if r, c := w.reviews.Load(), w.cc.Load(); r != 1 || c != 1 {
		b.Fatalf("the cached path made %d TokenReviews and %d client-credentials requests, want 1 and 1", r, c)
	}
}
