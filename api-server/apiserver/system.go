package apiserver

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/store"
)

// DependencyHealth is the answer of GET /health/database and /health/redis:
// only "ok" or "unavailable", never the error, address or host behind it.
type DependencyHealth struct {
	Check  string    `json:"check"`
	Status string    `json:"status"`
	Time   time.Time `json:"time"`
}

func (s *Server) dependencyHealth(name string, ping func(context.Context) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.HealthTimeout)
		defer cancel()
		v := DependencyHealth{Check: name, Status: "ok", Time: time.Now().UTC()}
		code := http.StatusOK
		if err := ping(ctx); err != nil {
			s.log.WithError(err).WithFields(logrus.Fields{"check": name, "request_id": c.GetString(ctxRequestID)}).Warn("health check failed")
			v.Status, code = "unavailable", http.StatusServiceUnavailable
		}
		c.Header("Cache-Control", "no-store")
		c.JSON(code, v)
	}
}

// InstanceView is one live service process in GET /status.
type InstanceView struct {
	ID         string     `json:"id"`
	Version    string     `json:"version"`
	Hostname   string     `json:"hostname"`
	StartedAt  *time.Time `json:"started_at"`
	LastSeenAt *time.Time `json:"last_seen_at"`
}

// GatewayView is a gateway in GET /status.
type GatewayView struct {
	InstanceView
	Live         bool  `json:"live"` // seen within the liveness window; false: agents still name it, its record is gone or old
	AgentsOnline int64 `json:"agents_online"`
}

// SchedulerView is a scheduler in GET /status.
type SchedulerView struct {
	InstanceView
	Leader bool `json:"leader"` // holds the maintenance lease
}

// QueueDepthView counts the executions waiting for dispatch.
type QueueDepthView struct {
	Low      int64 `json:"low"`
	Normal   int64 `json:"normal"`
	High     int64 `json:"high"`
	Critical int64 `json:"critical"`
	Total    int64 `json:"total"`
}

// StatusView is the answer of GET /status.
type StatusView struct {
	Time          time.Time       `json:"time"`
	SeenWithinS   float64         `json:"seen_within_s"`
	Gateways      []GatewayView   `json:"gateways"`
	Schedulers    []SchedulerView `json:"schedulers"`
	APIServers    []InstanceView  `json:"api_servers"`
	QueueDepth    QueueDepthView  `json:"queue_depth"`
	AgentsOnline  int64           `json:"agents_online"`
	LeaderElected bool            `json:"leader_elected"`
}

func queueDepthView(m map[store.Priority]int64) QueueDepthView {
	q := QueueDepthView{
		Low: m[store.PriorityLow], Normal: m[store.PriorityNormal], High: m[store.PriorityHigh], Critical: m[store.PriorityCritical],
	}
	for _, n := range m {
		q.Total += n
	}
	return q
}

func instanceView(in store.ServiceInstance) InstanceView {
	started, seen := in.StartedAt.UTC(), in.LastSeenAt.UTC()
	return InstanceView{ID: in.ID, Version: in.Version, Hostname: in.Hostname, StartedAt: &started, LastSeenAt: &seen}
}

