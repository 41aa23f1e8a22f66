// Package metrics holds tokenstore's Prometheus metrics: HTTP requests,
// refreshes at providers, tokens served from the cache, credentials by
// provider and state, providers by readiness, the background refresher,
// the grant.use disclosure ledger and webhook deliveries.
//
// Labels name routes (templates, never URLs), providers, states and
// outcomes only: no user id, token or secret ever becomes a label value,
// because label values are stored and shown in plain text by every
// Prometheus and dashboard that scrapes the service.
package metrics

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
)

const namespace = "tokenstore"

// Refresh outcomes (the outcome label of refresh metrics).
const (
	OutcomeOK            = "ok"
	OutcomeInvalidGrant  = "invalid_grant"
	OutcomeProviderError = "provider_error"
	// OutcomeClientRejected: the provider refused tokenstore's client
	// (invalid_client, unauthorized_client, ...), a configuration problem.
	OutcomeClientRejected = "client_rejected"
)

// ProviderReadiness is one declared provider's Ready condition, as its
// source (manifest file or Kubernetes TokenProvider status) has it.
type ProviderReadiness struct {
	ID    string
	Ready bool
	// Reason is the condition's reason (Ready, SecretNotFound,
	// DiscoveryFailed, ...); ReasonUnknown when no condition is set yet.
	Reason string
	// Since is when the condition last changed, as every replica sees it
	// (for the Kubernetes source the status's lastTransitionTime); it keys
	// the provider.not_ready event id.
	Since time.Time
}

// ReasonUnknown is the reason of a provider whose Ready condition has not
// been written yet (a TokenProvider the controller has not reconciled).
const ReasonUnknown = "Unknown"

// CredentialCounter is the part of the store the credentials gauge reads.
type CredentialCounter interface {
	CountCredentials(ctx context.Context) ([]store.CredentialCount, error)
	Ping(ctx context.Context) error
}

// Options are what Metrics are built from.
type Options struct {
	// Registerer receives every collector; nil means a new registry (tests).
	// cmd passes controller-runtime's metrics.Registry so that one /metrics
	// shows the controllers' metrics too.
	Registerer prometheus.Registerer
	// Gatherer is what /metrics exposes; nil means Registerer when it is a
	// Gatherer too.
	Gatherer prometheus.Gatherer
	// Store feeds the credentials gauge and database_up; nil leaves them out.
	Store CredentialCounter
	// Providers feeds the provider gauges; nil leaves them out.
	Providers providers.Reader
	// Readiness, when set, tells the Ready condition of every provider the
	// sources declare, including ones that never became ready (Secret
	// missing, discovery failing from the start) and so never reached the
	// registry. It is called at scrape with a short deadline.
	Readiness func(ctx context.Context) []ProviderReadiness
	// CacheFor is how long a credential count is reused between scrapes
	// (counting is a full-table aggregate); 0 means 30 s.
	CacheFor time.Duration
	// GoCollectors adds the Go runtime and process collectors; leave it off
	// when the registry already has them.
	GoCollectors bool
}

// Metrics are the service's collectors. The zero value is not usable; a nil
// *Metrics is, and records nothing, so callers need no nil checks.
type Metrics struct {
	gatherer prometheus.Gatherer

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
	// httpSeries caches the children of httpRequests and httpDuration by
	// their labels (httpKey -> httpSeries): resolving them by label values
	// hashes every label on every request, which showed in the token hot
	// path's profile. Bounded as the labels are: route templates, known
	// methods and statuses.
	httpSeries sync.Map
	// servedSeries caches served's children by labels (servedKey ->
	// prometheus.Counter), for the same reason: TokenServed runs on every
	// token answer. Bounded by the providers served times two sources.
	servedSeries sync.Map

	refreshes       *prometheus.CounterVec
	refreshDuration *prometheus.HistogramVec
	served          *prometheus.CounterVec

	refresherRuns     *prometheus.CounterVec
	refresherClaimed  *prometheus.CounterVec
	refresherResults  *prometheus.CounterVec
	refresherLastRun  prometheus.Gauge
	auditPruned       prometheus.Counter
	auditWrites       *prometheus.HistogramVec
	webhookDeliveries *prometheus.CounterVec
	webhookAttempts   *prometheus.CounterVec
	webhookDuration   *prometheus.HistogramVec
	webhookQueue      prometheus.Gauge
	grantUseKeys      prometheus.Gauge
	rateLimited       *prometheus.CounterVec
	// grantUseFallbacks is grant_use_ledger_fallbacks_total by reason
	// (full, closed), resolved once.
	grantUseFallbacks [2]prometheus.Counter
}

