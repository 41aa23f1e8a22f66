package filesource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sync/errgroup"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tokenstore/tokenstore/api/v1alpha1"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/providers/resolve"
)

// maxDebounceRounds bounds how long a stream of changes delays a reload, in
// multiples of Options.Debounce.
const maxDebounceRounds = 10

// Options configure a Source. Path and Registry are required.
type Options struct {
	// Path is a manifest file or a folder of them.
	Path string
	// Registry receives the providers, through its SourceFile writer; its
	// token-endpoint health turns Ready statuses into ClientRejected or
	// TokenEndpointFailing ones, as for Kubernetes TokenProviders.
	Registry *providers.Registry
	// Discoverer runs OpenID Connect discovery; a new one with default
	// settings if nil. Share the process's Discoverer so that the cache and
	// key sets are shared.
	Discoverer *providers.Discoverer
	// Validator checks manifests; DefaultValidator() if nil.
	Validator *Validator
	// Namespace of objects that name none; DefaultNamespace if empty.
	Namespace string
	// Logger for load errors and readiness changes; slog.Default() if nil.
	// Client secrets never reach it.
	Logger *slog.Logger
	// Debounce is how long the Source waits after a change to the file
	// before reading it, so that an editor's write-rename-chmod sequence is
	// read once (default 200ms).
	Debounce time.Duration
	// RefreshInterval is how often a discovered provider is resolved again
	// (default 10 minutes, the Discoverer's default cache TTL).
	RefreshInterval time.Duration
	// MinBackoff and MaxBackoff bound the retry delay while a provider's
	// discovery fails (defaults 5 seconds and 5 minutes).
	MinBackoff, MaxBackoff time.Duration
	// PollInterval is how often the file is re-read when it cannot be
	// watched (inotify limits reached); default 5 seconds.
	PollInterval time.Duration
	// Concurrency bounds the providers resolved at once (default 4:
	// discovery is network-bound).
	Concurrency int
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Debounce <= 0 {
		o.Debounce = 200 * time.Millisecond
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = 10 * time.Minute
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 5 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	return o
}

// ProviderStatus is what the Source knows of one provider id: the Ready
// condition (as a Kubernetes TokenProvider's status would hold it) and where
// the provider was declared. For logs and the dev UI.
type ProviderStatus struct {
	// ID is the provider id (the TokenProvider's spec.id, else its name).
	ID        string
	Namespace string
	// Location of the manifest that declared it.
	Location Location
	// Status holds the Ready condition with reason and message,
	// observedGeneration (counting changes of the manifest or its Secret),
	// the issuer and endpoints in use and the last discovery time.
	Status v1alpha1.TokenProviderStatus
	// Serving is true while the registry serves a configuration from this
	// Source for the id: a provider whose discovery fails keeps serving its
	// last good configuration (Serving true, Ready false); one whose id
	// another source claims too is not served (Serving false, IDConflict).
	Serving bool
}

// Ready returns the Ready condition's status, reason and message.
func (s ProviderStatus) Ready() (ready bool, reason, message string) {
	c := apimeta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady)
	if c == nil {
		return false, "", ""
	}
	return c.Status == "True", c.Reason, c.Message
}

// Source keeps a registry equal to the TokenProviders of a manifest file or
// folder: it reads and validates the manifests, resolves each provider with
// the same resolve.Resolve as the Kubernetes reconciler, watches the
// path and applies changes, and re-checks providers whose discovery is due
// or failing.
type Source struct {
	opts Options
	// w is the registry's SourceFile writer: everything this Source puts
	// in the registry goes through it.
	w *providers.SourceWriter
	// dir is the directory watched: Path itself, or the file's folder, since
	// editors save by writing a new file and renaming it over the old one,
	// which ends a watch on the file itself.
	dir string

	// entries is owned by the Run goroutine.
	entries map[string]*entry

	mu       sync.Mutex // guards statuses and errs for readers
	statuses []ProviderStatus
	errs     []error
	lastErrs string // the errors last logged, to log each set once

	readyOnce sync.Once
	readyCh   chan struct{}
}

