// Package admin is incident response: when a person's account or a
// workload is compromised, an operator sees what tokenstore holds for it
// and cuts it off — a person's credentials (revoked at the provider where
// it has a revocation endpoint, then forgotten), their grants to
// workloads, their sessions, and every grant a ServiceAccount holds.
//
// The same Service backs `tokenstore admin` (cmd) and the admin API
// (server). Every call names its operator (the audit actor: "cli:<os
// user>" or "admin:<user id>") and writes an audit event about each
// person it concerns, reads included, so that the person's own audit
// trail shows who looked and what was cut. It never returns a token.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/store"
)

// Audit actions of the admin service. Revocations use the actions the
// person's own would (broker.ActionRevoke, ActionGrantRevoke), with the
// operator as actor, so one query finds every revocation.
const (
	// ActionInspect: an operator listed a person's credentials or grants,
	// or a ServiceAccount's grants.
	ActionInspect = "admin.inspect"
	// ActionGrantRevoke is the server's grant.revoke.
	ActionGrantRevoke = "grant.revoke"
	// ActionSessionsEnd: an operator ended every session of a person.
	ActionSessionsEnd = "admin.sessions_end"
)

// Actor prefixes of operators.
const (
	ActorCLIPrefix = "cli:"
	ActorAPIPrefix = "admin:"
)

// Error is a refusal, with the status and code the admin API answers with
// (the CLI prints Message).
type Error = fault.Error

func notFound(code, msg string) *Error {
	return &Error{Status: http.StatusNotFound, Code: code, Message: msg}
}

func badRequest(code, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: msg}
}

// Options are what a Service is built from.
type Options struct {
	Store store.Store
	// Broker revokes credentials (at the provider, then in the store).
	Broker *broker.Broker
	// Delegation revokes grants (and drops this replica's cached copy).
	Delegation *delegation.Service
	// Audit writes an event; nil means Store.AppendAudit. The server
	// passes its group-commit writer.
	Audit func(context.Context, store.AuditEvent) (store.AuditEvent, error)
	// GrantRevoked hears of each grant this service revoked (the server
	// drops the grant's disclosures); nil tells no one.
	GrantRevoked func(id int64)
	Now          func() time.Time
	Logger       *slog.Logger
}

// Service carries out operators' requests.
type Service struct {
	opt Options
	log *slog.Logger
}