func (s *Server) status(c *gin.Context) {
	ctx := c.Request.Context()
	now := time.Now().UTC()
	instances, err := s.store.ServiceInstancesSeen(ctx, now.Add(-s.cfg.InstanceSeenWithin))
	if err != nil {
		s.internalError(c, "listing service instances failed", err)
		return
	}
	perGateway, err := s.store.OnlineAgentsByGateway(ctx)
	if err != nil {
		s.internalError(c, "counting agents per gateway failed", err)
		return
	}
	depth, err := s.store.QueueDepth(ctx)
	if err != nil {
		s.internalError(c, "counting the queue failed", err)
		return
	}
	out := StatusView{
		Time: now, SeenWithinS: s.cfg.InstanceSeenWithin.Seconds(),
		Gateways: []GatewayView{}, Schedulers: []SchedulerView{}, APIServers: []InstanceView{},
		QueueDepth: queueDepthView(depth),
	}
	listed := map[string]bool{}
	for _, in := range instances {
		switch in.Role {
		case store.RoleGateway:
			listed[in.ID] = true
			out.Gateways = append(out.Gateways, GatewayView{InstanceView: instanceView(in), Live: true, AgentsOnline: perGateway[in.ID]})
		case store.RoleScheduler:
			out.Schedulers = append(out.Schedulers, SchedulerView{InstanceView: instanceView(in), Leader: in.Leader})
			out.LeaderElected = out.LeaderElected || in.Leader
		case store.RoleAPIServer:
			out.APIServers = append(out.APIServers, instanceView(in))
		}
	}
	// Gateways that online agents still name but that are not live: dead, or
	// not yet swept by the scheduler.
	var orphans []string
	for id := range perGateway {
		if !listed[id] {
			orphans = append(orphans, id)
		}
	}
	sort.Strings(orphans)
	for _, id := range orphans {
		out.Gateways = append(out.Gateways, GatewayView{InstanceView: InstanceView{ID: id}, AgentsOnline: perGateway[id]})
	}
	for _, n := range perGateway {
		out.AgentsOnline += n
	}
	c.JSON(http.StatusOK, out)
}

// SummaryView is the answer of GET /metrics: a JSON summary for people (the
// Prometheus text is served at /metrics at the root of every service).
type SummaryView struct {
	Time   time.Time `json:"time"`
	Agents struct {
		Online  int64 `json:"online"`
		Offline int64 `json:"offline"`
		Total   int64 `json:"total"`
	} `json:"agents"`
	Commands struct {
		Total    int64            `json:"total"`
		ByStatus map[string]int64 `json:"by_status"`
	} `json:"commands"`
	Executions struct {
		FinishedLast1m   int64          `json:"finished_last_1m"`
		FinishedLast5m   int64          `json:"finished_last_5m"`
		ThroughputPerS1m float64        `json:"throughput_per_s_1m"`
		ThroughputPerS5m float64        `json:"throughput_per_s_5m"`
		QueueDepth       QueueDepthView `json:"queue_depth"`
	} `json:"executions"`
	DispatchLatency struct {
		WindowS float64 `json:"window_s"`
		Samples int64   `json:"samples"`
		P50Ms   float64 `json:"p50_ms"`
		P99Ms   float64 `json:"p99_ms"`
	} `json:"dispatch_latency"`
}

func (s *Server) summary(c *gin.Context) {
	ctx := c.Request.Context()
	now := time.Now().UTC()
	act, err := s.store.Activity(ctx, now)
	if err != nil {
		s.internalError(c, "summarising activity failed", err)
		return
	}
	depth, err := s.store.QueueDepth(ctx)
	if err != nil {
		s.internalError(c, "counting the queue failed", err)
		return
	}
	var v SummaryView
	v.Time = now
	v.Agents.Online, v.Agents.Offline = act.AgentsByStatus[store.AgentOnline], act.AgentsByStatus[store.AgentOffline]
	for _, n := range act.AgentsByStatus {
		v.Agents.Total += n
	}
	v.Commands.ByStatus = act.CommandsByStatus
	for _, n := range act.CommandsByStatus {
		v.Commands.Total += n
	}
	v.Executions.FinishedLast1m, v.Executions.FinishedLast5m = act.Finished1m, act.Finished5m
	v.Executions.ThroughputPerS1m = float64(act.Finished1m) / 60
	v.Executions.ThroughputPerS5m = float64(act.Finished5m) / 300
	v.Executions.QueueDepth = queueDepthView(depth)
	v.DispatchLatency.WindowS = 300
	v.DispatchLatency.Samples = act.Dispatch.Samples
	v.DispatchLatency.P50Ms = act.Dispatch.P50 * 1000
	v.DispatchLatency.P99Ms = act.Dispatch.P99 * 1000
	c.JSON(http.StatusOK, v)
}
