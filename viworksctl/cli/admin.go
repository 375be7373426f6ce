package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/viworks/backend-agent/viworksctl/client"
	"github.com/viworks/backend-agent/viworksctl/output"
)

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "The installation: live gateways, schedulers, api-servers and the queue",
		Example: `  viworksctl status
  viworksctl status -o json | jq .queue_depth.total`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.getOne(cmd, "/api/v1/status", nil, func(p *output.Printer, doc map[string]any) error {
				if err := fields(p, doc, "time", "agents_online", "leader_elected", "queue_depth"); err != nil {
					return err
				}
				var items []any
				for _, role := range []string{"gateways", "schedulers", "api_servers"} {
					list, _ := doc[role].([]any)
					for _, it := range list {
						if m, ok := it.(map[string]any); ok {
							m["role"] = strings.TrimSuffix(strings.ReplaceAll(role, "_", "-"), "s")
							items = append(items, m)
						}
					}
				}
				fmt.Fprintln(p.W)
				return rows(p, items, []column{col("ROLE", "role"), col("ID", "id"), col("VERSION", "version"), col("HOSTNAME", "hostname"),
					col("LIVE", "live"), col("LEADER", "leader"), col("AGENTS", "agents_online"), col("LAST SEEN", "last_seen_at")})
			})
		},
	}
}

