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

var commandCols = []column{
	col("ID", "id"), col("VERB", "verb"), statusCol("STATUS", "status"), col("PRIORITY", "priority"),
	col("COUNTS", "counts"), col("CREATED BY", "created_by"), col("CREATED", "created_at"), col("FINISHED", "finished_at"),
}

var executionCols = []column{
	col("AGENT", "agent_id"), statusCol("STATUS", "status"), col("EXIT", "exit_code"), col("ATTEMPTS", "attempts"),
	col("OUTPUT", "output"), col("ERROR", "error"), col("FINISHED", "finished_at"),
}

func (a *app) commandsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "commands",
		Aliases: []string{"command", "cmd"},
		Short:   "Send commands to agents, follow, list and cancel them",
		Example: `  viworksctl commands send echo --arg message=hi --target sim-0 --wait
  viworksctl commands ls --status failed
  viworksctl commands watch 6f1c…`,
	}
	cmd.AddCommand(a.commandsSend(), a.commandsPreview(), a.commandsGet(), a.commandsLs(), a.commandsCancel(), a.commandsWatch())
	return cmd
}

// targeting are the flags naming a command's agents.
type targeting struct {
	targets  []string
	selector string
	any      bool
}

func (t *targeting) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringSliceVar(&t.targets, "target", nil, "agent id, repeatable or comma-separated")
	f.StringVar(&t.selector, "selector", "", "site=S,label=k=v,capability=C (comma-separated; labels repeatable, all must match)")
	f.BoolVar(&t.any, "any", false, "mode any: one of the matching agents, with failover (default all of them)")
}

// given reports whether any targeting flag was set.
func (t *targeting) given() bool { return len(t.targets) > 0 || t.selector != "" || t.any }

// body adds agent_targets, selector and mode to req.
func (t *targeting) body(req map[string]any) error {
	if len(t.targets) == 0 && t.selector == "" {
		return usageErrorf("name the agents with --target ID or --selector site=…,label=k=v")
	}
	if len(t.targets) > 0 {
		req["agent_targets"] = t.targets
	}
	if t.selector != "" {
		sel, err := parseSelector(t.selector)
		if err != nil {
			return err
		}
		req["selector"] = sel
	}
	if t.any {
		req["mode"] = "any"
	}
	return nil
}

// parseSelector reads site=S,label=k=v,capability=C.
func parseSelector(s string) (map[string]any, error) {
	sel := map[string]any{}
	labels := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || v == "" {
			return nil, usageErrorf("--selector %q: want site=S, label=k=v or capability=C, got %q", s, part)
		}
		switch k {
		case "site", "capability":
			if _, dup := sel[k]; dup {
				return nil, usageErrorf("--selector %q: %s given twice", s, k)
			}
			sel[k] = v
		case "label":
			lk, lv, ok := strings.Cut(v, "=")
			if !ok || lk == "" {
				return nil, usageErrorf("--selector %q: label wants k=v, got %q", s, v)
			}
			labels[lk] = lv
		default:
			return nil, usageErrorf("--selector %q: unknown key %q (site, label, capability)", s, k)
		}
	}
	if len(labels) > 0 {
		sel["labels"] = labels
	}
	return sel, nil
}

// runWhat are the flags saying what a command runs: a verb's arguments
// (--args, --arg), or a template with its parameters (--template, --params,
// --param). commands send takes the verb as its argument, schedules create
// as --verb.
type runWhat struct {
	argsJSON, template, paramsJSON string
	kvs, paramKVs                  []string
}

func (w *runWhat) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&w.argsJSON, "args", "", "the verb's arguments as a JSON object")
	f.StringArrayVar(&w.kvs, "arg", nil, "a verb argument: k=v (string) or k:=JSON, repeatable")
	f.StringVar(&w.template, "template", "", "a template's command instead of a verb: NAME or NAME@VERSION")
	f.StringVar(&w.paramsJSON, "params", "", "the template's parameters as a JSON object")
	f.StringArrayVar(&w.paramKVs, "param", nil, "a template parameter: k=v (string) or k:=JSON, repeatable")
}

// body sets req's verb and args, or its template and params.
func (w *runWhat) body(req map[string]any, verb string) error {
	if w.template != "" {
		if verb != "" {
			return usageErrorf("a verb or --template, not both")
		}
		if w.argsJSON != "" || len(w.kvs) > 0 {
			return usageErrorf("--args and --arg go with a verb; a template takes --params / --param")
		}
		params, err := parseArgs(w.paramsJSON, w.paramKVs)
		if err != nil {
			return err
		}
		req["template"], req["params"] = w.template, params
		return nil
	}
	if verb == "" {
		return usageErrorf("give the command: a verb, or --template T")
	}
	if w.paramsJSON != "" || len(w.paramKVs) > 0 {
		return usageErrorf("--params and --param go with --template")
	}
	args, err := parseArgs(w.argsJSON, w.kvs)
	if err != nil {
		return err
	}
	req["verb"], req["args"] = verb, args
	return nil
}

