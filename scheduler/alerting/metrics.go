package alerting

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	firing      prometheus.Gauge
	transitions *prometheus.CounterVec
	deliveries  *prometheus.CounterVec
	ruleErrors  *prometheus.CounterVec
	deferred    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		firing:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "viworks_alerts_firing", Help: "Alerts open (firing) after the latest evaluation."}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_alert_transitions_total", Help: "Alerts fired and resolved, by rule kind and event."}, []string{"kind", "event"}),
		deliveries:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_webhook_deliveries_total", Help: "Webhook deliveries finished, by outcome (delivered, failed, interrupted)."}, []string{"outcome"}),
		ruleErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_alert_rule_errors_total", Help: "Rule evaluations that failed, by rule kind."}, []string{"kind"}),
		deferred:    prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_alert_opens_deferred_total", Help: "Alerts not opened in an evaluation because a rule hit its per-evaluation bound."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.firing, m.transitions, m.deliveries, m.ruleErrors, m.deferred} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("registering alerting metrics: %w", err)
			}
		}
	}
	return m, nil
}