// entry is the Source's state of one provider id.
type entry struct {
	id, namespace, name string
	loc                 Location
	tp                  *v1alpha1.TokenProvider
	// input fingerprints everything Resolve reads (spec, namespace, file,
	// the referenced Secret value): when it is unchanged after a reload the
	// provider is not resolved again.
	input      string
	lookup     resolve.SecretLookup
	generation int64
	status     v1alpha1.TokenProviderStatus
	// published is the Provider this Source last set in the registry.
	published *providers.Provider
	// next is when the provider is due to be resolved again; zero: never.
	next time.Time
	// invalid holds the manifest error while the current manifest of this
	// id is invalid; the last good configuration keeps serving, as a
	// refused `kubectl apply` would leave the old object in place.
	invalid error
}

// New checks the options and the path. The path must exist now; if it
// disappears later, its providers are removed until it is back.
func New(opts Options) (*Source, error) {
	if opts.Path == "" {
		return nil, errors.New("filesource: no path to read providers from")
	}
	if opts.Registry == nil {
		return nil, errors.New("filesource: no registry")
	}
	opts = opts.withDefaults()
	if opts.Validator == nil {
		v, err := DefaultValidator()
		if err != nil {
			return nil, err
		}
		opts.Validator = v
	}
	if opts.Discoverer == nil {
		opts.Discoverer = providers.NewDiscoverer(nil, providers.DiscovererOptions{})
	}
	abs, err := filepath.Abs(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("providers file %s: %w", opts.Path, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("providers file: %w", err)
	}
	dir := abs
	if !st.IsDir() {
		dir = filepath.Dir(abs)
	}
	return &Source{
		opts:    opts,
		w:       opts.Registry.Source(providers.SourceFile),
		dir:     dir,
		entries: map[string]*entry{},
		readyCh: make(chan struct{}),
	}, nil
}

// Ready reports whether the first load has been applied to the registry
// (every provider resolved once, ready or not).
func (s *Source) Ready() bool {
	select {
	case <-s.readyCh:
		return true
	default:
		return false
	}
}

// ReadyC is closed once Ready is true.
func (s *Source) ReadyC() <-chan struct{} { return s.readyCh }

// Statuses returns the status of every provider id declared in the
// manifests (valid or not, as long as it has a name), sorted by id.
func (s *Source) Statuses() []ProviderStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ProviderStatus, len(s.statuses))
	for i, st := range s.statuses {
		out[i] = st
		out[i].Status = *st.Status.DeepCopy()
		if !s.overlayConflict(&out[i]) {
			s.overlayTokenEndpoint(&out[i])
		}
	}
	return out
}

// overlayConflict turns the status of an id that another source (the
// Kubernetes TokenProviders) claims too into Ready=False, IDConflict, not
// serving, as the registry's merge rule has it. It reports whether it did.
// Read at the time of asking, like overlayTokenEndpoint; the transition time
// is the time of asking, since the registry does not keep one.
func (s *Source) overlayConflict(st *ProviderStatus) bool {
	others, conflict := s.w.Conflict(st.ID)
	if !conflict {
		return false
	}
	st.Serving = false
	c := apimeta.FindStatusCondition(st.Status.Conditions, v1alpha1.ConditionReady)
	if c == nil {
		apimeta.SetStatusCondition(&st.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionReady})
		c = apimeta.FindStatusCondition(st.Status.Conditions, v1alpha1.ConditionReady)
	}
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonIDConflict {
		c.LastTransitionTime = metav1.Now()
	}
	c.Status = metav1.ConditionFalse
	c.Reason = v1alpha1.ReasonIDConflict
	c.Message = providers.IDConflictMessage(st.ID, others)
	return true
}