func (a *app) auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "audit",
		Short:   "The audit trail and its verification (admin)",
		Example: "  viworksctl audit ls --action command.create\n  viworksctl audit verify",
	}
	var actor, action, target, from, to string
	var pf pageFlags
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "Audit records, newest first",
		Example: `  viworksctl audit ls
  viworksctl audit ls --actor apikey:1f2e… --from 2026-12-01T00:00:00Z -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := url.Values{}
			set(v, "actor", actor)
			set(v, "action", action)
			set(v, "target", target)
			set(v, "from", from)
			set(v, "to", to)
			return a.list(cmd, "/api/v1/audit", v, &pf, []column{col("ID", "id"), col("AT", "at"), col("ACTOR", "actor"), col("ACTION", "action"),
				col("TARGET", "target"), col("CLIENT IP", "client_ip"), col("REQUEST ID", "request_id"), col("DETAILS", "details")})
		},
	}
	f := ls.Flags()
	f.StringVar(&actor, "actor", "", "who acted")
	f.StringVar(&action, "action", "", "action, such as command.create")
	f.StringVar(&target, "target", "", "target id")
	f.StringVar(&from, "from", "", "at or after (RFC 3339)")
	f.StringVar(&to, "to", "", "before (RFC 3339)")
	pf.add(ls)
	verify := &cobra.Command{
		Use:     "verify",
		Short:   "Verify the audit chain against its head kept outside the database; exit 1 when broken",
		Example: "  viworksctl audit verify",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := a.call(cmd, client.Request{Method: http.MethodGet, Path: "/api/v1/audit/verify"})
			if err != nil {
				return err
			}
			if err := a.show(resp.Body, func(p *output.Printer, doc map[string]any) error {
				return fields(p, doc, "ok", "checked", "legacy", "broken_id", "truncated", "reason", "head.last_id", "head.at")
			}); err != nil {
				return err
			}
			var v struct {
				OK     bool   `json:"ok"`
				Reason string `json:"reason"`
			}
			if err := json.Unmarshal(resp.Body, &v); err != nil {
				return fmt.Errorf("decoding the verification: %w", err)
			}
			if !v.OK {
				return withCode(ExitFailed, fmt.Errorf("the audit chain does not verify: %s", v.Reason))
			}
			return nil
		},
	}
	cmd.AddCommand(ls, verify)
	return cmd
}

func (a *app) alertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "alerts",
		Short:   "Alerts fired by the alert rules",
		Example: "  viworksctl alerts ls --state firing",
	}
	var state, rule string
	var pf pageFlags
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List alerts",
		Example: "  viworksctl alerts ls\n  viworksctl alerts ls --state firing -o json",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := url.Values{}
			set(v, "state", state)
			set(v, "rule_id", rule)
			return a.list(cmd, "/api/v1/alerts", v, &pf, []column{col("ID", "id"), col("RULE", "rule_name"), col("KIND", "kind"), col("SUBJECT", "subject"),
				statusCol("STATE", "state"), col("FIRED", "fired_at"), col("RESOLVED", "resolved_at"), col("DETAILS", "details")})
		},
	}
	ls.Flags().StringVar(&state, "state", "", "firing or resolved")
	ls.Flags().StringVar(&rule, "rule", "", "alert rule id")
	_ = ls.RegisterFlagCompletionFunc("state", cobra.FixedCompletions([]string{"firing", "resolved"}, cobra.ShellCompDirectiveNoFileComp))
	pf.add(ls)
	cmd.AddCommand(ls)
	return cmd
}

// crud is a resource with ls, create and delete (or revoke).
type crud struct {
	use, short, path, remove string
	cols                     []column
	example                  string
	create                   *cobra.Command
	extra                    []*cobra.Command
}

func (a *app) crudCmd(r crud) *cobra.Command {
	cmd := &cobra.Command{Use: r.use, Short: r.short, Example: r.example}
	var pf pageFlags
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List " + r.use,
		Example: fmt.Sprintf("  viworksctl %s ls\n  viworksctl %s ls -o json", r.use, r.use),
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, r.path, nil, &pf, r.cols)
		},
	}
	pf.add(ls)
	del := &cobra.Command{
		Use:     r.remove + " ID",
		Short:   strings.ToUpper(r.remove[:1]) + r.remove[1:] + " one of the " + r.use,
		Example: fmt.Sprintf("  viworksctl %s %s 1f2e…", r.use, r.remove),
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			past := map[string]string{"delete": "deleted", "revoke": "revoked", "retire": "retired"}[r.remove]
			return a.mutate(cmd, client.Request{Method: http.MethodDelete, Path: r.path + "/" + pathID(args[0])}, past+" "+args[0], nil)
		},
	}
	cmd.AddCommand(ls, r.create, del)
	cmd.AddCommand(r.extra...)
	return cmd
}

// post sends body to path and prints the answer's fields keys.
func (a *app) post(cmd *cobra.Command, path string, body map[string]any, keys ...string) error {
	resp, err := a.call(cmd, client.Request{Method: http.MethodPost, Path: path, Body: body})
	if err != nil {
		return err
	}
	return a.show(resp.Body, func(p *output.Printer, doc map[string]any) error { return fields(p, doc, keys...) })
}

func jsonObject(flag, raw string) (map[string]any, error) {
	m := map[string]any{}
	if raw == "" {
		return m, nil
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil || m == nil {
		return nil, usageErrorf("--%s: want a JSON object", flag)
	}
	return m, nil
}

func (a *app) alertRulesCmd() *cobra.Command {
	var name, kind, params string
	var disabled bool
	create := &cobra.Command{
		Use:   "create --name N --kind K [--params JSON]",
		Short: "Create an alert rule",
		Example: `  viworksctl alert-rules create --name offline --kind agent_offline --params '{"for_seconds":60}'
  viworksctl alert-rules create --name cpu --kind metric_threshold --params '{"metric":"cpu","above":90}'`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := jsonObject("params", params)
			if err != nil {
				return err
			}
			return a.post(cmd, "/api/v1/alert-rules", map[string]any{"name": name, "kind": kind, "params": p, "enabled": !disabled},
				"id", "name", "kind", "params", "enabled", "created_by", "created_at")
		},
	}
	f := create.Flags()
	f.StringVar(&name, "name", "", "rule name")
	f.StringVar(&kind, "kind", "", "agent_offline, agent_unhealthy, metric_threshold or command_failure_rate")
	f.StringVar(&params, "params", "", "the kind's parameters as a JSON object")
	f.BoolVar(&disabled, "disabled", false, "create it disabled")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("kind")
	_ = create.RegisterFlagCompletionFunc("kind", cobra.FixedCompletions([]string{"agent_offline", "agent_unhealthy", "metric_threshold", "command_failure_rate"}, cobra.ShellCompDirectiveNoFileComp))
	return a.crudCmd(crud{
		use: "alert-rules", short: "Alert rules (admin)", path: "/api/v1/alert-rules", remove: "delete", create: create,
		example: "  viworksctl alert-rules ls\n  viworksctl alert-rules create --name offline --kind agent_offline",
		cols:    []column{col("ID", "id"), col("NAME", "name"), col("KIND", "kind"), col("PARAMS", "params"), col("ENABLED", "enabled"), col("CREATED BY", "created_by"), col("CREATED", "created_at")},
	})
}

func (a *app) webhooksCmd() *cobra.Command {
	var u, secret string
	var disabled bool
	create := &cobra.Command{
		Use:     "create --url URL [--secret S]",
		Short:   "Register a webhook; the answer shows its secret once",
		Example: "  viworksctl webhooks create --url https://hooks.example.com/viworks",
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"url": u, "enabled": !disabled}
			if secret != "" {
				body["secret"] = secret
			}
			return a.post(cmd, "/api/v1/webhooks", body, "id", "url", "enabled", "secret", "created_by", "created_at")
		},
	}
	create.Flags().StringVar(&u, "url", "", "http or https URL of the receiver")
	create.Flags().StringVar(&secret, "secret", "", "signing secret (default: generated)")
	create.Flags().BoolVar(&disabled, "disabled", false, "create it disabled")
	_ = create.MarkFlagRequired("url")
	var status string
	var pf pageFlags
	deliveries := &cobra.Command{
		Use:     "deliveries ID",
		Short:   "A webhook's delivery log",
		Example: "  viworksctl webhooks deliveries 1f2e… --status failed",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v := url.Values{}
			set(v, "status", status)
			return a.list(cmd, "/api/v1/webhooks/"+pathID(args[0])+"/deliveries", v, &pf, []column{col("ID", "id"), col("EVENT", "event"), statusCol("STATUS", "status"),
				col("ATTEMPTS", "attempts"), col("CODE", "response_code"), col("BYTES", "response_bytes"), col("ERROR", "last_error"), col("LAST ATTEMPT", "last_attempt_at")})
		},
	}
	deliveries.Flags().StringVar(&status, "status", "", "delivery status")
	pf.add(deliveries)
	return a.crudCmd(crud{
		use: "webhooks", short: "Webhooks alerts are delivered to (admin)", path: "/api/v1/webhooks", remove: "delete", create: create, extra: []*cobra.Command{deliveries},
		example: "  viworksctl webhooks ls\n  viworksctl webhooks create --url https://hooks.example.com/viworks",
		cols:    []column{col("ID", "id"), col("URL", "url"), col("ENABLED", "enabled"), col("CREATED BY", "created_by"), col("CREATED", "created_at")},
	})
}

func (a *app) apiKeysCmd() *cobra.Command {
	var name, role string
	var expiresIn time.Duration
	var keyOnly bool
	create := &cobra.Command{
		Use:   "create --name N --role viewer|operator|admin [--expires-in D]",
		Short: "Create an API key; the answer shows the key once",
		Example: `  viworksctl api-keys create --name ci --role operator --expires-in 720h
  viworksctl api-keys create --name laptop --role operator --key-only | viworksctl login --server http://localhost:8080`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"name": name, "role": role}
			if cmd.Flags().Changed("expires-in") {
				s, err := seconds("expires-in", expiresIn)
				if err != nil {
					return err
				}
				body["expires_in"] = s
			}
			resp, err := a.call(cmd, client.Request{Method: http.MethodPost, Path: "/api/v1/api-keys", Body: body})
			if err != nil {
				return err
			}
			if keyOnly {
				var k struct {
					Key string `json:"key"`
				}
				if err := json.Unmarshal(resp.Body, &k); err != nil || k.Key == "" {
					return fmt.Errorf("the answer holds no key")
				}
				fmt.Fprintln(a.io.Out, k.Key)
				return nil
			}
			return a.show(resp.Body, func(p *output.Printer, doc map[string]any) error {
				return fields(p, doc, "id", "name", "role", "prefix", "key", "expires_at", "created_by", "created_at")
			})
		},
	}
	f := create.Flags()
	f.StringVar(&name, "name", "", "what the key is for")
	f.StringVar(&role, "role", "", "viewer, operator or admin")
	f.DurationVar(&expiresIn, "expires-in", 0, "lifetime, such as 720h (default: no expiry)")
	f.BoolVar(&keyOnly, "key-only", false, "print only the key (for a pipe into viworksctl login)")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("role")
	_ = create.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"viewer", "operator", "admin"}, cobra.ShellCompDirectiveNoFileComp))
	return a.crudCmd(crud{
		use: "api-keys", short: "API keys, exchanged for short-lived tokens (admin)", path: "/api/v1/api-keys", remove: "revoke", create: create,
		example: "  viworksctl api-keys ls\n  viworksctl api-keys create --name ci --role operator",
		cols: []column{col("ID", "id"), col("NAME", "name"), col("ROLE", "role"), col("PREFIX", "prefix"), col("CREATED BY", "created_by"),
			col("EXPIRES", "expires_at"), col("REVOKED", "revoked_at"), col("LAST USED", "last_used_at")},
	})
}

