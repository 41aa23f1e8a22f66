package auth

import (
	"context"
	"time"

	"github.com/tokenstore/tokenstore/server/store"
	"github.com/tokenstore/tokenstore/server/ttlcache"
)

// DefaultSessionCacheTTL is how long a replica may trust a session row it
// read without reading it again: a logout through another replica is seen
// here within it (the design's one-second invalidation bound).
const DefaultSessionCacheTTL = time.Second

// DefaultSessionCacheSize bounds the session cache (rows of a few hundred
// bytes; full only when that many sessions call within one TTL).
const DefaultSessionCacheSize = 65536

// sessionCache is keyed by the session id (the cookie's hash), so the
// cookie value itself is not kept.
type sessionCache = ttlcache.Cache[string, store.Session]

func newSessionCache(opt Options) *sessionCache {
	size := opt.SessionCacheSize
	if size == 0 {
		size = DefaultSessionCacheSize
	}
	return ttlcache.New[string, store.Session](opt.SessionCacheTTL, size, opt.Now)
}

// session returns the unexpired session id, from the cache when a row read
// within the TTL is there. The expiry is checked here too, as a cached row
// may lapse while cached.
func (a *Authenticator) session(ctx context.Context, id string, now time.Time) (store.Session, error) {
	if s, ok := a.sessions.Get(id); ok {
		if now.Before(s.ExpiresAt) {
			return s, nil
		}
		return store.Session{}, store.ErrNotFound
	}
	t := a.sessions.Begin()
	s, err := a.opt.Store.GetSession(ctx, id, now)
	if err == nil {
		a.sessions.Put(t, id, s)
	}
	return s, err
}

// touched records in the cache a touch this replica wrote, so that the
// next requests within the TTL do not write it again.
func (a *Authenticator) touched(id string, lastSeen, expiresAt time.Time) {
	a.sessions.Update(id, func(s store.Session) store.Session {
		s.LastSeenAt, s.ExpiresAt = lastSeen, expiresAt
		return s
	})
}
