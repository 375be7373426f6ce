package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/store"
)

// audit records a security event outside any other write; failures are logged.
func (s *Server) audit(c *gin.Context, actor, action, target string, details map[string]any) {
	raw := auditDetails(details)
	e := store.AuditEvent{Actor: actor, Action: action, Target: target, RequestID: c.GetString(ctxRequestID), ClientIP: c.ClientIP(), Details: raw}
	if err := s.store.RecordAudit(context.WithoutCancel(c.Request.Context()), e); err != nil {
		s.log.WithError(err).WithFields(map[string]any{"action": action, "request_id": e.RequestID}).Warn("writing audit event failed")
	}
}

// auditEvent is the audit event of the current request by its principal.
func auditEvent(c *gin.Context, action string, details map[string]any) store.AuditEvent {
	return store.AuditEvent{Actor: principal(c).Subject, Action: action, RequestID: c.GetString(ctxRequestID), ClientIP: c.ClientIP(), Details: auditDetails(details)}
}

// auditDetails encodes an event's details: always a JSON object, {} when
// there are none (never null, which the API document does not allow).
func auditDetails(details map[string]any) []byte {
	if details == nil {
		details = map[string]any{}
	}
	raw, _ := json.Marshal(details)
	return raw
}

// AuditEventView is the API shape of an audit event.
type AuditEventView struct {
	ID        int64           `json:"id"`
	At        time.Time       `json:"at"`
	Actor     string          `json:"actor"`
	Action    string          `json:"action"`
	Target    string          `json:"target"`
	RequestID string          `json:"request_id"`
	ClientIP  string          `json:"client_ip"`
	Details   json.RawMessage `json:"details"`
	KeyID     string          `json:"key_id"`
	PrevHash  string          `json:"prev_hash"`
	Hash      string          `json:"hash"`
}

func (s *Server) listAudit(c *gin.Context) {
	listPage(s, c, resAuditEvent, parseAuditFilter, s.store.ListAudit, auditEventView)
}

// parseAuditFilter reads the filters of GET /audit: actor, action, target,
// from and to.
func parseAuditFilter(c *gin.Context, page store.Page, errs *[]FieldError) store.AuditFilter {
	f := store.AuditFilter{Actor: c.Query("actor"), Action: c.Query("action"), Target: c.Query("target"), Page: page}
	for _, q := range []struct {
		name string
		dst  **time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		v := c.Query(q.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil || len(v) > 64 {
			*errs = append(*errs, FieldError{Field: q.name, Message: "must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z"})
			continue
		}
		*q.dst = &t
	}
	return f
}

func auditEventView(e store.AuditEvent) AuditEventView {
	details := json.RawMessage(e.Details)
	if len(details) == 0 || string(details) == "null" { // recorded before details were always an object
		details = json.RawMessage(`{}`)
	}
	return AuditEventView{ID: e.ID, At: e.At, Actor: e.Actor, Action: e.Action, Target: e.Target,
		RequestID: e.RequestID, ClientIP: e.ClientIP, Details: details, KeyID: e.KeyID, PrevHash: e.PrevHash, Hash: e.Hash}
}

// AuditHeads is where the audit chain's head is kept outside the database
// (audithead.Keeper).
type AuditHeads interface {
	Load(ctx context.Context) (*store.AuditHead, error)
}

func (s *Server) verifyAudit(c *gin.Context) {
	var kept *store.AuditHead
	if s.cfg.AuditHeads != nil {
		var err error
		if kept, err = s.cfg.AuditHeads.Load(c.Request.Context()); err != nil {
			s.internalError(c, "loading the kept audit head failed", err)
			return
		}
	}
	v, err := s.store.VerifyAudit(c.Request.Context(), kept)
	if err != nil {
		s.internalError(c, "verifying audit trail failed", err)
		return
	}
	c.JSON(http.StatusOK, v)
}
