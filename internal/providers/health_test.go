package providers_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/testutil"
)

// changes drains what h announced so far.
func changes(h *providers.TokenEndpointHealth) []string {
	var out []string
	for {
		select {
		case id := <-h.Changes():
			out = append(out, id)
		default:
			return out
		}
	}
}

func TestTokenEndpointHealth(t *testing.T) {
	c := testutil.NewClock(time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC))
	h := providers.NewTokenEndpointHealth(providers.HealthOptions{FailThreshold: 3, FailHold: time.Minute, Now: c.Now})

	// Successes of a provider never seen failing leave nothing behind.
	h.Observe("a", "")
	if _, failing := h.Failing("a"); failing || len(changes(h)) != 0 {
		t.Fatal("a success made a provider failing, or was announced")
	}

	// Two failures are blips; the third makes it failing, announced once.
	h.Observe("a", "token endpoint answered 500 server_error")
	c.Add(time.Second)
	h.Observe("a", "token endpoint answered 502")
	if _, failing := h.Failing("a"); failing {
		t.Fatal("failing after 2 of 3 failures")
	}
	c.Add(time.Second)
	h.Observe("a", "token endpoint answered 503")
	f, failing := h.Failing("a")
	if !failing || f.Failures != 3 || f.Reason != "token endpoint answered 503" ||
		!f.Since.Equal(c.Now().Add(-2*time.Second)) || !f.Until.Equal(c.Now().Add(time.Minute)) {
		t.Fatalf("after 3 failures: %+v %v", f, failing)
	}
	h.Observe("a", "token endpoint answered 503")
	if got := changes(h); len(got) != 1 || got[0] != "a" {
		t.Fatalf("announced %v, want [a] once", got)
	}
	if _, failing := h.Failing("b"); failing {
		t.Fatal("another provider is failing")
	}

	// A success clears it at once, and is announced.
	h.Observe("a", "")
	if _, failing := h.Failing("a"); failing {
		t.Fatal("still failing after a success")
	}
	if got := changes(h); len(got) != 1 {
		t.Fatalf("recovery announced %v", got)
	}

	// Without any call, the verdict lapses after the hold.
	for range 3 {
		h.Observe("a", "dial tcp: connection refused")
	}
	changes(h)
	c.Add(time.Minute - time.Millisecond)
	if _, failing := h.Failing("a"); !failing {
		t.Fatal("lapsed before the hold")
	}
	c.Add(time.Millisecond)
	if _, failing := h.Failing("a"); failing {
		t.Fatal("still failing after the hold without a failure")
	}
	// Failures after it lapsed start a new count, announced again.
	h.Observe("a", "refused")
	if f, failing := h.Failing("a"); failing || f.Failures != 0 {
		t.Fatal("one failure after the lapse counts the old ones")
	}
	h.Observe("a", "refused")
	h.Observe("a", "refused")
	if f, failing := h.Failing("a"); !failing || f.Failures != 3 {
		t.Fatalf("new count: %+v", f)
	}
	if got := changes(h); len(got) != 1 {
		t.Fatalf("new failing verdict announced %v", got)
	}

	// Forget (the provider was removed or reconfigured).
	h.Forget("a")
	if _, failing := h.Failing("a"); failing {
		t.Fatal("failing after Forget")
	}

	// Announcements never block the caller (nobody reads on a follower).
	for i := range 1000 { // 2,000 announcements, 256 buffered
		id := strconv.Itoa(i)
		for range 3 {
			h.Observe(id, "refused")
		}
		h.Observe(id, "")
	}
}

