package delegation_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/cached"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// directory is a workload.Directory of fixed ServiceAccounts (namespace/name → uid).
type directory struct {
	uids map[string]string
	err  error
}

func (d directory) ServiceAccountUID(_ context.Context, ns, name string) (string, bool, error) {
	if d.err != nil {
		return "", false, d.err
	}
	uid, ok := d.uids[ns+"/"+name]
	return uid, ok, nil
}

type fixture struct {
	ctx context.Context
	st  store.Store
	svc *delegation.Service
	now atomic.Pointer[time.Time]
	dir *directory
	p   *providers.Provider
}

func newFixture(t *testing.T, ttl time.Duration) *fixture {
	t.Helper()
	f := &fixture{ctx: context.Background(), dir: &directory{uids: map[string]string{"ns/sa": "uid-1"}}}
	st, err := storeopen.Open(f.ctx, "sqlite::memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.st = st
	start := time.Now()
	f.now.Store(&start)
	now := func() time.Time { return *f.now.Load() }
	// With ttl, through the store cache as serve runs it (on the same clock).
	var svcStore store.Store = st
	if ttl > 0 {
		svcStore = cached.New(st, cached.Options{TTL: ttl, Now: now})
	}
	f.svc = delegation.NewService(delegation.ServiceOptions{Store: svcStore, ServiceAccounts: f.dir, Now: now})
	f.p = &providers.Provider{ID: "p", ServiceAccounts: []providers.ServiceAccount{{Namespace: "ns", Name: "svc"}}}
	return f
}

func (f *fixture) tick(d time.Duration) { n := f.now.Load().Add(d); f.now.Store(&n) }

// wantRefusal checks a refusal's answer: for the token exchange (reason
// set) its OAuth code and tokenstore's reason, for the grants API (reason
// empty) its REST code.
func wantRefusal(t *testing.T, err error, status int, code, reason string) {
	t.Helper()
	var de *delegation.Error
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want a *delegation.Error", err)
	}
	gotCode, gotReason := de.Code, ""
	if de.OAuth != "" {
		gotCode, gotReason = de.OAuth, de.Code
	}
	if de.Status != status || gotCode != code || gotReason != reason || de.Message == "" {
		t.Fatalf("refusal = %+v, want %d %s %q", de, status, code, reason)
	}
}

func TestDecideServiceToken(t *testing.T) {
	f := newFixture(t, 0)
	d, err := f.svc.Decide(f.ctx, delegation.Caller{Workload: &workload.Identity{Namespace: "ns", ServiceAccount: "svc", UID: "u"}},
		delegation.Request{Provider: f.p})
	if err != nil || d.Kind != delegation.ServiceToken {
		t.Fatalf("listed ServiceAccount: %+v, %v", d, err)
	}
	_, err = f.svc.Decide(f.ctx, delegation.Caller{Workload: &workload.Identity{Namespace: "ns", ServiceAccount: "sa", UID: "uid-1"}},
		delegation.Request{Provider: f.p})
	wantRefusal(t, err, http.StatusForbidden, "unauthorized_client", "service_account_not_allowed")
}

func TestDecidePersonOwnToken(t *testing.T) {
	f := newFixture(t, 0)
	for _, subject := range []string{"", "alice"} {
		d, err := f.svc.Decide(f.ctx, delegation.Caller{PersonID: "alice"}, delegation.Request{Provider: f.p, Subject: subject})
		if err != nil || d.Kind != delegation.PersonToken || d.UserID != "alice" || d.Actor != "user:alice" || d.Grant != nil {
			t.Fatalf("subject %q: %+v, %v", subject, d, err)
		}
	}
	_, err := f.svc.Decide(f.ctx, delegation.Caller{PersonID: "alice"}, delegation.Request{Provider: f.p, Subject: "bob"})
	wantRefusal(t, err, http.StatusForbidden, "unauthorized_client", "not_own_credential")
}

