package dispatch

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	wakes         *prometheus.CounterVec
	dispatched    prometheus.Counter
	undeliverable prometheus.Counter
	timedOut      prometheus.Counter
	claimSeconds  prometheus.Histogram
	leader        prometheus.Gauge
	staleAgents   prometheus.Counter
	deleted       *prometheus.CounterVec
	scheduleRuns  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		wakes:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_scheduler_wakes_total", Help: "Wake messages received, by reason."}, []string{"reason"}),
		dispatched:    prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_scheduler_dispatched_total", Help: "Executions published to a gateway."}),
		undeliverable: prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_scheduler_undeliverable_total", Help: "Executions whose gateway could not be reached; requeued."}),
		timedOut:      prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_scheduler_timed_out_total", Help: "Executions ended by the command timeout."}),
		leader:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "viworks_scheduler_leader", Help: "1 while this replica holds the maintenance lease."}),
		staleAgents:   prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_scheduler_stale_agents_total", Help: "Agents marked offline for missed heartbeats."}),
		deleted:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_scheduler_retention_deleted_total", Help: "Rows removed by retention, by table."}, []string{"table"}),
		scheduleRuns:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_scheduler_schedule_runs_total", Help: "Due times of schedules handled, by outcome (created, skipped, missed, failed)."}, []string{"outcome"}),
		claimSeconds:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "viworks_scheduler_dispatch_round_seconds", Help: "Duration of one claim-route-publish round.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.wakes, m.dispatched, m.undeliverable, m.timedOut, m.claimSeconds, m.leader, m.staleAgents, m.deleted, m.scheduleRuns)
	}
	return m
}