func (a *app) enrollmentSecretsCmd() *cobra.Command {
	var name, site, pattern string
	var labels, caps []string
	var maxUses, maxAgents int
	var expiresIn time.Duration
	create := &cobra.Command{
		Use:   "create --name N [--site S] [--label k=v …] [--capability C …]",
		Short: "Create an enrollment secret; the answer shows it once",
		Example: `  viworksctl enrollment-secrets create --name paris-web --site paris --label role=web --max-agents 50
  viworksctl enrollment-secrets create --name lab --capability echo --capability sleep --expires-in 24h`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"name": name}
			f := cmd.Flags()
			if site != "" {
				body["site"] = site
			}
			if len(labels) > 0 {
				lm := map[string]string{}
				for _, l := range labels {
					k, v, ok := strings.Cut(l, "=")
					if !ok || k == "" {
						return usageErrorf("--label %q: want k=v", l)
					}
					lm[k] = v
				}
				body["labels"] = lm
			}
			if f.Changed("capability") {
				body["allowed_capabilities"] = caps
			}
			if f.Changed("max-uses") {
				body["max_uses"] = maxUses
			}
			if f.Changed("max-agents") {
				body["max_agents"] = maxAgents
			}
			if pattern != "" {
				body["agent_id_pattern"] = pattern
			}
			if f.Changed("expires-in") {
				s, err := seconds("expires-in", expiresIn)
				if err != nil {
					return err
				}
				body["expires_in"] = s
			}
			return a.post(cmd, "/api/v1/enrollment-secrets", body, "id", "name", "secret", "site", "labels", "allowed_capabilities",
				"max_uses", "max_agents", "agent_id_pattern", "expires_at", "created_at")
		},
	}
	f := create.Flags()
	f.StringVar(&name, "name", "", "what the secret is for")
	f.StringVar(&site, "site", "", "trusted site of the agents it enrolls")
	f.StringArrayVar(&labels, "label", nil, "trusted label k=v, repeatable")
	f.StringArrayVar(&caps, "capability", nil, "allowed capability, repeatable (default: any the agents announce)")
	f.IntVar(&maxUses, "max-uses", 0, "enrollments it allows")
	f.IntVar(&maxAgents, "max-agents", 0, "distinct agent identities it may create")
	f.StringVar(&pattern, "agent-id-pattern", "", "RE2 expression the whole agent id must match")
	f.DurationVar(&expiresIn, "expires-in", 0, "lifetime, such as 24h")
	_ = create.MarkFlagRequired("name")
	return a.crudCmd(crud{
		use: "enrollment-secrets", short: "Secrets agents enroll with (admin)", path: "/api/v1/enrollment-secrets", remove: "revoke", create: create,
		example: "  viworksctl enrollment-secrets ls\n  viworksctl enrollment-secrets create --name paris --site paris",
		cols: []column{col("ID", "id"), col("NAME", "name"), col("SITE", "site"), col("LABELS", "labels"), col("CAPABILITIES", "allowed_capabilities"),
			col("USES", "uses"), col("AGENTS", "agents"), col("EXPIRES", "expires_at"), col("REVOKED", "revoked_at")},
	})
}
