package auth

import (
	"context"
	"encoding/json"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/ttlcache"
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
type sessionCache = ttlcache.Cache[string, cachedSession]

// cachedSession is a session row with the Identity Session returns for it,
// claims decoded: decoding the claims JSON on every request was a few
// percent of the token hot path's CPU, and the claims of a row never
// change while it is cached. The Identity is shared by every request the
// row serves, so nothing modifies it.
type cachedSession struct {
	store.Session
	identity *Identity
}

// decodeClaims reads a session's claims JSON; a row whose claims do not
// decode (none should) gives an identity without them.
func decodeClaims(raw []byte) map[string]any {
	cl := map[string]any{}
	if err := json.Unmarshal(raw, &cl); err != nil {
		return map[string]any{}
	}
	return cl
}

// claimString is claims[k] when it is a string, else "".
func claimString(claims map[string]any, k string) string {
	s, _ := claims[k].(string)
	return s
}

func newSessionCache(opt Options) *sessionCache {
	size := opt.SessionCacheSize
	if size == 0 {
		size = DefaultSessionCacheSize
	}
	return ttlcache.New[string, cachedSession](opt.SessionCacheTTL, size, opt.Now)
}

// session returns the unexpired session id, from the cache when a row read
// within the TTL is there. The expiry is checked here too, as a cached row
// may lapse while cached.
func (a *Authenticator) session(ctx context.Context, id string, now time.Time) (cachedSession, error) {
	if s, ok := a.sessions.Get(id); ok {
		if now.Before(s.ExpiresAt) {
			return s, nil
		}
		return cachedSession{}, store.ErrNotFound
	}
	t := a.sessions.Begin()
	s, err := a.opt.Store.GetSession(ctx, id, now)
	if err != nil {
		return cachedSession{}, err
	}
	cl := decodeClaims(s.Claims)
	who := &Identity{UserID: s.UserID, Issuer: claimString(cl, "iss"), Subject: s.UserID,
		Name: claimString(cl, "name"), Email: claimString(cl, "email"), Method: "session", SessionID: s.ID}
	a.identityClaims(who, cl)
	cs := cachedSession{Session: s, identity: who}
	a.sessions.Put(t, id, cs)
	return cs, nil
}

// touched records in the cache a touch this replica wrote, so that the
// next requests within the TTL do not write it again.
func (a *Authenticator) touched(id string, lastSeen, expiresAt time.Time) {
	a.sessions.Update(id, func(s cachedSession) cachedSession {
		s.LastSeenAt, s.ExpiresAt = lastSeen, expiresAt
		return s
	})
}
