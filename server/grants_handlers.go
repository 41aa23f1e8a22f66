package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/gin-gonic/gin"

	"github.com/tokenstore/tokenstore/internal/delegation"
	"github.com/tokenstore/tokenstore/internal/store"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// Audit actions for grants. grant.use records each disclosure of a
// person's token value to a workload (grant, ServiceAccount uid, pod) under
// a grant, durably before the token goes out; repeats of a value already
// disclosed to that recipient are counted and written as periodic
// summaries (internal/delegation, writeUseSummaries). So a person can see
// which workload took their token, which token lifetime, when and how often.
const (
	ActionGrantCreate = "grant.create"
	ActionGrantRevoke = "grant.revoke"
	ActionGrantUse    = delegation.ActionGrantUse
)

// maxJSONBody bounds request bodies of the JSON API: grants are tiny.
const maxJSONBody = 16 << 10

type serviceAccountJSON struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// UID is the ServiceAccount's uid the grant is bound to; absent for
	// grants made before grants were bound to uids (and ignored in
	// requests).
	UID string `json:"uid,omitempty"`
}

// grantJSON is a grant as the API shows it.
type grantJSON struct {
	ID             int64              `json:"id"`
	Provider       string             `json:"provider"`
	ServiceAccount serviceAccountJSON `json:"service_account"`
	CreatedAt      time.Time          `json:"created_at"`
	ExpiresAt      *time.Time         `json:"expires_at"`
	RevokedAt      *time.Time         `json:"revoked_at"`
	// State is active, expired or revoked, as of the answer.
	State string `json:"state"`
}

func grantState(g store.Grant, now time.Time) string {
	switch {
	case g.RevokedAt != nil:
		return "revoked"
	case !g.Usable(now):
		return "expired"
	}
	return "active"
}

func toGrantJSON(g store.Grant, now time.Time) grantJSON {
	utc := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		u := t.UTC()
		return &u
	}
	return grantJSON{ID: g.ID, Provider: g.Provider,
		ServiceAccount: serviceAccountJSON{Namespace: g.ServiceAccountNamespace, Name: g.ServiceAccountName, UID: g.ServiceAccountUID},
		CreatedAt:      g.CreatedAt.UTC(), ExpiresAt: utc(g.ExpiresAt), RevokedAt: utc(g.RevokedAt), State: grantState(g, now)}
}

// grantRequest is the body of POST /{provider}/grants. service_account is
// "namespace/name" or {namespace, name}. The camelCase spellings are
// accepted too, for clients written against the wording.
type grantRequest struct {
	ServiceAccount      json.RawMessage `json:"service_account"`
	ServiceAccountCamel json.RawMessage `json:"serviceAccount"`
	ExpiresAt           *time.Time      `json:"expires_at"`
	ExpiresAtCamel      *time.Time      `json:"expiresAt"`
}

func badRequest(code, msg string) *fault.Error {
	return &fault.Error{Status: http.StatusBadRequest, Code: code, Message: msg}
}

func parseServiceAccount(raw json.RawMessage) (string, string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", "", errors.New("service_account is required")
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", "", errors.New("service_account must be \"namespace/name\" or {\"namespace\", \"name\"}")
		}
		return workload.ParseServiceAccount(s)
	}
	var sa serviceAccountJSON
	if err := json.Unmarshal(raw, &sa); err != nil {
		return "", "", errors.New("service_account must be \"namespace/name\" or {\"namespace\", \"name\"}")
	}
	if err := workload.CheckServiceAccount(sa.Namespace, sa.Name); err != nil {
		return "", "", err
	}
	return sa.Namespace, sa.Name, nil
}

// createGrant lets a ServiceAccount obtain the caller's access token at a
// provider, optionally until expires_at.
func (s *Server) createGrant(c *gin.Context) {
	id := identity(c)
	ctx := c.Request.Context()
	p, ok := s.opt.Providers.Get(c.Param("provider"))
	if !ok {
		// 400, not 404: the grant names something that does not exist,
		// like its ServiceAccount below.
		_ = c.Error(badRequest("unknown_provider", "There is no provider with this id; a grant must name one."))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxJSONBody))
	if err != nil {
		_ = c.Error(badRequest("invalid_request", "The request body is too large or unreadable."))
		return
	}
	var req grantRequest
	if err := json.Unmarshal(body, &req); err != nil {
		_ = c.Error(badRequest("invalid_request", "The body must be a JSON object: {\"service_account\": \"namespace/name\", \"expires_at\": RFC 3339 time (optional)}."))
		return
	}
	raw := req.ServiceAccount
	if len(raw) == 0 {
		raw = req.ServiceAccountCamel
	}
	ns, name, err := parseServiceAccount(raw)
	if err != nil {
		_ = c.Error(badRequest("invalid_service_account", err.Error()+"."))
		return
	}
	exp := req.ExpiresAt
	if exp == nil {
		exp = req.ExpiresAtCamel
	}
	now := s.opt.Now()
	g, err := s.delegation.Grant(ctx, id.UserID, p.ID, ns, name, exp)
	if err != nil {
		_ = c.Error(err)
		return
	}
	uid := g.ServiceAccountUID
	detail := map[string]any{"grant_id": g.ID, "service_account": ns + "/" + name, "service_account_uid": uid}
	if g.ExpiresAt != nil {
		detail["expires_at"] = g.ExpiresAt.Format(time.RFC3339)
	}
	s.audit(c, id.UserID, "user:"+id.UserID, ActionGrantCreate, p.ID, detail)
	s.log.InfoContext(ctx, "grant created", "grant", g.ID, "provider", p.ID, "user", id.UserID, "service_account", ns+"/"+name, "service_account_uid", uid)
	c.Header("Location", s.base()+"/api/v1.0/grants/"+strconv.FormatInt(g.ID, 10))
	c.JSON(http.StatusCreated, toGrantJSON(g, now))
}

