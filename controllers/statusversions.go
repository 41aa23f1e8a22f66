package controllers

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// statusVersions remembers, per TokenProvider, the resourceVersion of the
// newest copy the status reconciler knows to be current: the one its own
// status patch returned, or one it read from the API server.
//
// Why: the reconciler reads objects from the informer cache and skips the
// patch when the status it computes equals the cached one. Its own writes
// do not wake it (GenerationChangedPredicate), so a reconcile that runs
// before the watch event of its previous write has reached the cache
// compares against the status before that write. When the new status is
// the older one again (Ready=False, True, then False with the same
// message), the patch is skipped and the object keeps the newer, wrong
// status until the next periodic re-check. A cached copy whose
// resourceVersion is not the remembered one is therefore re-read from the
// API server before comparing.
type statusVersions struct {
	mu sync.Mutex
	rv map[types.NamespacedName]string
}

// stale reports whether a cached copy at resourceVersion rv may be older
// than what this reconciler knows: it wrote or read key at another version.
// A key it never wrote is trusted as cached.
func (v *statusVersions) stale(key types.NamespacedName, rv string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	known, ok := v.rv[key]
	return ok && known != rv
}

// saw records rv as the current version of key.
func (v *statusVersions) saw(key types.NamespacedName, rv string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.rv == nil {
		v.rv = map[types.NamespacedName]string{}
	}
	v.rv[key] = rv
}

// forget drops key (the object is gone).
func (v *statusVersions) forget(key types.NamespacedName) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.rv, key)
}