// overlayTokenEndpoint turns a Ready provider whose token endpoint refused
// tokenstore's client, or keeps failing for this replica's refreshes (the
// registry's TokenEndpoints, which the broker and the service-token cache
// report to), into Ready=False, ClientRejected or TokenEndpointFailing, as
// the Kubernetes status reconciler does. It is read at the time of asking,
// so it follows the verdict without a re-check; the transition time is the
// first refusal's or failure's, the same for every read of one run.
func (s *Source) overlayTokenEndpoint(st *ProviderStatus) {
	c := apimeta.FindStatusCondition(st.Status.Conditions, v1alpha1.ConditionReady)
	if c == nil || c.Status != metav1.ConditionTrue {
		return
	}
	h := s.opts.Registry.TokenEndpoints()
	if r, rejected := h.Rejection(st.ID); rejected {
		c.Status = metav1.ConditionFalse
		c.Reason = v1alpha1.ReasonClientRejected
		c.Message = providers.ClientRejectedMessage(r)
		c.LastTransitionTime = metav1.NewTime(r.Since)
		return
	}
	f, failing := h.Failing(st.ID)
	if !failing {
		return
	}
	c.Status = metav1.ConditionFalse
	c.Reason = v1alpha1.ReasonTokenEndpointFailing
	c.Message = providers.TokenEndpointFailingMessage(f)
	c.LastTransitionTime = metav1.NewTime(f.Since)
}

// Status returns the status of one provider id.
func (s *Source) Status(id string) (ProviderStatus, bool) {
	for _, st := range s.Statuses() {
		if st.ID == id {
			return st, true
		}
	}
	return ProviderStatus{}, false
}

// Errors returns the manifest errors of the last load: invalid documents,
// duplicate provider ids, and a path that could not be read.
func (s *Source) Errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

// Run loads the manifests, fills the registry, and keeps it in step with the
// path until ctx ends. It returns nil when ctx ends; the registry keeps what
// it holds then. Call it once.
func (s *Source) Run(ctx context.Context) error {
	log := s.opts.Logger.With("providersPath", s.opts.Path)
	changes, stop := s.watch(ctx, log)
	defer stop()

	s.reload(ctx, log)
	s.readyOnce.Do(func() {
		// The registry first: whoever waits on ReadyC may check it next.
		s.w.MarkSynced()
		close(s.readyCh)
	})

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var (
		debounce    <-chan time.Time
		firstChange time.Time
	)
	for {
		timer.Reset(s.untilNextCheck())
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
			// Wait for the writes to settle: later changes restart the
			// wait, so that a half-written file is not read (it would
			// withdraw providers for a moment), but only up to
			// maxDebounceRounds waits, so that a folder that never stops
			// changing is still read.
			now := time.Now()
			if debounce == nil {
				firstChange = now
			}
			if debounce == nil || now.Sub(firstChange) < maxDebounceRounds*s.opts.Debounce {
				debounce = time.After(s.opts.Debounce)
			}
		case <-debounce:
			debounce = nil
			s.reload(ctx, log)
		case <-timer.C:
			s.recheck(ctx, log)
		}
	}
}

// watch starts watching the directory and returns a channel that receives
// something after each change. If the directory cannot be watched, it falls
// back to re-reading the path every PollInterval.
func (s *Source) watch(ctx context.Context, log *slog.Logger) (<-chan struct{}, func()) {
	changes := make(chan struct{}, 1)
	notify := func() {
		select {
		case changes <- struct{}{}:
		default:
		}
	}
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(s.dir); err != nil {
			w.Close()
		}
	}
	if err != nil {
		log.Warn("cannot watch the providers path; re-reading it periodically instead", "dir", s.dir, "interval", s.opts.PollInterval, "error", err)
		t := time.NewTicker(s.opts.PollInterval)
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-done:
					return
				case <-ctx.Done():
					return
				case <-t.C:
					notify()
				}
			}
		}()
		return changes, func() { t.Stop(); close(done) }
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				// Every other event in the folder may matter: a mounted
				// ConfigMap changes by swapping its ..data link, not the
				// file. A reload with nothing changed costs a read and
				// resolves nothing.
				if ev.Op != fsnotify.Chmod {
					notify()
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				// An overflow means events were lost: read everything again.
				log.Warn("watching the providers path", "error", err)
				notify()
			}
		}
	}()
	return changes, func() { close(done); w.Close() }
}

// untilNextCheck is the time to the earliest due re-check (an hour if none).
func (s *Source) untilNextCheck() time.Duration {
	d := time.Hour
	now := time.Now()
	for _, e := range s.entries {
		if e.next.IsZero() {
			continue
		}
		d = min(d, max(e.next.Sub(now), 0))
	}
	return d
}

