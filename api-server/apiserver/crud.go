package apiserver

import (
	"context"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/store"
)

// parsePage reads limit and cursor; problems are appended to errs.
func parsePage(c *gin.Context, errs *[]FieldError) store.Page {
	limit, ferr := parseLimit(c)
	if ferr != nil {
		*errs = append(*errs, *ferr)
	}
	cursor := c.Query("cursor")
	if len(cursor) > maxCursorLen {
		*errs = append(*errs, FieldError{Field: "cursor", Message: "too long"})
	}
	return store.Page{Limit: limit, Cursor: cursor}
}

// pageOnly is the filter of a list that takes only limit and cursor.
func pageOnly(_ *gin.Context, p store.Page, _ *[]FieldError) store.Page { return p }

// listPage answers a paged list of r: it reads limit and cursor, then the
// list's own filter (filter appends its problems to errs), asks the store
// and writes one page of views.
func listPage[F, R, V any](s *Server, c *gin.Context, r resource,
	filter func(c *gin.Context, p store.Page, errs *[]FieldError) F,
	list func(ctx context.Context, f F) ([]R, string, error),
	view func(R) V,
) {
	var errs []FieldError
	f := filter(c, parsePage(c, &errs), &errs)
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid query parameters", errs)
		return
	}
	rows, next, err := list(c.Request.Context(), f)
	if s.storeFailed(c, r.listing(), "listing "+r.plural, err) {
		return
	}
	out := List[V]{Items: make([]V, 0, len(rows)), NextCursor: nextPtr(next)}
	for _, row := range rows {
		out.Items = append(out.Items, view(row))
	}
	c.JSON(http.StatusOK, out)
}

func nextPtr(next string) *string {
	if next == "" {
		return nil
	}
	return &next
}

// removeByID answers the deletion (or revocation) of the r named by :id:
// it asks remove with the request's audit event (action, details) and
// answers 404 for an id the store does not know and 204 when done; ok
// reports the latter, for a handler that has more to do after it.
func (s *Server) removeByID(c *gin.Context, r resource, action string, details map[string]any,
	remove func(ctx context.Context, id string, audit store.AuditEvent) error,
) (id string, ok bool) {
	id, ok = idParam(c, r)
	if !ok {
		return "", false
	}
	if s.storeFailed(c, r, action, remove(c.Request.Context(), id, auditEvent(c, action, details))) {
		return id, false
	}
	c.Status(http.StatusNoContent)
	return id, true
}

// asIs is the view of a list whose store call already gives views.
func asIs[V any](v V) V { return v }
