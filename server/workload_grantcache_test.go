package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/cached"
	"github.com/tokenstore/tokenstore/internal/workload/kubeauth"
)

// grantCountingStore counts grant reads on their way to the database.
type grantCountingStore struct {
	store.Store
	reads atomic.Int64
}

func (s *grantCountingStore) FindUsableGrant(ctx context.Context, userID, provider, ns, name, uid string, now time.Time) (store.Grant, error) {
	s.reads.Add(1)
	return s.Store.FindUsableGrant(ctx, userID, provider, ns, name, uid, now)
}

// startCachedWorkloadInstance is startWorkloadInstance with the per-replica
// cache on (as serve runs) and a clock of its own, moved by skew.
func (w *wlEnv) startCachedWorkloadInstance(ka *kubeauth.Authenticator, ttl time.Duration, skew *atomic.Int64) (*instance, *grantCountingStore) {
	var counting *grantCountingStore
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	in := w.serve(nil, Options{Workloads: ka, ServiceAccounts: ka, Now: now},
		func(st store.Store) store.Store {
			counting = &grantCountingStore{Store: st}
			return cached.New(counting, cached.Options{TTL: ttl, Now: now})
		}, w.svc)
	return in, counting
}

// TestWorkloadGrantCache: with the per-replica cache on, a workload calling
// in a loop costs one grant read per TTL; a revoke holds at once on the
// replica that made it and within the TTL on another; an expiry holds at
// once even for a cached grant; a new grant works at once ("no grant" is
// not cached).
func TestWorkloadGrantCache(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	// A TTL far longer than the test, moved past by the clocks: the bounds
	// below do not depend on the machine's speed.
	const ttl = time.Hour
	var skewA, skewB atomic.Int64
	a, storeA := w.startCachedWorkloadInstance(w.ka, ttl, &skewA)
	b, storeB := w.startCachedWorkloadInstance(w.ka, ttl, &skewB)

	br := w.browser()
	br.loginAt(a, "")
	user := br.whoami(a)
	br.link(a, "alpha")
	br.link(a, "beta")
	ns := w.kube.ns
	grant := func(provider, body string) grantJSON {
		t.Helper()
		req, _ := http.NewRequestWithContext(w.ctx, http.MethodPost, a.url+"/api/v1.0/"+provider+"/grants", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", w.ext)
		resp, err := br.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		r := response{status: resp.StatusCode, header: resp.Header, body: rb}
		if r.status != http.StatusCreated {
			t.Fatalf("grant at %s: %d %s", provider, r.status, r.body)
		}
		var g grantJSON
		r.json(t, &g)
		return g
	}
	app := w.saToken("app", testAudience)

	// No grant yet: refused, and not remembered.
	w.exchangeAt(a, app, "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	g := grant("alpha", `{"service_account":"`+ns+`/app"}`)
	for i := 0; i < 5; i++ {
		if x := w.exchangeAt(a, app, "alpha", user); x.status != http.StatusOK {
			t.Fatalf("delegated at a: %d %s", x.status, x.redacted())
		}
		if x := w.exchangeAt(b, app, "alpha", user); x.status != http.StatusOK {
			t.Fatalf("delegated at b: %d %s", x.status, x.redacted())
		}
	}
	// a: the refused read and one read for five answers; b: one for five.
	if ra, rb := storeA.reads.Load(), storeB.reads.Load(); ra != 2 || rb != 1 {
		t.Errorf("grant reads: a %d, b %d; want 2 and 1", ra, rb)
	}

	// Revoked through a: refused at once there.
	if r := br.do(http.MethodDelete, a.url+"/api/v1.0/grants/"+jsonNumber(g.ID), map[string]string{"Origin": w.ext}); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	w.exchangeAt(a, app, "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	// b still holds the grant it read: served until its entry lapses...
	if x := w.exchangeAt(b, app, "alpha", user); x.status != http.StatusOK {
		t.Fatalf("delegated at b within the TTL: %d %s", x.status, x.redacted())
	}
	// ...and refused from then on.
	skewB.Store(int64(ttl + time.Second))
	w.exchangeAt(b, app, "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	skewB.Store(0)

	// An expiring grant, cached: refused at its expires_at, not at the
	// entry's end.
	until := time.Now().Add(30 * time.Second).UTC()
	grant("beta", `{"service_account":"`+ns+`/app","expires_at":"`+until.Format(time.RFC3339Nano)+`"}`)
	if x := w.exchangeAt(b, app, "beta", user); x.status != http.StatusOK {
		t.Fatalf("delegated before expiry: %d %s", x.status, x.redacted())
	}
	skewB.Store(int64(31 * time.Second))
	w.exchangeAt(b, app, "beta", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	w.checkLogs()
}
