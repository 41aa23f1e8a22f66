// Package app wires one tokenstore together: settings → store → provider
// sources (file, Kubernetes) → services → HTTP server, and the housekeeping
// that runs beside them. The commands in cmd/tokenstore parse flags and
// call it.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tokenstore/tokenstore/internal/crypto"
	"github.com/tokenstore/tokenstore/internal/observability/metrics"
	"github.com/tokenstore/tokenstore/internal/observability/tracing"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/refresher"
	"github.com/tokenstore/tokenstore/internal/settings"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/store/cached"
	storeopen "github.com/tokenstore/tokenstore/internal/store/open"
	"github.com/tokenstore/tokenstore/internal/webhooks"
	"github.com/tokenstore/tokenstore/internal/workload"
	"github.com/tokenstore/tokenstore/internal/workload/kubeauth"
	"github.com/tokenstore/tokenstore/server"
)

// Service is one running tokenstore: what `serve` and `dev` share.
type Service struct {
	Settings *settings.Settings
	Log      *slog.Logger
	Keys     *crypto.KeyRing
	Store    store.Store
	Sources  *providerSources
	Server   *server.Server
	// HTTPClient calls providers and the login issuer.
	HTTPClient *http.Client
	// Metrics are served on /metrics with controller-runtime's.
	Metrics *metrics.Metrics
	// Webhooks is nil without WEBHOOK_URL; Refresher without REFRESHER_INTERVAL.
	Webhooks  *webhooks.Sender
	Refresher *refresher.Refresher
	// Expiring announces credential.expiring (nil without WEBHOOK_URL or
	// with EXPIRING_WARNING=0); housekeeping runs its scan.
	Expiring *refresher.ExpiringScanner
	// stopTracing flushes and stops tracing (TRACING_ENDPOINT); a no-op
	// when tracing is off.
	stopTracing func(context.Context) error
}

// Options are what New needs besides the settings.
type Options struct {
	// Version is the binary's version, the spans' service.version.
	Version string
	// Migrate applies pending migrations before the schema is checked.
	Migrate bool
}

// New checks the settings, opens the store, migrates when asked,
// checks the schema (prepareSchema) and builds the provider sources and the
// HTTP server. Close it when done.
func New(ctx context.Context, s *settings.Settings, log *slog.Logger, opts Options) (_ *Service, err error) {
	keys, err := crypto.ParseKeyRing(s.CryptoKey)
	if err != nil {
		return nil, err
	}
	// Opened first: it says clearly when the database cannot be reached.
	opened, err := storeopen.Open(ctx, s.DatabaseURL)
	if err != nil {
		return nil, err
	}
	// Every part of serve shares one cache of the hot path's reads
	// (sessions, credential rows, grants), reused for a second: a token
	// request then costs no database round trip, writes through this
	// replica are seen here at once (the refresher's too), and every
	// replica sees a revoke or logout within that second.
	var st store.Store = cached.New(opened, cached.Options{TTL: cached.DefaultTTL})
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	if err = prepareSchema(ctx, s.DatabaseURL, log, opts.Migrate); err != nil {
		return nil, err
	}
	// With tracing on, calls to providers and the login issuer are client
	// spans (query strings removed); off, the transport is the plain one.
	// Providers' keep-alive pool (providers.Transport: more idle connections
	// per provider than net/http's 2), also under the tracing wrapper.
	var transport http.RoundTripper = providers.Transport()
	if tracing.Enabled(s) {
		transport = tracing.Transport(transport)
	}
	svc := &Service{Settings: s, Log: log, Keys: keys, Store: st, HTTPClient: &http.Client{Timeout: 20 * time.Second, Transport: transport}}
	if svc.Sources, err = newProviderSources(s, log, svc.HTTPClient); err != nil {
		return nil, err
	}
	// tokenstore's own registry, gathered together with controller-runtime's
	// (which has the Go and process collectors): one /metrics shows both,
	// and a second service in one process (tests) registers nothing twice.
	own := prometheus.NewRegistry()
	if svc.Metrics, err = metrics.New(metrics.Options{Registerer: own, Gatherer: prometheus.Gatherers{own, ctrlmetrics.Registry},
		Store: st, Providers: svc.Sources.Registry, Readiness: svc.Sources.Readiness}); err != nil {
		return nil, err
	}
	var notifier webhooksNotifier
	if s.WebhookURL != "" {
		if svc.Webhooks, err = webhooks.New(webhooks.Options{URL: s.WebhookURL, Secret: s.WebhookSecret, Source: s.ExternalURL,
			Metrics: svc.Metrics, Logger: log}); err != nil {
			return nil, err
		}
		notifier = svc.Webhooks
		if s.ExpiringWarning > 0 {
			if svc.Expiring, err = refresher.NewExpiringScanner(refresher.ExpiringOptions{Store: st, Notifier: svc.Webhooks,
				Logger: log, Warning: s.ExpiringWarning}); err != nil {
				return nil, err
			}
		}
	}
	// In a cluster, workloads authenticate with projected ServiceAccount
	// tokens, checked through TokenReview; elsewhere there are none.
	var (
		workloads workload.Authenticator
		directory workload.Directory
	)
	if cfg := svc.Sources.RestConfig; cfg != nil {
		ka, err := kubeauth.New(cfg, kubeauth.Options{Audience: s.WorkloadAudience})
		if err != nil {
			return nil, err
		}
		workloads, directory = ka, ka
	}
	svc.Server, err = server.New(server.Options{
		Workloads:       workloads,
		ServiceAccounts: directory,
		Metrics:         svc.Metrics,
		Notifier:        notifier,
		Settings:        s,
		Store:           st,
		Keys:            keys,
		Providers:       svc.Sources.Registry,
		Ready:           svc.Sources.Ready,
		HTTPClient:      svc.HTTPClient,
		Logger:          log,
	})
	if err != nil {
		return nil, err
	}
	if s.RefresherInterval > 0 {
		if svc.Refresher, err = refresher.New(refresher.Options{Store: st, Broker: svc.Server.Broker(), Providers: svc.Sources.Registry,
			Metrics: svc.Metrics, Expiring: svc.Expiring, Logger: log, Interval: s.RefresherInterval, Window: s.RefresherWindow}); err != nil {
			return nil, err
		}
	}
	// Last, so that no failure above leaves an exporter running.
	if svc.stopTracing, err = tracing.Setup(ctx, s, opts.Version, log); err != nil {
		return nil, err
	}
	return svc, nil
}

