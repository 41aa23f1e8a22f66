package server

import (
	"context"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/ttlcache"
)

// grantCacheSize bounds the grant cache: one entry per (person, provider,
// ServiceAccount) asked for within one TTL; a grant row is a few hundred
// bytes.
const grantCacheSize = 65536

// grantKey is what a delegated token request looks a grant up by.
type grantKey struct{ user, provider, namespace, name string }

// grantCache holds usable grants this replica read, for at most
// Options.CacheTTL (the design's cross-replica bound, one second in serve,
// as for sessions and credential rows): a workload calling in a loop then
// costs one grant read a second instead of one per request. A revoke made
// through this replica drops the entry at once (Forget, which also keeps a
// read in flight from storing what it read); one made through another
// replica is seen here within the TTL. "No grant" is never cached, so a new
// grant works at once, and an entry is honoured only while the grant itself
// is (its expires_at is checked on every hit). nil (CacheTTL 0): every
// request reads the database.
type grantCache = ttlcache.Cache[grantKey, store.Grant]

func newGrantCache(ttl time.Duration, now func() time.Time) *grantCache {
	return ttlcache.New[grantKey, store.Grant](ttl, grantCacheSize, now)
}

// usableGrant is store.FindUsableGrant through the grant cache. The entry
// is keyed by namespace/name (so that a revoke, which knows the grant, can
// drop it) and honoured only for a caller whose ServiceAccount uid it
// matches (store.Grant.MatchesUID); any other caller reads the database.
// The grant returned may be bound to another uid than uid, when that is
// the only usable one: the caller must refuse it.
func (s *Server) usableGrant(ctx context.Context, userID, provider, namespace, name, uid string) (store.Grant, error) {
	k := grantKey{userID, provider, namespace, name}
	now := s.opt.Now()
	if g, ok := s.grants.Get(k); ok && g.Usable(now) && g.MatchesUID(uid) {
		return g, nil
	}
	t := s.grants.Begin()
	g, err := s.opt.Store.FindUsableGrant(ctx, userID, provider, namespace, name, uid, now)
	if err == nil {
		s.grants.Put(t, k, g)
	}
	return g, err
}

// forgetGrant drops a grant this replica has just revoked.
func (s *Server) forgetGrant(g store.Grant) {
	s.grants.Forget(grantKey{g.UserID, g.Provider, g.ServiceAccountNamespace, g.ServiceAccountName})
}
