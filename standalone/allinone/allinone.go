// Package allinone runs the api-server, agent-gateway and scheduler roles in one
// process on one port, on embedded storage (SQLite in a data directory and the
// in-process bus) unless Postgres/Redis URLs are given: the way to try the
// product on a laptop with nothing but Go installed.
package allinone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
	"github.com/viworks/backend-agent/agentsim/sim"
	"github.com/viworks/backend-agent/api-server/apiserver"
	"github.com/viworks/backend-agent/pkg/audithead"
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/lifecycle"
	"github.com/viworks/backend-agent/pkg/logging"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/scheduler/alerting"
	"github.com/viworks/backend-agent/scheduler/scheduler"
)

// Options are the all-in-one's own settings beyond the shared configuration.
type Options struct {
	DataDir     string // SQLite database and generated secrets
	DatabaseURL string // external Postgres instead of SQLite ("" = embedded)
	RedisURL    string // external Redis instead of the in-process bus ("" = embedded)
	DemoAgents  int    // simulated agents started in this process
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	var errs []error
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	if o.DemoAgents < 0 || o.DemoAgents > 10000 {
		errs = append(errs, errors.New("--demo-agents must be from 0 to 10000"))
	}
	return errors.Join(errs...)
}

// BaseConfig is the configuration the all-in-one starts from: the defaults on
// port 8080 with the data directory's secrets (created on first start).
func BaseConfig(dataDir string, create bool) (config.Config, error) {
	if create {
		if err := PrepareDataDir(dataDir); err != nil {
			return config.Config{}, err
		}
	}
	sec, err := LoadSecrets(dataDir, create)
	if err != nil {
		return config.Config{}, err
	}
	cfg := config.Default()
	cfg.Server.Port = 8080
	cfg.Server.InstanceID = "viworks"
	cfg.Security.JWTSecret = sec.JWTSecret
	cfg.Security.AuditKey = sec.AuditKey
	cfg.Security.AgentEnrollmentSecret = sec.EnrollmentSecret
	cfg.Security.BackendPrivateKeyPath = sec.SigningKeyPath
	return cfg, nil
}

// Run serves until ctx is done. Banner lines for the person at the terminal go to out.
func Run(ctx context.Context, cfg config.Config, o Options, out io.Writer) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log, err := logging.New(logging.Options{Level: cfg.Logging.Level, Format: cfg.Logging.Format, Output: cfg.Logging.Output})
	if err != nil {
		return fmt.Errorf("configuring logging: %w", err)
	}
	p := &service.Process{Name: "viworks", InstanceID: service.InstanceID(cfg), Cfg: cfg, Log: log, Registry: lifecycle.NewRegistry(), Health: &lifecycle.Health{}}
	defer p.Close()

	dbURL := o.DatabaseURL
	if dbURL == "" {
		dbURL = store.SQLitePrefix + filepath.Join(o.DataDir, DatabaseFile)
	}
	cfg.Database.URL = dbURL
	st, err := service.OpenStore(ctx, cfg)
	if err != nil {
		return err
	}
	p.Store = st
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	p.Presence, err = service.NewPresence(st, log, service.PresenceConfig{
		InstanceID: p.InstanceID, Roles: []string{store.RoleAPIServer, store.RoleGateway, store.RoleScheduler},
	})
	if err != nil {
		return err
	}
	if o.RedisURL != "" {
		cfg.Redis.URL = o.RedisURL
		b, err := service.OpenBus(ctx, cfg)
		if err != nil {
			return err
		}
		p.Bus = b
	} else {
		p.Bus = bus.NewMemory()
	}
	if p.TLS, err = service.GatewayTLS(cfg); err != nil {
		return err
	}
	p.Health.AddCheck(lifecycle.Check{Name: "database", Fn: st.Ping})
	p.Health.AddCheck(lifecycle.Check{Name: "bus", Fn: p.Bus.Ping})
	p.StartEvents()

	jwt, err := service.NewJWT(cfg)
	if err != nil {
		return err
	}
	gw, err := gateway.New(st, p.Bus, p.Bus, p.Registry, log, gateway.Config{
		Events:            p.Events,
		GatewayID:         p.InstanceID,
		EnrollmentSecret:  cfg.Security.AgentEnrollmentSecret,
		HeartbeatInterval: cfg.HeartbeatInterval(),
		TelemetryInterval: cfg.CollectionInterval(),
		MaxConnections:    max(cfg.AgentManagement.MaxAgentConnections, o.DemoAgents+100),
		HandshakeTimeout:  cfg.ConnectionTimeout(),
		FlushInterval:     cfg.FlushInterval(),
		TelemetryBatch:    cfg.Telemetry.BatchSize,
		Retry:             store.RetryPolicy{Base: cfg.RetryDelay()},
		DrainWindow:       0, // one process: there is no other gateway to move to
		MaxFrameRate:      cfg.AgentManagement.MaxFramesPerSecond,
	})
	if err != nil {
		return err
	}
	signer, err := service.LoadSigner(cfg, log)
	if err != nil {
		return err
	}
	alerter, err := alerting.New(st, log, p.Registry, alerting.Config{Events: p.Events})
	if err != nil {
		return err
	}
	keeper := service.AuditHeads(p.Bus, filepath.Join(o.DataDir, AuditHeadFile))
	heads, err := audithead.New(st, keeper, log, audithead.Config{})
	if err != nil {
		return err
	}
	sched, err := scheduler.New(st, p.Bus, p.Bus, p.Registry, log, scheduler.Config{
		Events:     p.Events,
		RetryDelay: cfg.RetryDelay(), MaxInFlight: cfg.Command.MaxConcurrentCommands, PerAgent: cfg.Command.MaxPerAgent,
		BatchSize:  cfg.Command.DispatchBatchSize,
		StaleAfter: cfg.StaleAfter(), TelemetryRetention: cfg.Retention(), CommandRetention: cfg.CommandRetention(),
		Signer: signer, Tasks: []scheduler.Task{alerter.Tick, heads.Tick},
	})
	if err != nil {
		return err
	}
	p.Presence.ReportLeader(sched.Leading)
	limiter, err := service.RateLimiter(p.Bus) // Redis when given one, else memory
	if err != nil {
		return err
	}
	api, err := apiserver.New(st, p.Bus, jwt, p.Registry, log, apiserver.Config{
		DefaultTimeout: cfg.CommandTimeout(), DefaultMaxRetries: cfg.Command.RetryAttempts,
		MaxQueued:         cfg.Command.MaxCommandQueueSize,
		HeartbeatInterval: cfg.HeartbeatInterval(), StaleAfter: 2*cfg.HeartbeatInterval() + cfg.FlushInterval(),
		RateLimit: service.RateLimit(cfg), Limiter: limiter, TrustedProxies: cfg.Security.TrustedProxies,
		AuditHeads: keeper,
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", api.Handler())
	gw.Register(mux)

	run := func(ctx context.Context) error {
		if err := printBanner(out, cfg, o, jwt); err != nil {
			return err
		}
		return runAll(ctx, log, api.Run, gw.Run, sched.Run, demoFleet(cfg, o, log))
	}
	drain := func(ctx context.Context) {
		api.Drain(ctx)
		gw.Shutdown(ctx)
	}
	return p.Serve(ctx, mux, run, drain)
}

// runAll runs the parts until ctx is done or one fails; then all are stopped.
func runAll(ctx context.Context, log logrus.FieldLogger, parts ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(parts))
	for _, part := range parts {
		if part == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := part(ctx); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errc)
	err := <-errc
	if err != nil {
		log.WithError(err).Error("a role stopped")
	}
	return err
}

