package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/client"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/providertest"
	"github.com/tokenstore/tokenstore/internal/workload/kubeauth"
)

// countingClient counts the exchanges a Go client sends to tokenstore.
func countingClient(n *atomic.Int64) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == "/api/oauth2/token" {
			n.Add(1)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
}

// wantRejected checks a token-exchange answer for a provider that refused
// tokenstore's client: a permanent 400 naming the provider and its error
// code, never a secret.
func wantRejected(t *testing.T, a exchangeAnswer, provider, grant, code string, secrets ...string) {
	t.Helper()
	a.want(t, http.StatusBadRequest, "invalid_target", ReasonProviderRejectedClient)
	for _, want := range []string{"Provider " + provider + " ", "the " + grant + " grant", "(" + code + ")", "will not help"} {
		if !strings.Contains(a.Description, want) {
			t.Errorf("error_description %q does not say %q", a.Description, want)
		}
	}
	for _, s := range secrets {
		if strings.Contains(string(a.body), s) {
			t.Errorf("the answer carries a secret: %s", a.body)
		}
	}
}

// TestWorkloadProviderRejectsClient: the real OP refuses tokenstore's
// client on the client-credentials grant — a TokenProvider naming the OP's
// web client, which is no client-credentials client, and one with the
// service client's secret wrong — with invalid_client. The workload gets a
// permanent 400 (invalid_target, provider_rejected_client) naming the
// provider and the OP's code instead of a 503 to retry; the provider's
// client-rejected verdict (its Ready condition, controllers) is set; the
// Go client returns a permanent *client.Error after one exchange and does
// not ask again; a well-configured provider at the same OP still serves.
func TestWorkloadProviderRejectsClient(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	good := w.saToken("allowed", testAudience)
	alpha := w.providers["alpha"]
	for _, tc := range []struct{ id, clientID, secret string }{
		{"webclient", providertest.ClientID, alpha.op.ClientSecret},
		{"wrongsecret", serviceClientID, "not-" + serviceClientSecret},
	} {
		p := *w.svc
		p.ID, p.ClientID, p.ClientSecret = tc.id, tc.clientID, tc.secret
		w.see("client_secret", tc.secret)
		w.in.reg.Set(&p)

		before := w.cc.Load()
		wantRejected(t, w.exchange(good, tc.id, ""), tc.id, providers.GrantClientCredentials, "invalid_client", tc.secret)
		if n := w.cc.Load() - before; n != 1 {
			t.Errorf("%s: %d client-credentials requests reached the OP, want 1", tc.id, n)
		}
		r, rejected := w.in.reg.TokenEndpoints().Rejection(tc.id)
		if !rejected || r.Grant != providers.GrantClientCredentials || r.Code != "invalid_client" {
			t.Errorf("%s: client-rejected verdict %+v %v", tc.id, r, rejected)
		}
	}
	if a := w.exchange(good, "svc", ""); a.status != http.StatusOK {
		t.Fatalf("the well-configured provider: %d %s", a.status, a.redacted())
	}
	if _, rejected := w.in.reg.TokenEndpoints().Rejection("svc"); rejected {
		t.Error("the well-configured provider is rejected")
	}

	// The Go client: a permanent error it names, after one exchange; asked
	// again (every HTTP request of an oauth2.Client does), it answers
	// without asking tokenstore.
	file := filepath.Join(t.TempDir(), "token")
	writeAtomically(t, file, good)
	var exchanges atomic.Int64
	ts := client.TokenSource(w.ctx, client.Options{URL: w.in.url, Provider: "webclient", TokenFile: file, HTTPClient: countingClient(&exchanges)})
	for i := range 3 {
		_, err := ts.Token()
		var ce *client.Error
		if !client.IsPermanent(err) || !errors.As(err, &ce) || ce.StatusCode != http.StatusBadRequest ||
			ce.Code != "invalid_target" || ce.Reason != ReasonProviderRejectedClient ||
			!strings.Contains(ce.Description, "webclient") || !strings.Contains(ce.Description, "invalid_client") {
			t.Fatalf("Token call %d: %v, want a permanent refusal naming the provider and invalid_client", i+1, err)
		}
	}
	if n := exchanges.Load(); n != 1 {
		t.Errorf("the Go client sent %d exchanges for 3 Token calls, want 1 (no retries of a permanent refusal)", n)
	}
	w.checkLogs()
}

