package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestProbe: the helm test's check passes only on a 200, and a failure says
// what answered what.
func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.Write([]byte("ok"))
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		default:
			http.Error(w, "registry not filled yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	if out, _, err := run(t, "probe", srv.URL+"/readyz"); err != nil || !strings.Contains(out, "200 OK") {
		t.Errorf("probe of a ready server: out %q, err %v; want 200 OK and no error", out, err)
	}
	for path, want := range map[string]string{
		"/notready": "503 Service Unavailable: registry not filled yet",
		"/moved":    "302 Found", // redirects are not followed: a login page is not "ready"
	} {
		if _, _, err := run(t, "probe", srv.URL+path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("probe %s: err %v; want one saying %q", path, err, want)
		}
	}
	if _, _, err := run(t, "probe", "not-a-url"); err == nil || !strings.Contains(err.Error(), "not an http(s) URL") {
		t.Errorf("probe of a bad URL: err %v", err)
	}
	srv.Close()
	if _, _, err := run(t, "probe", "--timeout=1s", srv.URL+"/readyz"); err == nil {
		t.Error("probe of a stopped server succeeded")
	}
}
