package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/viworks/backend-agent/e2e/cluster"
)

// scaleOutResult is the throughput run again with two gateways and two
// schedulers, each its own process.
type scaleOutResult struct {
	agents     int
	throughput float64 // executions/s with 2 gateways + 2 schedulers
	single     float64 // the 1 + 1 run of the same sizes (the throughput scenario)
}

// ratio is 2+2 over 1+1.
func (s scaleOutResult) ratio() float64 {
	if s.single <= 0 {
		return 0
	}
	return s.throughput / s.single
}

// scaleOut starts a second scheduler process and a fleet of the throughput
// scenario's size split over both gateways, and runs the same throughput
// load; the second scheduler and the fleet are stopped afterwards.
func (r *run) scaleOut(ctx context.Context, m *measured) error {
	cfg := r.cfg
	port, err := cluster.FreePort()
	if err != nil {
		return err
	}
	r.progress("scale-out: a second scheduler process; %d agents over %d gateways", cfg.Agents, len(r.sys.gateways))
	second, err := r.sys.startService(r.c, "scheduler-2", "scheduler", port)
	if err != nil {
		return fmt.Errorf("scale-out: starting the second scheduler: %w", err)
	}
	defer second.Stop(20 * time.Second)
	fleet, err := startFleet(r.c, r.sys.gateways, "scale-agentsim", "s-", cfg.Agents)
	defer stopProcs(fleet)
	if err != nil {
		return err
	}
	if err := r.sys.waitFleet(ctx, "s-", cfg.Agents, 4*time.Minute); err != nil {
		return fmt.Errorf("scale-out: %w", err)
	}
	r.progress("scale-out: throughput %s with %d agents, %d agents per command, 2 gateways + 2 schedulers", cfg.Throughput, cfg.Agents, cfg.FanOut)
	wait := r.prof.capture(ctx, "scaleout", cfg.Throughput, map[string]string{"scheduler": r.sys.scheduler, "scheduler2": fmt.Sprintf("http://127.0.0.1:%d", port),
		"gateway1": "http://" + r.sys.gateways[0], "gateway2": "http://" + r.sys.gateways[1]})
	tput, err := throughput(ctx, r.sys, r.results, "s-", cfg.Agents, cfg.FanOut, cfg.Throughput, r.progress)
	r.reportProfiles(wait())
	if err != nil {
		return fmt.Errorf("scale-out: %w", err)
	}
	var unfinished int
	if err := r.db.QueryRowContext(ctx, `SELECT count(*) FROM executions WHERE status <> 'succeeded' AND agent_id LIKE 's-%'`).Scan(&unfinished); err != nil {
		return err
	}
	if unfinished > 0 {
		return fmt.Errorf("scale-out: %d executions did not succeed", unfinished)
	}
	m.scale = scaleOutResult{agents: cfg.Agents, throughput: tput, single: m.throughput}
	r.progress("scale-out: %.0f executions/s with 2 + 2 against %.0f with 1 + 1 (%.2f×)", tput, m.throughput, m.scale.ratio())
	return nil
}

// scaleOutRows is the scale-out row of the result table.
func scaleOutRows(s scaleOutResult) []Row {
	return []Row{{"scale-out", fmt.Sprintf("%.0f executions/s with 2 gateways + 2 schedulers", s.throughput), "≥ 0.9× of 1 + 1 (2 cores)",
		fmt.Sprintf("1 gateway + 1 scheduler %.0f/s", s.single), fmt.Sprintf("%.2f×", s.ratio()), met(s.single > 0 && s.ratio() >= 0.9)}}
}
