// Package store defines tokenstore's storage contract: what is kept (people's
// credentials at outside providers, login sessions, pending account links,
// grants to workloads, audit events) and the operations on it.
//
// Backends live in sub-packages (postgres, sqlite) and are reached only
// through Store; the conformance suite in storetest runs the same assertions
// against each of them. This package imports the standard library only.
//
// Secrets are opaque here: refresh and access tokens arrive already encrypted
// (see internal/crypto) and leave as they came. A backend never logs them.
package store

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Sentinel errors. Backends wrap them with context; callers test with errors.Is.
var (
	// ErrNotFound is returned when the addressed row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned when a compare-and-swap update finds the row
	// changed since it was read (its Version moved).
	ErrConflict = errors.New("conflict: the row changed since it was read")
	// ErrAlreadyExists is returned by Create* when the key is taken.
	ErrAlreadyExists = errors.New("already exists")
)

// CredentialState says whether a credential can still be refreshed.
type CredentialState string

const (
	// StateActive credentials hold a refresh token believed to be good.
	StateActive CredentialState = "active"
	// StateNeedsReauth credentials were refused by their provider
	// (invalid_grant): the person must link the account again. They are kept,
	// never silently deleted.
	StateNeedsReauth CredentialState = "needs_reauth"
)

// Credential is one person's link to one provider: a unique (UserID, Provider).
type Credential struct {
	ID       int64
	UserID   string
	Provider string
	// Subject is the person's id at the provider (the ID token's sub), when known.
	Subject string
	// KeyID names the key-ring key both ciphertexts are sealed with; it lets
	// `keys rotate` find rows still under an old key without opening them.
	KeyID string
	// RefreshToken and AccessToken are ciphertexts (internal/crypto), bound to
	// UserID and Provider. AccessToken may be empty (nothing cached).
	RefreshToken []byte
	AccessToken  []byte
	TokenType    string
	Scopes       []string
	// AccessExpiresAt is nil when the provider gave no expiry.
	AccessExpiresAt *time.Time
	// RefreshExpiresAt is nil when the refresh token has no known expiry.
	RefreshExpiresAt *time.Time
	State            CredentialState
	// StateReason is a short, token-free explanation of State (e.g. the
	// provider's error code).
	StateReason     string
	CreatedAt       time.Time
	UpdatedAt       time.Time
	LastRefreshedAt *time.Time
	LastUsedAt      *time.Time
	// Version increases on every write; UpdateCredential relies on it.
	Version int64
}

// Session is a person's login session. ID is the hash of the cookie value,
// never the cookie value itself.
type Session struct {
	ID     string
	UserID string
	// Claims is the login ID token's claims as JSON (name, email, ...).
	Claims    []byte
	CreatedAt time.Time
	ExpiresAt time.Time
	// LastSeenAt is updated by Touch, for idle expiry.
	LastSeenAt time.Time
}

// LinkState is a pending authorization request (account linking or login),
// created at /authorize and consumed exactly once at the callback.
type LinkState struct {
	// State is the random `state` parameter sent to the provider (hashed or
	// raw, at the caller's choice: the store treats it as an opaque key).
	State     string
	SessionID string
	Provider  string
	// CodeVerifier is the PKCE verifier, encrypted by the caller.
	CodeVerifier []byte
	Nonce        string
	ReturnURL    string
	CreatedAt    time.Time
	ExpiresAt    time.Time
}

// Grant lets a Kubernetes ServiceAccount obtain a person's access token for
// one provider.
type Grant struct {
	ID                      int64
	UserID                  string
	Provider                string
	ServiceAccountNamespace string
	ServiceAccountName      string
	// ServiceAccountUID is the uid the ServiceAccount had when the grant
	// was made; only a caller with that uid may use the grant, so a
	// ServiceAccount deleted and created again under the same name does not
	// inherit it. Empty for grants made before grants were bound to uids:
	// those are honoured by namespace and name alone.
	ServiceAccountUID string
	CreatedAt         time.Time
	// ExpiresAt is nil for a grant without end.
	ExpiresAt *time.Time
	// RevokedAt is set when the person revoked it; revoked grants are kept
	// for the audit trail but never honoured.
	RevokedAt *time.Time
}

