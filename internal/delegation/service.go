package delegation

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// Error is a refusal of the delegation service (package fault): the OAuth
// code and tokenstore's reason for the token exchange, the code for the
// grants API, with the status they are answered with.
type Error = fault.Error

// ActorPrefix is the audit actor of a ServiceAccount: serviceaccount:ns/name.
const ActorPrefix = "serviceaccount:"

// ServiceOptions configure a Service.
type ServiceOptions struct {
	Store store.Store
	// ServiceAccounts confirms a grant's ServiceAccount exists; nil means
	// grants cannot be made.
	ServiceAccounts workload.Directory
	Now             func() time.Time
	Logger          *slog.Logger
}

// Service holds the delegation decisions: who may get which token at a
// provider, and the grants that let a ServiceAccount use a person's
// account.
//
// The grant a delegated token request is decided on is read through the
// store: serve wraps it in internal/store/cached, so a workload calling in a
// loop costs one grant read a second, a revoke through this replica holds
// at once and one through another within that second.
type Service struct {
	opt ServiceOptions
	log *slog.Logger
}

// NewService builds the service.
func NewService(opt ServiceOptions) *Service {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{opt: opt, log: log}
}

// Caller is who asks for a token, already authenticated: a workload (by
// its ServiceAccount token) or a person (by their access token).
type Caller struct {
	// Workload is set for a ServiceAccount caller.
	Workload *workload.Identity
	// PersonID is set for a person's caller.
	PersonID string
}

// Request is what the caller asks for: a token at Provider, of the person
// Subject (requested_subject; empty for a workload asking for the
// provider's service token, or a person for their own).
type Request struct {
	Provider *providers.Provider
	Subject  string
}

// Kind is what a Decision hands out.
type Kind int

const (
	// ServiceToken is the provider's own (client-credentials) token.
	ServiceToken Kind = iota + 1
	// PersonToken is a person's access token at the provider.
	PersonToken
)

// Decision is an allowed request: which token goes out, on whose behalf.
type Decision struct {
	Kind Kind
	// UserID and Actor name the person whose token goes out and the audit
	// actor who takes it (PersonToken only).
	UserID string
	Actor  string
	// Grant is the grant a workload takes a person's token under; nil
	// otherwise.
	Grant *store.Grant
}

// ServiceAccount is the namespace/name of the recipient of a delegated
// token (Actor without its prefix).
func (d Decision) ServiceAccount() string { return d.Actor[len(ActorPrefix):] }

func errServer() *Error { return fault.Internal }

// Decide says whether a caller gets the token it asks for:
//
//   - a workload without Subject: the provider's service token, if the
//     provider lists its ServiceAccount in workloadAccess;
//   - a workload with Subject: that person's token, if they granted it to
//     this ServiceAccount (bound to its uid) and the grant is usable;
//   - a person: their own token (Subject, if given, must be themselves).
//
// A refusal is an *Error with its OAuth code and reason.
func (s *Service) Decide(ctx context.Context, c Caller, r Request) (Decision, error) {
	p := r.Provider
	if c.Workload == nil {
		if r.Subject != "" && r.Subject != c.PersonID {
			return Decision{}, &Error{Status: http.StatusForbidden, OAuth: "unauthorized_client", Code: "not_own_credential",
				Message: "A person's access token gets that person's own credential only; requested_subject names someone else."}
		}
		return Decision{Kind: PersonToken, UserID: c.PersonID, Actor: "user:" + c.PersonID}, nil
	}
	wid := *c.Workload
	if r.Subject == "" {
		if !p.AllowsServiceAccount(wid.Namespace, wid.ServiceAccount) {
			s.log.InfoContext(ctx, "service token refused", "provider", p.ID, "service_account", wid.String())
			return Decision{}, &Error{Status: http.StatusForbidden, OAuth: "unauthorized_client", Code: "service_account_not_allowed",
				Message: "ServiceAccount " + wid.String() + " is not allowed service tokens from provider " + p.ID + " (TokenProvider spec.workloadAccess.serviceAccounts)."}
		}
		return Decision{Kind: ServiceToken}, nil
	}
	userID := r.Subject
	// The grant returned may be bound to another uid than the caller's,
	// when that is the only usable one: it is refused below.
	g, err := s.opt.Store.FindUsableGrant(ctx, userID, p.ID, wid.Namespace, wid.ServiceAccount, wid.UID, s.opt.Now())
	noGrant := &Error{Status: http.StatusForbidden, OAuth: "unauthorized_client", Code: "no_grant",
		Message: "No active grant lets ServiceAccount " + wid.String() + " use this person's account at provider " + p.ID + "."}
	if errors.Is(err, store.ErrNotFound) {
		s.log.InfoContext(ctx, "delegated token refused: no grant", "provider", p.ID, "user", userID, "service_account", wid.String())
		return Decision{}, noGrant
	}
	if err != nil {
		s.log.ErrorContext(ctx, "reading grants failed", "provider", p.ID, "user", userID, "error", err)
		return Decision{}, errServer()
	}
	if !g.MatchesUID(wid.UID) {
		// The grant was made for another ServiceAccount of this name, since
		// deleted: this one does not inherit it. The answer is the same as
		// without a grant.
		s.log.InfoContext(ctx, "delegated token refused: grant bound to another service account uid", "provider", p.ID, "user", userID,
			"service_account", wid.String(), "service_account_uid", wid.UID, "grant", g.ID, "grant_service_account_uid", g.ServiceAccountUID)
		return Decision{}, noGrant
	}
	return Decision{Kind: PersonToken, UserID: userID, Actor: ActorPrefix + wid.Namespace + "/" + wid.ServiceAccount, Grant: &g}, nil
}

