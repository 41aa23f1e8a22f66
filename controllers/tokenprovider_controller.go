// Package controllers turns TokenProvider objects (and the Secrets they
// reference) into the in-memory provider registry, through its
// Kubernetes-source writer, and into their .status.
//
// Two reconcilers watch the same kind, because controller-runtime runs
// leader-elected controllers on the leader only, while every replica must
// serve from a complete registry:
//
//   - RegistryReconciler runs on every replica (NeedLeaderElection false)
//     and writes nothing to the API server: it only fills the registry. Its
//     requests are provider ids (reconcile.Request.Name, no namespace), not
//     objects, so that one worker at a time decides an id from every
//     TokenProvider that claims it.
//   - StatusReconciler runs on the elected leader only and writes .status and
//     Events.
//
// Both interpret the spec through Resolve, which the file source uses too.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/resolve"
)

// Field indexes on TokenProviders.
const (
	// SecretRefIndex maps a Secret name to the TokenProviders of the same
	// namespace that reference it, so a Secret event finds them.
	SecretRefIndex = "spec.clientSecretRef.name"
	// IDIndex finds the TokenProviders that claim one provider id (spec.id,
	// else the name), across namespaces: two of them conflict.
	IDIndex = "providerID"
)

// Options tune both reconcilers; zero values take the defaults.
type Options struct {
	// RefreshInterval is how often a discovered provider is checked again
	// (default 10 minutes; give the Discoverer the same or a shorter TTL).
	RefreshInterval time.Duration
	// MinBackoff and MaxBackoff bound the retry delay while discovery fails
	// (defaults 5 seconds and 5 minutes).
	MinBackoff, MaxBackoff time.Duration
	// MaxConcurrentReconciles of each reconciler (default 16). Their work
	// is waiting on the network (discovery, Secret reads, status writes),
	// not computing: with 4 workers and two round trips of ~45 ms each on
	// a loaded API server, the status reconciler managed ~45 objects a
	// second (docs/controller.md).
	MaxConcurrentReconciles int
	// FieldOwner of status patches (default "tokenstore").
	FieldOwner string
	// EventSource names the reporting controller of Events (default
	// "tokenstore").
	EventSource string
	// NamePrefix prefixes the controller names, so that several managers
	// can run in one process (tests); default none.
	NamePrefix string
}

func (o Options) withDefaults() Options {
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = 10 * time.Minute
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 5 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.MaxConcurrentReconciles <= 0 {
		o.MaxConcurrentReconciles = 16
	}
	if o.FieldOwner == "" {
		o.FieldOwner = "tokenstore"
	}
	if o.EventSource == "" {
		o.EventSource = "tokenstore"
	}
	return o
}

// requeue adds up to 10% jitter so that providers created together do not
// re-check together forever.
func (o Options) requeue(res resolve.Result) ctrl.Result {
	d := res.NextCheck(o.RefreshInterval, o.MinBackoff, o.MaxBackoff)
	if d <= 0 {
		return ctrl.Result{}
	}
	return ctrl.Result{RequeueAfter: d + rand.N(d/10+1)}
}

// Controllers is what SetupWithManager wired.
type Controllers struct {
	Registry *RegistryReconciler
	Status   *StatusReconciler
}

