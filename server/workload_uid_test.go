package server

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload/kubeauth"
)

// TestGrantBoundToServiceAccountUID: a grant is bound to the uid its
// ServiceAccount had when it was made. A ServiceAccount deleted and created
// again under the same name (another uid) does not inherit it: refused with
// no_grant, as without a grant, also where the grant is cached. A grant
// made before grants were bound to uids (no uid) is still honoured by
// namespace and name.
func TestGrantBoundToServiceAccountUID(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	const ttl = time.Hour // the cached instance keeps the grant for the whole test
	var skew atomic.Int64
	cached, _ := w.startCachedWorkloadInstance(w.ka, ttl, &skew)
	in := w.in
	br, user := w.person(in, "alpha", "beta")
	ns := w.kube.ns
	uidOf := func(name string) string {
		t.Helper()
		sa, err := w.kube.cs.CoreV1().ServiceAccounts(ns).Get(w.ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return string(sa.UID)
	}

	w.kube.serviceAccount("x")
	oldUID := uidOf("x")
	req, _ := http.NewRequestWithContext(w.ctx, http.MethodPost, in.url+"/api/v1.0/alpha/grants", strings.NewReader(`{"service_account":"`+ns+`/x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", w.ext)
	resp, err := br.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := response{status: resp.StatusCode, header: resp.Header, body: rb}
	if r.status != http.StatusCreated {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	var g grantJSON
	r.json(t, &g)
	if g.ServiceAccount.UID != oldUID || oldUID == "" {
		t.Fatalf("grant uid %q, want the ServiceAccount's %q: %s", g.ServiceAccount.UID, oldUID, r.body)
	}
	if sg, err := in.store.GetGrant(w.ctx, g.ID); err != nil || sg.ServiceAccountUID != oldUID {
		t.Fatalf("stored grant %+v, %v; want uid %q", sg, err, oldUID)
	}
	// A grant made before grants were bound to uids: none.
	if _, err := in.store.CreateGrant(w.ctx, store.Grant{UserID: user, Provider: "beta", ServiceAccountNamespace: ns, ServiceAccountName: "x"}); err != nil {
		t.Fatal(err)
	}

	old := w.saToken("x", testAudience)
	for _, at := range []*instance{in, cached} {
		if a := w.exchangeAt(at, old, "alpha", user); a.status != http.StatusOK {
			t.Fatalf("delegated to the ServiceAccount granted: %d %s", a.status, a.redacted())
		}
		if a := w.exchangeAt(at, old, "beta", user); a.status != http.StatusOK {
			t.Fatalf("delegated under the grant without uid: %d %s", a.status, a.redacted())
		}
	}

	// Deleted and created again under the same name: another uid.
	w.kube.deleteServiceAccount("x")
	w.kube.serviceAccount("x")
	if newUID := uidOf("x"); newUID == oldUID {
		t.Fatalf("the new ServiceAccount has the old uid %q", newUID)
	}
	fresh := w.saToken("x", testAudience)
	// Refused as without a grant, on the instance that reads the database
	// and on the one holding the grant in its cache.
	w.exchangeAt(in, fresh, "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	w.exchangeAt(cached, fresh, "alpha", user).want(t, http.StatusForbidden, "unauthorized_client", "no_grant")
	if !strings.Contains(w.logs.String(), "grant bound to another service account uid") {
		t.Error("no log line for the uid mismatch")
	}
	// The grant without uid is still honoured by namespace and name.
	for _, at := range []*instance{in, cached} {
		if a := w.exchangeAt(at, fresh, "beta", user); a.status != http.StatusOK {
			t.Fatalf("delegated under the grant without uid to the new ServiceAccount: %d %s", a.status, a.redacted())
		}
	}

	// Granting the new ServiceAccount binds the grant to its uid; it works.
	req, _ = http.NewRequestWithContext(w.ctx, http.MethodPost, in.url+"/api/v1.0/alpha/grants", strings.NewReader(`{"service_account":"`+ns+`/x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", w.ext)
	resp, err = br.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("second grant: %d", resp.StatusCode)
	}
	for _, at := range []*instance{in, cached} {
		if a := w.exchangeAt(at, fresh, "alpha", user); a.status != http.StatusOK {
			t.Fatalf("delegated after granting the new ServiceAccount: %d %s", a.status, a.redacted())
		}
	}
	w.checkLogs()
}
