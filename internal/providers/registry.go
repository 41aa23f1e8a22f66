package providers

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Reader is the read-only view of the registry that the HTTP layer depends
// on. Every method is safe for concurrent use and never blocks on writers.
type Reader interface {
	// Get returns the provider with the given id.
	Get(id string) (*Provider, bool)
	// List returns every provider, sorted by id. The slice is the caller's;
	// the providers are shared and must not be modified.
	List() []*Provider
	// Ready reports whether the registry has been completely filled once, so
	// that an empty or partial list is not mistaken for the truth.
	Ready() bool
}

// snapshot is one immutable state of the registry. It is never modified
// after it is published, which is what lets readers go without locks.
type snapshot struct {
	version uint64
	byID    map[string]*Provider
	sorted  []*Provider
}

// Registry is the live set of providers, merged from its sources.
//
// Each source (the Kubernetes TokenProviders, the providers file) writes
// through its own SourceWriter (Source), which holds that source's claims
// and its readiness; one rule (merge) turns the claims of every source into
// the set that is served. Readers load the current snapshot through an
// atomic pointer; writers serialise on a mutex, recompute the ids they
// touched and swap a new snapshot in (copy-on-write). Writes are rare (a
// TokenProvider or Secret change) and reads happen on every API request, so
// the copy is the right trade.
type Registry struct {
	mu      sync.Mutex // serialises writers; guards sources and every writer's claims
	current atomic.Pointer[snapshot]
	sources map[SourceKind]*SourceWriter
	// conflicted is the set of ids claimed by more than one source. Guarded
	// by mu.
	conflicted map[string]bool
	ready      atomic.Bool
	// forced is set by MarkReady. Guarded by mu.
	forced bool
	// changed is closed and replaced on every change, so any number of
	// subscribers can wait for "something changed" without a queue per
	// subscriber. Guarded by mu.
	changed chan struct{}
	// readyCh is closed once, when the registry becomes ready.
	readyCh chan struct{}
	// health is how this replica's calls to the token endpoints went.
	health *TokenEndpointHealth
}

var _ Reader = (*Registry)(nil)

// NewRegistry returns an empty registry that is not ready yet.
func NewRegistry() *Registry {
	r := &Registry{changed: make(chan struct{}), readyCh: make(chan struct{}),
		sources: map[SourceKind]*SourceWriter{}, conflicted: map[string]bool{},
		health: NewTokenEndpointHealth(HealthOptions{})}
	r.current.Store(&snapshot{byID: map[string]*Provider{}})
	return r
}

// Get returns the provider with the given id.
func (r *Registry) Get(id string) (*Provider, bool) {
	p, ok := r.current.Load().byID[id]
	return p, ok
}

// List returns every provider, sorted by id.
func (r *Registry) List() []*Provider {
	return slices.Clone(r.current.Load().sorted)
}

// Len returns the number of providers.
func (r *Registry) Len() int { return len(r.current.Load().sorted) }

// Version is a counter incremented by every change; cheap to poll.
func (r *Registry) Version() uint64 { return r.current.Load().version }

// TokenEndpoints is how this replica's calls to the providers' token
// endpoints went: the broker reports to it, the status reconciler reads it.
func (r *Registry) TokenEndpoints() *TokenEndpointHealth { return r.health }

// SetTokenEndpointHealth replaces the tracker (tests shorten its hold);
// call it before the registry is shared.
func (r *Registry) SetTokenEndpointHealth(h *TokenEndpointHealth) { r.health = h }

// Ready reports whether the registry has been completely filled once:
// every registered source has marked itself synced (SourceWriter.MarkSynced),
// or MarkReady was called. It stays true once true.
func (r *Registry) Ready() bool { return r.ready.Load() }

// MarkReady makes the registry ready whatever its sources say: for
// programs and tests that fill it with Set, and for a process that has no
// source at all.
func (r *Registry) MarkReady() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.forced = true
	r.checkReadyLocked()
}

// ReadyC returns a channel closed once the registry is ready.
func (r *Registry) ReadyC() <-chan struct{} { return r.readyCh }

// Changed returns a channel that is closed at the next change after the
// call. Take the channel, read the registry, then wait: no change is missed.
// A change is one of what is served, or of which ids are in conflict
// (SourceWriter.Conflict).
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Set puts p through the SourceDirect writer: for programs and tests that
// fill the registry themselves. Sources use their own writer (Source).
func (r *Registry) Set(p *Provider) { r.Source(SourceDirect).Put(p) }

// Delete withdraws id from the SourceDirect writer (see Set).
func (r *Registry) Delete(id string) { r.Source(SourceDirect).Delete(id) }

// checkReadyLocked latches readiness once it is due. mu held.
func (r *Registry) checkReadyLocked() {
	if r.ready.Load() {
		return
	}
	due := r.forced
	if !due {
		n := 0
		due = true
		for kind, w := range r.sources {
			if kind == SourceDirect {
				continue
			}
			n++
			if !w.synced {
				due = false
			}
		}
		due = due && n > 0
	}
	if due {
		r.ready.Store(true)
		close(r.readyCh)
	}
}

// merge is the one rule that decides what the registry serves under id from
// the claims of every source: an id claimed by exactly one source serves
// that source's configuration (none while that source has nothing to serve,
// e.g. its Secret is missing); an id claimed by two or more sources serves
// none of them, and each claimant's writer reports the others (Conflict),
// so that a second declaration of an id can neither take it over nor be
// silently ignored. conflict reports the second case. mu held.
func (r *Registry) merge(id string) (p *Provider, conflict bool) {
	n := 0
	for _, w := range r.sources {
		if c, ok := w.claims[id]; ok {
			n++
			p = c.p
		}
	}
	if n > 1 {
		return nil, true
	}
	return p, false
}

// apply recomputes the given ids after a writer changed its claims and
// publishes a snapshot if what is served or which ids conflict changed. mu
// held.
func (r *Registry) apply(ids ...string) {
	old := r.current.Load()
	var byID map[string]*Provider
	changed := false
	for _, id := range ids {
		p, conflict := r.merge(id)
		if conflict != r.conflicted[id] {
			changed = true
			if conflict {
				r.conflicted[id] = true
			} else {
				delete(r.conflicted, id)
			}
		}
		if cur, ok := old.byID[id]; ok == (p != nil) && cur == p {
			continue
		}
		if byID == nil {
			byID = maps.Clone(old.byID)
		}
		changed = true
		if p == nil {
			delete(byID, id)
		} else {
			byID[id] = p
		}
	}
	if !changed {
		return
	}
	if byID == nil {
		byID = old.byID
	}
	r.publish(old, byID)
}

// publish builds and stores the next snapshot and wakes subscribers. mu held.
// Token-endpoint failures of a provider that was added, replaced or removed
// are forgotten: those of an old configuration (a wrong client secret, say)
// say nothing about the new one. Every writer comes through here, so none
// can miss it.
func (r *Registry) publish(old *snapshot, byID map[string]*Provider) {
	for id, p := range byID {
		if old.byID[id] != p {
			r.health.Configure(id, p.Version)
		}
	}
	for id := range old.byID {
		if _, ok := byID[id]; !ok {
			r.health.Forget(id)
		}
	}
	sorted := make([]*Provider, 0, len(byID))
	for _, p := range byID {
		sorted = append(sorted, p)
	}
	slices.SortFunc(sorted, func(a, b *Provider) int { return strings.Compare(a.ID, b.ID) })
	r.current.Store(&snapshot{version: old.version + 1, byID: byID, sorted: sorted})
	close(r.changed)
	r.changed = make(chan struct{})
}
