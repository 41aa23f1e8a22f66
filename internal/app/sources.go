package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/controllers"
	"github.com/tokenstore/tokenstore/internal/observability/metrics"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/filesource"
	"github.com/tokenstore/tokenstore/internal/settings"
)

// providerSources is the provider registry and whatever fills it: the file
// source (PROVIDERS_FILE) and the Kubernetes source (WATCH_NAMESPACE). Both
// go through the same validation and the same resolve.Resolve, and each
// writes through its own writer of the registry (providers.SourceFile,
// providers.SourceKubernetes), whose merge rule decides an id both claim.
type providerSources struct {
	Registry   *providers.Registry
	Discoverer *providers.Discoverer
	File       *filesource.Source
	// RestConfig is the Kubernetes client configuration when the Kubernetes
	// source is on (nil otherwise); workload authentication reuses it.
	RestConfig *rest.Config
	manager    ctrl.Manager
	namespace  string
	log        *slog.Logger
	// stopping is set once Run's context ends: the logr bridge then logs
	// the leader elector's "leader election lost" at INFO.
	stopping atomic.Bool
}

// newProviderSources builds the sources the settings ask for. Start them
// with Run.
func newProviderSources(s *settings.Settings, log *slog.Logger, httpClient *http.Client) (*providerSources, error) {
	ps := &providerSources{
		Registry:   providers.NewRegistry(),
		Discoverer: providers.NewDiscoverer(httpClient, providers.DiscovererOptions{}),
		log:        log,
	}
	if s.WatchNamespace != "" {
		cfg, err := ctrl.GetConfig()
		if err != nil {
			return nil, fmt.Errorf("WATCH_NAMESPACE is set but no Kubernetes API is reachable (in-cluster config or $KUBECONFIG): %w", err)
		}
		ctrl.SetLogger(logr.FromSlogHandler(newShutdownHandler(log.Handler(), ps.stopping.Load)))
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
		ps.manager, ps.RestConfig, ps.namespace = mgr, cfg, s.WatchNamespace
	}
	if s.ProvidersFile != "" {
		f, err := filesource.New(filesource.Options{
			Path:       s.ProvidersFile,
			Registry:   ps.Registry,
			Discoverer: ps.Discoverer,
			Logger:     log.With("source", "file"),
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

// Ready reports whether every source has filled the registry once: each
// registered its writer above and marks it synced after its first fill.
func (ps *providerSources) Ready() bool {
	return ps.Registry.Ready()
}

// Run runs the sources until ctx ends. A source that stops with an error
// stops the others.
func (ps *providerSources) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ps.stopping.Store(true) })
	defer stop()
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

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Readiness returns the Ready condition of every provider the sources
// declare, sorted by id: the file source's statuses and the Kubernetes
// TokenProviders' .status.conditions (from the manager's cache). Unlike the
// registry it includes providers that never became ready. A provider
// declared by both sources is ready only if both say so.
func (ps *providerSources) Readiness(ctx context.Context) []metrics.ProviderReadiness {
	byID := map[string]metrics.ProviderReadiness{}
	add := func(r metrics.ProviderReadiness) {
		if old, ok := byID[r.ID]; ok && (!old.Ready || r.Ready) {
			return
		}
		byID[r.ID] = r
	}
	if ps.File != nil {
		for _, st := range ps.File.Statuses() {
			// Each replica computes its own transition time; to the minute,
			// replicas that saw the change together agree on the event id.
			add(condition(st.ID, st.Status.Conditions, time.Minute, ps.Registry))
		}
	}
	// The cache is synced once the Kubernetes source has filled the
	// registry; before that a List would wait for it.
	if ps.manager != nil && ps.Registry.Ready() {
		var l v1alpha1.TokenProviderList
		if err := ps.manager.GetClient().List(ctx, &l, client.InNamespace(ps.namespace)); err != nil {
			ps.log.Warn("provider readiness: listing TokenProviders", "error", err)
		} else {
			for i := range l.Items {
				add(condition(l.Items[i].ProviderID(), l.Items[i].Status.Conditions, 0, ps.Registry))
			}
		}
	}
	out := make([]metrics.ProviderReadiness, 0, len(byID))
	for _, r := range byID {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// condition reads the Ready condition of provider id. Without one (not
// reconciled yet) the provider is ready when the registry serves it, and
// its reason is metrics.ReasonUnknown.
func condition(id string, conds []metav1.Condition, round time.Duration, reg providers.Reader) metrics.ProviderReadiness {
	c := apimeta.FindStatusCondition(conds, v1alpha1.ConditionReady)
	if c == nil || c.Status == metav1.ConditionUnknown {
		_, serving := reg.Get(id)
		return metrics.ProviderReadiness{ID: id, Ready: serving, Reason: metrics.ReasonUnknown}
	}
	r := metrics.ProviderReadiness{ID: id, Ready: c.Status == metav1.ConditionTrue, Reason: c.Reason, Since: c.LastTransitionTime.Time}
	if round > 0 {
		r.Since = r.Since.Truncate(round)
	}
	if r.Reason == "" {
		r.Reason = metrics.ReasonUnknown
	}
	return r
}
