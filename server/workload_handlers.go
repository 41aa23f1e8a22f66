package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tokenstore/tokenstore/internal/auth"
	"github.com/tokenstore/tokenstore/internal/broker"
	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/observability/audit"
	"github.com/tokenstore/tokenstore/internal/providers"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// oauthError is an answer of the token-exchange endpoint in the RFC 6749
// §5.2 shape ({error, error_description}), not the rest of the API's
// {error, message}: OAuth client libraries parse this one. Reason is an
// extension member with tokenstore's finer, stable code (token_expired,
// no_grant, ...), so that programs can tell refusals apart without parsing
// the description.
type oauthError struct {
	Status      int    `json:"-"`
	Code        string `json:"error"`
	Description string `json:"error_description"`
	Reason      string `json:"reason,omitempty"`
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

// issued is a token the exchange hands out, whichever way it was obtained.
type issued struct {
	AccessToken string
	TokenType   string
	Expiry      time.Time
	Scopes      []string
}

// authenticateWorkload verifies a ServiceAccount token and maps refusals
// to 401s with a reason code.
func (s *Server) authenticateWorkload(ctx context.Context, token string) (workload.Identity, *oauthError) {
	if s.opt.Workloads == nil {
		return workload.Identity{}, &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Reason: "workloads_not_configured",
			Description: "This server does not accept ServiceAccount tokens (it is not connected to Kubernetes)."}
	}
	id, err := s.opt.Workloads.Authenticate(ctx, token)
	if err == nil {
		return id, nil
	}
	var ae *workload.AuthError
	if errors.As(err, &ae) {
		// RFC 8693 §2.2.2 names invalid_request for an unacceptable
		// subject_token; the status says what it is: not authenticated.
		return workload.Identity{}, &oauthError{Status: http.StatusUnauthorized, Code: "invalid_request", Reason: ae.Reason,
			Description: "The ServiceAccount token was refused: " + ae.Detail + "."}
	}
	s.log.WarnContext(ctx, "token review failed", "error", err)
	return workload.Identity{}, &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Reason: "kubernetes_unavailable",
		Description: "The ServiceAccount token could not be checked with the Kubernetes API; try again shortly."}
}

// serviceToken is the provider's own (client-credentials) token for a
// workload the delegation service allowed one.
func (s *Server) serviceToken(ctx context.Context, wid workload.Identity, p *providers.Provider) (issued, *oauthError) {
	t, err := s.opt.ServiceTokens.Token(ctx, p)
	var cr *providers.ClientRejectedError
	if errors.As(err, &cr) {
		s.log.WarnContext(ctx, "provider refused tokenstore's client", "provider", p.ID, "grant", cr.Grant, "code", cr.Code,
			"service_account", wid.String())
		return issued{}, clientRejected(cr)
	}
	if err != nil {
		s.log.WarnContext(ctx, "service token failed", "provider", p.ID, "service_account", wid.String(), "error", err)
		return issued{}, &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Reason: "provider_unavailable",
			Description: "Provider " + p.ID + " did not issue a client-credentials token; try again shortly."}
	}
	return issued{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.Expiry, Scopes: t.Scopes}, nil
}

// oauthRefusal is a delegation refusal as the token exchange answers it.
func oauthRefusal(err error) *oauthError {
	var de *delegation.Error
	if errors.As(err, &de) {
		return &oauthError{Status: de.Status, Code: de.Code, Reason: de.Reason, Description: de.Message}
	}
	return &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "Something went wrong on our side; the error was logged."}
}