// TestRegistryForgetsEndpointFailures: a new configuration of a provider,
// or its removal, by any of the registry's writers, drops what its old
// one's failures said.
func TestRegistryForgetsEndpointFailures(t *testing.T) {
	r := providers.NewRegistry()
	fail := func(id string) {
		for range providers.DefaultFailThreshold {
			r.TokenEndpoints().Observe(id, "token endpoint refused the request: 401 invalid_client")
		}
		if _, failing := r.TokenEndpoints().Failing(id); !failing {
			t.Fatalf("%s not failing", id)
		}
	}
	r.Set(&providers.Provider{ID: "a", Version: "1"})
	fail("a")
	r.Set(&providers.Provider{ID: "a", Version: "1"}) // the same configuration again
	if _, failing := r.TokenEndpoints().Failing("a"); !failing {
		t.Fatal("re-setting the same configuration forgot the failures")
	}
	r.Set(&providers.Provider{ID: "a", Version: "2"}) // a new client secret, say
	if _, failing := r.TokenEndpoints().Failing("a"); failing {
		t.Fatal("still failing with a new configuration")
	}
	fail("a")
	r.Delete("a")
	if _, failing := r.TokenEndpoints().Failing("a"); failing {
		t.Fatal("still failing after Delete")
	}
	kube := r.Source(providers.SourceKubernetes)
	kube.Put(&providers.Provider{ID: "a", Version: "3"})
	fail("a")
	kube.Delete("a")
	if _, failing := r.TokenEndpoints().Failing("a"); failing {
		t.Fatal("still failing after the Kubernetes writer's Delete")
	}

	// ReplaceAll (a reload of a whole source): only the providers it changes.
	file := r.Source(providers.SourceFile)
	file.ReplaceAll([]*providers.Provider{{ID: "a", Version: "4"}, {ID: "b", Version: "1"}})
	fail("a")
	fail("b")
	file.ReplaceAll([]*providers.Provider{{ID: "a", Version: "4"}, {ID: "b", Version: "2"}})
	if _, failing := r.TokenEndpoints().Failing("a"); !failing {
		t.Fatal("a reload that left a unchanged forgot its failures")
	}
	if _, failing := r.TokenEndpoints().Failing("b"); failing {
		t.Fatal("still failing after a reload changed its configuration")
	}
	file.ReplaceAll([]*providers.Provider{{ID: "b", Version: "2"}})
	if _, failing := r.TokenEndpoints().Failing("a"); failing {
		t.Fatal("still failing after a reload removed it")
	}
	// A conflict withdraws the provider: its failures go with it.
	fail("b")
	kube.Claim("b", "TokenProvider ns/b")
	if _, failing := r.TokenEndpoints().Failing("b"); failing {
		t.Fatal("still failing after a conflict withdrew it")
	}
}

// TestStaleRejectionIgnored: a refusal answered to a call made with a
// configuration the registry has since replaced (a request in flight when
// the fixed client secret was published) gives no verdict on the new one;
// the cluster suite saw ClientRejected stay after the Secret was fixed.
func TestStaleRejectionIgnored(t *testing.T) {
	r := providers.NewRegistry()
	h := r.TokenEndpoints()
	cc := providers.GrantClientCredentials
	r.Set(&providers.Provider{ID: "a", Version: "wrong-secret"})
	h.Rejected("a", "wrong-secret", cc, "invalid_client")
	if _, rejected := h.Rejection("a"); !rejected {
		t.Fatal("a refusal of the live configuration gave no verdict")
	}
	r.Set(&providers.Provider{ID: "a", Version: "fixed"})
	h.Rejected("a", "wrong-secret", cc, "invalid_client") // the late answer
	if r, rejected := h.Rejection("a"); rejected {
		t.Fatalf("a refusal of the replaced configuration gave a verdict on the new one: %+v", r)
	}
	h.Rejected("a", "fixed", cc, "invalid_client")
	if _, rejected := h.Rejection("a"); !rejected {
		t.Fatal("a refusal of the new configuration gave no verdict")
	}
	r.Delete("a")
	h.Rejected("a", "fixed", cc, "invalid_client") // after removal: nothing is live
	r.Set(&providers.Provider{ID: "a", Version: "again"})
	if _, rejected := h.Rejection("a"); rejected {
		t.Fatal("a verdict survived the provider's removal and return")
	}
}