// SetupWithManager registers the field indexes, both reconcilers and the
// registry-readiness tracker with mgr. The registry is filled on every
// replica; status and events are written by the leader only.
func SetupWithManager(mgr ctrl.Manager, reg *providers.Registry, d *providers.Discoverer, opts Options) (*Controllers, error) {
	if err := SetupIndexes(context.Background(), mgr); err != nil {
		return nil, err
	}
	// Both reconcilers read the same Secrets, usually at the same moment:
	// one remembered value serves both until the Secret changes.
	secrets := newSecretValues(mgr.GetCache(), mgr.GetAPIReader())
	// The controllers write into the registry only through its
	// Kubernetes-source writer.
	w := reg.Source(providers.SourceKubernetes)
	c := &Controllers{
		Registry: &RegistryReconciler{
			Client: mgr.GetClient(), SecretReader: mgr.GetAPIReader(),
			Registry: w, Discoverer: d, Options: opts, secrets: secrets,
		},
		Status: &StatusReconciler{
			Client: mgr.GetClient(), SecretReader: mgr.GetAPIReader(),
			Discoverer: d, Recorder: mgr.GetEventRecorder(opts.withDefaults().EventSource), Options: opts,
			TokenEndpoints: reg.TokenEndpoints(),
			Conflicts:      w,
			secrets:        secrets,
		},
	}
	if err := c.Registry.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := c.Status.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return c, nil
}

// SetupIndexes registers the TokenProvider field indexes both reconcilers
// use. Call it once per manager (SetupWithManager does).
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.TokenProvider{}, SecretRefIndex, func(o client.Object) []string {
		tp := o.(*v1alpha1.TokenProvider)
		if tp.Spec.ClientSecretRef == nil || tp.Spec.ClientSecretRef.Name == "" {
			return nil
		}
		return []string{tp.Spec.ClientSecretRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing TokenProviders by %s: %w", SecretRefIndex, err)
	}
	if err := idx.IndexField(ctx, &v1alpha1.TokenProvider{}, IDIndex, func(o client.Object) []string {
		return []string{o.(*v1alpha1.TokenProvider).ProviderID()}
	}); err != nil {
		return fmt.Errorf("indexing TokenProviders by %s: %w", IDIndex, err)
	}
	return nil
}

// ReadyzCheck is a healthz.Checker for /readyz: it fails until the registry
// has been filled once, so that no replica answers "no such provider" for a
// provider it simply has not read yet.
func ReadyzCheck(r providers.Reader) healthz.Checker {
	return func(*http.Request) error {
		if !r.Ready() {
			return errors.New("provider registry not filled yet")
		}
		return nil
	}
}

// providersForSecret maps a Secret event to the requests (key) of the
// TokenProviders that reference the Secret (through the field index).
func providersForSecret(c client.Reader, key func(*v1alpha1.TokenProvider) reconcile.Request) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list v1alpha1.TokenProviderList
		if err := c.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{SecretRefIndex: o.GetName()}); err != nil {
			logf.FromContext(ctx).Error(err, "listing TokenProviders that reference a Secret", "secret", client.ObjectKeyFromObject(o))
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for i := range list.Items {
			reqs = append(reqs, key(&list.Items[i]))
		}
		return reqs
	}
}

// objectRequest is the status reconciler's request of a TokenProvider.
func objectRequest(tp *v1alpha1.TokenProvider) reconcile.Request {
	return reconcile.Request{NamespacedName: client.ObjectKeyFromObject(tp)}
}

// idRequest is the registry reconciler's request of a TokenProvider: its
// provider id.
func idRequest(tp *v1alpha1.TokenProvider) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Name: tp.ProviderID()}}
}

// claimants returns the TokenProviders that claim provider id, leaving out
// objects being deleted, sorted by namespace and name.
func claimants(ctx context.Context, c client.Reader, id string) ([]v1alpha1.TokenProvider, error) {
	var list v1alpha1.TokenProviderList
	if err := c.List(ctx, &list, client.MatchingFields{IDIndex: id}); err != nil {
		return nil, fmt.Errorf("listing TokenProviders of provider id %q: %w", id, err)
	}
	live := list.Items[:0]
	for _, tp := range list.Items {
		if tp.DeletionTimestamp == nil {
			live = append(live, tp)
		}
	}
	sort.Slice(live, func(i, j int) bool {
		if live[i].Namespace != live[j].Namespace {
			return live[i].Namespace < live[j].Namespace
		}
		return live[i].Name < live[j].Name
	})
	return live, nil
}