// handOut carries out a decision of the delegation service: the service
// token, or a person's token through the broker; a person's token taken by
// a workload under a grant goes out only once its disclosure is on record.
func (s *Server) handOut(ctx context.Context, wid *workload.Identity, p *providers.Provider, d delegation.Decision) (issued, *oauthError) {
	if d.Kind == delegation.ServiceToken {
		return s.serviceToken(ctx, *wid, p)
	}
	t, oe := s.personToken(ctx, d.UserID, p.ID, d.Actor)
	if oe != nil || d.Grant == nil {
		return t, oe
	}
	// The token goes out only once its disclosure to this recipient is on
	// record: the first time this replica hands this token value to this
	// ServiceAccount (and pod) under this grant, a durable grant.use event;
	// a repeat only adds to the next summary (writeUseSummaries).
	k := delegation.Key{GrantID: d.Grant.ID, ServiceAccountUID: wid.UID, Pod: wid.Pod, Token: delegation.FingerprintOf(t.AccessToken)}
	if s.disclosures.Repeat(k) {
		return t, nil
	}
	who := useRecipient{userID: d.UserID, provider: p.ID, actor: d.Actor, serviceAccount: d.ServiceAccount()}
	if err := s.disclose(ctx, k, who, t.Expiry); err != nil {
		return issued{}, &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "Something went wrong on our side; the error was logged."}
	}
	return t, nil
}

// disclose records the disclosure of a token value to a recipient through
// the disclosure ledger: for a key it does not hold, a durable grant.use
// event (with the token's expiry, when known), waited for.
func (s *Server) disclose(ctx context.Context, k delegation.Key, who useRecipient, expiry time.Time) error {
	return s.disclosures.Disclose(ctx, k, who, expiry, func(ctx context.Context) error {
		detail := useDetail(k.GrantID, who.serviceAccount, k.Pod)
		if !expiry.IsZero() {
			detail["token_expires_at"] = expiry.UTC().Format(time.RFC3339)
		}
		return s.auditCtx(ctx, who.userID, who.actor, ActionGrantUse, who.provider, detail)
	})
}

// useRecipient is what the disclosure ledger keeps with a key for its
// summaries: whose token went to whom, at which provider.
type useRecipient struct {
	userID, provider, actor, serviceAccount string
}

// useDetail is the detail every grant.use event starts with.
func useDetail(grantID int64, serviceAccount, pod string) map[string]any {
	d := map[string]any{"grant_id": grantID, "service_account": serviceAccount}
	if pod != "" {
		d["pod"] = pod
	}
	return d
}

// writeUseSummaries writes one grant.use event per key answered again
// since the previous summary (the disclosure ledger's Flush): how many
// times, first and last. Nobody waits on them, so they are stored as
// batches of their own (AppendAuditBatch, audit.DefaultMaxBatch at a
// time) rather than through the requests' group-commit writer; a failure
// is logged once for the whole summary (the counts are lost, never the
// record of a disclosure, which was written before its first answer).
func (s *Server) writeUseSummaries(ctx context.Context, sums []delegation.Summary[useRecipient]) {
	now := s.opt.Now().UTC()
	events := make([]store.AuditEvent, 0, len(sums))
	for _, sm := range sums {
		detail := useDetail(sm.Key.GrantID, sm.Meta.serviceAccount, sm.Key.Pod)
		detail["repeats"] = sm.Repeats
		detail["first_repeat_at"] = sm.FirstRepeat.UTC().Format(time.RFC3339)
		detail["last_repeat_at"] = sm.LastRepeat.UTC().Format(time.RFC3339)
		d, _ := json.Marshal(detail)
		events = append(events, store.AuditEvent{Time: now, UserID: sm.Meta.userID, Actor: sm.Meta.actor, Action: ActionGrantUse, Provider: sm.Meta.provider, Detail: d})
	}
	var (
		failed   int
		firstErr error
	)
	for batch := range slices.Chunk(events, audit.DefaultMaxBatch) {
		wctx, cancel := context.WithTimeout(ctx, audit.DefaultWriteTimeout)
		_, err := s.opt.Store.AppendAuditBatch(wctx, batch)
		cancel()
		s.opt.Metrics.AuditWrite(len(batch), err) // as the writer reports its writes
		if err != nil {
			if failed == 0 {
				firstErr = err
			}
			failed += len(batch)
		}
	}
	if failed > 0 {
		s.log.Error("writing grant.use summaries failed", "events", failed, "of", len(sums), "error", firstErr)
	}
}

