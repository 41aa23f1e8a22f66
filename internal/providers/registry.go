package providers

import (
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

// Registry is the live set of providers. Readers load the current snapshot
// through an atomic pointer; writers serialise on a mutex, copy the snapshot,
// change the copy and swap it in (copy-on-write). Writes are rare (a
// TokenProvider or Secret change) and reads happen on every API request, so
// the copy is the right trade.
type Registry struct {
	mu      sync.Mutex // serialises writers
	current atomic.Pointer[snapshot]
	ready   atomic.Bool
	// changed is closed and replaced on every change, so any number of
	// subscribers can wait for "something changed" without a queue per
	// subscriber. Guarded by mu.
	changed chan struct{}
	// readyCh is closed once, by MarkReady.
	readyCh   chan struct{}
	readyOnce sync.Once
	// health is how this replica's calls to the token endpoints went.
	health *TokenEndpointHealth
}

var _ Reader = (*Registry)(nil)

// NewRegistry returns an empty registry that is not ready yet.
func NewRegistry() *Registry {
	r := &Registry{changed: make(chan struct{}), readyCh: make(chan struct{}),
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

// Ready reports whether MarkReady has been called.
func (r *Registry) Ready() bool { return r.ready.Load() }

// MarkReady records that the registry has been completely filled once. The
// source calls it when it has seen every provider that existed at start.
func (r *Registry) MarkReady() {
	r.readyOnce.Do(func() {
		r.ready.Store(true)
		close(r.readyCh)
	})
}

// ReadyC returns a channel closed once the registry is ready.
func (r *Registry) ReadyC() <-chan struct{} { return r.readyCh }

// Changed returns a channel that is closed at the next change after the
// call. Take the channel, read the registry, then wait: no change is missed.
func (r *Registry) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

// Set adds or replaces p (keyed by p.ID). Setting the very same configuration
// again (same Version) is a no-op, so that a periodic re-check does not wake
// subscribers or throw away what readers derived from the old value.
func (r *Registry) Set(p *Provider) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.current.Load()
	if cur, ok := old.byID[p.ID]; ok && (cur == p || (p.Version != "" && cur.Version == p.Version)) {
		return
	}
	byID := make(map[string]*Provider, len(old.byID)+1)
	for k, v := range old.byID {
		byID[k] = v
	}
	byID[p.ID] = p
	r.publish(old, byID)
}

// Delete removes the provider with the given id, if present.
func (r *Registry) Delete(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.current.Load()
	if _, ok := old.byID[id]; !ok {
		return
	}
	byID := make(map[string]*Provider, len(old.byID))
	for k, v := range old.byID {
		if k != id {
			byID[k] = v
		}
	}
	r.publish(old, byID)
}

// DeleteIf removes the provider with the given id only if remove returns
// true for the current value; the check and the delete are atomic with respect to
// other writers. It reports whether an entry was removed.
func (r *Registry) DeleteIf(id string, remove func(*Provider) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.current.Load()
	cur, ok := old.byID[id]
	if !ok || !remove(cur) {
		return false
	}
	byID := make(map[string]*Provider, len(old.byID))
	for k, v := range old.byID {
		if k != id {
			byID[k] = v
		}
	}
	r.publish(old, byID)
	return true
}

// Replace swaps the whole set at once: providers not in ps disappear. A
// source that re-reads everything (a file) uses it so that readers never
// see a half-applied reload. Providers whose Version is unchanged keep
// their old value.
func (r *Registry) Replace(ps []*Provider) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.current.Load()
	byID := make(map[string]*Provider, len(ps))
	changed := len(ps) != len(old.byID)
	for _, p := range ps {
		if cur, ok := old.byID[p.ID]; ok && p.Version != "" && cur.Version == p.Version {
			p = cur
		} else {
			changed = true
		}
		byID[p.ID] = p
	}
	if !changed {
		return
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
