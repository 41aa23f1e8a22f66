package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/controllers"
	"github.com/tokenstore/tokenstore/controllers/filesource"
	"github.com/tokenstore/tokenstore/server/config"
	"github.com/tokenstore/tokenstore/server/providers"
)

// providerSources is the provider registry and whatever fills it: the file
// source (PROVIDERS_FILE) and the Kubernetes source (WATCH_NAMESPACE). Both
// go through the same validation and the same controllers.Resolve.
type providerSources struct {
	Registry   *providers.Registry
	Discoverer *providers.Discoverer
	File       *filesource.Source
	// RestConfig is the Kubernetes client configuration when the Kubernetes
	// source is on (nil otherwise); workload authentication reuses it.
	RestConfig *rest.Config
	manager    ctrl.Manager
}

// newProviderSources builds the sources the settings ask for. Start them
// with Run.
func newProviderSources(s *config.Settings, log *slog.Logger, httpClient *http.Client) (*providerSources, error) {
	ps := &providerSources{
		Registry:   providers.NewRegistry(),
		Discoverer: providers.NewDiscoverer(httpClient, providers.DiscovererOptions{}),
	}
	if s.WatchNamespace != "" {
		cfg, err := ctrl.GetConfig()
		if err != nil {
			return nil, fmt.Errorf("WATCH_NAMESPACE is set but no Kubernetes API is reachable (in-cluster config or $KUBECONFIG): %w", err)
		}
		ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))
		scheme := runtime.NewScheme()
		if err := clientgoscheme.AddToScheme(scheme); err != nil {
			return nil, err
		}
		if err := v1alpha1.AddToScheme(scheme); err != nil {
			return nil, err
		}
		mgr, err := ctrl.NewManager(cfg, ctrl.Options{
			Scheme:                  scheme,
			Cache:                   cache.Options{DefaultNamespaces: map[string]cache.Config{s.WatchNamespace: {}}},
			LeaderElection:          s.LeaderElection,
			LeaderElectionID:        "tokenstore-status-writer",
			LeaderElectionNamespace: s.WatchNamespace,
			// Give the Lease back on SIGTERM (the manager stops the
			// status writer before it lets go), so that in a rolling
			// upgrade the next leader takes over at once instead of after
			// the lease duration (15 s).
			LeaderElectionReleaseOnCancel: true,
			// tokenstore serves its own /metrics, /healthz and /readyz.
			Metrics:                metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress: "0",
		})
		if err != nil {
			return nil, fmt.Errorf("kubernetes source: %w", err)
		}
		if _, err := controllers.SetupWithManager(mgr, ps.Registry, ps.Discoverer, controllers.Options{}); err != nil {
			return nil, fmt.Errorf("kubernetes source: %w", err)
		}
		ps.manager, ps.RestConfig = mgr, cfg
	}
	if s.ProvidersFile != "" {
		f, err := filesource.New(filesource.Options{
			Path:       s.ProvidersFile,
			Registry:   ps.Registry,
			Discoverer: ps.Discoverer,
			Logger:     log.With("source", "file"),
			// With a Kubernetes source too, that source's first full fill
			// decides registry readiness; Ready below waits for both.
			MarkRegistryReady: ps.manager == nil,
		})
		if err != nil {
			return nil, fmt.Errorf("PROVIDERS_FILE: %w", err)
		}
		ps.File = f
	}
	if ps.File == nil && ps.manager == nil {
		log.Warn("no provider source: set PROVIDERS_FILE (manifests) or WATCH_NAMESPACE (Kubernetes); serving without token providers")
		ps.Registry.MarkReady()
	}
	return ps, nil
}

// Ready reports whether every source has filled the registry once.
func (ps *providerSources) Ready() bool {
	return ps.Registry.Ready() && (ps.File == nil || ps.File.Ready())
}

// Run runs the sources until ctx ends. A source that stops with an error
// stops the others.
func (ps *providerSources) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	n := 0
	if ps.File != nil {
		n++
		go func() { errc <- wrapErr("file source", ps.File.Run(ctx)) }()
	}
	if ps.manager != nil {
		n++
		go func() { errc <- wrapErr("kubernetes source", ps.manager.Start(ctx)) }()
	}
	var first error
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil && first == nil && !errors.Is(err, context.Canceled) {
			first = err
			cancel()
		}
	}
	return first
}

// WaitReady blocks until Ready or until timeout, whichever comes first.
func (ps *providerSources) WaitReady(ctx context.Context, timeout time.Duration) bool {
	deadline := time.After(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !ps.Ready() {
		select {
		case <-ctx.Done():
			return false
		case <-deadline:
			return false
		case <-tick.C:
		}
	}
	return true
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