func demoFleet(cfg config.Config, o Options, log logrus.FieldLogger) func(context.Context) error {
	if o.DemoAgents == 0 {
		return nil
	}
	return func(ctx context.Context) error {
		opts := sim.DefaultOptions()
		opts.Gateway = fmt.Sprintf("ws://127.0.0.1:%d/ws/agent", cfg.Server.Port)
		opts.Agents = o.DemoAgents
		opts.EnrollmentSecret = cfg.Security.AgentEnrollmentSecret
		opts.Site = "demo"
		opts.Labels = map[string]string{"role": "demo"}
		fleet, err := sim.NewFleet(opts, log.WithField("component", "demo-agents"))
		if err != nil {
			return fmt.Errorf("starting demo agents: %w", err)
		}
		return fleet.Run(ctx)
	}
}

func printBanner(out io.Writer, cfg config.Config, o Options, jwt *auth.JWT) error {
	token, err := jwt.Issue("admin", auth.RoleAdmin, 24*time.Hour)
	if err != nil {
		return err
	}
	storage := "SQLite " + filepath.Join(o.DataDir, DatabaseFile)
	if o.DatabaseURL != "" {
		storage = "Postgres (DATABASE_URL)"
	}
	busName := "in-process bus"
	if o.RedisURL != "" {
		busName = "Redis (REDIS_URL)"
	}
	api := fmt.Sprintf("http://localhost:%d", cfg.Server.Port)
	_, err = fmt.Fprintf(out, `
ViWorkS all-in-one is running on %s (%s, %s)
  REST API     %s/api/v1        agents  ws://localhost:%d/ws/agent
  demo agents  %d (sim-0 ... sim-%d)
  enrollment secret (agents send it as "Authorization: Bearer ..."): %s
  admin token (24h; more with: bin/viworks token --data-dir %s --subject NAME --role operator):

export TOKEN=%s
curl -s -H "Authorization: Bearer $TOKEN" %s/api/v1/agents
curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' %s/api/v1/commands -d '{"verb":"echo","args":{"message":"hi"},"agent_targets":["sim-0"]}'

ready
`, cfg.ListenAddr(), storage, busName, api, cfg.Server.Port, o.DemoAgents, max(o.DemoAgents-1, 0),
		cfg.Security.AgentEnrollmentSecret, o.DataDir, token, api, api)
	return err
}
