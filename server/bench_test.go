package server

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// BenchmarkTokenHotPath measures GET /api/v1.0/{provider}/token when the
// cached access token is still valid: session lookup, credential read and
// one AES-GCM open, through the whole gin handler (no network), on a real
// PostgreSQL.
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
	if e.providers["alpha"].refresh.Load() != before {
		b.Fatal("the hot path refreshed")
	}
}
