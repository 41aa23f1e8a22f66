package server

import (
	"net/http"
	"strconv"

	"github.com/tokenstore/tokenstore/internal/fault"

	"github.com/gin-gonic/gin"

	"github.com/tokenstore/tokenstore/internal/admin"
	"github.com/tokenstore/tokenstore/internal/workload"
)

// adminHandlers are the admin API's handlers (incident response,
// internal/admin), behind adminOnly.
type adminHandlers struct {
	s   *Server
	svc *admin.Service
}

// adminAPI builds the admin service on the server's broker, delegation
// service and audit writer: revocations meet requests at the same row
// locks and caches, and grant revocations drop their disclosures.
func (s *Server) adminAPI() *adminHandlers {
	svc, err := admin.New(admin.Options{Store: s.opt.Store, Broker: s.broker, Delegation: s.delegation, Audit: s.audits.Append,
		GrantRevoked: s.grantUse.ForgetGrant, Now: s.opt.Now, Logger: s.log})
	if err != nil {
		// New refuses only missing dependencies, which server.New built.
		panic("server: " + err.Error())
	}
	return &adminHandlers{s: s, svc: svc}
}

// adminOnly lets through callers holding one of ADMIN_ROLES (read from
// the login issuer's claims at ROLES_CLAIM). Without ADMIN_ROLES the admin
// API is off and answers 404, as an unknown endpoint does; with it, any
// other caller gets 403.
func (s *Server) adminOnly(c *gin.Context) {
	roles := s.opt.Settings.AdminRoles
	if len(roles) == 0 {
		c.Abort()
		_ = c.Error(&fault.Error{Status: http.StatusNotFound, Code: "not_found", Message: "No such endpoint."})
		return
	}
	id := identity(c)
	if !id.HasAnyRole(roles) {
		s.log.WarnContext(c.Request.Context(), "admin API refused: caller holds no admin role", "user", id.UserID, "route", c.FullPath())
		c.Abort()
		_ = c.Error(&fault.Error{Status: http.StatusForbidden, Code: "admin_role_required",
			Message: "This endpoint is for operators: your login holds none of the roles ADMIN_ROLES names."})
		return
	}
	c.Next()
}

// actor is the audit actor of the admin API's caller.
func (h *adminHandlers) actor(c *gin.Context) string {
	return admin.ActorAPIPrefix + identity(c).UserID
}

// answer renders v, or records err (an *admin.Error is rendered as any
// refusal is).
func (h *adminHandlers) answer(c *gin.Context, v any, err error) {
	if err != nil {
		_ = c.Error(err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, v)
}

// person shows what tokenstore holds for a person.
func (h *adminHandlers) person(c *gin.Context) {
	p, err := h.svc.Person(c.Request.Context(), h.actor(c), c.Param("user"))
	h.answer(c, p, err)
}

// credentials lists a person's credentials (never a token).
func (h *adminHandlers) credentials(c *gin.Context) {
	cs, err := h.svc.Credentials(c.Request.Context(), h.actor(c), c.Param("user"))
	h.answer(c, cs, err)
}

// revokeCredentials revokes every credential of a person.
func (h *adminHandlers) revokeCredentials(c *gin.Context) {
	rs, err := h.svc.RevokeCredentials(c.Request.Context(), h.actor(c), c.Param("user"))
	h.answer(c, rs, err)
}

// revokeCredential revokes a person's credential at one provider.
func (h *adminHandlers) revokeCredential(c *gin.Context) {
	r, err := h.svc.RevokeCredential(c.Request.Context(), h.actor(c), c.Param("user"), c.Param("provider"))
	h.answer(c, r, err)
}

// grants lists a person's grants.
func (h *adminHandlers) grants(c *gin.Context) {
	gs, err := h.svc.Grants(c.Request.Context(), h.actor(c), c.Param("user"))
	h.answer(c, gs, err)
}

// revokeGrants revokes every grant of a person.
func (h *adminHandlers) revokeGrants(c *gin.Context) {
	rs, err := h.svc.RevokeGrants(c.Request.Context(), h.actor(c), c.Param("user"))
	h.answer(c, rs, err)
}

// endSessions ends every session of a person.
func (h *adminHandlers) endSessions(c *gin.Context) {
	user := c.Param("user")
	n, err := h.svc.EndSessions(c.Request.Context(), h.actor(c), user)
	h.answer(c, gin.H{"user_id": user, "sessions_ended": n}, err)
}

// revokeGrant revokes one grant by id, whoever's it is.
func (h *adminHandlers) revokeGrant(c *gin.Context) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		_ = c.Error(&fault.Error{Status: http.StatusNotFound, Code: "grant_not_found", Message: "There is no grant with this id."})
		return
	}
	r, err := h.svc.RevokeGrant(c.Request.Context(), h.actor(c), id)
	h.answer(c, r, err)
}

// serviceAccount reads the path's namespace and name, or records the refusal.
func serviceAccountParam(c *gin.Context) (string, string, bool) {
	ns, name := c.Param("namespace"), c.Param("name")
	if err := workload.CheckServiceAccount(ns, name); err != nil {
		_ = c.Error(badRequest("invalid_service_account", err.Error()+"."))
		return "", "", false
	}
	return ns, name, true
}

// serviceAccountGrants lists every grant to a ServiceAccount.
func (h *adminHandlers) serviceAccountGrants(c *gin.Context) {
	ns, name, ok := serviceAccountParam(c)
	if !ok {
		return
	}
	gs, err := h.svc.ServiceAccountGrants(c.Request.Context(), h.actor(c), ns, name)
	h.answer(c, gs, err)
}

// revokeServiceAccountGrants revokes every grant to a ServiceAccount (with
// ?uid=, only those a ServiceAccount of that uid could use).
func (h *adminHandlers) revokeServiceAccountGrants(c *gin.Context) {
	ns, name, ok := serviceAccountParam(c)
	if !ok {
		return
	}
	rs, err := h.svc.RevokeServiceAccountGrants(c.Request.Context(), h.actor(c), ns, name, c.Query("uid"))
	h.answer(c, rs, err)
}