// conflictMessage is the IDConflict message of tp, which shares its id with
// the TokenProviders others (tp among them or not) and with other sources'
// claims (fromSources, from SourceWriter.Conflict).
func conflictMessage(tp *v1alpha1.TokenProvider, others []v1alpha1.TokenProvider, fromSources []string) string {
	var names []string
	for i := range others {
		if others[i].Namespace != tp.Namespace || others[i].Name != tp.Name {
			names = append(names, resolve.Origin(&others[i]))
		}
	}
	return providers.IDConflictMessage(tp.ProviderID(), append(names, fromSources...))
}

// enqueueIDs maps TokenProvider events to the provider ids concerned: an
// update that changes spec.id concerns both the old id and the new one.
func enqueueIDs() handler.TypedEventHandler[client.Object, reconcile.Request] {
	add := func(q workqueue.TypedRateLimitingInterface[reconcile.Request], o client.Object) {
		if tp, ok := o.(*v1alpha1.TokenProvider); ok {
			q.Add(idRequest(tp))
		}
	}
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object)
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.ObjectOld)
			add(q, e.ObjectNew)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object)
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(q, e.Object)
		},
	}
}

// enqueueOthersOfID wakes the status reconciler for the other TokenProviders
// of an object's provider id when the object appears, goes or changes its
// id: their IDConflict starts or ends with it.
func enqueueOthersOfID(c client.Reader) handler.TypedEventHandler[client.Object, reconcile.Request] {
	others := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request], o client.Object) {
		tp, ok := o.(*v1alpha1.TokenProvider)
		if !ok {
			return
		}
		items, err := claimants(ctx, c, tp.ProviderID())
		if err != nil {
			logf.FromContext(ctx).Error(err, "listing the TokenProviders of a provider id")
			return
		}
		for i := range items {
			if items[i].Namespace != tp.Namespace || items[i].Name != tp.Name {
				q.Add(objectRequest(&items[i]))
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			others(ctx, q, e.Object)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			o, n := e.ObjectOld.(*v1alpha1.TokenProvider), e.ObjectNew.(*v1alpha1.TokenProvider)
			if o.ProviderID() != n.ProviderID() || (o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) {
				others(ctx, q, e.ObjectOld)
				others(ctx, q, e.ObjectNew)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			others(ctx, q, e.Object)
		},
	}
}

// RegistryReconciler keeps the registry's Kubernetes source equal to the
// TokenProviders in the cache. It runs on every replica and never writes to
// the API server.
type RegistryReconciler struct {
	Client       client.Reader // the manager's cached client
	SecretReader client.Reader // uncached, for Secret data
	// Registry is the registry's Kubernetes-source writer
	// (Registry.Source(providers.SourceKubernetes)).
	Registry   *providers.SourceWriter
	Discoverer *providers.Discoverer
	Options    Options

	fill    *fillTracker
	secrets *secretValues

	mu sync.Mutex
	// claimedBy is, per provider id, the TokenProviders that claimed it at
	// its last reconcile: one that no longer does (deleted, or its spec.id
	// changed) reads no Secret for this id any more.
	claimedBy map[string][]types.NamespacedName
}

// Reconcile decides the registry entry of the provider id req.Name from
// every TokenProvider that claims it, so that whichever object's event
// arrives, the result is the same: none, the id is withdrawn; one, its
// configuration is offered (or, when it cannot be built, the id is claimed
// without one); two or more, the id is claimed without a configuration and
// served by none of them (their status says IDConflict).
func (r *RegistryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	id := req.Name
	if r.fill != nil {
		defer r.fill.processed(id)
	}
	opts := r.Options.withDefaults()
	log := logf.FromContext(ctx).WithValues("provider", id)
	items, err := claimants(ctx, r.Client, id)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.forgetLeavers(ctx, id, items); err != nil {
		return ctrl.Result{}, err
	}
	switch len(items) {
	case 0:
		if r.Registry.Delete(id) {
			log.Info("provider removed from the registry")
		}
		return ctrl.Result{}, nil
	case 1:
	default:
		names := make([]string, len(items))
		for i := range items {
			names[i] = resolve.Source(&items[i])
			// None of them provides the id: none reads a Secret.
			if err := r.secrets.noteRef(ctx, client.ObjectKeyFromObject(&items[i]), nil); err != nil {
				return ctrl.Result{}, err
			}
		}
		if _, had := r.Registry.Get(id); had {
			log.Info("provider removed from the registry", "reason", v1alpha1.ReasonIDConflict, "tokenProviders", names)
		}
		r.Registry.Claim(id, "TokenProviders "+strings.Join(names, ", "))
		return ctrl.Result{}, nil
	}
	tp := &items[0]
	res, err := resolve.Resolve(ctx, tp, r.secrets.lookup(ctx, tp.Namespace), r.Discoverer)
	// tp's reference may have changed: drop the value of its old one if
	// nothing references it now (also when Resolve failed: it may have read
	// the new one).
	if nerr := r.secrets.noteRef(ctx, client.ObjectKeyFromObject(tp), tp); err == nil {
		err = nerr
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	origin := resolve.Origin(tp)
	before, had := r.Registry.Get(id)
	switch {
	case res.Provider != nil:
		r.Registry.Put(res.Provider)
		if !had || before.Version != res.Provider.Version {
			log.Info("provider published", "provider", res.Provider, "ready", res.Ready)
		}
	case res.Reason == v1alpha1.ReasonDiscoveryFailed && had && before.Source == origin:
		// Keep serving the last good configuration of this very object;
		// one left by another object of the same id is not ours to keep.
	default:
		r.Registry.Claim(id, origin)
		if had {
			log.Info("provider removed from the registry", "reason", res.Reason, "message", res.Message)
		}
	}
	return opts.requeue(res), nil
}

// forgetLeavers records which TokenProviders claim id now, and drops the
// Secret reference of each that claimed it at the last reconcile and claims
// it no more: deleted, or moved to another id, whose own reconcile records
// its reference there.
func (r *RegistryReconciler) forgetLeavers(ctx context.Context, id string, items []v1alpha1.TokenProvider) error {
	now := make([]types.NamespacedName, len(items))
	for i := range items {
		now[i] = client.ObjectKeyFromObject(&items[i])
	}
	r.mu.Lock()
	if r.claimedBy == nil {
		r.claimedBy = map[string][]types.NamespacedName{}
	}
	before := r.claimedBy[id]
	if len(now) == 0 {
		delete(r.claimedBy, id)
	} else {
		r.claimedBy[id] = now
	}
	r.mu.Unlock()
	for _, k := range before {
		if slices.Contains(now, k) {
			continue
		}
		var tp v1alpha1.TokenProvider
		err := r.Client.Get(ctx, k, &tp)
		switch {
		case err == nil && tp.DeletionTimestamp == nil && tp.ProviderID() != id:
			// It claims another id now; that id's reconcile keeps its
			// reference.
			continue
		case err != nil && !apierrors.IsNotFound(err):
			return fmt.Errorf("reading TokenProvider %s: %w", k, err)
		}
		if err := r.secrets.noteRef(ctx, k, nil); err != nil {
			return err
		}
	}
	return nil
}

// SetupWithManager registers the reconciler (on every replica) and the
// readiness tracker. The field indexes must be registered (SetupIndexes).
func (r *RegistryReconciler) SetupWithManager(mgr ctrl.Manager) error {
	opts := r.Options.withDefaults()
	if r.secrets == nil && r.SecretReader != nil {
		r.secrets = newSecretValues(mgr.GetCache(), r.SecretReader)
	}
	r.fill = &fillTracker{reader: mgr.GetClient(), registry: r.Registry, seen: map[string]struct{}{}}
	if err := mgr.Add(r.fill); err != nil {
		return fmt.Errorf("adding the registry fill tracker: %w", err)
	}
	err := ctrl.NewControllerManagedBy(mgr).
		// Requests are provider ids, not objects (see Reconcile).
		Watches(&v1alpha1.TokenProvider{}, enqueueIDs(), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(providersForSecret(mgr.GetClient(), idRequest))).
		Named(opts.NamePrefix + "tokenprovider-registry").
		WithOptions(controller.Options{
			// Every replica serves API requests from its own registry, so
			// this reconciler must run whether or not it leads.
			NeedLeaderElection:      ptr.To(false),
			MaxConcurrentReconciles: opts.MaxConcurrentReconciles,
		}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the TokenProvider registry controller: %w", err)
	}
	return nil
}

// fillTracker marks the Kubernetes source synced once the provider id of
// every TokenProvider that existed when the cache synced has been
// reconciled once. It runs on every replica.
type fillTracker struct {
	reader   client.Reader
	registry *providers.SourceWriter

	mu      sync.Mutex
	seen    map[string]struct{} // ids reconciled before the listing
	pending map[string]struct{} // nil until listed
}

var _ manager.LeaderElectionRunnable = (*fillTracker)(nil)

// NeedLeaderElection: readiness is per replica.
func (f *fillTracker) NeedLeaderElection() bool { return false }

// Start waits for the cache (a List on the cached client blocks until the
// informer has synced) and records what must be reconciled before ready.
func (f *fillTracker) Start(ctx context.Context) error {
	var list v1alpha1.TokenProviderList
	for {
		err := f.reader.List(ctx, &list)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		logf.FromContext(ctx).Error(err, "listing TokenProviders for the registry readiness check; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = make(map[string]struct{}, len(list.Items))
	for i := range list.Items {
		k := list.Items[i].ProviderID()
		if _, done := f.seen[k]; !done {
			f.pending[k] = struct{}{}
		}
	}
	f.seen = nil
	f.checkLocked()
	return nil
}

func (f *fillTracker) processed(k string) {
	if f.registry.Synced() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pending == nil {
		if f.seen != nil {
			f.seen[k] = struct{}{}
		}
		return
	}
	delete(f.pending, k)
	f.checkLocked()
}

func (f *fillTracker) checkLocked() {
	if f.pending != nil && len(f.pending) == 0 {
		f.registry.MarkSynced()
	}
}

// StatusReconciler writes each TokenProvider's status and an Event on every
// change of readiness. It runs on the elected leader only.
type StatusReconciler struct {
	Client       client.Client
	SecretReader client.Reader
	Discoverer   *providers.Discoverer
	Recorder     events.EventRecorder
	Options      Options
	// TokenEndpoints, when set, turns a Ready provider whose token
	// endpoint refused tokenstore's client into Ready=False
	// (ClientRejected), and one whose token endpoint keeps failing for
	// this replica's refreshes into Ready=False (TokenEndpointFailing);
	// its changes wake the reconciler.
	TokenEndpoints *providers.TokenEndpointHealth
	// Conflicts, when set, is the registry's Kubernetes-source writer: a
	// TokenProvider whose id another source (the providers file) claims
	// too is Ready=False, IDConflict; changes of the registry wake the
	// reconciler for the ids whose conflict began or ended.
	Conflicts *providers.SourceWriter

	runs    atomic.Int64
	secrets *secretValues
	// uncached (the manager's API reader) re-reads an object whose cached
	// copy may predate this reconciler's own last status write, as
	// versions tells.
	uncached client.Reader
	versions statusVersions
}

// Runs is how many times Reconcile ran; it stays 0 on a replica that never
// led (tests use it to show that followers write nothing).
func (r *StatusReconciler) Runs() int64 { return r.runs.Load() }

// +kubebuilder:rbac:groups=tokenstore.io,resources=tokenproviders,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokenstore.io,resources=tokenproviders/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile resolves one TokenProvider and patches its status once.
func (r *StatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	r.runs.Add(1)
	opts := r.Options.withDefaults()
	// This reconciler records the Secret references it resolves with too
	// (secretValues.noteRef): a reconcile of it that was under way when its
	// object was deleted or changed may read the old Secret after the
	// registry reconciler dropped it; the reconcile of the change that
	// follows it here drops that value again.
	var tp v1alpha1.TokenProvider
	err := r.Client.Get(ctx, req.NamespacedName, &tp)
	if err == nil && r.versions.stale(req.NamespacedName, tp.ResourceVersion) {
		// The cache may not show this reconciler's last status write yet
		// (see statusVersions): compare against the object as it is.
		tp = v1alpha1.TokenProvider{}
		if err = r.uncached.Get(ctx, req.NamespacedName, &tp); err == nil {
			r.versions.saw(req.NamespacedName, tp.ResourceVersion)
		}
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			r.versions.forget(req.NamespacedName)
			return ctrl.Result{}, r.secrets.noteRef(ctx, req.NamespacedName, nil)
		}
		return ctrl.Result{}, err
	}
	if tp.DeletionTimestamp != nil {
		r.versions.forget(req.NamespacedName)
		return ctrl.Result{}, r.secrets.noteRef(ctx, req.NamespacedName, nil)
	}
	id := tp.ProviderID()
	items, err := claimants(ctx, r.Client, id)
	if err != nil {
		return ctrl.Result{}, err
	}
	var fromSources []string
	if r.Conflicts != nil {
		fromSources, _ = r.Conflicts.Conflict(id)
	}
	var res resolve.Result
	if len(items) > 1 || len(fromSources) > 0 {
		res = resolve.Result{Reason: v1alpha1.ReasonIDConflict, Message: conflictMessage(&tp, items, fromSources)}
		// The id is served by none of them: this one reads no Secret.
		if err := r.secrets.noteRef(ctx, req.NamespacedName, nil); err != nil {
			return ctrl.Result{}, err
		}
	} else {
		res, err = resolve.Resolve(ctx, &tp, r.secrets.lookup(ctx, tp.Namespace), r.Discoverer)
		// Recorded also when Resolve failed: it may have read the Secret.
		if nerr := r.secrets.noteRef(ctx, req.NamespacedName, &tp); err == nil {
			err = nerr
		}
		if err != nil {
			return ctrl.Result{}, err
		}
	}
	// verdictUntil is when a token-endpoint verdict below lapses unless
	// renewed; the reconciler looks again then.
	var verdictUntil time.Time
	if res.Ready && r.TokenEndpoints != nil {
		// A refused client first: it is the provider's definite answer,
		// and says what to fix.
		if rj, rejected := r.TokenEndpoints.Rejection(id); rejected {
			verdictUntil = rj.Until
			res.Ready = false
			res.Reason = v1alpha1.ReasonClientRejected
			res.Message = providers.ClientRejectedMessage(rj)
		} else if f, failing := r.TokenEndpoints.Failing(id); failing {
			verdictUntil = f.Until
			res.Ready = false
			res.Reason = v1alpha1.ReasonTokenEndpointFailing
			res.Message = providers.TokenEndpointFailingMessage(f)
		}
	}

	orig := tp.DeepCopy()
	changed := res.ApplyStatus(&tp.Status, tp.Generation, time.Now())
	if !equality.Semantic.DeepEqual(orig.Status, tp.Status) {
		// One merge patch of .status at the end; no optimistic lock, since
		// this controller is the only writer of status.
		if err := r.Client.Status().Patch(ctx, &tp, client.MergeFrom(orig), client.FieldOwner(opts.FieldOwner)); err != nil {
			if apierrors.IsNotFound(err) {
				r.versions.forget(req.NamespacedName)
				return ctrl.Result{}, nil
			}
			return ctrl.Result{}, fmt.Errorf("patching status of TokenProvider %s: %w", req.NamespacedName, err)
		}
		r.versions.saw(req.NamespacedName, tp.ResourceVersion)
	}
	if changed && r.Recorder != nil {
		kind, action := corev1.EventTypeNormal, "Resolve"
		if !res.Ready {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(&tp, nil, kind, res.Reason, action, "%s", truncate(res.Message, 1000))
	}
	next := opts.requeue(res)
	if !verdictUntil.IsZero() {
		// The verdict lapses at Until unless another call fails or is
		// refused (that one, or a success, wakes this reconciler through
		// TokenEndpoints).
		if d := time.Until(verdictUntil) + 10*time.Millisecond; next.RequeueAfter <= 0 || d < next.RequeueAfter {
			next.RequeueAfter = d
		}
	}
	return next, nil
}

// tokenEndpointChanges wakes the reconciler for the TokenProviders named
// by each provider id whose token-endpoint verdict changed. It runs while
// the controller does (on the leader).
func (r *StatusReconciler) tokenEndpointChanges(c client.Reader) source.Func {
	return func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-r.TokenEndpoints.Changes():
					items, err := claimants(ctx, c, id)
					if err != nil {
						logf.FromContext(ctx).Error(err, "token endpoint verdict changed; finding its TokenProvider", "provider", id)
						continue
					}
					for i := range items {
						q.Add(objectRequest(&items[i]))
					}
				}
			}
		}()
		return nil
	}
}

