package alerting

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/egress"
	"github.com/viworks/backend-agent/pkg/store"
)

// Headers of a delivery.
const (
	HeaderSignature = "X-Viworks-Signature"
	HeaderTimestamp = "X-Viworks-Timestamp"
	HeaderEvent     = "X-Viworks-Event"
	HeaderDelivery  = "X-Viworks-Delivery" // the delivery id: the same on a re-send, for receivers to drop duplicates
)

// MaxDeliveriesPerCall bounds the deliveries one Deliver call sends.
const MaxDeliveriesPerCall = 1000

type attemptsKey struct{}

// checkRetry retries connection errors (but not refused targets, nor TLS,
// scheme or redirect errors, as go-retryablehttp's default policy) and 5xx
// answers but 501.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if errors.Is(err, egress.ErrRefused) {
		return false, nil // a refused target stays refused
	}
	if err != nil {
		return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	}
	return resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented, nil
}

// backoff is exponential (RetryWaitMin × 2^n, capped at RetryWaitMax); a
// receiver's Retry-After is not honoured, so it cannot stall the loop.
func backoff(lo, hi time.Duration, n int, _ *http.Response) time.Duration {
	return retryablehttp.DefaultBackoff(lo, hi, n, nil)
}

// Sign returns the X-Viworks-Signature value of body sent at timestamp (unix
// seconds, as in X-Viworks-Timestamp).
func Sign(secret, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(timestamp))
	mac.Write([]byte("."))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// lease is how long a claimed batch is kept from other claimers: the worst
// case of sending it, with a margin.
func (a *Alerter) lease() time.Duration {
	tries := time.Duration(a.cfg.RetryMax + 1)
	return tries*a.cfg.HTTPTimeout + time.Duration(a.cfg.RetryMax)*a.cfg.RetryWaitMax + time.Minute
}

// Deliver sends pending deliveries, at most MaxDeliveries (1000) per call,
// Concurrency at a time, and records each outcome. Deliveries interrupted by
// ctx stay pending and are sent again by a later call.
func (a *Alerter) Deliver(ctx context.Context) error {
	sent := 0
	var errs []error
	for sent < a.cfg.MaxDeliveries && ctx.Err() == nil {
		batch := min(a.cfg.Concurrency, a.cfg.MaxDeliveries-sent)
		claimed, err := a.st.ClaimDeliveries(ctx, time.Now(), batch, a.lease())
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("delivering alerts: %w", err))...)
		}
		sent += len(claimed)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, d := range claimed {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := a.send(ctx, d)
				a.m.deliveries.WithLabelValues(outcomeLabel(o.Status)).Inc()
				log := a.log.WithFields(logrus.Fields{"delivery_id": d.ID, "webhook_id": d.WebhookID, "alert_id": d.AlertID, "event": d.Event, "attempts": o.Attempts})
				if o.ResponseCode != nil {
					log = log.WithField("status_code", *o.ResponseCode)
				}
				switch o.Status {
				case store.DeliveryDelivered:
					log.Debug("webhook delivered")
				case store.DeliveryFailed:
					log.WithField("error", o.LastError).Warn("webhook delivery failed")
				default:
					log.Info("webhook delivery interrupted; it will be sent again")
				}
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				if err := a.st.RecordDelivery(rctx, o); err != nil {
					log.WithError(err).Error("recording webhook delivery failed")
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(claimed) < batch {
			break
		}
	}
	return errors.Join(errs...)
}

func outcomeLabel(status string) string {
	if status == store.DeliveryPending {
		return "interrupted"
	}
	return status
}

// send POSTs one delivery with retries and returns its outcome.
func (a *Alerter) send(ctx context.Context, d store.PendingDelivery) store.DeliveryOutcome {
	out := store.DeliveryOutcome{ID: d.ID, Status: store.DeliveryFailed}
	var ev Event
	if err := json.Unmarshal(d.Payload, &ev); err != nil {
		out.LastError, out.At = "stored payload is not an alert event", time.Now()
		return out
	}
	sent := time.Now().UTC()
	ev.SentAt = &sent
	body, err := json.Marshal(ev)
	if err != nil {
		out.LastError, out.At = "encoding the event failed", time.Now()
		return out
	}
	var attempts atomic.Int32
	rctx := context.WithValue(ctx, attemptsKey{}, &attempts)
	req, err := retryablehttp.NewRequestWithContext(rctx, http.MethodPost, d.URL, body)
	if err != nil {
		out.LastError, out.At = scrub("building the request: "+describe(err), d), time.Now()
		return out
	}
	ts := strconv.FormatInt(sent.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "viworks-alerting/1")
	req.Header.Set(HeaderEvent, ev.Event)
	req.Header.Set(HeaderDelivery, d.ID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(d.Secret, ts, body))

	resp, err := a.client.Do(req)
	out.Attempts, out.At = int(attempts.Load()), time.Now()
	if resp != nil {
		defer func() { _ = resp.Body.Close() }()
		code := resp.StatusCode
		out.ResponseCode = &code
		b, _ := io.ReadAll(io.LimitReader(resp.Body, store.MaxResponseBodySize))
		if a.cfg.StoreResponseBody {
			out.ResponseBody = string(b)
		}
		rest, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, store.MaxResponseRead-int64(len(b)))) // also lets the connection be reused
		n := int64(len(b)) + rest
		out.ResponseBytes = &n
	}
	switch {
	case err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300:
		out.Status = store.DeliveryDelivered
	case ctx.Err() != nil:
		out.Status, out.LastError = store.DeliveryPending, "interrupted: "+ctx.Err().Error()
	case err != nil:
		out.LastError = scrub(describe(err), d)
	default:
		out.LastError = fmt.Sprintf("receiver answered HTTP %d", resp.StatusCode)
	}
	return out
}

// describe drops the URL from an HTTP client error (it may carry credentials
// or tokens in its path or query).
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// scrub removes the webhook's URL and secret from a message, should any part
// of the stack have quoted them.
func scrub(msg string, d store.PendingDelivery) string {
	if d.Secret != "" {
		msg = strings.ReplaceAll(msg, d.Secret, "[secret]")
	}
	if d.URL != "" {
		msg = strings.ReplaceAll(msg, d.URL, "[url]")
	}
	if len(msg) > 512 {
		msg = msg[:512]
	}
	return msg
}
