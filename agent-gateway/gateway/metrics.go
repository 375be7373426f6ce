package gateway

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sessions         prometheus.Gauge
	rejected         *prometheus.CounterVec
	closed           *prometheus.CounterVec
	frames           *prometheus.CounterVec
	protocolErrors   *prometheus.CounterVec
	results          *prometheus.CounterVec
	duplicateResults prometheus.Counter
	delivered        prometheus.Counter
	undelivered      prometheus.Counter
	telemetryStored  prometheus.Counter
	telemetryDropped prometheus.Counter
	batchSize        prometheus.Histogram
	enrollments      *prometheus.CounterVec
	presenceHealed   prometheus.Counter
	framesOut        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "viworks_gateway_sessions", Help: "Agent sessions held by this gateway."}),
		rejected:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_upgrades_rejected_total", Help: "Upgrade requests refused, by reason."}, []string{"reason"}),
		closed:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_sessions_dropped_total", Help: "Sessions closed by the gateway, by reason."}, []string{"reason"}),
		frames:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_frames_received_total", Help: "Valid frames received from agents, by type."}, []string{"type"}),
		protocolErrors:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_protocol_errors_total", Help: "Frames refused, by kind."}, []string{"kind"}),
		results:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_results_total", Help: "Command results recorded, by status."}, []string{"status"}),
		duplicateResults: prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_duplicate_results_total", Help: "Results ignored because the execution was already final."}),
		delivered:        prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_deliveries_total", Help: "Frames from the bus queued to an agent."}),
		undelivered:      prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_undelivered_total", Help: "Frames from the bus whose agent session is not here."}),
		telemetryStored:  prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_telemetry_samples_stored_total", Help: "Telemetry samples persisted."}),
		telemetryDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_telemetry_samples_dropped_total", Help: "Telemetry samples lost to a failed flush."}),
		enrollments:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_enrollments_total", Help: "Enrollment requests, by outcome."}, []string{"outcome"}),
		presenceHealed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_presence_reregistered_total", Help: "Presence entries found missing (e.g. after a Redis restart) and registered again."}),
		framesOut:        prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_frames_sent_total", Help: "Frames written to agents."}),
		batchSize:        prometheus.NewHistogram(prometheus.HistogramOpts{Name: "viworks_gateway_commit_batch_size", Help: "Acks and results written per group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.rejected, m.closed, m.frames, m.protocolErrors, m.results, m.duplicateResults, m.delivered, m.undelivered, m.telemetryStored, m.telemetryDropped, m.batchSize, m.enrollments, m.presenceHealed, m.framesOut)
	}
	return m
}