// conflictChanges wakes the reconciler for the TokenProviders of each
// provider id whose conflict with another source (Conflicts) began or
// ended. It runs while the controller does (on the leader).
func (r *StatusReconciler) conflictChanges(c client.Reader) source.Func {
	return func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		go func() {
			var before []string
			for {
				changed := r.Conflicts.Changed()
				now := r.Conflicts.Conflicts()
				for _, id := range symmetricDifference(before, now) {
					items, err := claimants(ctx, c, id)
					if err != nil {
						logf.FromContext(ctx).Error(err, "provider id conflict changed; finding its TokenProviders", "provider", id)
						continue
					}
					for i := range items {
						q.Add(objectRequest(&items[i]))
					}
				}
				before = now
				select {
				case <-ctx.Done():
					return
				case <-changed:
				}
			}
		}()
		return nil
	}
}

// symmetricDifference returns the strings in exactly one of the sorted
// slices a and b.
func symmetricDifference(a, b []string) []string {
	var out []string
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); !found {
			out = append(out, s)
		}
	}
	for _, s := range b {
		if _, found := slices.BinarySearch(a, s); !found {
			out = append(out, s)
		}
	}
	return out
}

// SetupWithManager registers the reconciler (leader only). The field
// indexes must be registered (SetupIndexes).
func (r *StatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	opts := r.Options.withDefaults()
	if r.secrets == nil && r.SecretReader != nil {
		r.secrets = newSecretValues(mgr.GetCache(), r.SecretReader)
	}
	r.uncached = mgr.GetAPIReader()
	b := ctrl.NewControllerManagedBy(mgr)
	if r.TokenEndpoints != nil {
		b = b.WatchesRawSource(r.tokenEndpointChanges(mgr.GetClient()))
	}
	if r.Conflicts != nil {
		b = b.WatchesRawSource(r.conflictChanges(mgr.GetClient()))
	}
	err := b.
		// Status patches do not change the generation, so this controller
		// is not woken by its own writes.
		For(&v1alpha1.TokenProvider{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(providersForSecret(mgr.GetClient(), objectRequest))).
		// When a TokenProvider claims a provider id, lets it go or moves to
		// another, the others of those ids gain or lose their IDConflict.
		Watches(&v1alpha1.TokenProvider{}, enqueueOthersOfID(mgr.GetClient())).
		Named(opts.NamePrefix + "tokenprovider-status").
		WithOptions(controller.Options{MaxConcurrentReconciles: opts.MaxConcurrentReconciles}).
		Complete(r)
	if err != nil {
		return fmt.Errorf("setting up the TokenProvider status controller: %w", err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