// parseArgs merges --args (a JSON object) and --arg k=v (a string) or k:=v
// (a JSON value).
func parseArgs(raw string, kvs []string) (map[string]any, error) {
	args := map[string]any{}
	if raw != "" {
		if err := json.Unmarshal([]byte(raw), &args); err != nil || args == nil {
			return nil, usageErrorf("--args: want a JSON object, such as '{\"message\":\"hi\"}'")
		}
	}
	for _, kv := range kvs {
		if k, v, ok := strings.Cut(kv, ":="); ok && k != "" && !strings.Contains(k, "=") {
			var val any
			if err := json.Unmarshal([]byte(v), &val); err != nil {
				return nil, usageErrorf("--arg %s:=…: %q is not JSON", k, v)
			}
			args[k] = val
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErrorf("--arg %q: want k=v (a string) or k:=JSON", kv)
		}
		args[k] = v
	}
	return args, nil
}

func seconds(flag string, d time.Duration) (int, error) {
	if d%time.Second != 0 || d < time.Second {
		return 0, usageErrorf("--%s %s: want whole seconds, at least 1s", flag, d)
	}
	return int(d / time.Second), nil
}

func (a *app) commandsSend() *cobra.Command {
	var tg targeting
	var run runWhat
	var priority, idemKey string
	var timeout, ttl time.Duration
	var maxRetries, maxConc, maxErrors int
	var wait bool
	cmd := &cobra.Command{
		Use:   "send (VERB [--args JSON | --arg k=v …] | --template NAME[@N] [--param k=v …]) (--target ID … | --selector site=…,label=k=v [--any]) [--wait]",
		Short: "Send a command; with --wait follow it live and exit 0 only if every target succeeded",
		Long: `Send a command to agents named by id (--target) or matched by a selector
(--selector; --any: one matching agent, with failover). Arguments come from
--args (a JSON object) and --arg: k=v sets a string, k:=JSON any JSON value.
With --template the command is a template's (its latest version, or @N), its
parameters from --params / --param the same way; the template's default
targets apply when no --target or --selector is given.

With --wait the command is followed on the event stream (GET /api/v1/events;
polling GET /api/v1/commands/{id} if the stream drops) with a progress line of
targets done, failed and running; each target's outcome is printed as it ends,
then a summary. The exit code is 0 only when the command succeeded on every
target, 1 otherwise.`,
		Example: `  viworksctl commands send echo --arg message=hello --target sim-0 --wait
  viworksctl commands send sleep --arg seconds:=30 --selector site=demo,label=role=demo --max-concurrency 2
  viworksctl commands send create_panel_user --args '{"username":"ann","password":"s3cret"}' --target sim-0 --wait -o json
  viworksctl commands send echo --arg message=once --target sim-1 --idempotency-key deploy-42
  viworksctl commands send --template restart --param service=nginx --selector site=paris --wait`,
		Args: func(cmd *cobra.Command, argv []string) error {
			if run.template != "" {
				return exactArgs()(cmd, argv)
			}
			return exactArgs("VERB")(cmd, argv)
		},
		RunE: func(cmd *cobra.Command, argv []string) error {
			req := map[string]any{}
			verb := ""
			if len(argv) > 0 {
				verb = argv[0]
			}
			if err := run.body(req, verb); err != nil {
				return err
			}
			if run.template == "" || tg.given() {
				if err := tg.body(req); err != nil {
					return err
				}
			}
			var err error
			f := cmd.Flags()
			if priority != "" {
				req["priority"] = priority
			}
			if f.Changed("timeout") {
				if req["timeout_seconds"], err = seconds("timeout", timeout); err != nil {
					return err
				}
			}
			if f.Changed("ttl") {
				if req["ttl_seconds"], err = seconds("ttl", ttl); err != nil {
					return err
				}
			}
			for name, v := range map[string]int{"max-retries": maxRetries, "max-concurrency": maxConc, "max-errors": maxErrors} {
				if f.Changed(name) {
					if v < 0 {
						return usageErrorf("--%s must not be negative", name)
					}
					req[strings.ReplaceAll(name, "-", "_")] = v
				}
			}
			r := client.Request{Method: http.MethodPost, Path: "/api/v1/commands", Body: req}
			if idemKey != "" {
				r.Header = http.Header{"Idempotency-Key": {idemKey}}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Do(cmd.Context(), r)
			if err != nil {
				return err
			}
			if !wait {
				return a.show(resp.Body, commandTable)
			}
			var created struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(resp.Body, &created); err != nil || created.ID == "" {
				return fmt.Errorf("the server accepted the command without an id: %s", resp.Body)
			}
			if !a.printer().Structured() {
				fmt.Fprintf(a.io.Out, "command %s accepted\n", created.ID)
			}
			return a.follow(cmd.Context(), c, created.ID)
		},
	}
	tg.add(cmd)
	f := cmd.Flags()
	run.add(cmd)
	f.StringVar(&priority, "priority", "", "low, normal, high or critical (default normal)")
	f.DurationVar(&timeout, "timeout", 0, "per-execution timeout after dispatch, such as 30s (default the server's)")
	f.DurationVar(&ttl, "ttl", 0, "how long the command may wait queued, such as 10m")
	f.IntVar(&maxRetries, "max-retries", 0, "retries of an execution that got no result")
	f.IntVar(&maxConc, "max-concurrency", 0, "executions of this command in flight at once (0: no limit)")
	f.IntVar(&maxErrors, "max-errors", 0, "failed executions after which the rest are cancelled")
	f.StringVar(&idemKey, "idempotency-key", "", "Idempotency-Key header: a retry with the same key and body returns the same command")
	f.BoolVar(&wait, "wait", false, "follow the command until it ends; exit 0 only if every target succeeded")
	_ = cmd.RegisterFlagCompletionFunc("priority", cobra.FixedCompletions([]string{"low", "normal", "high", "critical"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// commandTable shows a command and its executions.
func commandTable(p *output.Printer, doc map[string]any) error {
	if err := fields(p, doc, "id", "verb", "status", "priority", "args", "counts", "created_by", "created_at", "finished_at"); err != nil {
		return err
	}
	execs, _ := doc["executions"].([]any)
	if len(execs) == 0 {
		return nil
	}
	fmt.Fprintln(p.W)
	return rows(p, execs, executionCols)
}

func (a *app) commandsPreview() *cobra.Command {
	var tg targeting
	var verb string
	cmd := &cobra.Command{
		Use:   "preview (--target ID … | --selector site=…,label=k=v [--any])",
		Short: "Show the agents a command would reach, without sending it",
		Example: `  viworksctl commands preview --selector site=demo,label=role=demo
  viworksctl commands preview --selector capability=echo --any --verb echo -o json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := map[string]any{}
			if err := tg.body(req); err != nil {
				return err
			}
			if verb != "" {
				req["verb"] = verb
			}
			resp, err := a.call(cmd, client.Request{Method: http.MethodPost, Path: "/api/v1/commands/preview", Body: req})
			if err != nil {
				return err
			}
			return a.show(resp.Body, func(p *output.Printer, doc map[string]any) error {
				if err := fields(p, doc, "mode", "matched", "online", "stale", "offline"); err != nil {
					return err
				}
				agents, _ := doc["agents"].([]any)
				if len(agents) > 0 {
					fmt.Fprintln(p.W)
					if err := rows(p, agents, []column{col("ID", "id"), statusCol("STATUS", "status"), col("SITE", "site"), col("HOSTNAME", "hostname")}); err != nil {
						return err
					}
				}
				if t, _ := doc["agents_truncated"].(bool); t {
					fmt.Fprintf(p.W, "(first %d of %s agents shown)\n", len(agents), str(doc["matched"]))
				}
				return nil
			})
		},
	}
	tg.add(cmd)
	cmd.Flags().StringVar(&verb, "verb", "", "the verb, to match as a command of it would")
	return cmd
}

func (a *app) commandsGet() *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Short:   "A command with its executions",
		Example: "  viworksctl commands get 6f1c…\n  viworksctl commands get 6f1c… -o json | jq '.executions[].output'",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.getOne(cmd, "/api/v1/commands/"+pathID(args[0]), nil, commandTable)
		},
	}
}

func (a *app) commandsLs() *cobra.Command {
	var status, verb, agent, createdBy, from, to string
	var pf pageFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List commands, newest first",
		Example: `  viworksctl commands ls
  viworksctl commands ls --status failed --agent sim-0 --from 2026-01-01T00:00:00Z`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := url.Values{}
			set(v, "status", status)
			set(v, "verb", verb)
			set(v, "agent", agent)
			set(v, "created_by", createdBy)
			set(v, "from", from)
			set(v, "to", to)
			return a.list(cmd, "/api/v1/commands", v, &pf, commandCols)
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "queued, running, succeeded, failed, partially_succeeded, cancelled, timed_out or expired")
	f.StringVar(&verb, "verb", "", "verb")
	f.StringVar(&agent, "agent", "", "commands with an execution on this agent")
	f.StringVar(&createdBy, "created-by", "", "creator (token subject)")
	f.StringVar(&from, "from", "", "created at or after (RFC 3339 or Unix seconds)")
	f.StringVar(&to, "to", "", "created before (RFC 3339 or Unix seconds)")
	pf.add(cmd)
	return cmd
}

func (a *app) commandsCancel() *cobra.Command {
	return &cobra.Command{
		Use:     "cancel ID",
		Short:   "Cancel what has not finished of a command",
		Example: "  viworksctl commands cancel 6f1c…",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.mutate(cmd, client.Request{Method: http.MethodDelete, Path: "/api/v1/commands/" + pathID(args[0])}, "", commandTable)
		},
	}
}

func (a *app) commandsWatch() *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a command until it ends; exit 0 only if every target succeeded",
		Example: `  viworksctl commands watch 6f1c…
  viworksctl commands watch 6f1c… -o json > result.json`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, args[0])
		},
	}
}
