package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"gorm.io/gorm"
)

// The audit trail is a keyed hash chain: each row's Hash is HMAC-SHA256,
// under the audit key named by its KeyID, over its canonical encoding
// (auditCanonical), which includes PrevHash, the Hash of the row before it by
// id. The key lives in the services' configuration, never in the database, so
// whoever can write to the database but does not hold the key cannot forge a
// row or re-chain the rows after one they changed. Every audit insert goes
// through appendAudits, which serialises appenders (Postgres: a
// transaction-scoped advisory lock taken inside the inserting transaction, so
// the order of ids is the order of the chain across all processes; SQLite: its
// single writer) and reads the last hash under that lock. Triggers refuse
// UPDATE, DELETE and TRUNCATE.
//
// audit_chain (migration 0009) records keyed_from, the id the keyed chain
// starts at: rows before it are legacy (reported, never called verified) and
// every row from it on must be chained under a known key. A chain cannot show
// that its newest rows were cut off: the head (last id, hash, count), signed
// with the key, is kept outside the table (package audithead) and VerifyAudit
// compares the table against it.

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

// auditMAC returns the chain hash of a under key (hex HMAC-SHA256 over a
// versioned JSON array of its fields, its KeyID and PrevHash).
func auditMAC(key []byte, a AuditEvent) (string, error) {
	details, err := canonicalJSON(a.Details)
	if err != nil {
		return "", fmt.Errorf("encoding audit details: %w", err)
	}
	enc, err := json.Marshal([]any{
		"viworks-audit-v2", a.KeyID, a.ID, a.At.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z"),
		a.Actor, a.Action, a.Target, a.RequestID, a.ClientIP, json.RawMessage(details), a.PrevHash,
	})
	if err != nil {
		return "", fmt.Errorf("encoding audit event: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(enc)
	return hex.EncodeToString(m.Sum(nil)), nil
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
func (s *Store) insertAudit(tx *gorm.DB, a AuditEvent, target string, now time.Time) error {
	a.Target = target
	if a.At.IsZero() {
		a.At = now
	}
	return s.appendAudit(tx, a)
}

// appendAudit is the one way an audit event is written. tx must be a
// transaction; on Postgres the advisory lock it takes is held until tx ends, so
// callers append as the last statement of their transaction.
func (s *Store) appendAudit(tx *gorm.DB, a AuditEvent) error {
	return s.appendAudits(tx, []AuditEvent{a})
}

// appendAudits chains and inserts events in order under one lock: a batch
// costs one lock, one read of the chain head and one insert.
func (s *Store) appendAudits(tx *gorm.DB, es []AuditEvent) error {
	if len(es) == 0 {
		return nil
	}
	keyID, key := s.auditKeys.current()
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
		err := tx.Raw(`SELECT coalesce((SELECT hash FROM audit_events WHERE id >= (SELECT keyed_from FROM audit_chain) ORDER BY id DESC LIMIT 1), '') AS hash,
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
		if err := tx.Raw(`SELECT coalesce((SELECT max(id) FROM audit_events), 0) AS id,
			coalesce((SELECT hash FROM audit_events WHERE id >= (SELECT keyed_from FROM audit_chain) ORDER BY id DESC LIMIT 1), '') AS hash`).Scan(&last).Error; err != nil {
			return fmt.Errorf("reading audit chain head: %w", err)
		}
		head = last.Hash
		for i := range rows {
			ids = append(ids, last.ID+1+int64(i)) // the single writer holds the database; rows are never deleted
		}
	}
	for i := range rows {
		rows[i].ID = ids[i]
		rows[i].KeyID = keyID
		rows[i].PrevHash = head
		h, err := auditMAC(key, rows[i])
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
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return s.appendAudit(tx, e) })
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

// MinAuditKeyLen is the shortest audit key accepted, in bytes.
const MinAuditKeyLen = 32

// AuditKeyID names an audit key in the rows chained under it: the first 16 hex
// digits of SHA-256 over a label and the key (the key carries at least 256
// random bits, so its id tells nothing about it).
func AuditKeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("viworks-audit-key-id\x00"), key...))
	return hex.EncodeToString(sum[:8])
}

// auditKeyring holds the current audit key, which chains new rows and signs
// heads, and the previous keys rows and heads may still be under.
type auditKeyring struct {
	currentID string
	keys      map[string][]byte
}

func newAuditKeyring(current []byte, previous [][]byte) (auditKeyring, error) {
	kr := auditKeyring{currentID: AuditKeyID(current), keys: map[string][]byte{}}
	for i, k := range append([][]byte{current}, previous...) {
		if len(k) < MinAuditKeyLen {
			what := "the audit key"
			if i > 0 {
				what = fmt.Sprintf("previous audit key %d", i)
			}
			return auditKeyring{}, fmt.Errorf("store: %s is shorter than %d bytes", what, MinAuditKeyLen)
		}
		kr.keys[AuditKeyID(k)] = k
	}
	return kr, nil
}

func (kr auditKeyring) current() (string, []byte) { return kr.currentID, kr.keys[kr.currentID] }

// AuditHead is the newest row of the keyed chain, signed with the audit key:
// kept outside the database, it shows rows cut off the chain's end.
type AuditHead struct {
	KeyedFrom int64     `json:"keyed_from"` // the id the keyed chain starts at
	LastID    int64     `json:"last_id"`    // 0: no keyed row yet
	Hash      string    `json:"hash"`       // the last row's hash
	Count     int64     `json:"count"`      // keyed rows
	At        time.Time `json:"at"`         // when the head was read
	KeyID     string    `json:"key_id"`     // key the signature is under
	Signature string    `json:"signature"`  // hex HMAC-SHA256 over the fields above
}

// Behind reports whether h is older than o: fewer rows or an earlier last row.
func (h AuditHead) Behind(o AuditHead) bool { return h.LastID < o.LastID || h.Count < o.Count }

func (h AuditHead) mac(key []byte) (string, error) {
	enc, err := json.Marshal([]any{"viworks-audit-head-v1", h.KeyID, h.KeyedFrom, h.LastID, h.Hash, h.Count, h.At.UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return "", fmt.Errorf("encoding audit head: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(enc)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// ErrBadAuditHead is returned by CheckAuditHead for a head whose signature
// does not verify under a configured audit key.
var ErrBadAuditHead = errors.New("audit head signature does not verify")

// CheckAuditHead verifies h's signature under the current or a previous key.
func (s *Store) CheckAuditHead(h AuditHead) error {
	key, ok := s.auditKeys.keys[h.KeyID]
	if !ok {
		return fmt.Errorf("%w: unknown key %q", ErrBadAuditHead, h.KeyID)
	}
	want, err := h.mac(key)
	if err != nil {
		return err
	}
	if !hmac.Equal([]byte(want), []byte(h.Signature)) {
		return ErrBadAuditHead
	}
	return nil
}

// AuditVerification is the outcome of VerifyAudit.
type AuditVerification struct {
	OK        bool       `json:"ok"`
	Checked   int64      `json:"checked"`             // keyed rows whose link and hash were verified
	Legacy    int64      `json:"legacy"`              // rows before the keyed chain's start: not verified
	BrokenID  int64      `json:"broken_id,omitempty"` // first row that does not verify
	Truncated bool       `json:"truncated,omitempty"` // the table's head is behind the kept head
	Reason    string     `json:"reason,omitempty"`
	Head      AuditHead  `json:"head"`           // the table's head, signed
	Kept      *AuditHead `json:"kept,omitempty"` // the head kept outside the table, when there is one
}

// Reasons VerifyAudit gives.
const (
	reasonBadLink      = "prev_hash does not match the hash of the row before it (a row was changed, removed or inserted)"
	reasonBadHash      = "hash does not match the row's contents under its key (the row was changed or forged)"
	reasonUnchained    = "row after the keyed chain's start is not chained (its hash was removed or it was inserted)"
	reasonUnknownKey   = "row is chained under a key that is neither the current nor a previous audit key"
	reasonTruncated    = "the table's head is behind the head kept outside it (rows were removed from the end)"
	reasonHeadMismatch = "the kept head's row has another hash (rows were removed and replaced)"
	reasonKeptMissing  = "the kept head's row is missing (rows were removed from the end and others appended)"
	reasonStartMoved   = "the keyed chain's start differs from the kept head's (the start was moved)"
	reasonBadKept      = "the kept head's signature does not verify"
)

// auditKeyedFrom reads where the keyed chain starts.
func (s *Store) auditKeyedFrom(ctx context.Context) (int64, error) {
	var from []int64
	if err := s.db.WithContext(ctx).Raw(`SELECT keyed_from FROM audit_chain`).Scan(&from).Error; err != nil {
		return 0, fmt.Errorf("reading the audit chain start: %w", err)
	}
	if len(from) != 1 {
		return 0, fmt.Errorf("reading the audit chain start: %d rows in audit_chain, want 1", len(from))
	}
	return from[0], nil
}

// VerifyAudit walks the whole trail in id order and verifies the keyed chain;
// it names the first row whose link or hash does not match. When kept, the
// head kept outside the table, is given, the table's head must not be behind
// it and the kept head's row must still be the one it names.
func (s *Store) VerifyAudit(ctx context.Context, kept *AuditHead) (AuditVerification, error) {
	v := AuditVerification{Kept: kept}
	from, err := s.auditKeyedFrom(ctx)
	if err != nil {
		return v, err
	}
	if err := s.db.WithContext(ctx).Model(&AuditEvent{}).Where("id < ?", from).Count(&v.Legacy).Error; err != nil {
		return v, fmt.Errorf("verifying audit trail: %w", err)
	}
	head := AuditHead{KeyedFrom: from}
	after := from - 1
	prev := ""
	keptSeen := false
	broken := func(id int64, reason string) { v.BrokenID, v.Reason = id, reason }
walk:
	for {
		var rows []AuditEvent
		if err := s.db.WithContext(ctx).Where("id > ?", after).Order("id").Limit(verifyBatch).Find(&rows).Error; err != nil {
			return v, fmt.Errorf("verifying audit trail: %w", err)
		}
		for _, r := range rows {
			after = r.ID
			if kept != nil && r.ID == kept.LastID {
				if r.Hash != kept.Hash {
					broken(r.ID, reasonHeadMismatch)
					break walk
				}
				keptSeen = true
			}
			if r.Hash == "" {
				broken(r.ID, reasonUnchained)
				break walk
			}
			key, ok := s.auditKeys.keys[r.KeyID]
			if !ok {
				broken(r.ID, reasonUnknownKey)
				break walk
			}
			if r.PrevHash != prev {
				broken(r.ID, reasonBadLink)
				break walk
			}
			h, err := auditMAC(key, r)
			if err != nil || !hmac.Equal([]byte(h), []byte(r.Hash)) {
				broken(r.ID, reasonBadHash)
				break walk
			}
			prev = r.Hash
			v.Checked++
			head.LastID, head.Hash, head.Count = r.ID, r.Hash, head.Count+1
		}
		if len(rows) < verifyBatch {
			break
		}
	}
	if v.BrokenID == 0 && kept != nil {
		switch {
		case s.CheckAuditHead(*kept) != nil:
			v.Reason = reasonBadKept
		case kept.KeyedFrom != from:
			v.Reason = reasonStartMoved
		case head.Behind(*kept):
			v.Truncated, v.Reason = true, reasonTruncated
		case kept.LastID != 0 && !keptSeen:
			v.Truncated, v.Reason = true, reasonKeptMissing
		}
	}
	if v.Head, err = s.signHead(head); err != nil {
		return v, err
	}
	v.OK = v.Reason == ""
	return v, nil
}

// AuditHead reads the chain's head (without verifying the chain) and signs it.
func (s *Store) AuditHead(ctx context.Context) (AuditHead, error) {
	from, err := s.auditKeyedFrom(ctx)
	if err != nil {
		return AuditHead{}, err
	}
	h := AuditHead{KeyedFrom: from}
	var last AuditEvent
	q := s.db.WithContext(ctx).Model(&AuditEvent{}).Where("id >= ?", from)
	if err := q.Count(&h.Count).Error; err != nil {
		return AuditHead{}, fmt.Errorf("reading the audit head: %w", err)
	}
	if h.Count > 0 {
		if err := s.db.WithContext(ctx).Select("id", "hash").Where("id >= ?", from).Order("id DESC").Limit(1).Take(&last).Error; err != nil {
			return AuditHead{}, fmt.Errorf("reading the audit head: %w", err)
		}
		h.LastID, h.Hash = last.ID, last.Hash
	}
	return s.signHead(h)
}

func (s *Store) signHead(h AuditHead) (AuditHead, error) {
	h.At = time.Now().UTC().Truncate(time.Microsecond)
	var key []byte
	h.KeyID, key = s.auditKeys.current()
	sig, err := h.mac(key)
	if err != nil {
		return AuditHead{}, err
	}
	h.Signature = sig
	return h, nil
}
