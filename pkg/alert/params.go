package alert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/viworks/backend-agent/pkg/store"
)

// Bounds of rule params.
const (
	MaxWindow       = 30 * 24 * 3600 // seconds: agent_offline, agent_unhealthy, command_failure_rate
	MaxMetricWindow = 24 * 3600      // seconds: metric_threshold scans every sample in its window
)

// CheckRule validates a new rule's name and params and returns the params
// normalized (what the store keeps). Problems come back as
// store.ValidationErrors, the name's first.
func CheckRule(name, kind string, params []byte) (store.JSON, error) {
	var errs store.ValidationErrors
	if name == "" || len(name) > store.MaxRuleNameLen || !utf8.ValidString(name) || strings.ContainsFunc(name, isControl) {
		errs = append(errs, store.ValidationError{Field: "name", Message: fmt.Sprintf("is required: 1-%d bytes of text without control characters", store.MaxRuleNameLen)})
	}
	_, norm, err := ParseParams(kind, params)
	var verrs store.ValidationErrors
	switch {
	case errors.As(err, &verrs):
		errs = append(errs, verrs...)
	case err != nil:
		return nil, err
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return norm, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// AgentOfflineParams are the params of an agent_offline rule.
type AgentOfflineParams struct {
	Seconds  int             `json:"seconds"` // offline (since last_seen_at) longer than this
	Selector *store.Selector `json:"selector,omitempty"`
}

// AgentUnhealthyParams are the params of an agent_unhealthy rule.
type AgentUnhealthyParams struct {
	Seconds  int             `json:"seconds"` // continuously unhealthy at least this long (0: at once)
	Selector *store.Selector `json:"selector,omitempty"`
}

// MetricThresholdParams are the params of a metric_threshold rule.
type MetricThresholdParams struct {
	Metric     string          `json:"metric"`
	Threshold  float64         `json:"threshold"`
	ForSeconds int             `json:"for_seconds"`
	Selector   *store.Selector `json:"selector,omitempty"`
}

// CommandFailureRateParams are the params of a command_failure_rate rule.
type CommandFailureRateParams struct {
	WindowSeconds int     `json:"window_seconds"`
	Rate          float64 `json:"rate"`
	MinExecutions int     `json:"min_executions"`
}

// Raw shapes with pointers, so that missing required fields are told apart.
type rawSelector struct {
	Site       *string           `json:"site"`
	Labels     map[string]string `json:"labels"`
	Capability *string           `json:"capability"`
}

type rawAgentParams struct {
	Seconds  *int         `json:"seconds"`
	Selector *rawSelector `json:"selector"`
}

type rawMetricParams struct {
	Metric     *string      `json:"metric"`
	Threshold  *float64     `json:"threshold"`
	ForSeconds *int         `json:"for_seconds"`
	Selector   *rawSelector `json:"selector"`
}

type rawFailureParams struct {
	WindowSeconds *int     `json:"window_seconds"`
	Rate          *float64 `json:"rate"`
	MinExecutions *int     `json:"min_executions"`
}

// ParseParams validates a rule's params for its kind and returns the typed
// params (AgentOfflineParams, AgentUnhealthyParams, MetricThresholdParams or
// CommandFailureRateParams) and their normalized JSON. Problems come back as
// store.ValidationErrors naming each field ("kind", "params",
// "params.seconds", ...).
func ParseParams(kind string, raw []byte) (any, store.JSON, error) {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		raw = []byte("{}")
	}
	var errs store.ValidationErrors
	add := func(field, msg string) { errs = append(errs, store.ValidationError{Field: field, Message: msg}) }
	var out any
	switch kind {
	case store.AlertAgentOffline, store.AlertAgentUnhealthy:
		var p rawAgentParams
		if err := decodeStrict(raw, &p); err != nil {
			return nil, nil, store.ValidationErrors{{Field: "params", Message: err.Error()}}
		}
		seconds := 0
		switch {
		case p.Seconds == nil && kind == store.AlertAgentOffline:
			add("params.seconds", "is required: how long, in seconds, an agent must be offline")
		case p.Seconds != nil && (*p.Seconds < 0 || *p.Seconds > MaxWindow):
			add("params.seconds", fmt.Sprintf("must be from 0 to %d", MaxWindow))
		case p.Seconds != nil:
			seconds = *p.Seconds
		}
		sel := checkSelector(p.Selector, add)
		if kind == store.AlertAgentOffline {
			out = AgentOfflineParams{Seconds: seconds, Selector: sel}
		} else {
			out = AgentUnhealthyParams{Seconds: seconds, Selector: sel}
		}
	case store.AlertMetricThreshold:
		var p rawMetricParams
		if err := decodeStrict(raw, &p); err != nil {
			return nil, nil, store.ValidationErrors{{Field: "params", Message: err.Error()}}
		}
		mp := MetricThresholdParams{}
		switch {
		case p.Metric == nil || *p.Metric == "":
			add("params.metric", "is required: a telemetry metric name such as cpu_percent")
		case !store.ValidMetricName(*p.Metric):
			add("params.metric", "must be 1-128 characters of A-Z a-z 0-9 _ . : - (not starting with . : -)")
		default:
			mp.Metric = *p.Metric
		}
		switch {
		case p.Threshold == nil:
			add("params.threshold", "is required: the value every sample must exceed")
		case math.IsNaN(*p.Threshold) || math.IsInf(*p.Threshold, 0):
			add("params.threshold", "must be a finite number")
		default:
			mp.Threshold = *p.Threshold
		}
		switch {
		case p.ForSeconds == nil:
			add("params.for_seconds", "is required: the window, in seconds, every sample of which must be above the threshold")
		case *p.ForSeconds < 1 || *p.ForSeconds > MaxMetricWindow:
			add("params.for_seconds", fmt.Sprintf("must be from 1 to %d", MaxMetricWindow))
		default:
			mp.ForSeconds = *p.ForSeconds
		}
		mp.Selector = checkSelector(p.Selector, add)
		out = mp
	case store.AlertCommandFailureRate:
		var p rawFailureParams
		if err := decodeStrict(raw, &p); err != nil {
			return nil, nil, store.ValidationErrors{{Field: "params", Message: err.Error()}}
		}
		fp := CommandFailureRateParams{MinExecutions: 1}
		switch {
		case p.WindowSeconds == nil:
			add("params.window_seconds", "is required: the window, in seconds, of finished executions")
		case *p.WindowSeconds < 1 || *p.WindowSeconds > MaxWindow:
			add("params.window_seconds", fmt.Sprintf("must be from 1 to %d", MaxWindow))
		default:
			fp.WindowSeconds = *p.WindowSeconds
		}
		switch {
		case p.Rate == nil:
			add("params.rate", "is required: the failed share (0 to 1) that must be exceeded")
		case math.IsNaN(*p.Rate) || *p.Rate < 0 || *p.Rate >= 1:
			add("params.rate", "must be at least 0 and below 1")
		default:
			fp.Rate = *p.Rate
		}
		if p.MinExecutions != nil {
			if *p.MinExecutions < 1 || *p.MinExecutions > 1_000_000 {
				add("params.min_executions", "must be from 1 to 1000000")
			} else {
				fp.MinExecutions = *p.MinExecutions
			}
		}
		out = fp
	default:
		return nil, nil, store.ValidationErrors{{Field: "kind", Message: "must be one of " + strings.Join(store.AlertKinds, ", ")}}
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	norm, err := json.Marshal(out)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding params: %w", err)
	}
	return out, norm, nil
}

func decodeStrict(raw []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typ) && typ.Field != "":
			return fmt.Errorf("field %s must be %s", typ.Field, typ.Type.String())
		case errors.As(err, &typ):
			return errors.New("must be a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return errors.New(strings.TrimPrefix(err.Error(), "json: "))
		}
		return errors.New("must be a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

func checkSelector(r *rawSelector, add func(field, msg string)) *store.Selector {
	if r == nil {
		return nil
	}
	sel := &store.Selector{Labels: r.Labels}
	if r.Site != nil {
		sel.Site = *r.Site
	}
	if r.Capability != nil {
		sel.Capability = *r.Capability
	}
	if len(sel.Site) > 256 {
		add("params.selector.site", "longer than 256 bytes")
	}
	if len(sel.Capability) > 256 {
		add("params.selector.capability", "longer than 256 bytes")
	}
	if len(sel.Labels) > 32 {
		add("params.selector.labels", "at most 32 labels")
	}
	for k, v := range sel.Labels {
		if k == "" || len(k) > 256 || len(v) > 256 {
			add("params.selector.labels", "keys must be 1-256 bytes, values at most 256")
			break
		}
	}
	if sel.Empty() {
		return nil
	}
	return sel
}