// TestClientRejection: one refusal of tokenstore's client gives the
// verdict (no threshold), announced once per run; it belongs to its grant
// (a success of another grant leaves it), ends with a success of its grant,
// with Forget, or RejectHold after the last refusal; the grant refused
// last is the one reported.
func TestClientRejection(t *testing.T) {
	c := testutil.NewClock(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	h := providers.NewTokenEndpointHealth(providers.HealthOptions{RejectHold: 10 * time.Minute, Now: c.Now})
	cc, rt := providers.GrantClientCredentials, providers.GrantRefreshToken

	h.Accepted("a", cc) // nothing to end: not announced
	if _, rejected := h.Rejection("a"); rejected || len(changes(h)) != 0 {
		t.Fatal("a success gave a verdict or was announced")
	}
	h.Rejected("a", "", cc, "invalid_client")
	start := c.Now()
	r, rejected := h.Rejection("a")
	if !rejected || r.Grant != cc || r.Code != "invalid_client" || r.Count != 1 || !r.Since.Equal(start) || !r.Until.Equal(start.Add(10*time.Minute)) {
		t.Fatalf("after one refusal: %+v %v", r, rejected)
	}
	c.Add(time.Minute)
	h.Rejected("a", "", cc, "invalid_client")
	if got := changes(h); len(got) != 1 || got[0] != "a" {
		t.Fatalf("announced %v, want [a] once for the run", got)
	}
	if r, _ := h.Rejection("a"); r.Count != 2 || !r.Since.Equal(start) || !r.Last.Equal(c.Now()) {
		t.Fatalf("second refusal: %+v", r)
	}
	// Another code is news.
	h.Rejected("a", "", cc, "unauthorized_client")
	if r, _ := h.Rejection("a"); r.Code != "unauthorized_client" || r.Count != 1 || len(changes(h)) != 1 {
		t.Fatalf("a new code: %+v", r)
	}
	// Refreshes working say nothing of client credentials.
	h.Accepted("a", rt)
	h.Observe("a", "")
	if _, rejected := h.Rejection("a"); !rejected || len(changes(h)) != 0 {
		t.Fatal("a success of another grant ended the verdict")
	}
	// The grant refused last is reported.
	c.Add(time.Second)
	h.Rejected("a", "", rt, "invalid_client")
	if r, _ := h.Rejection("a"); r.Grant != rt {
		t.Fatalf("reported %+v, want the refresh grant refused last", r)
	}
	h.Accepted("a", rt)
	if r, rejected := h.Rejection("a"); !rejected || r.Grant != cc {
		t.Fatalf("after refreshes work again: %+v %v, want client credentials still refused", r, rejected)
	}
	changes(h)
	// A success of the grant ends it, announced.
	h.Accepted("a", cc)
	if _, rejected := h.Rejection("a"); rejected {
		t.Fatal("still rejected after a success")
	}
	if got := changes(h); len(got) != 1 {
		t.Fatalf("end announced %v", got)
	}
	// It lapses RejectHold after the last refusal.
	h.Rejected("a", "", cc, "invalid_client")
	c.Add(10*time.Minute - time.Millisecond)
	if _, rejected := h.Rejection("a"); !rejected {
		t.Fatal("lapsed before the hold")
	}
	c.Add(time.Millisecond)
	if _, rejected := h.Rejection("a"); rejected {
		t.Fatal("still rejected after the hold")
	}
	changes(h)
	h.Rejected("a", "", cc, "invalid_client")
	if r, _ := h.Rejection("a"); r.Count != 1 || len(changes(h)) != 1 {
		t.Fatalf("a refusal after the lapse starts a new run, announced: %+v", r)
	}
	// Forget (a new configuration) ends it, announced: the status reader
	// may have read the verdict after the Secret change that caused this
	// Forget, and the next success has nothing left to end.
	changes(h)
	h.Forget("a")
	if _, rejected := h.Rejection("a"); rejected {
		t.Fatal("rejected after Forget")
	}
	if got := changes(h); len(got) != 1 || got[0] != "a" {
		t.Fatalf("Forget of a verdict announced %v, want [a]", got)
	}
	h.Accepted("a", cc)
	h.Forget("a") // nothing known: not announced
	if got := changes(h); len(got) != 0 {
		t.Fatalf("Forget with no verdict announced %v", got)
	}
}

func TestRejectsClient(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   string
		want   bool
	}{
		{401, "invalid_client", true},
		{400, "invalid_client", true},
		{400, "unauthorized_client", true},
		{400, "unsupported_grant_type", true},
		{400, "invalid_scope", true},
		{400, "unsupported_response_type", true},
		{400, "invalid_grant", false},
		{400, "invalid_request", false},
		{400, "", false},
		{500, "invalid_client", false},
		{503, "unauthorized_client", false},
		{429, "invalid_client", false},
	} {
		if got := providers.RejectsClient(tc.status, tc.code); got != tc.want {
			t.Errorf("RejectsClient(%d, %q) = %v", tc.status, tc.code, got)
		}
	}
}
