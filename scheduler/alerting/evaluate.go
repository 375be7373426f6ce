package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/alert"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/store"
)

// Evaluate evaluates every enabled rule at now: opens alerts whose condition
// holds, resolves those whose condition stopped holding, and queues the
// deliveries of both. A rule that fails to evaluate is logged and skipped
// (its alerts are left as they are); the errors are returned joined.
func (a *Alerter) Evaluate(ctx context.Context, now time.Time) error {
	now = now.UTC()
	rules, err := a.st.EnabledAlertRules(ctx)
	if err != nil {
		return fmt.Errorf("evaluating alerts: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	live := make(map[string]bool, len(rules))
	for _, r := range rules {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		live[r.ID] = true
		log := a.log.WithFields(logrus.Fields{"rule_id": r.ID, "rule_name": r.Name, "kind": r.Kind})
		vs, err := a.violations(ctx, r, now)
		if err == nil {
			var res store.SyncResult
			res, err = a.st.SyncAlerts(ctx, r, vs, now, a.cfg.MaxOpenPerRule, render)
			if err == nil {
				a.report(ctx, log, r, res)
			}
		}
		if err != nil {
			a.m.ruleErrors.WithLabelValues(r.Kind).Inc()
			log.WithError(err).Error("alert rule evaluation failed")
			errs = append(errs, fmt.Errorf("rule %s: %w", r.ID, err))
		}
	}
	if ctx.Err() != nil {
		return errors.Join(errs...)
	}
	for id := range a.unhealthy {
		if !live[id] {
			delete(a.unhealthy, id)
		}
	}
	if n, err := a.st.CountOpenAlerts(ctx); err != nil {
		errs = append(errs, err)
	} else {
		a.m.firing.Set(float64(n))
	}
	if n, err := a.st.PruneAlertHistory(ctx, now.Add(-a.cfg.HistoryRetention), 10000); err != nil {
		a.log.WithError(err).Warn("pruning alert history failed")
	} else if n > 0 {
		a.log.WithField("rows", n).Info("alert history pruned")
	}
	return errors.Join(errs...)
}

func (a *Alerter) report(ctx context.Context, log logrus.FieldLogger, r store.AlertRule, res store.SyncResult) {
	var evs []events.Event
	for _, al := range res.Opened {
		a.m.transitions.WithLabelValues(r.Kind, "fired").Inc()
		log.WithFields(logrus.Fields{"alert_id": al.ID, "subject": al.Subject}).Warn("alert fired")
		evs = append(evs, alertEvent(events.AlertFired, al))
	}
	for _, al := range res.Resolved {
		a.m.transitions.WithLabelValues(r.Kind, "resolved").Inc()
		log.WithFields(logrus.Fields{"alert_id": al.ID, "subject": al.Subject}).Info("alert resolved")
		evs = append(evs, alertEvent(events.AlertResolved, al))
	}
	a.cfg.Events.Publish(ctx, evs...)
	if res.Deferred > 0 {
		a.m.deferred.Add(float64(res.Deferred))
		log.WithFields(logrus.Fields{"deferred": res.Deferred, "max_open": a.cfg.MaxOpenPerRule}).Warn("alert openings deferred to the next evaluation")
	}
}

func alertEvent(typ string, al store.Alert) events.Event {
	e := events.Event{Type: typ, AlertID: al.ID, RuleID: al.RuleID, Reason: al.Kind}
	if al.Subject != store.SubjectGlobal {
		e.AgentID = al.Subject
	}
	return e
}

func details(v any) store.JSON {
	b, err := json.Marshal(v)
	if err != nil {
		return store.JSON(`{}`)
	}
	return b
}

// violations evaluates one rule at now.
func (a *Alerter) violations(ctx context.Context, r store.AlertRule, now time.Time) ([]store.Violation, error) {
	typed, _, err := alert.ParseParams(r.Kind, r.Params)
	if err != nil {
		return nil, fmt.Errorf("stored params: %w", err)
	}
	var out []store.Violation
	switch p := typed.(type) {
	case alert.AgentOfflineParams:
		agents, err := a.st.OfflineAgents(ctx, p.Selector, now.Add(-time.Duration(p.Seconds)*time.Second))
		if err != nil {
			return nil, err
		}
		for _, ag := range agents {
			out = append(out, store.Violation{Subject: ag.ID, Details: details(map[string]any{
				"last_seen_at": ag.LastSeenAt, "offline_seconds": int64(now.Sub(ag.LastSeenAt) / time.Second), "seconds": p.Seconds,
			})})
		}
	case alert.AgentUnhealthyParams:
		agents, err := a.st.UnhealthyAgents(ctx, p.Selector)
		if err != nil {
			return nil, err
		}
		seen := a.unhealthy[r.ID]
		if seen == nil {
			seen = map[string]time.Time{}
			a.unhealthy[r.ID] = seen
		}
		current := make(map[string]bool, len(agents))
		for _, ag := range agents {
			current[ag.ID] = true
			since, ok := seen[ag.ID]
			if !ok || since.After(now) {
				since = now
				seen[ag.ID] = now
			}
			out = append(out, store.Violation{
				Subject: ag.ID,
				Pending: now.Sub(since) < time.Duration(p.Seconds)*time.Second,
				Details: details(map[string]any{"health_status": "unhealthy", "unhealthy_since": since, "last_seen_at": ag.LastSeenAt, "seconds": p.Seconds}),
			})
		}
		for id := range seen {
			if !current[id] {
				delete(seen, id)
			}
		}
	case alert.MetricThresholdParams:
		breaches, err := a.st.MetricAbove(ctx, p.Metric, p.Threshold, now.Add(-time.Duration(p.ForSeconds)*time.Second), now, p.Selector)
		if err != nil {
			return nil, err
		}
		for _, b := range breaches {
			out = append(out, store.Violation{Subject: b.AgentID, Details: details(map[string]any{
				"metric": p.Metric, "threshold": p.Threshold, "for_seconds": p.ForSeconds, "samples": b.Samples, "min": b.Min, "max": b.Max,
			})})
		}
	case alert.CommandFailureRateParams:
		st, err := a.st.CommandFailureStats(ctx, now.Add(-time.Duration(p.WindowSeconds)*time.Second), now)
		if err != nil {
			return nil, err
		}
		if st.Finished > 0 && st.Finished >= int64(p.MinExecutions) {
			rate := float64(st.Failed) / float64(st.Finished)
			if rate > p.Rate {
				out = append(out, store.Violation{Subject: store.SubjectGlobal, Details: details(map[string]any{
					"finished": st.Finished, "failed": st.Failed, "failure_rate": rate, "rate": p.Rate, "window_seconds": p.WindowSeconds,
				})})
			}
		}
	default:
		return nil, fmt.Errorf("unknown rule kind %q", r.Kind)
	}
	return out, nil
}