// prepareSchema applies pending migrations when migrate is set, then holds
// the schema to the rule of rolling upgrades (docs/upgrading.md): every
// migration this binary embeds must be applied, or it refuses to start
// (naming `tokenstore migrate up`) rather than serve and fail on missing
// tables; migrations it does not know are a newer release's, which only
// add, so it serves on them and says so once. An in-memory SQLite database
// is migrated by storeopen.Open and has nothing to check.
func prepareSchema(ctx context.Context, databaseURL string, log *slog.Logger, migrate bool) error {
	t, err := storeopen.Parse(databaseURL)
	if err != nil {
		return err
	}
	if t.Memory() {
		return nil
	}
	mg, err := storeopen.NewMigrator(databaseURL)
	if err != nil {
		return err
	}
	defer mg.Close()
	if migrate {
		res, err := mg.Up(ctx)
		for _, r := range res {
			log.Info("applied migration", "name", r.Name, "duration", r.Duration)
		}
		if err != nil {
			return err
		}
	}
	state, err := mg.CheckSchema(ctx)
	if err != nil {
		return err
	}
	if len(state.Newer) > 0 {
		log.Info("database schema is newer than this binary; serving on it, as a newer release's migrations only add (docs/upgrading.md)",
			"schema_version", state.Current, "binary_schema_version", state.Required, "unknown_migrations", state.Newer)
	}
	return nil
}

// webhooksNotifier is nil (no one told) or the webhook sender; a typed nil
// *webhooks.Sender must not reach the broker's interface.
type webhooksNotifier interface {
	CredentialEvent(ctx context.Context, event, userID, provider string, detail map[string]any)
}

// Run serves until ctx ends: the provider sources, the HTTP API and the
// housekeeping loop. The API stops taking requests first and finishes
// in-flight ones; the store is closed last (by Close).
func (svc *Service) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Sources.Run(gctx) })
	g.Go(func() error {
		err := svc.Server.Serve(gctx)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	g.Go(func() error { svc.housekeeping(gctx); return nil })
	if svc.Refresher != nil {
		g.Go(func() error { return svc.Refresher.Run(gctx) })
	}
	if svc.Webhooks != nil {
		g.Go(func() error { return svc.Webhooks.Run(gctx) })
		g.Go(func() error {
			svc.Webhooks.WatchReadiness(gctx, svc.Sources.Registry, svc.Sources.Readiness, 0)
			return nil
		})
	}
	err := g.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Close releases the store and flushes the last spans.
func (svc *Service) Close() {
	svc.Store.Close()
	if svc.stopTracing != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := svc.stopTracing(ctx); err != nil {
			svc.Log.Warn("tracing: flushing spans on exit", "error", tracing.RedactURLs(err.Error()))
		}
	}
}

// housekeeping removes expired sessions and pending links now and then.
// Any replica may do it: the deletes are idempotent.
func (svc *Service) housekeeping(ctx context.Context) {
	tick := time.NewTicker(10 * time.Minute)
	defer tick.Stop()
	for {
		now := time.Now()
		if n, err := svc.Store.DeleteExpiredSessions(ctx, now); err != nil && ctx.Err() == nil {
			svc.Log.Warn("housekeeping: expired sessions", "error", err)
		} else if n > 0 {
			svc.Log.Debug("housekeeping: removed expired sessions", "count", n)
		}
		if _, err := svc.Store.DeleteExpiredLinkStates(ctx, now); err != nil && ctx.Err() == nil {
			svc.Log.Warn("housekeeping: expired link states", "error", err)
		}
		if keep := svc.Settings.AuditRetention; keep > 0 {
			n, err := svc.Store.PruneAudit(ctx, now.Add(-keep))
			if err != nil && ctx.Err() == nil {
				svc.Log.Warn("housekeeping: pruning audit events", "error", err)
			} else if n > 0 {
				svc.Metrics.AuditPruned(n)
				svc.Log.Info("housekeeping: pruned audit events", "count", n, "older_than", now.Add(-keep).UTC())
			}
		}
		if svc.Expiring != nil {
			if _, err := svc.Expiring.ScanOnce(ctx); err != nil && ctx.Err() == nil {
				svc.Log.Warn("housekeeping: expiring credentials", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func DescribeSources(s *settings.Settings) string {
	switch {
	case s.ProvidersFile != "" && s.WatchNamespace != "":
		return fmt.Sprintf("file %s and namespace %s", s.ProvidersFile, s.WatchNamespace)
	case s.ProvidersFile != "":
		return "file " + s.ProvidersFile
	case s.WatchNamespace != "":
		return "namespace " + s.WatchNamespace
	}
	return "none"
}
