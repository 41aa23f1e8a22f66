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

// sessionClaims are the claims an Identity carries.
type sessionClaims struct{ iss, name, email string }

func decodeClaims(raw []byte) sessionClaims {
	var cl map[string]string
	_ = json.Unmarshal(raw, &cl)
	return sessionClaims{iss: cl["iss"], name: cl["name"], email: cl["email"]}
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
	cs := cachedSession{Session: s, identity: &Identity{UserID: s.UserID, Issuer: cl.iss, Subject: s.UserID,
		Name: cl.name, Email: cl.email, Method: "session", SessionID: s.ID}}
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
