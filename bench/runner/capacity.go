package runner

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// unitCosts are the per-unit costs the capacity model scales, measured in
// this run (zero when the scenario that measures one did not run).
type unitCosts struct {
	agentCPU       map[string]float64 // CPU µs per agent-interval (one heartbeat + one telemetry row), by service, the background without agents removed
	gatewayIdle    float64            // cores of one gateway process without agents (its background)
	gwRowUS        float64            // gateways' CPU µs per telemetry row (telemetry scenario)
	connectUS      float64            // gateway CPU µs per connect (connections scenario)
	sessionKiB     float64            // gateway RSS per idle session
	pgPerAgent     float64            // Postgres rows written per agent-interval
	redisPerAgent  float64            // Redis commands per agent-interval (upper bound: shared server)
	execCPU        map[string]float64 // CPU µs per execution, by service
	pgPerExec      float64
	redisPerExec   float64
	execPS         float64 // executions/s of one fan-out at the largest size, one scheduler
	reconnectPS    float64 // agents/s one restarted gateway took back
	measuredAgents int     // the fleet size the costs come from
}

// capacityAssumptions are the model's fixed inputs, printed with the table.
type capacityAssumptions struct {
	interval     time.Duration // heartbeat and telemetry interval (the seed's 30 s)
	podCores     float64       // vCPU per pod
	podMemMiB    float64       // memory per pod
	headroom     float64       // fraction of a pod's cores and memory planned for (the rest is headroom)
	maxSessions  int           // sessions per gateway pod (agent_management.max_agent_connections)
	baseRSSMiB   float64       // a gateway's RSS without sessions
	fanOutAgents int           // the one big fan-out
}

var defaultAssumptions = capacityAssumptions{
	interval: 30 * time.Second, podCores: 2, podMemMiB: 4096, headroom: 0.6, maxSessions: 20000, baseRSSMiB: 64, fanOutAgents: 1_000_000,
}

// fleetCapacity is the model's answer for one fleet size at steady state.
type fleetCapacity struct {
	agents          int
	gatewayPods     int
	cores           map[string]float64 // by service
	totalCores      float64
	gatewayMemMiB   float64
	pgWritesPS      float64
	redisOpsPS      float64
	reconnectAllSec float64 // every agent reconnecting at once, spread over the gateway pods
}

// fleetModel scales the per-agent costs to n agents sending one heartbeat
// and one telemetry row per interval.
func fleetModel(u unitCosts, a capacityAssumptions, n int) fleetCapacity {
	perSec := float64(n) / a.interval.Seconds()
	f := fleetCapacity{agents: n, cores: map[string]float64{}}
	for svc, us := range u.agentCPU {
		f.cores[svc] = perSec * us / 1e6
		f.totalCores += f.cores[svc]
	}
	f.gatewayMemMiB = float64(n) * u.sessionKiB / 1024
	gwCores := 0.0
	for svc, c := range f.cores {
		if strings.HasPrefix(svc, "gateway") {
			gwCores += c
		}
	}
	bySessions := ceilDiv(float64(n), float64(a.maxSessions))
	byCPU := ceilDiv(gwCores, a.podCores*a.headroom)
	byMem := ceilDiv(f.gatewayMemMiB, a.podMemMiB*a.headroom-a.baseRSSMiB)
	f.gatewayPods = max(1, bySessions, byCPU, byMem)
	f.gatewayMemMiB += float64(f.gatewayPods) * a.baseRSSMiB
	if u.gatewayIdle > 0 {
		f.cores["gateway background"] = float64(f.gatewayPods) * u.gatewayIdle
		f.totalCores += f.cores["gateway background"]
	}
	f.pgWritesPS, f.redisOpsPS = perSec*u.pgPerAgent, perSec*u.redisPerAgent
	if u.reconnectPS > 0 {
		f.reconnectAllSec = float64(n) / (u.reconnectPS * float64(f.gatewayPods))
	}
	return f
}

// fanOutCapacity is the model's answer for one command to n agents.
type fanOutCapacity struct {
	agents      int
	coreSeconds map[string]float64 // CPU by service
	pgWrites    float64
	redisOps    float64
	oneSchedSec float64 // at the measured executions/s of one scheduler
}

func fanOutModel(u unitCosts, n int) fanOutCapacity {
	f := fanOutCapacity{agents: n, coreSeconds: map[string]float64{}, pgWrites: float64(n) * u.pgPerExec, redisOps: float64(n) * u.redisPerExec}
	for svc, us := range u.execCPU {
		f.coreSeconds[svc] = float64(n) * us / 1e6
	}
	if u.execPS > 0 {
		f.oneSchedSec = float64(n) / u.execPS
	}
	return f
}

func ceilDiv(a, b float64) int {
	if b <= 0 {
		return 0
	}
	return int(math.Ceil(a / b))
}

// capacitySizes are the fleets the capacity table is printed for.
var capacitySizes = []int{10_000, 100_000, 1_000_000}