// TestPersonProviderRejectsClient: a person's refresh that the real OP
// refuses because of tokenstore's client — a client secret rotated wrong
// (invalid_client), the TokenProvider naming a client not allowed the
// refresh-token grant (unauthorized_client) — is not the person's fault: the
// credential stays active (not needs_reauth, which linking again could not
// fix), and every way to the token answers a permanent error naming the
// provider and the code: the API's GET token (400 provider_rejected_client,
// not 502), the token exchange with the person's own access token, and a
// workload's delegated exchange (400 invalid_target). With the client
// fixed, the same credential refreshes.
func TestPersonProviderRejectsClient(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	br, user := w.person(w.in, "alpha")
	w.grantApp(br, w.in, "alpha")
	app := w.saToken("app", testAudience)
	at := w.loginAccessToken()
	alpha := w.providers["alpha"]
	for i, tc := range []struct{ clientID, secret, code string }{
		{providertest.ClientID, "rotated-wrong-" + alpha.op.ClientSecret, "invalid_client"},
		{providertest.DeviceOnlyClientID, alpha.op.DeviceOnlySecret, "unauthorized_client"},
	} {
		p := *alpha.provider
		p.ClientID, p.ClientSecret, p.Version = tc.clientID, tc.secret, string(rune('a'+i))
		w.see("client_secret", tc.secret)
		w.in.reg.Set(&p)
		w.expire(user, "alpha")

		_, r := br.token(w.in, "alpha", "")
		var e struct {
			Error, Message, Provider string
		}
		r.json(t, &e)
		if r.status != http.StatusBadRequest || e.Error != ReasonProviderRejectedClient || e.Provider != "alpha" ||
			!strings.Contains(e.Message, "("+tc.code+")") || strings.Contains(string(r.body), tc.secret) {
			t.Fatalf("GET token with the client refused (%s): %d %s", tc.code, r.status, r.body)
		}
		own := w.exchangeForm(url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {at},
			"subject_token_type": {TokenTypeAccessToken}, "resource": {"alpha"}})
		wantRejected(t, own, "alpha", providers.GrantRefreshToken, tc.code, tc.secret)
		wantRejected(t, w.exchange(app, "alpha", user), "alpha", providers.GrantRefreshToken, tc.code, tc.secret)

		if c := w.credential(user, "alpha"); c.State != "active" {
			t.Fatalf("credential state %q after %s, want active", c.State, tc.code)
		}
		if rj, rejected := w.in.reg.TokenEndpoints().Rejection("alpha"); !rejected || rj.Grant != providers.GrantRefreshToken || rj.Code != tc.code {
			t.Errorf("client-rejected verdict %+v %v, want the refresh grant refused with %s", rj, rejected, tc.code)
		}
	}
	fixed := *alpha.provider
	fixed.Version = "fixed"
	w.in.reg.Set(&fixed)
	if ta, r := br.token(w.in, "alpha", ""); r.status != http.StatusOK || ta.AccessToken == "" {
		t.Fatalf("GET token with the client fixed: %d %s", r.status, r.body)
	}
	w.checkLogs()
}

// TestGoClientRetriesWhatPasses: the Go client keeps trying, within one
// Token call, while tokenstore cannot be reached (connection refused: it
// is starting) and while it answers 503 temporarily_unavailable (the
// provider behind it is down), and gets the token once both pass.
func TestGoClientRetriesWhatPasses(t *testing.T) {
	w := newWorkloadEnv(t, kubeauth.Options{})
	file := filepath.Join(t.TempDir(), "token")
	writeAtomically(t, file, w.saToken("allowed", testAudience))

	// What each exchange met: "refused", or the answer's status.
	var mu sync.Mutex
	var met []string
	record := func(s string) { mu.Lock(); met = append(met, s); mu.Unlock() }
	all := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(met) }
	seen := func(s string) int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Index(met, s)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			record("refused")
		} else {
			record(strconv.Itoa(resp.StatusCode))
		}
		return resp, err
	})}

	// tokenstore not listening yet: an address nothing serves, served by
	// the real handler once the client has been refused; the provider
	// comes back once the client has been answered 503.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	alpha := w.providers["alpha"]
	alpha.op.Stop()
	ctx, cancel := context.WithTimeout(w.ctx, 40*time.Second)
	defer cancel()
	ts := client.TokenSource(ctx, client.Options{URL: "http://" + addr, Provider: "svc", TokenFile: file, HTTPClient: hc, RetryFor: 30 * time.Second})
	go func() {
		for seen("refused") < 0 && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listening on %s: %v", addr, err)
			return
		}
		hs := httptest.NewUnstartedServer(w.in.srv.Handler())
		hs.Listener.Close()
		hs.Listener = l
		hs.Start()
		t.Cleanup(hs.Close)
		for seen("503") < 0 && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if err := alpha.op.Restart(); err != nil {
			t.Errorf("restarting the OP: %v", err)
		}
	}()
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("Token while tokenstore and then the provider were away: %v (exchanges met %v)", err, all())
	}
	w.see("access_token", tok.AccessToken)
	if r, u, ok := seen("refused"), seen("503"), seen("200"); r < 0 || u < r || ok < u {
		t.Errorf("exchanges met %v: want refused connections, then 503s, then the token", all())
	}
	w.checkLogs()
}
