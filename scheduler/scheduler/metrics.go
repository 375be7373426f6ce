package scheduler

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	wakes         *prometheus.CounterVec
	dispatched    prometheus.Counter
	undeliverable prometheus.Counter
	timedOut      prometheus.Counter
	claimSeconds  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		wakes:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_scheduler_wakes_total", Help: "Wake messages received, by reason."}, []string{"reason"}),
		dispatched:    prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_scheduler_dispatched_total", Help: "Executions published to a gateway."}),
		undeliverable: prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_scheduler_undeliverable_total", Help: "Executions whose gateway could not be reached; requeued."}),
		timedOut:      prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_scheduler_timed_out_total", Help: "Executions ended by the command timeout."}),
		claimSeconds:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "viworks_scheduler_dispatch_round_seconds", Help: "Duration of one claim-route-publish round.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.wakes, m.dispatched, m.undeliverable, m.timedOut, m.claimSeconds)
	}
	return m
}
