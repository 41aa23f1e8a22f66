package broker

import (
	"context"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/ttlcache"
)

// DefaultCacheTTL is how long a replica may serve a credential row it read
// without reading it again: the design's bound on how late another replica's
// revoke (or refresh) is seen here.
const DefaultCacheTTL = time.Second

// DefaultCacheSize bounds the credential cache. Rows are a few hundred
// bytes, so this is a few tens of MiB at most, and only when that many
// distinct credentials are asked for within one TTL.
const DefaultCacheSize = 65536

// credKey keys the cache by person and provider, the credential's identity
// in every store call.
type credKey struct{ user, provider string }

// credCache holds sealed rows, not opened tokens: a heap dump of a replica
// then holds no more plaintext than the requests in flight, and an AES-GCM
// open is a few microseconds against a database round trip's hundreds.
type credCache = ttlcache.Cache[credKey, store.Credential]

func newCredCache(opt Options) *credCache {
	size := opt.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	return ttlcache.New[credKey, store.Credential](opt.CacheTTL, size, opt.Now)
}

// credential reads a credential for the hot path: from the cache when a
// row read within the TTL is there, else from the store (caching it).
// Not-found is not cached, so a link is seen at once.
func (b *Broker) credential(ctx context.Context, userID, provider string) (store.Credential, error) {
	k := credKey{userID, provider}
	if c, ok := b.cache.Get(k); ok {
		return c, nil
	}
	t := b.cache.Begin()
	c, err := b.opt.Store.GetCredential(ctx, userID, provider)
	if err == nil {
		b.cache.Put(t, k, c)
	}
	return c, err
}

// forget drops a credential this replica is writing, so that its next
// request reads what was written.
func (b *Broker) forget(userID, provider string) {
	b.cache.Forget(credKey{userID, provider})
}

// remember caches a row this replica has just committed, in place of the
// read of it the next request would make. Called after forget: a read
// that began before that is not cached over it, and one that began after
// found this row or a newer one (a newer one replaced here is at most one
// TTL stale, as any cached row).
func (b *Broker) remember(userID, provider string, c store.Credential) {
	b.cache.Put(b.cache.Begin(), credKey{userID, provider}, c)
}