// listGrants lists the caller's grants, revoked and expired ones included
// (with their state), newest first.
func (s *Server) listGrants(c *gin.Context) {
	id := identity(c)
	gs, err := s.delegation.ListGrants(c.Request.Context(), id.UserID)
	if err != nil {
		_ = c.Error(err)
		return
	}
	now := s.opt.Now()
	out := make([]grantJSON, 0, len(gs))
	for _, g := range gs {
		out = append(out, toGrantJSON(g, now))
	}
	c.JSON(http.StatusOK, out)
}

// revokeGrant revokes one of the caller's grants. It takes effect on the
// next token request on this replica (its cached grant is dropped) and
// within CacheTTL on the others. Revoking a revoked grant is not an error.
func (s *Server) revokeGrant(c *gin.Context) {
	id := identity(c)
	ctx := c.Request.Context()
	gid, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || gid <= 0 {
		_ = c.Error(delegation.ErrGrantNotFound())
		return
	}
	now := s.opt.Now()
	g, revoked, err := s.delegation.RevokeGrant(ctx, id.UserID, gid)
	if revoked {
		// Its tokens' disclosures leave the ledger too (their pending
		// repeats are still summarised): nothing more is disclosed under it.
		s.grantUse.ForgetGrant(gid)
	}
	if err != nil {
		_ = c.Error(err)
		return
	}
	if revoked {
		s.audit(c, id.UserID, "user:"+id.UserID, ActionGrantRevoke, g.Provider,
			map[string]any{"grant_id": g.ID, "service_account": g.ServiceAccountNamespace + "/" + g.ServiceAccountName})
		s.log.InfoContext(ctx, "grant revoked", "grant", g.ID, "provider", g.Provider, "user", id.UserID)
	}
	c.JSON(http.StatusOK, toGrantJSON(g, now))
}

// auditJSON is an audit event as the API shows it. Detail never holds a
// token.
type auditJSON struct {
	ID       int64           `json:"id"`
	Time     time.Time       `json:"time"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"`
	Provider string          `json:"provider"`
	Detail   json.RawMessage `json:"detail"`
}

type auditPage struct {
	Events []auditJSON `json:"events"`
	// Next is the `before` value of the next (older) page; null at the end.
	Next *int64 `json:"next"`
}

// listAudit lists the caller's audit events, newest first, in pages.
func (s *Server) listAudit(c *gin.Context) {
	id := identity(c)
	limit := 50
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			_ = c.Error(badRequest("invalid_request", "limit must be a number between 1 and 500."))
			return
		}
		limit = n
	}
	var before int64
	if v := c.Query("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			_ = c.Error(badRequest("invalid_request", "before must be an event id."))
			return
		}
		before = n
	}
	// One more than asked tells whether there is a next page.
	evs, err := s.opt.Store.ListAudit(c.Request.Context(), id.UserID, before, limit+1)
	if err != nil {
		_ = c.Error(err)
		return
	}
	page := auditPage{Events: make([]auditJSON, 0, min(len(evs), limit))}
	for i, e := range evs {
		if i == limit {
			n := evs[i-1].ID
			page.Next = &n
			break
		}
		d := json.RawMessage(e.Detail)
		if len(bytes.TrimSpace(d)) == 0 || !json.Valid(d) {
			d = json.RawMessage("{}")
		}
		page.Events = append(page.Events, auditJSON{ID: e.ID, Time: e.Time.UTC(), Actor: e.Actor, Action: e.Action, Provider: e.Provider, Detail: d})
	}
	c.JSON(http.StatusOK, page)
}

// audit appends an event about the request's person; see auditCtx.
func (s *Server) audit(c *gin.Context, userID, actor, action, provider string, detail map[string]any) {
	_ = s.auditCtx(c.Request.Context(), userID, actor, action, provider, detail)
}
