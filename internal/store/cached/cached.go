// Package cached is the per-replica read cache of the token hot path: a
// store.Store that wraps another and keeps, for a short fixed time, the
// rows every request reads — credentials (GetCredential), sessions
// (GetSession) and usable grants (FindUsableGrant) — so that a client
// calling in a loop costs one database read of each a TTL instead of one
// per request.
//
// The TTL is the design's cross-replica bound, one second: replicas share
// only the database, so a write made through another replica (a revoke, a
// logout, a refresh) is seen here when the entry lapses. Writes made through
// this Store drop (or replace) the entries they make stale at once, and a
// read in flight across such a write does not store what it read
// (ttlcache's generation check). Everything else — lists, counts, claims,
// link states, audit — goes straight to the wrapped store.
//
// "Not found" is never cached, so a link, a login or a grant made through
// another replica works here at once. A cached session or grant is honoured
// only while it is itself valid at the caller's now (the session's
// ExpiresAt; the grant's expiry and ServiceAccount uid), as the wrapped
// store's query would decide.
//
// Values are shared by every reader of an entry (slices and pointers
// included), as the rows were in the per-service caches this replaces:
// callers must not modify what they are given.
package cached

import (
	"context"
	"time"

	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/ttlcache"
)

// DefaultTTL is how long a row read through this replica is reused: the
// design's bound on how late another replica's write is seen here.
const DefaultTTL = time.Second

// DefaultSize bounds each of the three caches. Rows are a few hundred
// bytes, so this is a few tens of MiB at most, and only when that many
// distinct rows are asked for within one TTL; beyond it new rows are read
// from the database, uncached (see ttlcache).
const DefaultSize = 65536

// Options configure a Store.
type Options struct {
	// TTL is how long a row read is reused; 0 means DefaultTTL.
	TTL time.Duration
	// Size bounds each cache; 0 means DefaultSize.
	Size int
	// Now is the clock; nil means time.Now. Tests move it.
	Now func() time.Time
}

// credKey is a credential's identity in every store call.
type credKey struct{ user, provider string }

// grantKey is what a delegated token request looks a grant up by. The uid
// is not in it, so that a write, which knows the grant, can drop it; an
// entry is honoured only for a caller whose uid the grant matches.
type grantKey struct{ user, provider, namespace, name string }

// Store is a store.Store with the reads of the hot path cached.
type Store struct {
	s     store.Store
	creds *ttlcache.Cache[credKey, store.Credential]
	// sessions holds the rows of unexpired sessions, by session id (the
	// cookie's hash: the cookie value itself is not kept).
	sessions *ttlcache.Cache[string, store.Session]
	grants   *ttlcache.Cache[grantKey, store.Grant]
}

var _ store.Store = (*Store)(nil)

// New wraps s. Close closes s.
func New(s store.Store, opt Options) *Store {
	if opt.TTL == 0 {
		opt.TTL = DefaultTTL
	}
	if opt.Size == 0 {
		opt.Size = DefaultSize
	}
	return &Store{
		s:        s,
		creds:    ttlcache.New[credKey, store.Credential](opt.TTL, opt.Size, opt.Now),
		sessions: ttlcache.New[string, store.Session](opt.TTL, opt.Size, opt.Now),
		grants:   ttlcache.New[grantKey, store.Grant](opt.TTL, opt.Size, opt.Now),
	}
}

// Ping implements store.Store.
func (c *Store) Ping(ctx context.Context) error { return c.s.Ping(ctx) }

// Close implements store.Store.
func (c *Store) Close() error { return c.s.Close() }

// GetCredential is served from the cache when a row read within the TTL is
// there; otherwise it reads and caches the row (not "not found").
func (c *Store) GetCredential(ctx context.Context, userID, provider string) (store.Credential, error) {
	k := credKey{userID, provider}
	if cr, ok := c.creds.Get(k); ok {
		return cr, nil
	}
	t := c.creds.Begin()
	cr, err := c.s.GetCredential(ctx, userID, provider)
	if err == nil {
		c.creds.Put(t, k, cr)
	}
	return cr, err
}

// ListCredentials implements store.Store (uncached).
func (c *Store) ListCredentials(ctx context.Context, userID string) ([]store.Credential, error) {
	return c.s.ListCredentials(ctx, userID)
}

// UpsertCredential drops the cached row once written, so that the next
// read here finds the new one.
func (c *Store) UpsertCredential(ctx context.Context, cr store.Credential) (store.Credential, error) {
	defer c.creds.Forget(credKey{cr.UserID, cr.Provider})
	return c.s.UpsertCredential(ctx, cr)
}