// New registers every collector.
func New(opt Options) (*Metrics, error) {
	if opt.Registerer == nil {
		r := prometheus.NewRegistry()
		opt.Registerer, opt.Gatherer = r, r
	}
	if opt.Gatherer == nil {
		g, ok := opt.Registerer.(prometheus.Gatherer)
		if !ok {
			g = prometheus.DefaultGatherer
		}
		opt.Gatherer = g
	}
	if opt.CacheFor <= 0 {
		opt.CacheFor = 30 * time.Second
	}
	latency := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20}
	m := &Metrics{
		gatherer: opt.Gatherer,
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests by route template, method and status code."}, []string{"route", "method", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "http_request_duration_seconds",
			Help: "HTTP request latency by route template and method.", Buckets: latency}, []string{"route", "method"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "refreshes_total",
			Help: "Refresh-token grants sent to providers, by provider and outcome (ok, invalid_grant, client_rejected, provider_error)."}, []string{"provider", "outcome"}),
		refreshDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "refresh_duration_seconds",
			Help: "Latency of refresh-token grants at providers.", Buckets: latency}, []string{"provider", "outcome"}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "tokens_served_total",
			Help: "Access tokens handed out, by provider and source: cache (no refresh needed) or refresh."}, []string{"provider", "source"}),
		refresherRuns: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "refresher_runs_total",
			Help: "Background refresher passes, by result (ok, error)."}, []string{"result"}),
		refresherClaimed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "refresher_claimed_total",
			Help: "Credentials claimed by this replica's background refresher, by provider."}, []string{"provider"}),
		refresherResults: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "refresher_refreshes_total",
			Help: "Credentials the background refresher handled, by provider and result (refreshed, fresh, needs_reauth, error)."}, []string{"provider", "result"}),
		refresherLastRun: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "refresher_last_run_timestamp_seconds",
			Help: "When the background refresher last finished a pass without error."}),
		auditPruned: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "audit_events_pruned_total",
			Help: "Audit events deleted for being older than AUDIT_RETENTION."}),
		auditWrites: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "audit_write_batch_size",
			Help:    "Audit events per database write (concurrent events share one insert and commit), by result (ok, error).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9)}, []string{"result"}),
		webhookDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "webhook_deliveries_total",
			Help: "Webhook events by type and final outcome (delivered, failed, dropped)."}, []string{"event", "outcome"}),
		webhookAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "webhook_attempts_total",
			Help: "Webhook POSTs, by event type and result (2xx, 4xx, 5xx, error)."}, []string{"event", "result"}),
		webhookDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "webhook_attempt_duration_seconds",
			Help: "Latency of webhook POSTs.", Buckets: latency}, []string{"event"}),
		webhookQueue: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "webhook_queue_length",
			Help: "Webhook events waiting to be delivered."}),
		grantUseKeys: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "grant_use_ledger_keys",
			Help: "Recipient-token pairs the grant.use disclosure ledger holds: delegated tokens disclosed whose repeats are only counted."}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "rate_limited_total",
			Help: "Requests refused with 429 by this replica's rate limits, by route template and kind (address: per client address, principal: per signed-in person, program or workload)."},
			[]string{"route", "kind"}),
	}
	fallbacks := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "grant_use_ledger_fallbacks_total",
		Help: "Delegated token answers that waited for a grant.use event of their own because the disclosure ledger was full or stopped, by reason (full, closed)."},
		[]string{"reason"})
	m.grantUseFallbacks = [2]prometheus.Counter{fallbacks.WithLabelValues("full"), fallbacks.WithLabelValues("closed")}
	cs := []prometheus.Collector{m.httpRequests, m.httpDuration, m.refreshes, m.refreshDuration, m.served,
		m.refresherRuns, m.refresherClaimed, m.refresherResults, m.refresherLastRun, m.auditPruned, m.auditWrites,
		m.webhookDeliveries, m.webhookAttempts, m.webhookDuration, m.webhookQueue, m.grantUseKeys, m.rateLimited, fallbacks}
	if opt.Store != nil {
		cs = append(cs, &storeCollector{st: opt.Store, cacheFor: opt.CacheFor})
	}
	if opt.Providers != nil {
		cs = append(cs, &providerCollector{reg: opt.Providers, readiness: opt.Readiness, seen: map[string]bool{}})
	}
	if opt.GoCollectors {
		cs = append(cs, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	for _, c := range cs {
		if err := opt.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: registering a collector: %w", err)
		}
	}
	return m, nil
}

// Handler serves the exposition format of everything gathered.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// knownMethods keeps the method label bounded: a client can send any verb.
var knownMethods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true}

