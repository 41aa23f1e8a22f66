// Package ttlcache is the map under the per-replica read cache of the
// token hot path (internal/store/cached): a bounded map whose entries live
// a fixed, short time.
//
// The time bound is the point. Replicas share only the database, so a
// write made through another replica (a revoke, a logout) reaches this one
// only when its entry lapses: the TTL is the design's invalidation bound,
// one second. Writes made through this replica invalidate at once.
//
// Entries are never evicted early to make room: when the cache is full a
// new entry is simply not stored and the caller reads the database, as it
// would without a cache. With one-second entries the cache is full only
// when more distinct keys than its size are asked for within a second.
package ttlcache

import (
	"sync"
	"sync/atomic"
	"time"
)

// Cache maps K to V for at most TTL. The zero value is not usable; a nil
// *Cache is a cache that holds nothing, so that callers need no branch for
// "caching off". Safe for concurrent use.
type Cache[K comparable, V any] struct {
	ttl  time.Duration
	size int
	now  func() time.Time

	mu        sync.RWMutex
	m         map[K]entry[V]
	lastSweep time.Time

	// gen counts invalidations. A reader notes it before going to the
	// database and stores what it read only if no invalidation happened
	// meanwhile: otherwise a read that began before a write and ended after
	// it could put the pre-write row back for a whole TTL.
	gen atomic.Uint64
}

type entry[V any] struct {
	v       V
	expires time.Time
}

// New returns a cache of at most size entries living ttl each, or nil
// (caching off) when ttl or size is not positive. now is the clock; nil
// means time.Now.
func New[K comparable, V any](ttl time.Duration, size int, now func() time.Time) *Cache[K, V] {
	if ttl <= 0 || size <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &Cache[K, V]{ttl: ttl, size: size, now: now, m: make(map[K]entry[V])}
}

// Get returns the value of k if it is there and younger than the TTL.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	var zero V
	if c == nil {
		return zero, false
	}
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.expires) {
		return zero, false
	}
	return e.v, true
}

// Ticket is what Begin returns and Put needs: when the read began, and
// the invalidation count then.
type Ticket struct {
	at  time.Time
	gen uint64
}

// Begin is called before reading the value from its source.
func (c *Cache[K, V]) Begin() Ticket {
	if c == nil {
		return Ticket{}
	}
	return Ticket{at: c.now(), gen: c.gen.Load()}
}

// Put stores v for k, read since t, unless something was invalidated since
// t or the cache is full. Its age counts from t, not from now: the value
// may be as old as the read's start.
func (c *Cache[K, V]) Put(t Ticket, k K, v V) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != t.gen {
		return
	}
	if len(c.m) >= c.size {
		if _, ok := c.m[k]; !ok {
			c.sweepLocked()
			if len(c.m) >= c.size {
				return
			}
		}
	}
	c.m[k] = entry[V]{v: v, expires: t.at.Add(c.ttl)}
}

// Update replaces the value of k if it is still cached, keeping its
// expiry: for changes this replica made itself that do not shorten what the
// entry may be trusted for (a session's last-seen time).
func (c *Cache[K, V]) Update(k K, fn func(V) V) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		e.v = fn(e.v)
		c.m[k] = e
	}
}

// Forget drops k and keeps reads in flight from storing what they read.
func (c *Cache[K, V]) Forget(k K) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.gen.Add(1)
	delete(c.m, k)
	c.mu.Unlock()
}

// ForgetIf drops every entry for which drop is true, and keeps reads in
// flight from storing what they read: for a write that does not know the
// keys it makes stale (a grant revoked by id). It walks the whole cache, so
// it is for rare writes.
func (c *Cache[K, V]) ForgetIf(drop func(K, V) bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.gen.Add(1)
	for k, e := range c.m {
		if drop(k, e.v) {
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
}

// Len is the number of entries held, lapsed ones included (for tests).
func (c *Cache[K, V]) Len() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// sweepLocked drops lapsed entries, at most once per TTL so that a full
// cache of live entries does not cost a walk on every Put.
func (c *Cache[K, V]) sweepLocked() {
	now := c.now()
	if now.Sub(c.lastSweep) < c.ttl {
		return
	}
	c.lastSweep = now
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
}
