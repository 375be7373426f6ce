package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"gorm.io/gorm"
)

// The audit trail is a hash chain: each row's Hash is SHA-256 over its
// canonical encoding (auditCanonical), which includes PrevHash, the Hash of the
// row before it by id. Every audit insert goes through appendAudit, which
// serialises appenders (Postgres: a transaction-scoped advisory lock taken
// inside the inserting transaction, so the order of ids is the order of the
// chain across all processes; SQLite: its single writer) and reads the last
// hash under that lock. Triggers refuse UPDATE, DELETE and TRUNCATE.
//
// Rows written before migration 0004 have Hash "": they form an unchained
// prefix and the chain starts after them (its first row has PrevHash "").
// A hash chain cannot show that rows were cut off its end; it shows every
// edit, insertion or deletion before the last row.

// auditChainLockKey is the pg_advisory_xact_lock key serialising appenders.
const auditChainLockKey = 0x76696175 // "viau"

// Bounds of audit listing.
const (
	maxAuditFilterLen = 256
	verifyBatch       = 1000
)

// normalizeAudit fixes the fields the hash covers in the form the databases
// give back: time in UTC at microsecond precision, details re-encoded from a
// parsed value (jsonb reorders keys and rewrites numbers).
func normalizeAudit(a *AuditEvent) error {
	a.At = a.At.UTC().Truncate(time.Microsecond)
	canon, err := canonicalJSON(a.Details)
	if err != nil {
		return fmt.Errorf("encoding audit details: %w", err)
	}
	a.Details = canon
	return nil
}

func canonicalJSON(raw JSON) (JSON, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return JSON("{}"), nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v) // map keys sorted; numbers as float64
	if err != nil {
		return nil, err
	}
	return JSON(b), nil
}

// ComputeHash returns the chain hash of a (hex SHA-256 over a versioned JSON
// array of its fields and PrevHash).
func (a AuditEvent) ComputeHash() (string, error) {
	details, err := canonicalJSON(a.Details)
	if err != nil {
		return "", fmt.Errorf("encoding audit details: %w", err)
	}
	enc, err := json.Marshal([]any{
		"viworks-audit-v1", a.ID, a.At.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z"),
		a.Actor, a.Action, a.Target, a.RequestID, a.ClientIP, json.RawMessage(details), a.PrevHash,
	})
	if err != nil {
		return "", fmt.Errorf("encoding audit event: %w", err)
	}
	sum := sha256.Sum256(enc)
	return hex.EncodeToString(sum[:]), nil
}

type auditContextKey struct{}

// AuditContext is the origin of the requests a context serves: appendAudit
// fills an event's empty ClientIP and RequestID from it, so every audit event
// written while serving an API request names where it came from.
type AuditContext struct {
	ClientIP  string
	RequestID string
}

// WithAuditContext returns ctx carrying ac.
func WithAuditContext(ctx context.Context, ac AuditContext) context.Context {
	return context.WithValue(ctx, auditContextKey{}, ac)
}

// insertAudit appends a with its target set; a zero At becomes now.
func insertAudit(tx *gorm.DB, a AuditEvent, target string, now time.Time) error {
	a.Target = target
	if a.At.IsZero() {
		a.At = now
	}
	return appendAudit(tx, a)
}

// appendAudit is the one way an audit event is written. tx must be a
// transaction; on Postgres the advisory lock it takes is held until tx ends, so
// callers append as the last statement of their transaction.
func appendAudit(tx *gorm.DB, a AuditEvent) error { return appendAudits(tx, []AuditEvent{a}) }

// appendAudits chains and inserts events in order under one lock: a batch
// costs one lock, one read of the chain head and one insert.
func appendAudits(tx *gorm.DB, es []AuditEvent) error {
	if len(es) == 0 {
		return nil
	}
	var ac AuditContext
	if tx.Statement != nil && tx.Statement.Context != nil {
		ac, _ = tx.Statement.Context.Value(auditContextKey{}).(AuditContext)
	}
	rows := make([]AuditEvent, len(es))
	for i, a := range es {
		if a.At.IsZero() {
			a.At = time.Now()
		}
		if a.ClientIP == "" {
			a.ClientIP = ac.ClientIP
		}
		if a.RequestID == "" {
			a.RequestID = ac.RequestID
		}
		if err := normalizeAudit(&a); err != nil {
			return err
		}
		rows[i] = a
	}
	postgres := tx.Dialector.Name() == Postgres
	var head string
	ids := make([]int64, 0, len(rows))
	if postgres {
		if err := tx.Exec(`SELECT pg_advisory_xact_lock(?)`, auditChainLockKey).Error; err != nil {
			return fmt.Errorf("locking audit chain: %w", err)
		}
		// One round trip: the chain head (read after the lock, in a new
		// statement, so it sees the previous holder's commit) and the new ids.
		var got []struct {
			Hash string
			Next int64
		}
		err := tx.Raw(`SELECT coalesce((SELECT hash FROM audit_events ORDER BY id DESC LIMIT 1), '') AS hash,
			nextval(pg_get_serial_sequence('audit_events', 'id')) AS next FROM generate_series(1, ?)`, len(rows)).Scan(&got).Error
		if err != nil {
			return fmt.Errorf("reading audit chain head: %w", err)
		}
		if len(got) != len(rows) {
			return fmt.Errorf("reading audit chain head: %d ids for %d events", len(got), len(rows))
		}
		head = got[0].Hash
		for _, g := range got {
			ids = append(ids, g.Next)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	} else {
		var last struct {
			ID   int64
			Hash string
		}
		if err := tx.Raw(`SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1`).Scan(&last).Error; err != nil {
			return fmt.Errorf("reading audit chain head: %w", err)
		}
		head = last.Hash
		for i := range rows {
			ids = append(ids, last.ID+1+int64(i)) // the single writer holds the database; rows are never deleted
		}
	}
	for i := range rows {
		rows[i].ID = ids[i]
		rows[i].PrevHash = head
		h, err := rows[i].ComputeHash()
		if err != nil {
			return err
		}
		rows[i].Hash = h
		head = h
	}
	if err := tx.CreateInBatches(&rows, 500).Error; err != nil {
		return fmt.Errorf("inserting audit event: %w", err)
	}
	return nil
}

// RecordAudit appends one audit event in its own transaction.
func (s *Store) RecordAudit(ctx context.Context, e AuditEvent) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return appendAudit(tx, e) })
	if err != nil {
		return fmt.Errorf("recording audit event: %w", err)
	}
	return nil
}

