package metrics

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
)

func sqliteStore(t *testing.T) store.Store {
	t.Helper()
	url := "sqlite://" + filepath.Join(t.TempDir(), "m.db")
	m, err := storeopen.NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Close()
	st, err := storeopen.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func link(t *testing.T, st store.Store, user, provider string) {
	t.Helper()
	if _, err := st.UpsertCredential(context.Background(), store.Credential{UserID: user, Provider: provider, KeyID: "k",
		RefreshToken: []byte("ciphertext")}); err != nil {
		t.Fatal(err)
	}
}

// TestCredentialGaugeCached: the count is read at scrape and reused for
// CacheFor, and it names providers and states only.
func TestCredentialGaugeCached(t *testing.T) {
	st := sqliteStore(t)
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Registerer: reg, Store: st, CacheFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	link(t, st, "user-a", "github")
	want := func(n string) {
		t.Helper()
		exp := "# HELP tokenstore_credentials Stored credentials by provider and state (active, needs_reauth).\n" +
			"# TYPE tokenstore_credentials gauge\n" +
			`tokenstore_credentials{provider="github",state="active"} ` + n + "\n"
		if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "tokenstore_credentials"); err != nil {
			t.Error(err)
		}
	}
	want("1")
	link(t, st, "user-b", "github")
	want("1") // cached
	reg2 := prometheus.NewRegistry()
	if _, err := New(Options{Registerer: reg2, Store: st, CacheFor: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg2, "tokenstore_database_up"); err != nil || n != 1 {
		t.Errorf("database_up: %d %v", n, err)
	}
	out, err := reg2.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range out {
		if mf.GetName() == "tokenstore_credentials" && mf.GetMetric()[0].GetGauge().GetValue() != 2 {
			t.Errorf("uncached count: %v", mf)
		}
	}
}

// TestProviderReadiness: a provider that leaves the registry is reported
// not ready.
func TestProviderReadiness(t *testing.T) {
	r := providers.NewRegistry()
	r.Set(&providers.Provider{ID: "a", Version: "1"})
	r.Set(&providers.Provider{ID: "b", Version: "1"})
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Registerer: reg, Providers: r}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	r.Delete("b")
	exp := `# HELP tokenstore_provider_ready 1 for a ready provider, 0 for one declared but not ready or served earlier and withdrawn.
# TYPE tokenstore_provider_ready gauge
tokenstore_provider_ready{provider="a"} 1
tokenstore_provider_ready{provider="b"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "tokenstore_provider_ready"); err != nil {
		t.Error(err)
	}
}

// TestDeclaredReadiness: with Readiness, a declared provider that never
// reached the registry is not ready, with its reason; a served one whose
// condition says not ready (discovery failing, last good configuration
// serving) is not ready either.
func TestDeclaredReadiness(t *testing.T) {
	r := providers.NewRegistry()
	r.Set(&providers.Provider{ID: "ok", Version: "1"})
	r.Set(&providers.Provider{ID: "stale", Version: "1"})
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Registerer: reg, Providers: r, Readiness: func(context.Context) []ProviderReadiness {
		return []ProviderReadiness{{ID: "ok", Ready: true, Reason: "Ready"}, {ID: "nosecret", Reason: "SecretNotFound"},
			{ID: "stale", Reason: "DiscoveryFailed"}}
	}}); err != nil {
		t.Fatal(err)
	}
	exp := `# HELP tokenstore_provider_ready 1 for a ready provider, 0 for one declared but not ready or served earlier and withdrawn.
# TYPE tokenstore_provider_ready gauge
tokenstore_provider_ready{provider="nosecret"} 0
tokenstore_provider_ready{provider="ok"} 1
tokenstore_provider_ready{provider="stale"} 0
# HELP tokenstore_provider_ready_reason 1 per declared provider, labelled with the reason of its Ready condition.
# TYPE tokenstore_provider_ready_reason gauge
tokenstore_provider_ready_reason{provider="nosecret",reason="SecretNotFound"} 1
tokenstore_provider_ready_reason{provider="ok",reason="Ready"} 1
tokenstore_provider_ready_reason{provider="stale",reason="DiscoveryFailed"} 1
# HELP tokenstore_providers Token providers by readiness: declared ones by their Ready condition (never ready ones included), and ones this replica served earlier that are no longer declared nor served.
# TYPE tokenstore_providers gauge
tokenstore_providers{ready="false"} 2
tokenstore_providers{ready="true"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "tokenstore_provider_ready", "tokenstore_provider_ready_reason", "tokenstore_providers"); err != nil {
		t.Error(err)
	}
}

// TestNilMetrics: a nil *Metrics records nothing and does not panic, so
// callers need no checks.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.RefreshObserved("p", OutcomeOK, time.Second)
	m.TokenServed("p", true)
	m.RefresherRun(nil, time.Now())
	m.RefresherClaimed("p", 1)
	m.RefresherResult("p", "refreshed")
	m.AuditPruned(3)
	m.WebhookAttempt("e", 500, time.Second)
	m.WebhookDelivery("e", "delivered")
	m.WebhookQueue(1)
	m.GrantUseLedgerKeys(1)
	m.GrantUseLedgerFallback(true)
}

// TestGrantUseLedgerMetrics: the ledger's keys gauge follows what it is
// told, and its fallbacks count by reason only (both series present from
// the start, so an alert on their rate has something to read).
func TestGrantUseLedgerMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	want := func(step, text string) {
		t.Helper()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(text),
			"tokenstore_grant_use_ledger_keys", "tokenstore_grant_use_ledger_fallbacks_total"); err != nil {
			t.Errorf("%s: %v", step, err)
		}
	}
	const head = `# HELP tokenstore_grant_use_ledger_fallbacks_total Delegated token answers that waited for a grant.use event of their own because the disclosure ledger was full or stopped, by reason (full, closed).
# TYPE tokenstore_grant_use_ledger_fallbacks_total counter
`
	const keysHead = `# HELP tokenstore_grant_use_ledger_keys Recipient-token pairs the grant.use disclosure ledger holds: delegated tokens disclosed whose repeats are only counted.
# TYPE tokenstore_grant_use_ledger_keys gauge
`
	want("new", head+`tokenstore_grant_use_ledger_fallbacks_total{reason="closed"} 0
tokenstore_grant_use_ledger_fallbacks_total{reason="full"} 0
`+keysHead+"tokenstore_grant_use_ledger_keys 0\n")
	m.GrantUseLedgerKeys(3)
	m.GrantUseLedgerKeys(2)
	m.GrantUseLedgerFallback(false)
	m.GrantUseLedgerFallback(false)
	m.GrantUseLedgerFallback(true)
	want("after use", head+`tokenstore_grant_use_ledger_fallbacks_total{reason="closed"} 1
tokenstore_grant_use_ledger_fallbacks_total{reason="full"} 2
`+keysHead+"tokenstore_grant_use_ledger_keys 2\n")
}
