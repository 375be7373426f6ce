package cli

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/viworks/backend-agent/viworksctl/client"
	"github.com/viworks/backend-agent/viworksctl/output"
)

var agentCols = []column{
	col("ID", "id"), statusCol("STATUS", "status"), col("SITE", "site"), col("LABELS", "labels"),
	col("HOSTNAME", "hostname"), col("VERSION", "version"), col("GATEWAY", "gateway_id"), col("LAST SEEN", "last_seen_at"),
}

func (a *app) agentsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "agents",
		Aliases: []string{"agent"},
		Short:   "The fleet: list agents, their health and telemetry, revoke them",
		Example: `  viworksctl agents ls --status online --site paris
  viworksctl agents health sim-0`,
	}
	cmd.AddCommand(a.agentsLs(), a.agentsGet(), a.agentsHealth(), a.agentsTelemetry(), a.agentsRevoke(), a.agentsUnrevoke())
	return cmd
}

func (a *app) agentsLs() *cobra.Command {
	var status, site, capability, q string
	var labels []string
	var pf pageFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List agents (filters as GET /api/v1/agents)",
		Example: `  viworksctl agents ls
  viworksctl agents ls --status online --label role=web --label env=prod
  viworksctl agents ls --capability echo -q sim- -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := url.Values{}
			set(v, "status", status)
			set(v, "site", site)
			set(v, "capability", capability)
			set(v, "q", q)
			for _, l := range labels {
				if !strings.Contains(l, "=") {
					return usageErrorf("--label %q: want k=v", l)
				}
				v.Add("label", l)
			}
			return a.list(cmd, "/api/v1/agents", v, &pf, agentCols)
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "online or offline")
	f.StringVar(&site, "site", "", "trusted site")
	f.StringArrayVar(&labels, "label", nil, "k=v, repeatable: all must match the trusted labels")
	f.StringVar(&capability, "capability", "", "an allowed capability")
	f.StringVarP(&q, "query", "q", "", "agent id prefix")
	_ = cmd.RegisterFlagCompletionFunc("status", cobra.FixedCompletions([]string{"online", "offline"}, cobra.ShellCompDirectiveNoFileComp))
	pf.add(cmd)
	return cmd
}

func set(v url.Values, k, val string) {
	if val != "" {
		v.Set(k, val)
	}
}

func (a *app) agentsGet() *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Short:   "One agent",
		Example: "  viworksctl agents get sim-0\n  viworksctl agents get sim-0 -o yaml",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.getOne(cmd, "/api/v1/agents/"+pathID(args[0]), nil, func(p *output.Printer, doc map[string]any) error {
				return fields(p, doc, "id", "status", "site", "labels", "capabilities", "attributes_source", "hostname", "os", "arch",
					"version", "gateway_id", "connected_at", "last_seen_at", "health.status", "health.uptime_s",
					"reported_site", "reported_labels", "reported_capabilities")
			})
		},
	}
}

func (a *app) agentsHealth() *cobra.Command {
	return &cobra.Command{
		Use:     "health ID",
		Short:   "An agent's latest heartbeat and state (online, stale, offline)",
		Example: "  viworksctl agents health sim-0",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.getOne(cmd, "/api/v1/agents/"+pathID(args[0])+"/health", nil, func(p *output.Printer, doc map[string]any) error {
				return fields(p, doc, "agent_id", "state", "status", "health.status", "health.uptime_s", "last_seen_at", "seconds_since_seen", "heartbeat_interval_s", "stale_after_s")
			})
		},
	}
}

func (a *app) agentsTelemetry() *cobra.Command {
	var since time.Duration
	var step string
	var metrics []string
	cmd := &cobra.Command{
		Use:   "telemetry ID",
		Short: "An agent's telemetry, one sparkline of averages per metric",
		Example: `  viworksctl agents telemetry sim-0 --since 1h --metric cpu_percent
  viworksctl agents telemetry sim-0 --since 15m --step 30s -o json`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if since <= 0 {
				return usageErrorf("--since must be positive, such as 1h")
			}
			v := url.Values{"from": {time.Now().Add(-since).UTC().Format(time.RFC3339)}}
			set(v, "step", step)
			for _, m := range metrics {
				v.Add("metric", m)
			}
			return a.getOne(cmd, "/api/v1/agents/"+pathID(args[0])+"/telemetry", v, func(p *output.Printer, doc map[string]any) error {
				return telemetryTable(p, doc)
			})
		},
	}
	f := cmd.Flags()
	f.DurationVar(&since, "since", time.Hour, "how far back, such as 15m or 6h")
	f.StringVar(&step, "step", "", "bucket width, such as 30s or 5m (default the server's: at most 300 buckets)")
	f.StringArrayVar(&metrics, "metric", nil, "metric to show, repeatable (default all)")
	return cmd
}

// telemetryTable shows each series as its last, minimum, maximum and a
// sparkline of its averages, scaled to the terminal.
func telemetryTable(p *output.Printer, doc map[string]any) error {
	series, _ := doc["series"].([]any)
	if len(series) == 0 {
		_, err := fmt.Fprintln(p.W, "no telemetry in this window")
		return err
	}
	spark := 60
	if p.Width > 0 {
		spark = max(10, min(spark, p.Width-60))
	}
	var out [][]string
	for _, s := range series {
		m, _ := s.(map[string]any)
		pts, _ := m["points"].([]any)
		avgs := make([]float64, 0, len(pts))
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, pt := range pts {
			pm, _ := pt.(map[string]any)
			avg, mx := num(pm["avg"]), num(pm["max"])
			avgs = append(avgs, avg)
			lo, hi = math.Min(lo, avg), math.Max(hi, mx)
		}
		if len(avgs) == 0 {
			continue
		}
		out = append(out, []string{str(m["metric"]), fmt.Sprint(len(avgs)), fmtNum(avgs[len(avgs)-1]), fmtNum(lo), fmtNum(hi), output.Sparkline(squeeze(avgs, spark))})
	}
	if err := p.Table([]string{"METRIC", "POINTS", "LAST AVG", "MIN AVG", "MAX", "TREND"}, out); err != nil {
		return err
	}
	_, err := fmt.Fprintf(p.W, "from %s to %s, step %ss\n", str(doc["from"]), str(doc["to"]), str(doc["step_seconds"]))
	return err
}

func num(v any) float64 {
	if n, ok := v.(json.Number); ok {
		f, _ := n.Float64()
		return f
	}
	return math.NaN()
}

func fmtNum(f float64) string { return fmt.Sprintf("%.4g", f) }

// squeeze averages values into at most n buckets.
func squeeze(values []float64, n int) []float64 {
	if len(values) <= n {
		return values
	}
	out := make([]float64, n)
	for i := range n {
		lo, hi := i*len(values)/n, (i+1)*len(values)/n
		sum := 0.0
		for _, v := range values[lo:hi] {
			sum += v
		}
		out[i] = sum / float64(hi-lo)
	}
	return out
}

func (a *app) agentsRevoke() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an agent's credential: its session closes, its open executions are cancelled (admin)",
		Long: `Revoke an agent's credential: dead at once on every gateway, the live session
closed within a second, its open executions cancelled, and enrolling the id
refused until ` + "`viworksctl agents unrevoke ID`" + ` (admin).`,
		Example: "  viworksctl agents revoke sim-3",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.mutate(cmd, client.Request{Method: http.MethodPost, Path: "/api/v1/agents/" + pathID(args[0]) + "/revoke"}, "", func(p *output.Printer, doc map[string]any) error {
				return fields(p, doc, "agent_id", "cancelled_executions", "enrollment_blocked")
			})
		},
	}
}

func (a *app) agentsUnrevoke() *cobra.Command {
	return &cobra.Command{
		Use:     "unrevoke ID",
		Short:   "Lift a revoked agent's enrollment block (admin)",
		Example: "  viworksctl agents unrevoke sim-3",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.mutate(cmd, client.Request{Method: http.MethodPost, Path: "/api/v1/agents/" + pathID(args[0]) + "/unrevoke"}, "unrevoked "+args[0], nil)
		},
	}
}