// CountAudit counts audit events of one action.
func (s *Store) CountAudit(ctx context.Context, action string) (int64, error) {
	var n int64
	if err := s.db.WithContext(ctx).Model(&AuditEvent{}).Where("action = ?", action).Count(&n).Error; err != nil {
		return 0, fmt.Errorf("counting audit events: %w", err)
	}
	return n, nil
}

// AuditFilter selects audit events, newest first.
type AuditFilter struct {
	Actor  string
	Action string
	Target string
	From   *time.Time // at >= From
	To     *time.Time // at < To
	Page   Page
}

func encodeAuditCursor(id int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("audit:" + strconv.FormatInt(id, 10)))
}

func decodeAuditCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, ErrBadCursor
	}
	rest, ok := bytes.CutPrefix(b, []byte("audit:"))
	if !ok {
		return 0, ErrBadCursor
	}
	id, err := strconv.ParseInt(string(rest), 10, 64)
	if err != nil || id <= 0 {
		return 0, ErrBadCursor
	}
	return id, nil
}

// ListAudit lists audit events newest first (by id, which is chain order).
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, string, error) {
	var errs ValidationErrors
	for _, c := range []struct{ field, v string }{{"actor", f.Actor}, {"action", f.Action}, {"target", f.Target}} {
		if len(c.v) > maxAuditFilterLen {
			errs = append(errs, ValidationError{Field: c.field, Message: fmt.Sprintf("longer than %d bytes", maxAuditFilterLen)})
		}
	}
	if f.From != nil && f.To != nil && !f.From.Before(*f.To) {
		errs = append(errs, ValidationError{Field: "to", Message: "must be after from"})
	}
	if len(errs) > 0 {
		return nil, "", errs
	}
	q := s.db.WithContext(ctx).Model(&AuditEvent{})
	if f.Page.Cursor != "" {
		id, err := decodeAuditCursor(f.Page.Cursor)
		if err != nil {
			return nil, "", err
		}
		q = q.Where("id < ?", id)
	}
	if f.Actor != "" {
		q = q.Where("actor = ?", f.Actor)
	}
	if f.Action != "" {
		q = q.Where("action = ?", f.Action)
	}
	if f.Target != "" {
		q = q.Where("target = ?", f.Target)
	}
	if f.From != nil {
		q = q.Where("at >= ?", f.From.UTC())
	}
	if f.To != nil {
		q = q.Where("at < ?", f.To.UTC())
	}
	limit := f.Page.limit()
	var rows []AuditEvent
	if err := q.Order("id DESC").Limit(limit + 1).Find(&rows).Error; err != nil {
		return nil, "", fmt.Errorf("listing audit events: %w", err)
	}
	if len(rows) <= limit {
		return rows, "", nil
	}
	rows = rows[:limit]
	return rows, encodeAuditCursor(rows[len(rows)-1].ID), nil
}

// AuditVerification is the outcome of VerifyAudit.
type AuditVerification struct {
	OK        bool   `json:"ok"`
	Checked   int64  `json:"checked"`             // chained rows whose hash was recomputed
	Unchained int64  `json:"unchained"`           // rows written before the chain began
	BrokenID  int64  `json:"broken_id,omitempty"` // first row that does not verify
	Reason    string `json:"reason,omitempty"`
}

// VerifyAudit walks the whole trail in id order and recomputes the chain; it
// names the first row whose link or hash does not match.
func (s *Store) VerifyAudit(ctx context.Context) (AuditVerification, error) {
	var v AuditVerification
	var after int64
	prev := ""
	chained := false
	for {
		var rows []AuditEvent
		if err := s.db.WithContext(ctx).Where("id > ?", after).Order("id").Limit(verifyBatch).Find(&rows).Error; err != nil {
			return v, fmt.Errorf("verifying audit trail: %w", err)
		}
		for _, r := range rows {
			after = r.ID
			if r.Hash == "" && r.PrevHash == "" && !chained {
				v.Unchained++
				continue
			}
			chained = true
			if r.PrevHash != prev {
				v.BrokenID, v.Reason = r.ID, "prev_hash does not match the hash of the row before it (a row was changed, removed or inserted)"
				return v, nil
			}
			h, err := r.ComputeHash()
			if err != nil || h != r.Hash {
				v.BrokenID, v.Reason = r.ID, "hash does not match the row's contents (the row was changed)"
				return v, nil
			}
			prev = r.Hash
			v.Checked++
		}
		if len(rows) < verifyBatch {
			break
		}
	}
	v.OK = true
	return v, nil
}
