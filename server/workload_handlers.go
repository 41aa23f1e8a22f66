package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// issued is a token the exchange hands out, whichever way it was obtained.
type issued struct {
	AccessToken string
	TokenType   string
	Expiry      time.Time
	Scopes      []string
}

// authenticateWorkload verifies a ServiceAccount token; a refusal is a
// *workload.AuthError (a 401 with its reason), any other failure an
// outage of the Kubernetes API.
func (s *Server) authenticateWorkload(ctx context.Context, token string) (workload.Identity, error) {
	if s.opt.Workloads == nil {
		return workload.Identity{}, errWorkloadsNotConfigured
	}
	id, err := s.opt.Workloads.Authenticate(ctx, token)
	if err != nil && fault.As(err) == nil {
		err = &workload.UnavailableError{Err: err}
	}
	return id, err
}

var errWorkloadsNotConfigured = &fault.Error{Status: http.StatusBadRequest, OAuth: "invalid_request", Code: "workloads_not_configured",
	Message: "This server does not accept ServiceAccount tokens (it is not connected to Kubernetes)."}

// serviceToken is the provider's own (client-credentials) token for a
// workload the delegation service allowed one.
func (s *Server) serviceToken(ctx context.Context, wid workload.Identity, p *providers.Provider) (issued, error) {
	t, err := s.opt.ServiceTokens.Token(ctx, p)
	if err != nil {
		if fe := fault.As(err); fe != nil {
			return issued{}, fe
		}
		return issued{}, &fault.Error{Status: http.StatusServiceUnavailable, OAuth: "temporarily_unavailable", Code: "provider_unavailable",
			Provider: p.ID, Err: fmt.Errorf("service token for %s: %w", wid.String(), err),
			Message: "Provider " + p.ID + " did not issue a client-credentials token; try again shortly."}
	}
	return issued{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.Expiry, Scopes: t.Scopes}, nil
}

// handOut carries out a decision of the delegation service: the service
// token, or a person's token through the broker; a person's token taken by
// a workload under a grant goes out only once its disclosure is on record
// (delegation.GrantUse).
func (s *Server) handOut(ctx context.Context, wid *workload.Identity, p *providers.Provider, d delegation.Decision) (issued, error) {
	if d.Kind == delegation.ServiceToken {
		return s.serviceToken(ctx, *wid, p)
	}
	t, err := s.personToken(ctx, d.UserID, p.ID, d.Actor)
	if err != nil {
		return t, err
	}
	if err := s.grantUse.Record(ctx, d, wid, p.ID, t.AccessToken, t.Expiry); err != nil {
		// Record logged it.
		return issued{}, fault.Internal
	}
	return t, nil
}

// personToken is a person's access token through the broker: the same
// cache, single refresh and rotation as GET /{provider}/token.
func (s *Server) personToken(ctx context.Context, userID, provider, actor string) (issued, error) {
	t, err := s.broker.Token(ctx, broker.Request{UserID: userID, Provider: provider, Actor: actor})
	if err != nil {
		return issued{}, err
	}
	return issued{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.Expiry, Scopes: t.Scopes}, nil
}

// ReasonProviderRejectedClient is the reason (token exchange) and the
// error code (REST API) of a provider's refusal of tokenstore's client.
const ReasonProviderRejectedClient = providers.ReasonClientRejected

// auditCtx appends an event through the group-commit writer (concurrent
// requests' events share one insert and commit) and returns once it is
// stored. A failure is logged and returned; callers recording something
// that has already happened ignore it, while grant.use refuses the token.
// If ctx ends first, auditCtx stops waiting but the event is still written
// (the writer logs it if that fails).
func (s *Server) auditCtx(ctx context.Context, userID, actor, action, provider string, detail map[string]any) error {
	d, _ := json.Marshal(detail)
	_, err := s.audits.Append(ctx, store.AuditEvent{
		Time: s.opt.Now().UTC(), UserID: userID, Actor: actor, Action: action, Provider: provider, Detail: d,
	})
	if err != nil && ctx.Err() == nil {
		s.log.ErrorContext(ctx, "writing an audit event failed", "action", action, "provider", provider, "user", userID, "error", err)
	}
	return err
}

func scopeString(sc []string) string { return strings.Join(sc, " ") }