// Usable reports whether the grant may be honoured at now.
func (g Grant) Usable(now time.Time) bool {
	if g.RevokedAt != nil {
		return false
	}
	return g.ExpiresAt == nil || now.Before(*g.ExpiresAt)
}

// MatchesUID reports whether a ServiceAccount with uid may use the grant:
// the grant is bound to that uid, or to none (a grant made before grants
// were bound to uids).
func (g Grant) MatchesUID(uid string) bool {
	return g.ServiceAccountUID == "" || g.ServiceAccountUID == uid
}

// AuditEvent records something that happened to a credential or grant. It
// never holds a token.
type AuditEvent struct {
	ID   int64
	Time time.Time
	// UserID is the person the event concerns (the credential's owner).
	UserID string
	// Actor is who caused it: "user:<id>", "serviceaccount:<ns>/<name>",
	// "system:<component>".
	Actor    string
	Action   string
	Provider string
	// Detail is free-form JSON without secrets.
	Detail []byte
}

// CredentialCount is how many credentials one provider has in one state.
type CredentialCount struct {
	Provider string
	State    CredentialState
	Count    int64
}

// RefreshClaim says which credentials of one provider the background
// refresher wants to refresh ahead of time, and for how long it leases them.
type RefreshClaim struct {
	Provider string
	// ExpiringBefore makes credentials whose access token lapses before it
	// due; zero leaves access expiry out.
	ExpiringBefore time.Time
	// IdleBefore makes credentials last refreshed (or, never refreshed,
	// last written) before it due: their refresh token would die unused.
	// Zero leaves idleness out.
	IdleBefore time.Time
	// Now decides whether an earlier lease has run out.
	Now time.Time
	// LeaseUntil is when the claim lapses if the claimant never finishes.
	LeaseUntil time.Time
	Limit      int
}

// Outcome is what an UpdateCredential fn decides about the row it was
// given: leave it (Unchanged, the zero Outcome), save it (Write), or save it
// with an audit event (WriteAudited). It is a closed set so that an event
// without a write, which the contract could not keep, cannot be said.
type Outcome struct {
	write bool
	audit *AuditEvent
}

// Unchanged leaves the row as it was: no write, Version unchanged, and
// whatever fn did to *c is discarded. fn returns it when the row already
// answers (another process did the work) or when it only wanted to look
// under the lock.
func Unchanged() Outcome { return Outcome{} }

// Write saves what fn left in *c (Version moves even if nothing else did).
func Write() Outcome { return Outcome{write: true} }

// WriteAudited saves *c and appends ev in the same transaction: one commit
// for both, and the event is kept exactly when the change is. An event
// without Time is stamped now.
func WriteAudited(ev AuditEvent) Outcome { return Outcome{write: true, audit: &ev} }

// Writes reports whether o saves the row.
func (o Outcome) Writes() bool { return o.write }

// Audit is the event o appends with its write, or nil.
func (o Outcome) Audit() *AuditEvent { return o.audit }

// AuditStatus says what became of an Outcome's audit event.
type AuditStatus int

const (
	// AuditNone: the outcome had no event (Unchanged or Write).
	AuditNone AuditStatus = iota
	// AuditWritten: the event was committed with the write.
	AuditWritten
	// AuditFailed: the event could not be written and the write was
	// committed without it. Writing the event never undoes the write (it
	// may hold a rotated refresh token that exists nowhere else).
	AuditFailed
)

// String names s, for logs and test failures.
func (s AuditStatus) String() string {
	switch s {
	case AuditNone:
		return "none"
	case AuditWritten:
		return "written"
	case AuditFailed:
		return "failed"
	}
	return "AuditStatus(" + strconv.Itoa(int(s)) + ")"
}