// UpdateCredential drops the cached row whatever happened (fn may have
// seen a newer row than the cached one), then caches the row it committed
// in place of the read the next request would make: a read begun before
// the drop is not cached over it, and one begun after found this row or a
// newer one (a newer one replaced here is at most one TTL stale, as any
// cached row). A row fn left Unchanged is not cached.
func (c *Store) UpdateCredential(ctx context.Context, userID, provider string, fn func(*store.Credential) (store.Outcome, error)) (store.UpdateResult, error) {
	k := credKey{userID, provider}
	res, err := c.s.UpdateCredential(ctx, userID, provider, fn)
	c.creds.Forget(k)
	if err == nil && res.Written {
		c.creds.Put(c.creds.Begin(), k, res.Credential)
	}
	return res, err
}

// DeleteCredential drops the cached row once deleted (or not: a failed
// delete may still have committed).
func (c *Store) DeleteCredential(ctx context.Context, userID, provider string) error {
	defer c.creds.Forget(credKey{userID, provider})
	return c.s.DeleteCredential(ctx, userID, provider)
}

// ListCredentialsNotUnderKey implements store.Store (uncached).
func (c *Store) ListCredentialsNotUnderKey(ctx context.Context, keyID string, afterID int64, limit int) ([]store.Credential, error) {
	return c.s.ListCredentialsNotUnderKey(ctx, keyID, afterID, limit)
}

// CountCredentialsNotUnderKey implements store.Store (uncached).
func (c *Store) CountCredentialsNotUnderKey(ctx context.Context, keyID string) (int64, error) {
	return c.s.CountCredentialsNotUnderKey(ctx, keyID)
}

// ReplaceCredentialCiphertexts drops the cached row once replaced.
func (c *Store) ReplaceCredentialCiphertexts(ctx context.Context, cr store.Credential) (store.Credential, error) {
	defer c.creds.Forget(credKey{cr.UserID, cr.Provider})
	return c.s.ReplaceCredentialCiphertexts(ctx, cr)
}

// CountCredentials implements store.Store (uncached).
func (c *Store) CountCredentials(ctx context.Context) ([]store.CredentialCount, error) {
	return c.s.CountCredentials(ctx)
}

// ClaimCredentialsForRefresh implements store.Store (uncached). It writes
// only the refresh lease, which no Credential field shows, so cached rows
// stay true.
func (c *Store) ClaimCredentialsForRefresh(ctx context.Context, claim store.RefreshClaim) ([]store.Credential, error) {
	return c.s.ClaimCredentialsForRefresh(ctx, claim)
}

// ListCredentialsRefreshExpiringBefore implements store.Store (uncached).
func (c *Store) ListCredentialsRefreshExpiringBefore(ctx context.Context, before time.Time, afterID int64, limit int) ([]store.Credential, error) {
	return c.s.ListCredentialsRefreshExpiringBefore(ctx, before, afterID, limit)
}

// CreateSession implements store.Store. "Not found" is not cached, so
// there is nothing to drop; a session id is the hash of a new random
// cookie, and is dropped anyway should one ever come back.
func (c *Store) CreateSession(ctx context.Context, s store.Session) error {
	defer c.sessions.Forget(s.ID)
	return c.s.CreateSession(ctx, s)
}

// GetSession is served from the cache when a row read within the TTL is
// there and unexpired at now. A cached row that has expired is read again:
// another replica may have touched the session since (extending it).
func (c *Store) GetSession(ctx context.Context, id string, now time.Time) (store.Session, error) {
	if s, ok := c.sessions.Get(id); ok && now.Before(s.ExpiresAt) {
		return s, nil
	}
	t := c.sessions.Begin()
	s, err := c.s.GetSession(ctx, id, now)
	if err == nil {
		c.sessions.Put(t, id, s)
	}
	return s, err
}

// TouchSession records the touch in the cached row, keeping the entry's
// own expiry (a touch does not make the row more trustworthy), so that the
// next requests within the TTL see it and do not write it again. A failed
// touch drops the row.
func (c *Store) TouchSession(ctx context.Context, id string, lastSeen, expiresAt time.Time) error {
	if err := c.s.TouchSession(ctx, id, lastSeen, expiresAt); err != nil {
		c.sessions.Forget(id)
		return err
	}
	c.sessions.Update(id, func(s store.Session) store.Session {
		s.LastSeenAt, s.ExpiresAt = lastSeen, expiresAt
		return s
	})
	return nil
}

// DeleteSession drops the cached row: a logout through this replica holds
// here at once.
func (c *Store) DeleteSession(ctx context.Context, id string) error {
	defer c.sessions.Forget(id)
	return c.s.DeleteSession(ctx, id)
}