// HTTPRequest counts and times one answered request by its route template
// (gin's c.FullPath; "" for unmatched paths), so /api/v1.0/github/token and
// /api/v1.0/google/token share one series and a path never carries a value
// into a label. The HTTP layer's middleware calls it.
func (m *Metrics) HTTPRequest(route, method string, status int, d time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		// Unmatched paths (the web page, 404s) share one series.
		route = "unmatched"
	}
	if !knownMethods[method] {
		method = "other"
	}
	k := httpKey{route, method, status}
	v, ok := m.httpSeries.Load(k)
	if !ok {
		v, _ = m.httpSeries.LoadOrStore(k, httpSeries{
			requests: m.httpRequests.WithLabelValues(route, method, strconv.Itoa(k.status)),
			duration: m.httpDuration.WithLabelValues(route, method),
		})
	}
	hs := v.(httpSeries)
	hs.requests.Inc()
	hs.duration.Observe(d.Seconds())
}

// httpKey is the label set of one HTTP request series.
type httpKey struct {
	route, method string
	status        int
}

type httpSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// RefreshObserved records one refresh-token grant at a provider.
func (m *Metrics) RefreshObserved(provider, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.refreshes.WithLabelValues(provider, outcome).Inc()
	m.refreshDuration.WithLabelValues(provider, outcome).Observe(d.Seconds())
}

// TokenServed records an access token handed out; cached is true when no
// refresh was needed (a cache hit).
func (m *Metrics) TokenServed(provider string, cached bool) {
	if m == nil {
		return
	}
	src := "refresh"
	if cached {
		src = "cache"
	}
	k := servedKey{provider, src}
	v, ok := m.servedSeries.Load(k)
	if !ok {
		v, _ = m.servedSeries.LoadOrStore(k, m.served.WithLabelValues(provider, src))
	}
	v.(prometheus.Counter).Inc()
}

// servedKey is the label set of one tokens_served_total series.
type servedKey struct{ provider, src string }

// RefresherRun records one pass of the background refresher.
func (m *Metrics) RefresherRun(err error, at time.Time) {
	if m == nil {
		return
	}
	if err != nil {
		m.refresherRuns.WithLabelValues("error").Inc()
		return
	}
	m.refresherRuns.WithLabelValues("ok").Inc()
	m.refresherLastRun.Set(float64(at.Unix()))
}

// RefresherClaimed records credentials claimed by the background refresher.
func (m *Metrics) RefresherClaimed(provider string, n int) {
	if m == nil || n == 0 {
		return
	}
	m.refresherClaimed.WithLabelValues(provider).Add(float64(n))
}

// RefresherResult records what the background refresher did with one
// credential: refreshed, fresh (someone else had), needs_reauth, error.
func (m *Metrics) RefresherResult(provider, result string) {
	if m == nil {
		return
	}
	m.refresherResults.WithLabelValues(provider, result).Inc()
}

// AuditPruned records audit events deleted for their age.
func (m *Metrics) AuditPruned(n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.auditPruned.Add(float64(n))
}

// AuditWrite records one write of audit events (err nil: stored).
func (m *Metrics) AuditWrite(events int, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.auditWrites.WithLabelValues(result).Observe(float64(events))
}

// WebhookAttempt records one POST to the webhook URL; status 0 means it got
// no answer.
func (m *Metrics) WebhookAttempt(event string, status int, d time.Duration) {
	if m == nil {
		return
	}
	result := "error"
	if status > 0 {
		result = strconv.Itoa(status/100) + "xx"
	}
	m.webhookAttempts.WithLabelValues(event, result).Inc()
	m.webhookDuration.WithLabelValues(event).Observe(d.Seconds())
}

// WebhookDelivery records an event's final fate: delivered, failed (retries
// exhausted or refused) or dropped (queue full, or shutdown).
func (m *Metrics) WebhookDelivery(event, outcome string) {
	if m == nil {
		return
	}
	m.webhookDeliveries.WithLabelValues(event, outcome).Inc()
}

// WebhookQueue sets the number of events waiting.
func (m *Metrics) WebhookQueue(n int) {
	if m == nil {
		return
	}
	m.webhookQueue.Set(float64(n))
}

// RateLimited counts one request refused by a rate limit: route is the
// route template, kind "address" or "principal". Neither carries a user id
// or an address: the limited party is in the request's log line.
func (m *Metrics) RateLimited(route, kind string) {
	if m == nil {
		return
	}
	m.rateLimited.WithLabelValues(route, kind).Inc()
}

// GrantUseLedgerKeys sets the number of recipient-token pairs the
// disclosure ledger holds (disclosure.Options.Keys).
func (m *Metrics) GrantUseLedgerKeys(n int) {
	if m == nil {
		return
	}
	m.grantUseKeys.Set(float64(n))
}