// UpdateResult is what UpdateCredential did, when it returns no error.
type UpdateResult struct {
	// Credential is the row as it now stands: as written (Written), or as
	// read under the lock (Unchanged).
	Credential Credential
	// Written is true when fn's Outcome was Write or WriteAudited and the
	// row was committed.
	Written bool
	// Audit is what became of WriteAudited's event.
	Audit AuditStatus
	// AuditErr says why the event was not written (Audit == AuditFailed
	// only); it is a report, not a failure of the update.
	AuditErr error
}

// Store is the whole storage contract. Every method is safe for concurrent use.
type Store interface {
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
	// Close releases the backend's resources.
	Close() error

	// GetCredential returns the credential of userID at provider, or ErrNotFound.
	GetCredential(ctx context.Context, userID, provider string) (Credential, error)
	// ListCredentials returns all of a person's credentials, ordered by provider.
	ListCredentials(ctx context.Context, userID string) ([]Credential, error)
	// UpsertCredential stores a freshly linked credential, replacing the
	// person's previous one at that provider (state back to active). ID,
	// CreatedAt, UpdatedAt and Version are set by the store.
	UpsertCredential(ctx context.Context, c Credential) (Credential, error)
	// UpdateCredential runs fn on the current row while holding a row lock
	// (PostgreSQL: SELECT ... FOR UPDATE; SQLite: a write transaction) and
	// does what fn's Outcome says: nothing (Unchanged: what fn left in *c is
	// discarded), save *c (Write), or save *c and append an audit event in
	// the same transaction (WriteAudited). Two processes calling it for one
	// credential run fn one after the other, each seeing the other's
	// result: this is how a refresh token is never spent twice. fn may do
	// network I/O but must not call the Store itself (SQLite has one writer,
	// held while fn runs). If fn returns an error nothing is written and the
	// error is returned as is. Returns ErrNotFound when there is no such
	// row. The UpdateResult says what was done; see it for the audit event.
	UpdateCredential(ctx context.Context, userID, provider string, fn func(c *Credential) (Outcome, error)) (UpdateResult, error)
	// DeleteCredential removes the credential; ErrNotFound if there was none.
	DeleteCredential(ctx context.Context, userID, provider string) error
	// ListCredentialsNotUnderKey returns up to limit credentials whose KeyID
	// differs from keyID and whose ID is greater than afterID, ordered by ID.
	// Used by key rotation to walk the table in resumable batches.
	ListCredentialsNotUnderKey(ctx context.Context, keyID string, afterID int64, limit int) ([]Credential, error)
	// CountCredentialsNotUnderKey counts the rows ListCredentialsNotUnderKey would walk.
	CountCredentialsNotUnderKey(ctx context.Context, keyID string) (int64, error)
	// ReplaceCredentialCiphertexts swaps the ciphertexts and KeyID of one row
	// only if its Version still equals c.Version (else ErrConflict); it leaves
	// every other column alone. Used by key rotation, so a refresh that races
	// a rotation is never overwritten.
	ReplaceCredentialCiphertexts(ctx context.Context, c Credential) (Credential, error)
	// CountCredentials counts credentials by provider and state, ordered by
	// both; for metrics, so it returns no user ids.
	CountCredentials(ctx context.Context) ([]CredentialCount, error)
	// ClaimCredentialsForRefresh leases up to claim.Limit active credentials
	// of claim.Provider that are due (see RefreshClaim) and hold a refresh
	// token, ordered by ID. A credential claimed by one caller is not handed
	// to another until the lease runs out, and a row being updated right now
	// is passed over (PostgreSQL: FOR UPDATE SKIP LOCKED), so replicas
	// sharing the database split the work instead of doubling it.
	ClaimCredentialsForRefresh(ctx context.Context, claim RefreshClaim) ([]Credential, error)
	// ListCredentialsRefreshExpiringBefore returns up to limit active
	// credentials holding a refresh token whose RefreshExpiresAt is set and
	// before before, with ID greater than afterID, ordered by ID: the
	// credential.expiring scan walks them in batches. It claims nothing.
	ListCredentialsRefreshExpiringBefore(ctx context.Context, before time.Time, afterID int64, limit int) ([]Credential, error)

	// CreateSession stores a new session.
	CreateSession(ctx context.Context, s Session) error
	// GetSession returns an unexpired session (ErrNotFound otherwise).
	GetSession(ctx context.Context, id string, now time.Time) (Session, error)
	// TouchSession sets LastSeenAt and ExpiresAt.
	TouchSession(ctx context.Context, id string, lastSeen, expiresAt time.Time) error
	// DeleteSession removes a session; deleting a missing one is not an error.
	DeleteSession(ctx context.Context, id string) error
	// DeleteExpiredSessions removes sessions that expired before now and
	// returns how many.
	DeleteExpiredSessions(ctx context.Context, now time.Time) (int64, error)
	// DeleteUserSessions removes every session of userID and returns how
	// many (incident response: sign a person out everywhere).
	DeleteUserSessions(ctx context.Context, userID string) (int64, error)

	// CreateLinkState stores a pending authorization request.
	CreateLinkState(ctx context.Context, l LinkState) error
	// ConsumeLinkState deletes and returns the pending request with that
	// state, atomically: a second call with the same state gets ErrNotFound,
	// as does an expired one.
	ConsumeLinkState(ctx context.Context, state string, now time.Time) (LinkState, error)
	// DeleteExpiredLinkStates removes requests that expired before now.
	DeleteExpiredLinkStates(ctx context.Context, now time.Time) (int64, error)

	// CreateGrant stores a grant and returns it with ID and CreatedAt set.
	CreateGrant(ctx context.Context, g Grant) (Grant, error)
	// GetGrant returns a grant by id, revoked or not, or ErrNotFound.
	GetGrant(ctx context.Context, id int64) (Grant, error)
	// ListGrants returns a person's grants (revoked ones included), newest first.
	ListGrants(ctx context.Context, userID string) ([]Grant, error)
	// ListServiceAccountGrants returns every grant to the ServiceAccount
	// namespace/name, of any person at any provider (revoked ones
	// included), newest first.
	ListServiceAccountGrants(ctx context.Context, namespace, name string) ([]Grant, error)
	// FindUsableGrant returns the newest unrevoked, unexpired grant of
	// userID's credential at provider to the ServiceAccount, or ErrNotFound.
	//
	// Among several, it prefers one bound to saUID, then one without uid
	// (made before grants were bound to uids), then one bound to another
	// uid, which the caller must refuse (see Grant.MatchesUID): returning it
	// lets the caller tell a uid mismatch from no grant at all.
	FindUsableGrant(ctx context.Context, userID, provider, saNamespace, saName, saUID string, now time.Time) (Grant, error)
	// RevokeGrant marks a person's grant revoked at now; ErrNotFound when the
	// grant does not exist or belongs to someone else.
	RevokeGrant(ctx context.Context, userID string, id int64, now time.Time) error

	// AppendAudit stores an event and returns it with ID set.
	AppendAudit(ctx context.Context, e AuditEvent) (AuditEvent, error)
	// AppendAuditBatch stores many events at once, all or none: one
	// statement or transaction, one commit (PostgreSQL: one round trip).
	// They are stored in the slice's order (IDs ascend with it) and
	// returned in it with ID set; an event without Time is stamped now.
	// An empty slice is a no-op that touches no database.
	AppendAuditBatch(ctx context.Context, es []AuditEvent) ([]AuditEvent, error)
	// ListAudit returns a person's events, newest first, with ID below
	// beforeID (0: from the newest), at most limit.
	ListAudit(ctx context.Context, userID string, beforeID int64, limit int) ([]AuditEvent, error)
	// PruneAudit deletes events older than before and returns how many.
	PruneAudit(ctx context.Context, before time.Time) (int64, error)
}
