package store

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
)

// Page selects one page of a list: at most Limit items (default 50, at most
// 1000) after Cursor (as returned with the previous page).
type Page struct {
	Limit  int
	Cursor string
}

func (p Page) limit() int {
	switch {
	case p.Limit <= 0:
		return defaultPageLimit
	case p.Limit > maxPageLimit:
		return maxPageLimit
	}
	return p.Limit
}

// cursor is a keyset position (time, id), opaque to clients.
func encodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixNano(), 10) + "|" + id))
}

func decodeCursor(c string) (time.Time, string, error) {
	if len(c) > 512 {
		return time.Time{}, "", ErrBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", ErrBadCursor
	}
	ns, id, ok := strings.Cut(string(b), "|")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" {
		return time.Time{}, "", ErrBadCursor
	}
	return time.Unix(0, n).UTC(), id, nil
}

// keyset applies a (column, id) keyset page to q: ascending or descending.
func keyset(q *gorm.DB, p Page, column string, desc bool) (*gorm.DB, error) {
	dir, op := "ASC", ">"
	if desc {
		dir, op = "DESC", "<"
	}
	if p.Cursor != "" {
		t, id, err := decodeCursor(p.Cursor)
		if err != nil {
			return nil, err
		}
		q = q.Where(fmt.Sprintf("(%[1]s %[2]s ? OR (%[1]s = ? AND id %[2]s ?))", column, op), t, t, id)
	}
	return q.Order(column + " " + dir).Order("id " + dir).Limit(p.limit() + 1), nil
}

// nextCursor trims the extra row fetched by keyset and returns the cursor of
// the next page ("" on the last page).
func nextCursor[T any](rows []T, p Page, pos func(T) (time.Time, string)) ([]T, string) {
	if len(rows) <= p.limit() {
		return rows, ""
	}
	rows = rows[:p.limit()]
	t, id := pos(rows[len(rows)-1])
	return rows, encodeCursor(t, id)
}
