package apiserver

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/viworks/backend-agent/pkg/store"
)

// Telemetry query bounds and defaults.
const (
	defaultTelemetryRange = time.Hour
	maxTelemetryRange     = 366 * 24 * time.Hour
	targetPoints          = 300 // buckets the automatic step aims at
)

// niceSteps are the automatic steps: the smallest giving at most
// targetPoints buckets is chosen.
var niceSteps = []time.Duration{
	time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// autoStep picks a step for a range.
func autoStep(span time.Duration) time.Duration {
	for _, st := range niceSteps {
		if span/st <= targetPoints {
			return st
		}
	}
	return niceSteps[len(niceSteps)-1]
}

// TelemetryPointView is one bucket of one metric.
type TelemetryPointView struct {
	T     time.Time `json:"t"` // bucket start
	Avg   float64   `json:"avg"`
	Max   float64   `json:"max"`
	Count int64     `json:"count"` // samples in the bucket
}

// TelemetrySeriesView is one metric's buckets, oldest first.
type TelemetrySeriesView struct {
	Metric string               `json:"metric"`
	Points []TelemetryPointView `json:"points"`
}

// TelemetryView is the answer of GET /agents/{id}/telemetry.
type TelemetryView struct {
	AgentID     string                `json:"agent_id"`
	From        time.Time             `json:"from"`
	To          time.Time             `json:"to"`
	StepSeconds int64                 `json:"step_seconds"`
	Series      []TelemetrySeriesView `json:"series"`
}

// parseTime accepts RFC 3339 or Unix seconds.
func parseTime(v string) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), true
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 && n < 1<<40 {
		return time.Unix(n, 0).UTC(), true
	}
	return time.Time{}, false
}

// parseStep accepts a Go duration (30s, 5m, 1h) or whole seconds.
func parseStep(v string) (time.Duration, bool) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 1 || n > int64(maxTelemetryRange/time.Second) {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second || d%time.Second != 0 || d > maxTelemetryRange {
		return 0, false
	}
	return d, true
}

func parseTelemetryQuery(c *gin.Context, now time.Time) (store.TelemetryQuery, []FieldError) {
	var q store.TelemetryQuery
	var errs []FieldError
	q.To = now.Truncate(time.Second)
	if v := c.Query("to"); v != "" {
		t, ok := parseTime(v)
		if !ok {
			errs = append(errs, FieldError{Field: "to", Message: "must be an RFC 3339 time or Unix seconds"})
		}
		q.To = t.Truncate(time.Millisecond) // SQLite's time resolution
	}
	q.From = q.To.Add(-defaultTelemetryRange)
	if v := c.Query("from"); v != "" {
		t, ok := parseTime(v)
		if !ok {
			errs = append(errs, FieldError{Field: "from", Message: "must be an RFC 3339 time or Unix seconds"})
		}
		q.From = t.Truncate(time.Millisecond)
	}
	if len(errs) == 0 {
		switch span := q.To.Sub(q.From); {
		case span <= 0:
			errs = append(errs, FieldError{Field: "from", Message: "must be before to"})
		case span > maxTelemetryRange:
			errs = append(errs, FieldError{Field: "from", Message: "the range is longer than 366 days"})
		}
	}
	if v := c.Query("step"); v != "" {
		st, ok := parseStep(v)
		if !ok {
			errs = append(errs, FieldError{Field: "step", Message: "must be whole seconds from 1s to 366 days, as 30s, 5m, 1h or a number of seconds"})
		}
		q.Step = st
	}
	metrics := c.QueryArray("metric")
	if len(metrics) > store.MaxTelemetryMetrics {
		errs = append(errs, FieldError{Field: "metric", Message: fmt.Sprintf("at most %d metrics", store.MaxTelemetryMetrics)})
		metrics = nil
	}
	for _, m := range metrics {
		if !store.ValidMetricName(m) {
			errs = append(errs, FieldError{Field: "metric", Message: "names are 1-128 characters of A-Z a-z 0-9 _ . : - (not starting with . : -)"})
			break
		}
	}
	q.Metrics = metrics
	if len(errs) > 0 {
		return q, errs
	}
	if q.Step == 0 {
		q.Step = autoStep(q.To.Sub(q.From))
	}
	if n := q.Buckets(); n > store.MaxTelemetryBuckets {
		errs = append(errs, FieldError{Field: "step", Message: fmt.Sprintf("gives %d buckets over the range; at most %d are allowed, choose a larger step or a shorter range", n, store.MaxTelemetryBuckets)})
	}
	return q, errs
}

func (s *Server) agentTelemetry(c *gin.Context) {
	q, errs := parseTelemetryQuery(c, time.Now().UTC())
	if len(errs) > 0 {
		writeProblem(c, http.StatusBadRequest, "invalid query parameters", errs)
		return
	}
	a, ok := s.agent(c)
	if !ok {
		return
	}
	q.AgentID = a.ID
	pts, err := s.store.TelemetrySeries(c.Request.Context(), q)
	if s.storeFailed(c, resTelemetry, "querying telemetry", err) {
		return
	}
	out := TelemetryView{AgentID: a.ID, From: q.From, To: q.To, StepSeconds: int64(q.Step / time.Second), Series: []TelemetrySeriesView{}}
	for _, p := range pts {
		if n := len(out.Series); n == 0 || out.Series[n-1].Metric != p.Metric {
			out.Series = append(out.Series, TelemetrySeriesView{Metric: p.Metric, Points: []TelemetryPointView{}})
		}
		cur := &out.Series[len(out.Series)-1]
		cur.Points = append(cur.Points, TelemetryPointView{
			T: q.From.Add(time.Duration(p.Bucket) * q.Step), Avg: p.Avg, Max: p.Max, Count: p.Count,
		})
	}
	c.JSON(http.StatusOK, out)
}
