package providers

import (
	"fmt"
	"slices"
)

// SourceKind names one source of providers in a Registry.
type SourceKind string

// The sources of a Registry.
const (
	// SourceKubernetes is the TokenProviders of the watched namespace,
	// written by the registry reconciler in controllers/.
	SourceKubernetes SourceKind = "kubernetes"
	// SourceFile is the manifests of PROVIDERS_FILE, written by
	// internal/providers/filesource.
	SourceFile SourceKind = "file"
	// SourceDirect is what Registry.Set and Registry.Delete write: providers
	// a program or test sets itself. It takes no part in readiness (see
	// Registry.MarkReady).
	SourceDirect SourceKind = "direct"
)

// claim is one source's entry for a provider id.
type claim struct {
	// origin says who in the source declared the id (Provider.Source: a
	// TokenProvider's namespace/name, a manifest file), for the message of
	// a conflict.
	origin string
	// p is the configuration to serve; nil while the source declares the id
	// but has nothing it can serve (a Secret missing, an invalid spec).
	p *Provider
}

// SourceWriter is one source's way into a Registry: the ids it claims, the
// configurations it offers for them and its readiness. A source writes
// only through its own writer, so it can never remove or replace another
// source's entry; what is served when two sources claim one id is decided
// by the registry's one rule (Registry.merge: neither). Every method is
// safe for concurrent use.
type SourceWriter struct {
	r    *Registry
	kind SourceKind
	// claims and synced are guarded by r.mu.
	claims map[string]claim
	synced bool
}

// Source returns the writer of the given source, registering it on first
// use. A registered source (other than SourceDirect) holds the registry's
// readiness back until it calls MarkSynced, so register every source
// before any of them can finish its first fill.
func (r *Registry) Source(kind SourceKind) *SourceWriter {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.sources[kind]
	if !ok {
		w = &SourceWriter{r: r, kind: kind, claims: map[string]claim{}}
		r.sources[kind] = w
	}
	return w
}

// Kind is the source this writer writes for.
func (w *SourceWriter) Kind() SourceKind { return w.kind }

// Put claims p.ID for this source and offers p to serve under it
// (p.Source is the claim's origin). Putting the very same configuration
// again (same Version) is a no-op, so that a periodic re-check does not wake
// subscribers or throw away what readers derived from the old value.
func (w *SourceWriter) Put(p *Provider) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	if cur, ok := w.claims[p.ID]; ok && cur.p != nil && (cur.p == p || (p.Version != "" && cur.p.Version == p.Version)) {
		return
	}
	w.claims[p.ID] = claim{origin: p.Source, p: p}
	w.r.apply(p.ID)
}

// Claim declares id for this source without a configuration to serve: the
// source knows of a provider with this id but cannot build it now (its
// Secret is missing, its spec is invalid, two of the source's own objects
// claim the id). The id is then not served, and still conflicts with
// another source's claim of it. origin is the claim's description for a
// conflict message.
func (w *SourceWriter) Claim(id, origin string) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	if cur, ok := w.claims[id]; ok && cur.p == nil && cur.origin == origin {
		return
	}
	w.claims[id] = claim{origin: origin}
	w.r.apply(id)
}

// Delete withdraws this source's claim of id, if any. It reports whether
// the source had one.
func (w *SourceWriter) Delete(id string) bool {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	if _, ok := w.claims[id]; !ok {
		return false
	}
	delete(w.claims, id)
	w.r.apply(id)
	return true
}

// ReplaceAll makes ps the source's whole set of claims at once, each
// offered to serve: ids the source claimed before and ps does not name are
// withdrawn. A source that re-reads everything uses it so that readers
// never see a half-applied reload. Providers whose Version is unchanged keep
// their old value.
func (w *SourceWriter) ReplaceAll(ps []*Provider) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	next := make(map[string]claim, len(ps))
	ids := make([]string, 0, len(ps)+len(w.claims))
	for _, p := range ps {
		if cur, ok := w.claims[p.ID]; ok && cur.p != nil && p.Version != "" && cur.p.Version == p.Version {
			p = cur.p
		}
		next[p.ID] = claim{origin: p.Source, p: p}
		ids = append(ids, p.ID)
	}
	for id := range w.claims {
		if _, ok := next[id]; !ok {
			ids = append(ids, id)
		}
	}
	w.claims = next
	w.r.apply(ids...)
}

// Get returns the configuration this source offers for id, whether or not
// the registry serves it (it does not while another source claims the id
// too).
func (w *SourceWriter) Get(id string) (*Provider, bool) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	c, ok := w.claims[id]
	return c.p, ok && c.p != nil
}

// Conflict reports whether id is claimed by this source and by another; if
// so it returns the other claims' origins (sorted), for a status message.
func (w *SourceWriter) Conflict(id string) (others []string, conflict bool) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	if _, ok := w.claims[id]; !ok {
		return nil, false
	}
	for kind, o := range w.r.sources {
		if kind == w.kind {
			continue
		}
		if c, ok := o.claims[id]; ok {
			others = append(others, fmt.Sprintf("%s (%s source)", c.origin, kind))
		}
	}
	slices.Sort(others)
	return others, len(others) > 0
}

// Conflicts returns the ids this source claims that another source claims
// too, sorted.
func (w *SourceWriter) Conflicts() []string {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	var ids []string
	for id := range w.claims {
		if w.r.conflicted[id] {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// MarkSynced records that the source has filled the registry completely
// once (every provider it knew at start has been claimed or put). The
// registry is ready once every registered source has.
func (w *SourceWriter) MarkSynced() {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	w.synced = true
	w.r.checkReadyLocked()
}

// Synced reports whether MarkSynced has been called.
func (w *SourceWriter) Synced() bool {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.synced
}

// Changed is the registry's Changed: closed at the next change of what is
// served or of which ids conflict.
func (w *SourceWriter) Changed() <-chan struct{} { return w.r.Changed() }