// writeCapacity prints the capacity model: its inputs, its assumptions and
// the table for capacitySizes and one fan-out to a.fanOutAgents.
func writeCapacity(w io.Writer, u unitCosts, a capacityAssumptions, quick bool) {
	kind := "full run"
	if quick {
		kind = "QUICK run (small fleets: per-unit costs are rough)"
	}
	fmt.Fprintf(w, "capacity model (%s; docs/capacity.md explains it):\n", kind)
	fmt.Fprintf(w, "  measured per unit at %d agents: CPU µs per agent-interval (heartbeat + telemetry row) %s; gateways %.0f µs per telemetry row at load;\n"+
		"    gateway %.0f µs per connect, %.1f KiB per session; PG %.2f rows written per agent-interval, %.2f per execution; Redis %.2f commands per agent-interval, %.2f per execution;\n"+
		"    CPU µs per execution %s; one scheduler %.0f executions/s; a restarted gateway took back %.0f agents/s\n",
		u.measuredAgents, serviceList(u.agentCPU, "%.0f"), u.gwRowUS, u.connectUS, u.sessionKiB, u.pgPerAgent, u.pgPerExec, u.redisPerAgent, u.redisPerExec,
		serviceList(u.execCPU, "%.0f"), u.execPS, u.reconnectPS)
	fmt.Fprintf(w, "  assumptions: heartbeat and telemetry every %s per agent; pods of %.0f vCPU / %.0f MiB planned at %.0f%%; at most %d sessions per gateway pod;\n"+
		"    %.0f MiB base RSS per gateway; per-agent costs are what agents add (each service's CPU without agents removed; a gateway pod's background,\n"+
		"    %.3f cores, counted per pod); costs scale linearly from the measured fleet (the growth rows say how flat they were); Redis counts are of the\n"+
		"    whole (shared) Redis server, an upper bound; Postgres is one primary, not sized here beyond its write rate\n",
		a.interval, a.podCores, a.podMemMiB, a.headroom*100, a.maxSessions, a.baseRSSMiB, u.gatewayIdle)
	var rows [][]string
	for _, n := range capacitySizes {
		f := fleetModel(u, a, n)
		rows = append(rows, []string{fmt.Sprintf("%d", n), fmt.Sprintf("%d", f.gatewayPods), fmt.Sprintf("%.2f (%s)", f.totalCores, serviceList(f.cores, "%.2f")),
			fmt.Sprintf("%.0f MiB", f.gatewayMemMiB), fmt.Sprintf("%.0f", f.pgWritesPS), fmt.Sprintf("%.0f", f.redisOpsPS), fmt.Sprintf("%.0f s", f.reconnectAllSec)})
	}
	writeGrid(w, "  ", []string{"agents", "gateway pods", "cores (by service)", "gateway memory", "PG rows written/s", "Redis ops/s", "all reconnect at once"}, rows)
	fo := fanOutModel(u, a.fanOutAgents)
	fmt.Fprintf(w, "  one fan-out to %d agents: CPU core-seconds %s; %.0f PG rows written, %.0f Redis ops; %.0f s at one scheduler's measured rate\n\n",
		fo.agents, serviceList(fo.coreSeconds, "%.0f"), fo.pgWrites, fo.redisOps, fo.oneSchedSec)
}

// serviceList is "api-server 1, gateway-1 2, ..." in name order.
func serviceList(m map[string]float64, format string) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+" "+fmt.Sprintf(format, m[k]))
	}
	return strings.Join(parts, ", ")
}

// tier is the service a process is one of: the gateways' costs are summed
// into "gateway".
func tier(process string) string {
	if strings.HasPrefix(process, "gateway-") {
		return "gateway"
	}
	return process
}

// unitCosts gathers the per-unit costs from what the scenarios measured.
func (m measured) unitCosts() unitCosts {
	u := unitCosts{agentCPU: map[string]float64{}, execCPU: map[string]float64{}, connectUS: float64(m.conn.cpuPerConnect.Nanoseconds()) / 1000,
		sessionKiB: m.conn.perSessionKiB, reconnectPS: m.storm.rate()}
	if m.baseline.wall > 0 {
		u.gatewayIdle = m.baseline.cpu["gateway-1"].Seconds() / m.baseline.wall.Seconds()
	}
	if m.tel.persisted > 0 {
		u.gwRowUS = m.tel.gwCores * 1e6 / m.tel.persisted
	}
	if len(m.growth) == 0 {
		return u
	}
	g := m.growth[len(m.growth)-1] // the largest fleet
	u.measuredAgents = g.agents
	for svc, d := range g.idle.cpu {
		u.agentCPU[tier(svc)] += perUnit(d, g.idle.heartbeat)
	}
	for svc, d := range g.exec.cpu {
		u.execCPU[tier(svc)] += perUnit(d, float64(g.agents))
	}
	u.pgPerAgent, u.redisPerAgent = perCount(g.idle.pgWrites, g.idle.heartbeat), perCount(g.idle.redisOps, g.idle.heartbeat)
	u.pgPerExec, u.redisPerExec = perCount(g.exec.pgWrites, float64(g.agents)), perCount(g.exec.redisOps, float64(g.agents))
	u.execPS = g.execPS()
	return u
}
