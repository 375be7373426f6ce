package apiserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/alert"
	"github.com/viworks/backend-agent/pkg/store"
)

// Bounds of the alerting endpoints.
const (
	maxAlertBodyBytes = 64 << 10
	maxWebhookURLLen  = 2048
	minSecretLen      = 16
	maxSecretLen      = 256
	maxCursorLen      = 512
)

// AlertRuleRequest is the body of POST /api/v1/alert-rules.
type AlertRuleRequest struct {
	Name    string          `json:"name"`
	Kind    string          `json:"kind"`
	Params  json.RawMessage `json:"params"`
	Enabled *bool           `json:"enabled"` // default true
}

// AlertRuleView is the API shape of an alert rule.
type AlertRuleView struct {
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Kind      string          `json:"kind"`
	Params    json.RawMessage `json:"params"`
	Enabled   bool            `json:"enabled"`
	CreatedBy string          `json:"created_by"`
	CreatedAt time.Time       `json:"created_at"`
}

func alertRuleView(r store.AlertRule) AlertRuleView {
	params := json.RawMessage(r.Params)
	if len(params) == 0 {
		params = json.RawMessage(`{}`)
	}
	return AlertRuleView{ID: r.ID, Name: r.Name, Kind: r.Kind, Params: params, Enabled: r.Enabled, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt}
}

// AlertView is the API shape of an alert: the document webhooks receive too.
type AlertView = alert.Doc

// WebhookRequest is the body of POST /api/v1/webhooks.
type WebhookRequest struct {
	URL     string  `json:"url"`
	Secret  *string `json:"secret"`  // default: 32 random bytes, hex
	Enabled *bool   `json:"enabled"` // default true
}