// personToken is a person's access token through the broker: the same
// cache, single refresh and rotation as GET /{provider}/token.
func (s *Server) personToken(ctx context.Context, userID, provider, actor string) (issued, *oauthError) {
	t, err := s.broker.Token(ctx, broker.Request{UserID: userID, Provider: provider, Actor: actor})
	if err == nil {
		return issued{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.Expiry, Scopes: t.Scopes}, nil
	}
	var re *broker.ReauthError
	var ue *broker.UnavailableError
	var cr *providers.ClientRejectedError
	switch {
	case errors.Is(err, broker.ErrUnknownProvider):
		return issued{}, &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Reason: "unknown_provider", Description: "There is no provider with this id."}
	case errors.As(err, &cr):
		s.log.WarnContext(ctx, "provider refused tokenstore's client", "provider", provider, "grant", cr.Grant, "code", cr.Code, "user", userID, "actor", actor)
		return issued{}, clientRejected(cr)
	case errors.Is(err, broker.ErrNotLinked):
		return issued{}, &oauthError{Status: http.StatusBadRequest, Code: "invalid_grant", Reason: "not_linked",
			Description: "The person has no account linked at provider " + provider + "; they must link one at " + s.actionURL(provider, "authorize") + "."}
	case errors.As(err, &re):
		return issued{}, &oauthError{Status: http.StatusBadRequest, Code: "invalid_grant", Reason: "reauthorization_required",
			Description: "Provider " + provider + " no longer accepts the stored authorization (" + safeCode(re.Reason) + "); the person must link the account again."}
	case errors.As(err, &ue):
		s.log.WarnContext(ctx, "provider unavailable", "provider", provider, "error", ue.Err)
		return issued{}, &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Reason: "provider_unavailable",
			Description: "Provider " + provider + " could not be reached or failed; try again shortly."}
	}
	s.log.ErrorContext(ctx, "token exchange failed", "provider", provider, "user", userID, "error", err)
	return issued{}, &oauthError{Status: http.StatusInternalServerError, Code: "server_error", Description: "Something went wrong on our side; the error was logged."}
}

// clientRejected is the answer when the provider refused tokenstore's own
// client (its id, secret, grant types or scopes), whoever asked: RFC 8693's
// invalid_target (tokenstore cannot issue a token for that target), a
// 400, not a 503, because asking again cannot help until the TokenProvider
// or the client's registration at the provider is fixed. The description
// names the provider and its error code (one of a fixed list), never what
// else the provider said.
func clientRejected(cr *providers.ClientRejectedError) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Reason: ReasonProviderRejectedClient,
		Description: "Provider " + cr.Provider + " refused tokenstore's client for the " + cr.Grant + " grant (" + safeCode(cr.Code) +
			"): the TokenProvider's client settings or the client's registration at the provider must be fixed; asking again will not help."}
}

// ReasonProviderRejectedClient is the reason (token exchange) and the
// error code (REST API) of a provider's refusal of tokenstore's client.
const ReasonProviderRejectedClient = "provider_rejected_client"

// authenticatePerson verifies a person's access token from the login
// issuer (as the API's bearer authentication does).
func (s *Server) authenticatePerson(ctx context.Context, token string) (*auth.Identity, *oauthError) {
	id, err := s.auth.Bearer(ctx, token)
	if err == nil {
		return id, nil
	}
	var ue *auth.UnavailableError
	if errors.As(err, &ue) || errors.Is(err, auth.ErrLoginNotConfig) {
		s.log.WarnContext(ctx, "login provider unavailable", "error", err)
		return nil, &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Reason: "login_provider_unavailable",
			Description: "The login provider could not be asked about the access token; try again shortly."}
	}
	return nil, &oauthError{Status: http.StatusUnauthorized, Code: "invalid_request", Reason: "invalid_token",
		Description: "The access token was not accepted by the login issuer."}
}

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