// Grant lets ServiceAccount namespace/name obtain the person's access token
// at the provider, optionally until expiresAt. The grant is bound to the
// ServiceAccount's uid: one deleted and created again under the same name
// does not inherit it. A refusal is an *Error with its REST code; a store
// failure is returned as it is.
func (s *Service) Grant(ctx context.Context, userID, provider, namespace, name string, expiresAt *time.Time) (store.Grant, error) {
	if expiresAt != nil && !expiresAt.After(s.opt.Now()) {
		return store.Grant{}, &Error{Status: http.StatusBadRequest, Code: "invalid_expires_at", Message: "expires_at must be in the future."}
	}
	if s.opt.ServiceAccounts == nil {
		return store.Grant{}, &Error{Status: http.StatusServiceUnavailable, Code: "workloads_not_configured",
			Message: "This server is not connected to Kubernetes, so it cannot check the ServiceAccount; grants are unavailable."}
	}
	uid, exists, err := s.opt.ServiceAccounts.ServiceAccountUID(ctx, namespace, name)
	if err != nil {
		s.log.WarnContext(ctx, "service account lookup failed", "namespace", namespace, "name", name, "error", err)
		return store.Grant{}, &Error{Status: http.StatusBadGateway, Code: "kubernetes_unavailable",
			Message: "The Kubernetes API could not be asked whether the ServiceAccount exists; try again shortly."}
	}
	if !exists {
		return store.Grant{}, &Error{Status: http.StatusBadRequest, Code: "unknown_service_account", Message: "There is no ServiceAccount " + namespace + "/" + name + " in the cluster."}
	}
	g := store.Grant{UserID: userID, Provider: provider, ServiceAccountNamespace: namespace, ServiceAccountName: name, ServiceAccountUID: uid}
	if expiresAt != nil {
		e := expiresAt.UTC()
		g.ExpiresAt = &e
	}
	return s.opt.Store.CreateGrant(ctx, g)
}

// ListGrants lists a person's grants, revoked and expired ones included,
// newest first.
func (s *Service) ListGrants(ctx context.Context, userID string) ([]store.Grant, error) {
	return s.opt.Store.ListGrants(ctx, userID)
}

// ErrGrantNotFound is the answer for a grant id the person does not have:
// someone else's grant looks exactly like a missing one.
func ErrGrantNotFound() *Error {
	return &Error{Status: http.StatusNotFound, Code: "grant_not_found", Message: "You have no grant with this id."}
}

// RevokeGrant revokes one of a person's grants and returns it as it now
// is; revoked reports whether this call revoked it (revoking a revoked
// grant is not an error). It takes effect on the next token request on
// this replica and, with the store cached (internal/store/cached), within
// its TTL on the others.
func (s *Service) RevokeGrant(ctx context.Context, userID string, id int64) (g store.Grant, revoked bool, err error) {
	g, err = s.opt.Store.GetGrant(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && g.UserID != userID) {
		return store.Grant{}, false, ErrGrantNotFound()
	}
	if err != nil {
		return store.Grant{}, false, err
	}
	if g.RevokedAt != nil {
		return g, false, nil
	}
	if err := s.opt.Store.RevokeGrant(ctx, userID, id, s.opt.Now()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Grant{}, false, ErrGrantNotFound()
		}
		return store.Grant{}, false, err
	}
	g, err = s.opt.Store.GetGrant(ctx, id)
	return g, true, err
}