// New checks the options and returns a Service.
func New(opt Options) (*Service, error) {
	if opt.Store == nil || opt.Broker == nil || opt.Delegation == nil {
		return nil, errors.New("admin: store, broker and delegation service are required")
	}
	if opt.Audit == nil {
		opt.Audit = opt.Store.AppendAudit
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{opt: opt, log: log}, nil
}

// Credential is what an operator sees of a credential: never a token.
type Credential struct {
	UserID      string `json:"user_id"`
	Provider    string `json:"provider"`
	State       string `json:"state"`
	StateReason string `json:"state_reason,omitempty"`
	// Subject is the person's id at the provider, when known.
	Subject         string   `json:"subject,omitempty"`
	Scopes          []string `json:"scopes"`
	HasRefreshToken bool     `json:"has_refresh_token"`
	// AccessExpiresAt is when the cached access token lapses (as the
	// broker assumes it, when the provider gave no expiry); nil without one.
	AccessExpiresAt  *time.Time `json:"access_expires_at"`
	RefreshExpiresAt *time.Time `json:"refresh_expires_at"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
	LastRefreshedAt  *time.Time `json:"last_refreshed_at"`
	LastUsedAt       *time.Time `json:"last_used_at"`
}

// ServiceAccount names a grant's recipient.
type ServiceAccount struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// UID is the uid the grant is bound to; empty for grants made before
	// grants were bound to uids.
	UID string `json:"uid,omitempty"`
}

// String is namespace/name.
func (sa ServiceAccount) String() string { return sa.Namespace + "/" + sa.Name }

// Grant is a grant as an operator sees it.
type Grant struct {
	ID             int64          `json:"id"`
	UserID         string         `json:"user_id"`
	Provider       string         `json:"provider"`
	ServiceAccount ServiceAccount `json:"service_account"`
	CreatedAt      time.Time      `json:"created_at"`
	ExpiresAt      *time.Time     `json:"expires_at"`
	RevokedAt      *time.Time     `json:"revoked_at"`
	// State is active, expired or revoked, as of the answer.
	State string `json:"state"`
}

// Person is what tokenstore holds for one person.
type Person struct {
	UserID      string       `json:"user_id"`
	Credentials []Credential `json:"credentials"`
	Grants      []Grant      `json:"grants"`
}

// CredentialRevocation says what revoking one credential did.
type CredentialRevocation struct {
	UserID   string `json:"user_id"`
	Provider string `json:"provider"`
	// AtProvider is true when the provider confirmed the revocation.
	AtProvider bool `json:"at_provider"`
	// ProviderError says why it did not (no revocation endpoint, provider
	// not configured here, provider down); the credential is forgotten
	// either way.
	ProviderError string `json:"provider_error,omitempty"`
}

// GrantRevocation says what revoking one grant did.
type GrantRevocation struct {
	Grant Grant `json:"grant"`
	// Revoked is false when the grant was already revoked.
	Revoked bool `json:"revoked"`
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func (s *Service) credential(c store.Credential) Credential {
	out := Credential{UserID: c.UserID, Provider: c.Provider, State: string(c.State), StateReason: c.StateReason, Subject: c.Subject,
		Scopes: c.Scopes, HasRefreshToken: len(c.RefreshToken) > 0, RefreshExpiresAt: utc(c.RefreshExpiresAt),
		CreatedAt: c.CreatedAt.UTC(), UpdatedAt: c.UpdatedAt.UTC(), LastRefreshedAt: utc(c.LastRefreshedAt), LastUsedAt: utc(c.LastUsedAt)}
	if out.Scopes == nil {
		out.Scopes = []string{}
	}
	if len(c.AccessToken) > 0 {
		if exp, ok := s.opt.Broker.Expiry(&c); ok {
			out.AccessExpiresAt = utc(&exp)
		}
	}
	return out
}

func grantOf(g store.Grant, now time.Time) Grant {
	state := "active"
	switch {
	case g.RevokedAt != nil:
		state = "revoked"
	case !g.Usable(now):
		state = "expired"
	}
	return Grant{ID: g.ID, UserID: g.UserID, Provider: g.Provider,
		ServiceAccount: ServiceAccount{Namespace: g.ServiceAccountNamespace, Name: g.ServiceAccountName, UID: g.ServiceAccountUID},
		CreatedAt:      g.CreatedAt.UTC(), ExpiresAt: utc(g.ExpiresAt), RevokedAt: utc(g.RevokedAt), State: state}
}

func checkActor(actor string) error {
	if strings.TrimSpace(actor) == "" {
		return badRequest("invalid_actor", "An operator (audit actor) is required.")
	}
	return nil
}

// checkActorUser refuses a call without an operator or a person.
func checkActorUser(actor, userID string) error {
	if err := checkActor(actor); err != nil {
		return err
	}
	if strings.TrimSpace(userID) == "" {
		return badRequest("invalid_user", "A user id (the login issuer's subject) is required.")
	}
	return nil
}

// audit writes an event. A failure fails the call: an operator's action
// that cannot be recorded is reported, even when (a revocation) it has
// already happened, so that the operator knows the trail is missing it.
func (s *Service) audit(ctx context.Context, userID, actor, action, provider string, detail map[string]any) error {
	d, _ := json.Marshal(detail)
	_, err := s.opt.Audit(context.WithoutCancel(ctx), store.AuditEvent{Time: s.opt.Now().UTC(), UserID: userID, Actor: actor,
		Action: action, Provider: provider, Detail: d})
	if err != nil {
		s.log.ErrorContext(ctx, "writing an admin audit event failed", "action", action, "user", userID, "actor", actor, "error", err)
		return fmt.Errorf("writing the audit event %s: %w", action, err)
	}
	return nil
}

// Person returns what tokenstore holds for userID (the login issuer's
// subject): credentials and grants. A person of whom nothing is held is
// user_not_found.
func (s *Service) Person(ctx context.Context, actor, userID string) (Person, error) {
	if err := checkActorUser(actor, userID); err != nil {
		return Person{}, err
	}
	p, err := s.person(ctx, userID)
	if err != nil {
		return Person{}, err
	}
	if len(p.Credentials) == 0 && len(p.Grants) == 0 {
		return Person{}, notFound("user_not_found", "tokenstore holds no credential or grant of user "+userID+".")
	}
	return p, s.audit(ctx, userID, actor, ActionInspect, "", map[string]any{"what": "person"})
}

func (s *Service) person(ctx context.Context, userID string) (Person, error) {
	cs, err := s.opt.Store.ListCredentials(ctx, userID)
	if err != nil {
		return Person{}, fmt.Errorf("listing credentials: %w", err)
	}
	gs, err := s.opt.Store.ListGrants(ctx, userID)
	if err != nil {
		return Person{}, fmt.Errorf("listing grants: %w", err)
	}
	p := Person{UserID: userID, Credentials: make([]Credential, 0, len(cs)), Grants: make([]Grant, 0, len(gs))}
	for _, c := range cs {
		p.Credentials = append(p.Credentials, s.credential(c))
	}
	now := s.opt.Now()
	for _, g := range gs {
		p.Grants = append(p.Grants, grantOf(g, now))
	}
	return p, nil
}

// Credentials lists a person's credentials, ordered by provider.
func (s *Service) Credentials(ctx context.Context, actor, userID string) ([]Credential, error) {
	if err := checkActorUser(actor, userID); err != nil {
		return nil, err
	}
	p, err := s.person(ctx, userID)
	if err != nil {
		return nil, err
	}
	return p.Credentials, s.audit(ctx, userID, actor, ActionInspect, "", map[string]any{"what": "credentials"})
}

// Grants lists a person's grants, revoked and expired ones included,
// newest first.
func (s *Service) Grants(ctx context.Context, actor, userID string) ([]Grant, error) {
	if err := checkActorUser(actor, userID); err != nil {
		return nil, err
	}
	p, err := s.person(ctx, userID)
	if err != nil {
		return nil, err
	}
	return p.Grants, s.audit(ctx, userID, actor, ActionInspect, "", map[string]any{"what": "grants"})
}

// RevokeCredential revokes a person's credential at provider: at the
// provider (RFC 7009) where it has a revocation endpoint, then forgotten.
// The broker writes the credential.revoke event, with actor.
func (s *Service) RevokeCredential(ctx context.Context, actor, userID, provider string) (CredentialRevocation, error) {
	if err := checkActorUser(actor, userID); err != nil {
		return CredentialRevocation{}, err
	}
	res, err := s.opt.Broker.Revoke(ctx, userID, provider, actor)
	if err != nil {
		return CredentialRevocation{}, err
	}
	if !res.Existed {
		return CredentialRevocation{}, notFound("credential_not_found", "User "+userID+" has no credential at provider "+provider+".")
	}
	s.log.InfoContext(ctx, "credential revoked by an operator", "user", userID, "provider", provider, "actor", actor,
		"at_provider", res.AtProvider, "provider_error", res.ProviderError)
	return CredentialRevocation{UserID: userID, Provider: provider, AtProvider: res.AtProvider, ProviderError: res.ProviderError}, nil
}

// RevokeCredentials revokes every credential of a person, one after the
// other; it stops at the first failure, returning what it revoked so far.
func (s *Service) RevokeCredentials(ctx context.Context, actor, userID string) ([]CredentialRevocation, error) {
	if err := checkActorUser(actor, userID); err != nil {
		return nil, err
	}
	cs, err := s.opt.Store.ListCredentials(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("listing credentials: %w", err)
	}
	out := make([]CredentialRevocation, 0, len(cs))
	for _, c := range cs {
		r, err := s.RevokeCredential(ctx, actor, userID, c.Provider)
		var ae *Error
		if errors.As(err, &ae) && ae.Code == "credential_not_found" {
			continue // revoked meanwhile (by the person, or another operator)
		}
		if err != nil {
			return out, fmt.Errorf("revoking the credential at %s: %w", c.Provider, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// RevokeGrant revokes one grant, found by its id alone (an operator may
// not know whose it is). Revoking a revoked grant is not an error
// (Revoked is false). The grant.revoke event names the grant's owner as
// the person and actor as the actor.
func (s *Service) RevokeGrant(ctx context.Context, actor string, id int64) (GrantRevocation, error) {
	if err := checkActor(actor); err != nil {
		return GrantRevocation{}, err
	}
	g, err := s.opt.Store.GetGrant(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return GrantRevocation{}, notFound("grant_not_found", fmt.Sprintf("There is no grant %d.", id))
	}
	if err != nil {
		return GrantRevocation{}, fmt.Errorf("reading grant %d: %w", id, err)
	}
	return s.revokeGrant(ctx, actor, g)
}

func (s *Service) revokeGrant(ctx context.Context, actor string, g store.Grant) (GrantRevocation, error) {
	now := s.opt.Now()
	if g.RevokedAt != nil {
		return GrantRevocation{Grant: grantOf(g, now)}, nil
	}
	cur, revoked, err := s.opt.Delegation.RevokeGrant(ctx, g.UserID, g.ID)
	if revoked && s.opt.GrantRevoked != nil {
		s.opt.GrantRevoked(g.ID)
	}
	var de *delegation.Error
	if errors.As(err, &de) {
		return GrantRevocation{}, &Error{Status: de.Status, Code: de.Code, Message: fmt.Sprintf("There is no grant %d.", g.ID)}
	}
	if err != nil {
		return GrantRevocation{}, fmt.Errorf("revoking grant %d: %w", g.ID, err)
	}
	out := GrantRevocation{Grant: grantOf(cur, now), Revoked: revoked}
	if !revoked {
		return out, nil
	}
	sa := ServiceAccount{Namespace: g.ServiceAccountNamespace, Name: g.ServiceAccountName}
	s.log.InfoContext(ctx, "grant revoked by an operator", "grant", g.ID, "provider", g.Provider, "user", g.UserID,
		"service_account", sa.String(), "actor", actor)
	return out, s.audit(ctx, g.UserID, actor, ActionGrantRevoke, g.Provider,
		map[string]any{"grant_id": g.ID, "service_account": sa.String(), "service_account_uid": g.ServiceAccountUID})
}

// RevokeGrants revokes every unrevoked grant of a person and returns the
// grants it revoked.
func (s *Service) RevokeGrants(ctx context.Context, actor, userID string) ([]GrantRevocation, error) {
	if err := checkActorUser(actor, userID); err != nil {
		return nil, err
	}
	gs, err := s.opt.Store.ListGrants(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("listing grants: %w", err)
	}
	return s.revokeAll(ctx, actor, gs, "")
}

// revokeAll revokes those of gs not yet revoked (and, with uid set, that
// a ServiceAccount of that uid could use); it stops at the first failure.
func (s *Service) revokeAll(ctx context.Context, actor string, gs []store.Grant, uid string) ([]GrantRevocation, error) {
	out := []GrantRevocation{}
	for _, g := range gs {
		if g.RevokedAt != nil || (uid != "" && !g.MatchesUID(uid)) {
			continue
		}
		r, err := s.revokeGrant(ctx, actor, g)
		if err != nil {
			return out, err
		}
		if r.Revoked {
			out = append(out, r)
		}
	}
	return out, nil
}

// ServiceAccountGrants lists every grant to ServiceAccount
// namespace/name, of any person, newest first.
func (s *Service) ServiceAccountGrants(ctx context.Context, actor, namespace, name string) ([]Grant, error) {
	gs, err := s.serviceAccountGrants(ctx, actor, namespace, name)
	if err != nil {
		return nil, err
	}
	now := s.opt.Now()
	out := make([]Grant, 0, len(gs))
	for _, g := range gs {
		out = append(out, grantOf(g, now))
	}
	return out, s.audit(ctx, "", actor, ActionInspect, "", map[string]any{"what": "service_account_grants", "service_account": namespace + "/" + name})
}

func (s *Service) serviceAccountGrants(ctx context.Context, actor, namespace, name string) ([]store.Grant, error) {
	if err := checkActor(actor); err != nil {
		return nil, err
	}
	if namespace == "" || name == "" {
		return nil, badRequest("invalid_service_account", "A ServiceAccount is named by its namespace and name.")
	}
	gs, err := s.opt.Store.ListServiceAccountGrants(ctx, namespace, name)
	if err != nil {
		return nil, fmt.Errorf("listing the grants of %s/%s: %w", namespace, name, err)
	}
	return gs, nil
}

// RevokeServiceAccountGrants revokes every grant to ServiceAccount
// namespace/name, whoever made it at whichever provider. With uid set,
// only the grants a ServiceAccount of that uid could use are revoked
// (those bound to it and those made before grants were bound to uids),
// which leaves a re-created account's own grants alone; empty revokes
// them all. Each revocation is a grant.revoke event in its owner's trail.
func (s *Service) RevokeServiceAccountGrants(ctx context.Context, actor, namespace, name, uid string) ([]GrantRevocation, error) {
	gs, err := s.serviceAccountGrants(ctx, actor, namespace, name)
	if err != nil {
		return nil, err
	}
	return s.revokeAll(ctx, actor, gs, uid)
}

// EndSessions ends every session of a person (on every replica within
// the session cache's TTL). A bearer access token the person holds stays
// valid until it expires: the login issuer, not tokenstore, revokes those.
func (s *Service) EndSessions(ctx context.Context, actor, userID string) (int64, error) {
	if err := checkActorUser(actor, userID); err != nil {
		return 0, err
	}
	n, err := s.opt.Store.DeleteUserSessions(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("ending sessions: %w", err)
	}
	s.log.InfoContext(ctx, "sessions ended by an operator", "user", userID, "actor", actor, "sessions", n)
	return n, s.audit(ctx, userID, actor, ActionSessionsEnd, "", map[string]any{"sessions": n})
}
