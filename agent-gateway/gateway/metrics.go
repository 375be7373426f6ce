package gateway

import (
	"bytes"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// metrics are the gateway's Prometheus series (viworks_ prefix,
// base units, _total counters, no per-agent labels).
type metrics struct {
	sessions         prometheus.Gauge
	rejected         *prometheus.CounterVec
	closed           *prometheus.CounterVec
	sessionsClosed   *prometheus.CounterVec
	frames           *prometheus.CounterVec
	framesOut        *prometheus.CounterVec
	bytesIn          prometheus.Counter
	bytesOut         prometheus.Counter
	protocolErrors   *prometheus.CounterVec
	results          *prometheus.CounterVec
	resultAcks       *prometheus.CounterVec
	telemetryRefused *prometheus.CounterVec
	delivered        prometheus.Counter
	undelivered      prometheus.Counter
	telemetryStored  prometheus.Counter
	telemetryDropped prometheus.Counter
	telemetryShed    prometheus.Counter
	throttled        prometheus.Counter
	batchSize        prometheus.Histogram
	enrollments      *prometheus.CounterVec
	presenceHealed   prometheus.Counter
	handshake        prometheus.Histogram
	flush            *prometheus.HistogramVec
	groupSize        *prometheus.HistogramVec
	groupLatency     *prometheus.HistogramVec
}

// latencyBuckets span 0.5 ms to about 16 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2, 16)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "viworks_gateway_sessions", Help: "Agent sessions held by this gateway."}),
		rejected:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_upgrades_rejected_total", Help: "Upgrade requests refused, by reason."}, []string{"reason"}),
		closed:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_sessions_dropped_total", Help: "Sessions closed by the gateway for misbehaving, by reason."}, []string{"reason"}),
		sessionsClosed:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_sessions_closed_total", Help: "WebSockets closed (after the upgrade), by reason."}, []string{"reason"}),
		frames:           prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_frames_received_total", Help: "Valid frames received from agents, by type."}, []string{"type"}),
		framesOut:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_frames_sent_total", Help: "Frames written to agents, by type."}, []string{"type"}),
		bytesIn:          prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_received_bytes_total", Help: "WebSocket message payload bytes received from agents."}),
		bytesOut:         prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_sent_bytes_total", Help: "WebSocket message payload bytes written to agents."}),
		protocolErrors:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_protocol_errors_total", Help: "Frames refused, by kind."}, []string{"kind"}),
		results:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_results_total", Help: "Command results recorded, by status."}, []string{"status"}),
		resultAcks:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_result_acks_total", Help: "RESULT_ACK frames sent, by outcome (stored, duplicate, unknown_execution, not_yours)."}, []string{"outcome"}),
		telemetryRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_telemetry_refused_total", Help: "Telemetry refused on receipt: metric values that are not numbers (invalid_value), samples whose ts is out of the window (ts_out_of_window)."}, []string{"reason"}),
		delivered:        prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_deliveries_total", Help: "Frames from the bus queued to an agent."}),
		undelivered:      prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_undelivered_total", Help: "Frames from the bus whose agent session is not here."}),
		telemetryStored:  prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_telemetry_samples_stored_total", Help: "Telemetry samples (rows) written to the database."}),
		telemetryDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_telemetry_samples_dropped_total", Help: "Telemetry samples lost to a failed flush."}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_frames_throttled_total",
			Help: "Frames read late because their agent was over its frame rate (max_frames_per_second)."}),
		telemetryShed: prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_telemetry_samples_shed_total",
			Help: "Telemetry samples dropped, oldest first, because the gateway held its bound of samples the database had not taken yet."}),
		enrollments:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "viworks_gateway_enrollments_total", Help: "Enrollment requests, by outcome."}, []string{"outcome"}),
		presenceHealed: prometheus.NewCounter(prometheus.CounterOpts{Name: "viworks_gateway_presence_reregistered_total", Help: "Presence entries found missing (e.g. after a Redis restart) and registered again."}),
		batchSize:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "viworks_gateway_commit_batch_size", Help: "Acks and results written per group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		handshake: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "viworks_gateway_handshake_duration_seconds",
			Help: "From the upgrade request's arrival (before admission) to WELCOME, for sessions that registered.", Buckets: latencyBuckets}),
		flush: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "viworks_gateway_flush_duration_seconds",
			Help: "Duration of the periodic batch writes, by kind (telemetry, heartbeats).", Buckets: latencyBuckets}, []string{"kind"}),
		groupSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "viworks_gateway_group_batch_size",
			Help: "Items written per group commit of the handshake writes, by group (online, audit, credential).", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}, []string{"group"}),
		groupLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "viworks_gateway_group_write_duration_seconds",
			Help: "Duration of one group commit of the handshake writes, by group (online, audit, credential).", Buckets: latencyBuckets}, []string{"group"}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.rejected, m.closed, m.sessionsClosed, m.frames, m.framesOut, m.bytesIn, m.bytesOut,
			m.protocolErrors, m.results, m.resultAcks, m.telemetryRefused, m.delivered, m.undelivered, m.telemetryStored, m.telemetryDropped,
			m.telemetryShed, m.throttled, m.batchSize, m.enrollments, m.presenceHealed, m.handshake, m.flush, m.groupSize, m.groupLatency)
	}
	return m
}

// frameTypes are the labels frames are counted under (a bounded set).
var frameTypes = []string{
	protocol.TypeHello, protocol.TypeWelcome, protocol.TypeHeartbeat, protocol.TypeTelemetry, protocol.TypeCommand,
	protocol.TypeAck, protocol.TypeCommandResult, protocol.TypeResultAck, protocol.TypeCancel, protocol.TypeError,
}

// frameType names an encoded outgoing frame's type from its envelope prefix
// ({"type":"..."), "other" for anything else.
func frameType(frame []byte) string {
	rest, ok := bytes.CutPrefix(frame, []byte(`{"type":"`))
	if !ok {
		return "other"
	}
	for _, t := range frameTypes {
		if len(rest) > len(t) && rest[len(t)] == '"' && string(rest[:len(t)]) == t {
			return t
		}
	}
	return "other"
}

// logEvery is how often one kind of agent mistake is logged; the ones in
// between are only counted (in the metrics and the next line's "suppressed").
const logEvery = 10 * time.Second

// logLimiter lets one log line per kind through per interval, so an agent
// repeating a mistake cannot flood the log.
type logLimiter struct {
	every      time.Duration
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// allow reports whether a line of kind may be logged now, and how many of it
// were suppressed since the last one.
func (l *logLimiter) allow(kind string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[kind]; ok && now.Sub(t) < l.every {
		if l.suppressed == nil {
			l.suppressed = map[string]int{}
		}
		l.suppressed[kind]++
		return false, 0
	}
	l.last[kind] = now
	n := l.suppressed[kind]
	delete(l.suppressed, kind)
	return true, n
}