// WebhookView is the API shape of a webhook. Secret is set only in the
// answer to its creation.
type WebhookView struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"` // a password in it is masked
	Enabled   bool      `json:"enabled"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	Secret    string    `json:"secret,omitempty"`
}

func webhookView(w store.Webhook) WebhookView {
	return WebhookView{ID: w.ID, URL: maskURL(w.URL), Enabled: w.Enabled, CreatedBy: w.CreatedBy, CreatedAt: w.CreatedAt}
}

// DeliveryView is the API shape of a webhook delivery.
type DeliveryView struct {
	ID            string          `json:"id"`
	WebhookID     string          `json:"webhook_id"`
	AlertID       string          `json:"alert_id"`
	Event         string          `json:"event"`
	Status        string          `json:"status"`
	Attempts      int             `json:"attempts"`
	LastError     string          `json:"last_error"`
	ResponseCode  *int            `json:"response_code"`
	ResponseBody  string          `json:"response_body"`  // empty unless the server keeps answers' bodies
	ResponseBytes *int64          `json:"response_bytes"` // size of the answer's body (counted up to 64 KiB)
	Payload       json.RawMessage `json:"payload"`
	CreatedAt     time.Time       `json:"created_at"`
	LastAttemptAt *time.Time      `json:"last_attempt_at"`
	DeliveredAt   *time.Time      `json:"delivered_at"`
}

func deliveryView(d store.WebhookDelivery) DeliveryView {
	payload := json.RawMessage(d.Payload)
	if len(payload) == 0 {
		payload = json.RawMessage(`{}`)
	}
	return DeliveryView{ID: d.ID, WebhookID: d.WebhookID, AlertID: d.AlertID, Event: d.Event, Status: d.Status,
		Attempts: d.Attempts, LastError: d.LastError, ResponseCode: d.ResponseCode, ResponseBody: d.ResponseBody,
		ResponseBytes: d.ResponseBytes, Payload: payload, CreatedAt: d.CreatedAt, LastAttemptAt: d.LastAttemptAt, DeliveredAt: d.DeliveredAt}
}

// maskURL hides a password in the URL's user info.
func maskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Redacted()
}

// auditURL is the part of a webhook URL safe for the audit trail: scheme,
// host and path (no user info, no query, which may carry tokens).
func auditURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// readStrict reads a JSON object body of at most maxAlertBodyBytes into dst,
// refusing unknown fields and trailing data. It writes the problem and
// reports false when the body is not acceptable.
func readStrict(c *gin.Context, dst any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxAlertBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", maxAlertBodyBytes), nil)
			return false
		}
		writeProblem(c, http.StatusBadRequest, "could not read the request body", nil)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		writeProblem(c, http.StatusBadRequest, "invalid request body", []FieldError{{Field: "body", Message: jsonProblem(err)}})
		return false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeProblem(c, http.StatusBadRequest, "invalid request body", []FieldError{{Field: "body", Message: "trailing data after the JSON object"}})
		return false
	}
	return true
}

func (s *Server) createAlertRule(c *gin.Context) {
	var req AlertRuleRequest
	if !readStrict(c, &req) {
		return
	}
	var errs []FieldError
	if strings.TrimSpace(req.Name) == "" || len(req.Name) > store.MaxRuleNameLen {
		errs = append(errs, FieldError{Field: "name", Message: fmt.Sprintf("is required: 1-%d bytes", store.MaxRuleNameLen)})
	}
	if req.Kind == "" {
		errs = append(errs, FieldError{Field: "kind", Message: "is required: one of " + strings.Join(store.AlertKinds, ", ")})
	}
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid alert rule", errs)
		return
	}
	params, err := alert.CheckRule(req.Name, req.Kind, req.Params)
	var verrs store.ValidationErrors
	switch {
	case errors.As(err, &verrs):
		writeProblem(c, http.StatusBadRequest, "invalid alert rule", fieldErrors(verrs))
		return
	case err != nil:
		s.internalError(c, "creating alert rule failed", err)
		return
	}
	enabled := req.Enabled == nil || *req.Enabled
	p := principal(c)
	details, _ := json.Marshal(map[string]any{"name": req.Name, "kind": req.Kind, "params": req.Params, "enabled": enabled})
	rule, err := s.store.CreateAlertRule(c.Request.Context(), store.NewAlertRule{
		Name: req.Name, Kind: req.Kind, Params: params, Enabled: enabled, CreatedBy: p.Subject,
		Audit: store.AuditEvent{Actor: p.Subject, Action: "alert_rule.create", RequestID: c.GetString(ctxRequestID), Details: details},
	})
	if s.storeFailed(c, resAlertRule, "creating alert rule", err) {
		return
	}
	c.Header("Location", "/api/v1/alert-rules/"+rule.ID)
	c.JSON(http.StatusCreated, alertRuleView(rule))
}

func (s *Server) listAlertRules(c *gin.Context) {
	listPage(s, c, resAlertRule, pageOnly, s.store.ListAlertRules, alertRuleView)
}

func (s *Server) deleteAlertRule(c *gin.Context) {
	s.removeByID(c, resAlertRule, "alert_rule.delete", nil, s.store.DeleteAlertRule)
}

func (s *Server) listAlerts(c *gin.Context) {
	listPage(s, c, resAlert, parseAlertFilter, s.store.ListAlerts, alert.NewDoc)
}

// parseAlertFilter reads the filters of GET /alerts: state and rule_id.
func parseAlertFilter(c *gin.Context, page store.Page, errs *[]FieldError) store.AlertFilter {
	state := c.Query("state")
	if state != "" && state != store.AlertStateFiring && state != store.AlertStateResolved {
		*errs = append(*errs, FieldError{Field: "state", Message: "must be firing or resolved"})
	}
	ruleID := c.Query("rule_id")
	if ruleID != "" && !validUUID(ruleID) {
		*errs = append(*errs, FieldError{Field: "rule_id", Message: "must be an alert rule id (a UUID)"})
	}
	return store.AlertFilter{State: state, RuleID: ruleID, Page: page}
}

// validateWebhook checks a webhook request; it returns the secret to store.
func validateWebhook(req WebhookRequest) (string, []FieldError) {
	var errs []FieldError
	switch u, err := url.Parse(req.URL); {
	case req.URL == "":
		errs = append(errs, FieldError{Field: "url", Message: "is required: an http or https URL"})
	case len(req.URL) > maxWebhookURLLen:
		errs = append(errs, FieldError{Field: "url", Message: fmt.Sprintf("longer than %d bytes", maxWebhookURLLen)})
	case err != nil:
		errs = append(errs, FieldError{Field: "url", Message: "is not a valid URL"})
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, FieldError{Field: "url", Message: "must use http or https"})
	case u.Host == "" || u.Hostname() == "":
		errs = append(errs, FieldError{Field: "url", Message: "must name a host"})
	case u.User != nil:
		errs = append(errs, FieldError{Field: "url", Message: "must not carry user info (user:password@); receivers authenticate deliveries by their signature"})
	case strings.ContainsFunc(req.URL, func(r rune) bool { return r <= 0x20 || r == 0x7f }):
		errs = append(errs, FieldError{Field: "url", Message: "must not contain spaces or control characters"})
	}
	secret := ""
	if req.Secret != nil {
		secret = *req.Secret
		if len(secret) < minSecretLen || len(secret) > maxSecretLen || strings.ContainsFunc(secret, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			errs = append(errs, FieldError{Field: "secret", Message: fmt.Sprintf("must be %d-%d bytes without control characters (omit it to get a random one)", minSecretLen, maxSecretLen)})
		}
	} else {
		b := make([]byte, 32)
		_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
		secret = hex.EncodeToString(b)
	}
	return secret, errs
}

func (s *Server) createWebhook(c *gin.Context) {
	var req WebhookRequest
	if !readStrict(c, &req) {
		return
	}
	secret, errs := validateWebhook(req)
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid webhook", errs)
		return
	}
	if err := s.cfg.Webhooks.CheckURL(c.Request.Context(), s.cfg.Resolver, req.URL); err != nil {
		writeProblem(c, http.StatusUnprocessableEntity, "the webhook's target is not allowed",
			[]FieldError{{Field: "url", Message: err.Error()}})
		return
	}
	enabled := req.Enabled == nil || *req.Enabled
	p := principal(c)
	details, _ := json.Marshal(map[string]any{"url": auditURL(req.URL), "enabled": enabled, "secret_generated": req.Secret == nil})
	w, err := s.store.CreateWebhook(c.Request.Context(), store.NewWebhook{
		URL: req.URL, Secret: secret, Enabled: enabled, CreatedBy: p.Subject,
		Audit: store.AuditEvent{Actor: p.Subject, Action: "webhook.create", RequestID: c.GetString(ctxRequestID), Details: details},
	})
	if s.storeFailed(c, resWebhook, "creating webhook", err) {
		return
	}
	v := webhookView(w)
	v.Secret = w.Secret // shown this once
	c.Header("Location", "/api/v1/webhooks/"+w.ID)
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusCreated, v)
}

func (s *Server) listWebhooks(c *gin.Context) {
	listPage(s, c, resWebhook, pageOnly, s.store.ListWebhooks, webhookView)
}

func (s *Server) deleteWebhook(c *gin.Context) {
	s.removeByID(c, resWebhook, "webhook.delete", nil, s.store.DeleteWebhook)
}

// listDeliveries lists the deliveries of the webhook named by :id, which
// must exist.
func (s *Server) listDeliveries(c *gin.Context) {
	id, ok := idParam(c, resWebhook)
	if !ok {
		return
	}
	listPage(s, c, resDelivery,
		func(_ *gin.Context, page store.Page, _ *[]FieldError) store.DeliveryFilter {
			return store.DeliveryFilter{WebhookID: id, Page: page}
		},
		func(ctx context.Context, f store.DeliveryFilter) ([]store.WebhookDelivery, string, error) {
			if _, err := s.store.GetWebhook(ctx, f.WebhookID); err != nil {
				return nil, "", fmt.Errorf("getting webhook: %w", err)
			}
			return s.store.ListDeliveries(ctx, f)
		},
		deliveryView)
}
