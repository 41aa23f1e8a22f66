package server

import (
	"context"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/cached"
)

// countingStore counts the hot path's reads, to show the cache spares them.
type countingStore struct {
	store.Store
	creds, sessions atomic.Int64
}

func (s *countingStore) GetCredential(ctx context.Context, userID, provider string) (store.Credential, error) {
	s.creds.Add(1)
	return s.Store.GetCredential(ctx, userID, provider)
}

func (s *countingStore) GetSession(ctx context.Context, id string, now time.Time) (store.Session, error) {
	s.sessions.Add(1)
	return s.Store.GetSession(ctx, id, now)
}

// startCachedInstance is startInstance with the per-replica store cache
// on, as serve runs it, over a store that counts the reads reaching the
// database.
func (e *env) startCachedInstance(ttl time.Duration) (*instance, *countingStore) {
	var counting *countingStore
	in := e.serve(nil, Options{}, func(st store.Store) store.Store {
		counting = &countingStore{Store: st}
		return cached.New(counting, cached.Options{TTL: ttl})
	})
	return in, counting
}

// untilRefused polls in until the token request is no longer answered 200
// and returns how long that took, failing after limit.
func untilRefused(t *testing.T, b *browser, in *instance, limit time.Duration) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	for {
		_, r := b.token(in, "alpha", "")
		if r.status != http.StatusOK {
			return time.Since(start), r.status
		}
		if time.Since(start) > limit {
			t.Fatalf("still served %v after the change on the other replica", limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCacheCrossReplicaInvalidation: two replicas with the one-second cache
// on one database. Served tokens come from the cache (no database read per
// request); a revoke or a logout through replica A is seen by A at once
// and by B within the TTL.
func TestCacheCrossReplicaInvalidation(t *testing.T) {
	e := newEnv(t)
	home := e.instances[0] // EXTERNAL_URL: the login and link callbacks land here
	a, sa := e.startCachedInstance(cached.DefaultTTL)
	bInst, sb := e.startCachedInstance(cached.DefaultTTL)
	br := e.browser()
	br.loginAt(home, "")
	user := br.whoami(home)
	br.link(home, "alpha")
	br.link(home, "beta")
	// The browser's cookie is for home's host; the replicas share it (all on
	// 127.0.0.1), as replicas behind one ingress share a cookie.

	// Hot path on the cached replicas: 50 requests cost at most one
	// credential and one session read each per TTL.
	want, r := br.token(a, "alpha", "")
	if r.status != http.StatusOK {
		t.Fatalf("token at A: %d %s", r.status, r.body)
	}
	c0, s0 := sa.creds.Load(), sa.sessions.Load()
	start := time.Now()
	for range 50 {
		got, r := br.token(a, "alpha", "")
		if r.status != http.StatusOK || got.AccessToken != want.AccessToken {
			t.Fatalf("cached token at A: %d", r.status)
		}
	}
	// Each second of the loop may cost one read of each.
	budget := int64(time.Since(start)/cached.DefaultTTL) + 1
	if n := sa.creds.Load() - c0; n > budget {
		t.Fatalf("%d credential reads for 50 cached requests, want at most %d", n, budget)
	}
	if n := sa.sessions.Load() - s0; n > budget {
		t.Fatalf("%d session reads for 50 cached requests, want at most %d", n, budget)
	}
	if _, r := br.token(bInst, "alpha", ""); r.status != http.StatusOK {
		t.Fatalf("token at B: %d %s", r.status, r.body)
	}

	// Revoke through A: A forgets at once, B within the TTL.
	rv := br.do(http.MethodPost, a.url+"/api/v1.0/alpha/revoke", map[string]string{"Origin": e.ext})
	if rv.status != http.StatusOK {
		t.Fatalf("revoke at A: %d %s", rv.status, rv.body)
	}
	if _, r := br.token(a, "alpha", ""); r.status != http.StatusBadRequest || r.errorCode(t) != "not_linked" {
		t.Fatalf("A after its own revoke: %d %s", r.status, r.body)
	}
	took, status := untilRefused(t, br, bInst, 2*cached.DefaultTTL)
	if status != http.StatusBadRequest {
		t.Fatalf("B after the revoke: %d", status)
	}
	if took > cached.DefaultTTL+250*time.Millisecond {
		t.Fatalf("B served a revoked credential for %v, bound %v", took, cached.DefaultTTL)
	}
	t.Logf("revoke through A seen by B after %v", took)
	if _, err := sb.GetCredential(e.ctx, user, "alpha"); err == nil {
		t.Fatal("credential still stored after revoke")
	}

	// Logout through A: B refuses the session within the TTL.
	if _, r := br.token(bInst, "beta", ""); r.status != http.StatusOK {
		t.Fatalf("beta at B: %d %s", r.status, r.body)
	}
	cookies := br.client.Jar.Cookies(mustURL(t, home.url))
	lo := br.do(http.MethodPost, a.url+"/api/oidc/logout", map[string]string{"Origin": e.ext})
	if lo.status >= 400 {
		t.Fatalf("logout at A: %d %s", lo.status, lo.body)
	}
	// The logout answer clears the browser's cookie; put it back, as a
	// stolen copy would be, to see whether the replicas still accept it.
	br.client.Jar.SetCookies(mustURL(t, home.url), cookies)
	start = time.Now()
	for {
		_, r := br.token(bInst, "beta", "")
		if r.status == http.StatusForbidden {
			break
		}
		if r.status != http.StatusOK {
			t.Fatalf("B after logout: %d %s", r.status, r.body)
		}
		if time.Since(start) > 2*cached.DefaultTTL {
			t.Fatal("B still accepts the logged-out session")
		}
		time.Sleep(20 * time.Millisecond)
	}
	took = time.Since(start)
	if took > cached.DefaultTTL+250*time.Millisecond {
		t.Fatalf("B accepted a logged-out session for %v, bound %v", took, cached.DefaultTTL)
	}
	if _, r := br.token(a, "beta", ""); r.status != http.StatusForbidden {
		t.Fatalf("A after its own logout: %d", r.status)
	}
	t.Logf("logout through A seen by B after %v", took)
	e.checkLogs()
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
