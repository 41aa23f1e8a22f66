package server

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/cached"
)

// BenchmarkTokenHotPath measures GET /api/v1.0/{provider}/token when the
// stored access token is still valid: session lookup, credential read and
// one AES-GCM open, through the whole gin handler (no network), on a real
// PostgreSQL. serial and parallel read both rows from the database on
// every request; cached is the path serve takes (per-replica cache on,
// JSON request log at info), where a session and a credential are read
// once a second.
func BenchmarkTokenHotPath(b *testing.B) {
	e := newEnv(b)
	in := e.instances[0]
	br := e.browser()
	br.loginAt(in, "")
	br.link(in, "alpha")
	u, _ := url.Parse(in.url)
	var session *http.Cookie
	for _, c := range br.client.Jar.Cookies(u) {
		if c.Name == "tokenstore_session" {
			session = c
		}
	}
	if session == nil {
		b.Fatal("no session cookie")
	}
	h := in.srv.Handler()
	req := func() int {
		r := httptest.NewRequest(http.MethodGet, "/api/v1.0/alpha/token", nil)
		r.AddCookie(session)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if c := req(); c != http.StatusOK {
		b.Fatalf("token: %d", c)
	}
	before := e.providers["alpha"].refresh.Load()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c := req(); c != http.StatusOK {
				b.Fatalf("token: %d", c)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if c := req(); c != http.StatusOK {
					b.Errorf("token: %d", c)
					return
				}
			}
		})
	})
	// As serve runs it: the per-replica store cache on (sessions and
	// sealed credentials reused for a second) and a JSON request log at info.
	withCache := e.serve(nil, Options{Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))},
		func(st store.Store) store.Store { return cached.New(st, cached.Options{TTL: cached.DefaultTTL}) })
	ch := withCache.srv.Handler()
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodGet, "/api/v1.0/alpha/token", nil)
			r.AddCookie(session)
			w := httptest.NewRecorder()
			ch.ServeHTTP(w, r)
			if w.Code != http.StatusOK {
				b.Fatalf("token: %d", w.Code)
			}
		}
	})
	if e.providers["alpha"].refresh.Load() != before {
		b.Fatal("the hot path refreshed")
	}
}