// desired is one provider id as the manifests declare it now.
type desired struct {
	obj     Object
	input   string
	lookup  resolve.SecretLookup
	invalid error
}

// reload reads the path and brings the registry in line with it.
func (s *Source) reload(ctx context.Context, log *slog.Logger) {
	var loadErrs []error
	m, err := Load(ctx, s.opts.Validator, s.opts.Path, LoadOptions{Namespace: s.opts.Namespace})
	if err != nil {
		// The path is gone (or unreadable): it declares no providers now.
		loadErrs = append(loadErrs, err)
		m = &Manifests{}
	}
	want := map[string]*desired{}
	for _, o := range m.Objects {
		if o.Err != nil {
			loadErrs = append(loadErrs, o.Err)
		}
		if o.Kind != kindTokenProvider || o.ID == "" {
			continue
		}
		if prev, dup := want[o.ID]; dup {
			err := &ManifestError{Location: o.Location, Kind: o.Kind, Name: o.Name,
				Err: fmt.Errorf("provider id %q is already declared at %s; provider ids (spec.id, else the name) must be unique across namespaces and files", o.ID, prev.obj.Location)}
			loadErrs = append(loadErrs, err)
			continue
		}
		d := &desired{obj: o, invalid: o.Err}
		if o.Err == nil {
			ns := o.Provider.Namespace
			d.lookup = func(name, key string) ([]byte, error) {
				sec, _ := m.Secret(ns, name)
				return resolve.SecretValue(sec, name, key)
			}
			d.input = inputFingerprint(o, d.lookup)
		}
		want[o.ID] = d
	}
	s.logErrors(log, loadErrs)

	// Removed ids leave the registry.
	for id := range s.entries {
		if _, ok := want[id]; !ok {
			s.w.Delete(id)
			delete(s.entries, id)
			log.Info("provider removed", "provider", id)
		}
	}
	var todo []*entry
	for id, d := range want {
		e, ok := s.entries[id]
		if !ok {
			e = &entry{id: id}
			s.entries[id] = e
		}
		e.namespace, e.name, e.loc = d.obj.Namespace, d.obj.Name, d.obj.Location
		if e.published == nil {
			// Declared, even if broken or not resolved yet: the id is this
			// file's, and conflicts with another source's claim of it.
			s.w.Claim(id, e.origin())
		}
		if d.invalid != nil {
			if e.invalid == nil || e.invalid.Error() != d.invalid.Error() {
				e.generation++
			}
			e.invalid = d.invalid
			res := resolve.Result{Reason: v1alpha1.ReasonInvalidSpec, Message: invalidMessage(d.invalid, e.published != nil)}
			res.ApplyStatus(&e.status, e.generation, time.Now())
			e.next = time.Time{}
			continue
		}
		wasInvalid := e.invalid != nil
		e.invalid = nil
		if e.tp != nil && e.input == d.input && !wasInvalid {
			continue
		}
		e.tp, e.input = d.obj.Provider, d.input
		e.generation++
		e.lookup = d.lookup
		todo = append(todo, e)
	}
	s.resolve(ctx, log, todo)
	s.publishStatuses()
}

// recheck resolves the providers whose re-check is due.
func (s *Source) recheck(ctx context.Context, log *slog.Logger) {
	now := time.Now()
	var todo []*entry
	for _, e := range s.entries {
		if e.tp != nil && e.invalid == nil && !e.next.IsZero() && !e.next.After(now) {
			todo = append(todo, e)
		}
	}
	if len(todo) == 0 {
		return
	}
	s.resolve(ctx, log, todo)
	s.publishStatuses()
}

// resolve runs resolve.Resolve for the entries, a few at a time, and
// applies the results to the registry.
func (s *Source) resolve(ctx context.Context, log *slog.Logger, todo []*entry) {
	results := make([]resolve.Result, len(todo))
	errs := make([]error, len(todo))
	var g errgroup.Group
	g.SetLimit(s.opts.Concurrency)
	for i, e := range todo {
		g.Go(func() error {
			results[i], errs[i] = resolve.Resolve(ctx, e.tp, e.lookup, s.opts.Discoverer)
			return nil
		})
	}
	_ = g.Wait()
	now := time.Now()
	for i, e := range todo {
		if errs[i] != nil {
			// Transient (a cancelled context): keep the state, try again.
			if ctx.Err() == nil {
				log.Warn("resolving provider failed; retrying", "provider", e.id, "error", errs[i])
			}
			e.next = now.Add(s.opts.MinBackoff)
			continue
		}
		s.apply(log, e, results[i], now)
	}
}