func TestDecideDelegated(t *testing.T) {
	f := newFixture(t, time.Second)
	wid := &workload.Identity{Namespace: "ns", ServiceAccount: "sa", UID: "uid-1", Pod: "pod"}
	ask := func() (delegation.Decision, error) {
		return f.svc.Decide(f.ctx, delegation.Caller{Workload: wid}, delegation.Request{Provider: f.p, Subject: "alice"})
	}
	_, err := ask()
	wantRefusal(t, err, http.StatusForbidden, "unauthorized_client", "no_grant")

	exp := f.now.Load().Add(time.Hour)
	g, err := f.svc.Grant(f.ctx, "alice", "p", "ns", "sa", &exp)
	if err != nil || g.ServiceAccountUID != "uid-1" || g.ID == 0 {
		t.Fatalf("Grant: %+v, %v", g, err)
	}
	d, err := ask()
	if err != nil || d.Kind != delegation.PersonToken || d.UserID != "alice" || d.Actor != "serviceaccount:ns/sa" ||
		d.ServiceAccount() != "ns/sa" || d.Grant == nil || d.Grant.ID != g.ID {
		t.Fatalf("granted: %+v, %v", d, err)
	}

	// Another ServiceAccount of the same name (another uid) does not
	// inherit the grant, cached or not.
	wid.UID = "uid-2"
	_, err = ask()
	wantRefusal(t, err, http.StatusForbidden, "unauthorized_client", "no_grant")
	wid.UID = "uid-1"

	// Expiry holds at once, though the grant is cached.
	f.tick(time.Hour)
	_, err = ask()
	wantRefusal(t, err, http.StatusForbidden, "unauthorized_client", "no_grant")
}

func TestRevokeGrantDropsCachedGrant(t *testing.T) {
	f := newFixture(t, time.Hour)
	g, err := f.svc.Grant(f.ctx, "alice", "p", "ns", "sa", nil)
	if err != nil {
		t.Fatal(err)
	}
	wid := &workload.Identity{Namespace: "ns", ServiceAccount: "sa", UID: "uid-1"}
	ask := func() error {
		_, err := f.svc.Decide(f.ctx, delegation.Caller{Workload: wid}, delegation.Request{Provider: f.p, Subject: "alice"})
		return err
	}
	if err := ask(); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.svc.RevokeGrant(f.ctx, "bob", g.ID)
	wantRefusal(t, err, http.StatusNotFound, "grant_not_found", "")
	_, _, err = f.svc.RevokeGrant(f.ctx, "alice", g.ID+100)
	wantRefusal(t, err, http.StatusNotFound, "grant_not_found", "")

	r, revoked, err := f.svc.RevokeGrant(f.ctx, "alice", g.ID)
	if err != nil || !revoked || r.RevokedAt == nil {
		t.Fatalf("revoke: %+v %v %v", r, revoked, err)
	}
	wantRefusal(t, ask(), http.StatusForbidden, "unauthorized_client", "no_grant")
	if _, revoked, err := f.svc.RevokeGrant(f.ctx, "alice", g.ID); err != nil || revoked {
		t.Fatalf("revoking again: %v %v", revoked, err)
	}
	gs, err := f.svc.ListGrants(f.ctx, "alice")
	if err != nil || len(gs) != 1 || gs[0].RevokedAt == nil {
		t.Fatalf("ListGrants: %+v, %v", gs, err)
	}
}

func TestGrantRefusals(t *testing.T) {
	f := newFixture(t, 0)
	past := f.now.Load().Add(-time.Second)
	_, err := f.svc.Grant(f.ctx, "alice", "p", "ns", "sa", &past)
	wantRefusal(t, err, http.StatusBadRequest, "invalid_expires_at", "")
	_, err = f.svc.Grant(f.ctx, "alice", "p", "ns", "nobody", nil)
	wantRefusal(t, err, http.StatusBadRequest, "unknown_service_account", "")
	f.dir.err = errors.New("apiserver down")
	_, err = f.svc.Grant(f.ctx, "alice", "p", "ns", "sa", nil)
	wantRefusal(t, err, http.StatusBadGateway, "kubernetes_unavailable", "")

	none := delegation.NewService(delegation.ServiceOptions{Store: f.st})
	_, err = none.Grant(f.ctx, "alice", "p", "ns", "sa", nil)
	wantRefusal(t, err, http.StatusServiceUnavailable, "workloads_not_configured", "")
}