// DeleteUserSessions drops the person's cached sessions: signing a person
// out everywhere (the admin API) holds on this replica at once, on the
// others within the TTL.
func (c *Store) DeleteUserSessions(ctx context.Context, userID string) (int64, error) {
	defer c.sessions.ForgetIf(func(_ string, s store.Session) bool { return s.UserID == userID })
	return c.s.DeleteUserSessions(ctx, userID)
}

// DeleteExpiredSessions implements store.Store. It deletes only rows that
// expired before now, which GetSession does not serve from the cache at
// any later now, so nothing cached needs dropping.
func (c *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error) {
	return c.s.DeleteExpiredSessions(ctx, now)
}

// CreateLinkState implements store.Store (uncached).
func (c *Store) CreateLinkState(ctx context.Context, l store.LinkState) error {
	return c.s.CreateLinkState(ctx, l)
}

// ConsumeLinkState implements store.Store (uncached: consumed once).
func (c *Store) ConsumeLinkState(ctx context.Context, state string, now time.Time) (store.LinkState, error) {
	return c.s.ConsumeLinkState(ctx, state, now)
}

// DeleteExpiredLinkStates implements store.Store (uncached).
func (c *Store) DeleteExpiredLinkStates(ctx context.Context, now time.Time) (int64, error) {
	return c.s.DeleteExpiredLinkStates(ctx, now)
}

// CreateGrant drops the cached grant of the same person, provider and
// ServiceAccount: FindUsableGrant prefers the newest, so the new grant may
// be the answer now.
func (c *Store) CreateGrant(ctx context.Context, g store.Grant) (store.Grant, error) {
	defer c.grants.Forget(grantKey{g.UserID, g.Provider, g.ServiceAccountNamespace, g.ServiceAccountName})
	return c.s.CreateGrant(ctx, g)
}

// GetGrant implements store.Store (uncached).
func (c *Store) GetGrant(ctx context.Context, id int64) (store.Grant, error) {
	return c.s.GetGrant(ctx, id)
}

// ListGrants implements store.Store (uncached).
func (c *Store) ListGrants(ctx context.Context, userID string) ([]store.Grant, error) {
	return c.s.ListGrants(ctx, userID)
}

// FindUsableGrant is served from the cache when a grant read within the
// TTL for this person, provider and ServiceAccount is there, still usable
// at now and matching saUID (store.Grant.MatchesUID); any other caller
// reads the database. What is read is cached, even a grant bound to another
// uid (returned so that the caller can refuse it): a caller of that other
// uid may use it, and this one reads again.
func (c *Store) FindUsableGrant(ctx context.Context, userID, provider, saNamespace, saName, saUID string, now time.Time) (store.Grant, error) {
	k := grantKey{userID, provider, saNamespace, saName}
	if g, ok := c.grants.Get(k); ok && g.Usable(now) && g.MatchesUID(saUID) {
		return g, nil
	}
	t := c.grants.Begin()
	g, err := c.s.FindUsableGrant(ctx, userID, provider, saNamespace, saName, saUID, now)
	if err == nil {
		c.grants.Put(t, k, g)
	}
	return g, err
}

// RevokeGrant drops every cached grant of the person: the revoke names
// the grant by id only, which the cache is not keyed by, and a person's
// grants are few (revokes rare).
func (c *Store) RevokeGrant(ctx context.Context, userID string, id int64, now time.Time) error {
	defer c.grants.ForgetIf(func(k grantKey, _ store.Grant) bool { return k.user == userID })
	return c.s.RevokeGrant(ctx, userID, id, now)
}

// ListServiceAccountGrants implements store.Store (uncached: the admin
// API's listing).
func (c *Store) ListServiceAccountGrants(ctx context.Context, namespace, name string) ([]store.Grant, error) {
	return c.s.ListServiceAccountGrants(ctx, namespace, name)
}

// AppendAudit implements store.Store (uncached).
func (c *Store) AppendAudit(ctx context.Context, e store.AuditEvent) (store.AuditEvent, error) {
	return c.s.AppendAudit(ctx, e)
}

// AppendAuditBatch implements store.Store (uncached).
func (c *Store) AppendAuditBatch(ctx context.Context, es []store.AuditEvent) ([]store.AuditEvent, error) {
	return c.s.AppendAuditBatch(ctx, es)
}

// ListAudit implements store.Store (uncached).
func (c *Store) ListAudit(ctx context.Context, userID string, beforeID int64, limit int) ([]store.AuditEvent, error) {
	return c.s.ListAudit(ctx, userID, beforeID, limit)
}

// PruneAudit implements store.Store (uncached).
func (c *Store) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	return c.s.PruneAudit(ctx, before)
}