// apply publishes or withdraws one provider after Resolve, with the same
// rules as the Kubernetes registry reconciler: a provider whose discovery
// fails keeps its last good configuration, any other failure withdraws it.
func (s *Source) apply(log *slog.Logger, e *entry, res resolve.Result, now time.Time) {
	switch {
	case res.Provider != nil:
		p := *res.Provider
		p.Source = e.origin()
		p.Version = providers.Fingerprint(&p)
		if e.published == nil || e.published.Version != p.Version {
			s.w.Put(&p)
			e.published = &p
			log.Info("provider published", "provider", &p, "ready", res.Ready)
		}
	case res.Reason == v1alpha1.ReasonDiscoveryFailed && e.published != nil:
		// Keep serving what was discovered before.
	default:
		s.unpublish(e)
	}
	if res.ApplyStatus(&e.status, e.generation, now) {
		if res.Ready {
			log.Info("provider ready", "provider", e.id, "message", res.Message)
		} else {
			log.Warn("provider not ready", "provider", e.id, "reason", res.Reason, "message", res.Message, "serving", e.published != nil)
		}
	}
	e.next = time.Time{}
	if d := res.NextCheck(s.opts.RefreshInterval, s.opts.MinBackoff, s.opts.MaxBackoff); d > 0 {
		e.next = now.Add(d)
	}
}

// unpublish withdraws the entry's configuration from the registry; the
// file still declares the id, so it keeps its claim.
func (s *Source) unpublish(e *entry) {
	s.w.Claim(e.id, e.origin())
	e.published = nil
}

// origin is the Provider.Source (and claim origin) of the entry: the
// TokenProvider and the file that declares it.
func (e *entry) origin() string {
	return "TokenProvider " + e.namespace + "/" + e.name + " in " + e.loc.File
}

// publishStatuses copies the entries' states for readers.
func (s *Source) publishStatuses() {
	out := make([]ProviderStatus, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, ProviderStatus{
			ID:        e.id,
			Namespace: e.namespace,
			Location:  e.loc,
			Status:    *e.status.DeepCopy(),
			Serving:   e.published != nil,
		})
	}
	slices.SortFunc(out, func(a, b ProviderStatus) int { return strings.Compare(a.ID, b.ID) })
	s.mu.Lock()
	s.statuses = out
	s.mu.Unlock()
}

// logErrors records the load's errors and logs them when they differ from
// the last load's, so that a re-read of an unchanged broken file is quiet.
func (s *Source) logErrors(log *slog.Logger, errs []error) {
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	joined := strings.Join(msgs, "\n")
	s.mu.Lock()
	s.errs = errs
	changed := joined != s.lastErrs
	s.lastErrs = joined
	s.mu.Unlock()
	if !changed {
		return
	}
	for _, err := range errs {
		log.Error("invalid provider manifest", "error", err)
	}
}

// invalidMessage is the status message of an id whose manifest is invalid.
func invalidMessage(err error, serving bool) string {
	msg := err.Error()
	if serving {
		msg += "; still serving the last valid configuration"
	}
	return msg
}

// inputFingerprint hashes everything Resolve will read for o: the object
// (spec, namespace, name), its file, and the referenced Secret value. The
// hash stays in memory; it is never logged.
func inputFingerprint(o Object, lookup resolve.SecretLookup) string {
	h := sha256.New()
	spec, _ := json.Marshal(o.Provider.Spec)
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", o.File, o.Provider.Namespace, o.Provider.Name)
	h.Write(spec)
	if ref := o.Provider.Spec.ClientSecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = resolve.DefaultSecretKey
		}
		v, err := lookup(ref.Name, key)
		if err != nil {
			fmt.Fprintf(h, "\x00err:%v", err)
		} else {
			h.Write([]byte{0})
			h.Write(v)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