// GrantUseLedgerFallback records a delegated answer that wrote its own
// grant.use event because the disclosure ledger was full, or closed (the
// server stopping) (disclosure.Options.Fallback).
func (m *Metrics) GrantUseLedgerFallback(closed bool) {
	if m == nil {
		return
	}
	i := 0
	if closed {
		i = 1
	}
	m.grantUseFallbacks[i].Inc()
}

// storeCollector reads credential counts at scrape time, reusing a count
// for cacheFor so that frequent scrapes (several Prometheus replicas, every
// tokenstore replica scraped) do not each aggregate the whole table. The
// database ping is not cached: database_up must say how it is now.
type storeCollector struct {
	st       CredentialCounter
	cacheFor time.Duration

	mu     sync.Mutex
	at     time.Time
	counts []store.CredentialCount
}

var (
	credentialsDesc = prometheus.NewDesc(namespace+"_credentials", "Stored credentials by provider and state (active, needs_reauth).",
		[]string{"provider", "state"}, nil)
	databaseUpDesc = prometheus.NewDesc(namespace+"_database_up", "1 when the database answered the last scrape's ping, else 0.", nil, nil)
	providersDesc  = prometheus.NewDesc(namespace+"_providers", "Token providers by readiness: declared ones by their Ready condition "+
		"(never ready ones included), and ones this replica served earlier that are no longer declared nor served.",
		[]string{"ready"}, nil)
	providerReadyDesc = prometheus.NewDesc(namespace+"_provider_ready", "1 for a ready provider, 0 for one declared but not ready or served earlier and withdrawn.",
		[]string{"provider"}, nil)
	providerReasonDesc = prometheus.NewDesc(namespace+"_provider_ready_reason", "1 per declared provider, labelled with the reason of its Ready condition.",
		[]string{"provider", "reason"}, nil)
	registryReadyDesc = prometheus.NewDesc(namespace+"_provider_registry_ready", "1 once the provider registry has been filled completely.", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- credentialsDesc
	ch <- databaseUpDesc
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	up := 1.0
	if err := c.st.Ping(ctx); err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(databaseUpDesc, prometheus.GaugeValue, up)

	c.mu.Lock()
	defer c.mu.Unlock()
	if up == 1 && time.Since(c.at) >= c.cacheFor {
		if counts, err := c.st.CountCredentials(ctx); err == nil {
			c.counts, c.at = counts, time.Now()
		}
	}
	// A failed count serves the last one: the gauge goes stale rather than
	// dropping to nothing, and database_up tells what happened.
	for _, n := range c.counts {
		ch <- prometheus.MustNewConstMetric(credentialsDesc, prometheus.GaugeValue, float64(n.Count), n.Provider, string(n.State))
	}
}

// providerCollector reports provider readiness at scrape time. Declared
// providers (readiness) are reported by their Ready condition. The registry
// holds only providers that can serve, so one that leaves it and is not
// declared either is remembered as not ready (until the process restarts):
// an alert can fire on it.
type providerCollector struct {
	reg       providers.Reader
	readiness func(ctx context.Context) []ProviderReadiness

	mu   sync.Mutex
	seen map[string]bool
}

func (c *providerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- providersDesc
	ch <- providerReadyDesc
	ch <- providerReasonDesc
	ch <- registryReadyDesc
}

func (c *providerCollector) Collect(ch chan<- prometheus.Metric) {
	current := map[string]bool{}
	for _, p := range c.reg.List() {
		current[p.ID] = true
	}
	ready := map[string]bool{}
	if c.readiness != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		for _, r := range c.readiness(ctx) {
			if _, dup := ready[r.ID]; dup {
				continue
			}
			ready[r.ID] = r.Ready
			ch <- prometheus.MustNewConstMetric(providerReasonDesc, prometheus.GaugeValue, 1, r.ID, r.Reason)
		}
		cancel()
	}
	c.mu.Lock()
	for id := range current {
		c.seen[id] = true
		if _, declared := ready[id]; !declared {
			ready[id] = true
		}
	}
	for id := range c.seen {
		if _, ok := ready[id]; !ok {
			ready[id] = false // served earlier, withdrawn, no longer declared
		}
	}
	c.mu.Unlock()
	n := map[bool]int{}
	for id, r := range ready {
		n[r]++
		v := 0.0
		if r {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(providerReadyDesc, prometheus.GaugeValue, v, id)
	}
	ch <- prometheus.MustNewConstMetric(providersDesc, prometheus.GaugeValue, float64(n[true]), "true")
	ch <- prometheus.MustNewConstMetric(providersDesc, prometheus.GaugeValue, float64(n[false]), "false")
	registry := 0.0
	if c.reg.Ready() {
		registry = 1
	}
	ch <- prometheus.MustNewConstMetric(registryReadyDesc, prometheus.GaugeValue, registry)
}
