package apiserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// Idempotency-Key on POST /commands: the first request with a key
// claims it (a unique row per principal and key, so concurrent duplicates
// claim it once); its answer is stored and replayed to every retry with the
// same body, marked Idempotent-Replayed: true. A retry while the first is in
// flight gets 409; the same key with another body 422. Answers 5xx and 429 are
// not kept, nor a request whose client went away (499) (the key is released, so a retry runs again). Keys live IdempotencyTTL
// (24 h); the scheduler's leader purges expired ones, and an expired key is
// replaced when used again.
const (
	idempotencyHeader = "Idempotency-Key"
	maxIdempotencyKey = 255
)

// captureWriter tees the response body.
type captureWriter struct {
	gin.ResponseWriter
	buf bytes.Buffer
}

func (w *captureWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *captureWriter) WriteString(s string) (int, error) {
	w.buf.WriteString(s)
	return w.ResponseWriter.WriteString(s)
}

func validIdempotencyKey(k string) bool {
	if k == "" || len(k) > maxIdempotencyKey {
		return false
	}
	return !strings.ContainsFunc(k, func(r rune) bool { return r < 0x21 || r > 0x7e })
}

// idempotent wraps a POST handler (after authentication) in Idempotency-Key
// handling; without the header it does nothing.
func (s *Server) idempotent(c *gin.Context) {
	key := c.GetHeader(idempotencyHeader)
	if key == "" {
		c.Next()
		return
	}
	if !validIdempotencyKey(key) {
		writeProblem(c, http.StatusBadRequest, "invalid Idempotency-Key header",
			[]FieldError{{Field: idempotencyHeader, Message: fmt.Sprintf("must be 1-%d printable ASCII characters", maxIdempotencyKey)}})
		c.Abort()
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeProblem(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", s.cfg.MaxBodyBytes), nil)
		} else {
			writeProblem(c, http.StatusBadRequest, "could not read the request body", nil)
		}
		c.Abort()
		return
	}
	c.Request.Body = io.NopCloser(bytes.NewReader(body))
	sum := sha256.Sum256(append([]byte(c.Request.Method+" "+c.FullPath()+"\n"), body...))
	hash := hex.EncodeToString(sum[:])
	who := principal(c).Subject
	ctx := c.Request.Context()
	rec, claimed, err := s.store.BeginIdempotent(ctx, who, key, hash, s.cfg.IdempotencyTTL)
	if err != nil {
		s.internalError(c, "claiming idempotency key failed", err)
		c.Abort()
		return
	}
	if !claimed {
		switch {
		case rec.RequestHash != hash:
			writeProblem(c, http.StatusUnprocessableEntity, "this Idempotency-Key was used with another request body",
				[]FieldError{{Field: idempotencyHeader, Message: "reused with a different body"}})
		case rec.StatusCode == 0:
			c.Header("Retry-After", "1")
			writeProblem(c, http.StatusConflict, "a request with this Idempotency-Key is still in flight; retry later", nil)
		default:
			c.Header("Idempotent-Replayed", "true")
			if rec.Location != "" {
				c.Header("Location", rec.Location)
			}
			ct := "application/json; charset=utf-8"
			if rec.StatusCode >= 400 {
				ct = "application/problem+json"
			}
			c.Data(rec.StatusCode, ct, rec.Response)
		}
		c.Abort()
		return
	}
	w := &captureWriter{ResponseWriter: c.Writer}
	c.Writer = w
	c.Next()
	c.Writer = w.ResponseWriter
	done, cancel := contextWithoutCancel(ctx, 5*time.Second)
	defer cancel()
	status := w.Status()
	if status >= 500 || status == http.StatusTooManyRequests || status == statusClientClosed {
		if err := s.store.AbandonIdempotent(done, who, key); err != nil {
			s.log.WithError(err).WithField("request_id", c.GetString(ctxRequestID)).Warn("releasing idempotency key failed")
		}
		return
	}
	if err := s.store.CompleteIdempotent(done, who, key, status, w.Header().Get("Location"), w.buf.Bytes()); err != nil {
		s.log.WithError(err).WithField("request_id", c.GetString(ctxRequestID)).Warn("storing idempotent answer failed")
	}
}

// contextWithoutCancel outlives the request (a client that hangs up must not
// leave a key claimed) but is bounded.
func contextWithoutCancel(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}
