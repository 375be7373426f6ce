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
	"github.com/viworks/backend-agent/pkg/auth"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/scheduler/dispatch"
)

// DemoAgentsDir is the data directory's subdirectory keeping the demo
// agents' state (credentials, replay windows).
const DemoAgentsDir = "demo-agents"

// Options are the all-in-one's own settings beyond the shared configuration.
type Options struct {
	DataDir     string // SQLite database and generated secrets
	DatabaseURL string // external Postgres instead of SQLite ("" = embedded)
	RedisURL    string // external Redis instead of the in-process bus ("" = embedded)
	DemoAgents  int    // simulated agents started in this process
	// LogOutput says the banner's output is kept as a log (systemd's journal):
	// the banner then names where the secrets are instead of printing them.
	LogOutput bool
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

// LoopbackAddress is where the all-in-one listens by default.
const LoopbackAddress = "127.0.0.1"

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
	// The all-in-one is for one machine: loopback unless --bind-address or
	// BACKEND_AGENT_BIND_ADDRESS says otherwise.
	cfg.Server.BindAddress = LoopbackAddress
	cfg.Server.InstanceID = "viworks"
	cfg.Security.JWTSecret = sec.JWTSecret
	cfg.Security.AuditKey = sec.AuditKey
	cfg.Security.AgentEnrollmentSecret = sec.EnrollmentSecret
	cfg.Security.BackendPrivateKeyPath = sec.SigningKeyPath
	cfg.Security.BackendCertificatePath = filepath.Join(dataDir, SigningPublicKeyFile) // beside the key, not in /etc/viworks
	cfg.Security.ArgsEncryptionKey = sec.ArgsKey
	return cfg, nil
}

// Run serves until ctx is done. Banner lines for the person at the terminal go to out.
func Run(ctx context.Context, cfg config.Config, o Options, out io.Writer) error {
	if err := o.Validate(); err != nil {
		return err
	}
	dbURL := o.DatabaseURL
	if dbURL == "" {
		dbURL = store.SQLitePrefix + filepath.Join(o.DataDir, DatabaseFile)
	}
	cfg.Database.URL = dbURL
	var b bus.Backend // nil: Redis at REDIS_URL
	if o.RedisURL != "" {
		cfg.Redis.URL = o.RedisURL
	} else {
		b = bus.NewMemory()
	}
	p, err := service.StartWith(ctx, cfg, service.Options{
		Name: "viworks",
		// One process plays every role.
		Roles: []string{store.RoleAPIServer, store.RoleGateway, store.RoleScheduler},
		// It owns its database: there is no separate `scheduler migrate` step.
		Migrate: true,
		Bus:     b,
		// Without Redis, the audit chain's head is kept with the data.
		AuditHeadFile: filepath.Join(o.DataDir, AuditHeadFile),
	})
	if err != nil {
		return err
	}
	defer p.Close()
	log := p.Log
	// No memory policy: the gateway's low GC target (agent-gateway's GOGC 25)
	// pays off for a heap of many idle sessions; the all-in-one holds a small
	// fleet beside the API's and scheduler's short-lived garbage, so like
	// api-server and scheduler it keeps the runtime's (GOGC and GOMEMLIMIT apply).

	jwt, err := service.NewJWT(cfg)
	if err != nil {
		return err
	}
	gw, err := gateway.NewFromProcess(p, func(c *gateway.Config) {
		// Room for the demo agents beyond agent_management.max_agent_connections.
		c.MaxConnections = max(c.MaxConnections, o.DemoAgents+100)
		// One process: there is no other gateway for agents to move to.
		c.DrainWindow = 0
	})
	if err != nil {
		return err
	}
	sched, err := dispatch.NewFromProcess(p)
	if err != nil {
		return err
	}
	api, err := apiserver.NewFromProcess(p, jwt)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	api.Register(mux)
	gw.Register(mux)

	run := func(ctx context.Context) error {
		if err := printBanner(out, cfg, o, jwt); err != nil {
			return err
		}
		return runAll(ctx, log, api.Run, gw.Run, sched.Run, demoFleet(cfg, o, p.Store, log))
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

// demoFleet runs the demo agents. They enroll as an operator's agents would:
// with an enrollment secret that fixes their site ("demo") and labels
// (role=demo), issued at start for as many agents, revoked when they stop.
func demoFleet(cfg config.Config, o Options, st *store.Store, log logrus.FieldLogger) func(context.Context) error {
	if o.DemoAgents == 0 {
		return nil
	}
	return func(ctx context.Context) error {
		secret, hash := apiserver.NewEnrollmentSecret()
		uses := o.DemoAgents
		sec, err := st.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "demo agents", SecretHash: hash, Site: "demo",
			Labels: map[string]string{"role": "demo"}, MaxUses: &uses, CreatedBy: "viworks",
			Audit: store.AuditEvent{Actor: "viworks", Action: "enrollment_secret.create", Details: store.JSON(`{"name":"demo agents","site":"demo"}`)}})
		if err != nil {
			return fmt.Errorf("issuing the demo agents' enrollment secret: %w", err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := st.RevokeEnrollmentSecret(ctx, sec.ID, store.AuditEvent{Actor: "viworks", Action: "enrollment_secret.revoke", Details: store.JSON(`{}`)}); err != nil {
				log.WithError(err).Warn("revoking the demo agents' enrollment secret failed")
			}
		}()
		opts := sim.DefaultOptions()
		opts.Gateway = fmt.Sprintf("ws://127.0.0.1:%d/ws/agent", cfg.Server.Port)
		opts.Agents = o.DemoAgents
		opts.EnrollmentSecret = secret
		// Their credentials live with the data: restarted on the same data
		// directory, the demo agents reconnect as themselves (enrolling again
		// would be refused: enrollment never replaces a live identity).
		opts.StateDir = filepath.Join(o.DataDir, DemoAgentsDir)
		fleet, err := sim.NewFleet(opts, log.WithField("component", "demo-agents"))
		if err != nil {
			return fmt.Errorf("starting demo agents: %w", err)
		}
		return fleet.Run(ctx)
	}
}

func printBanner(out io.Writer, cfg config.Config, o Options, jwt *auth.JWT) error {
	if o.LogOutput {
		// Secrets never go into a log: no token, no enrollment secret.
		_, err := fmt.Fprintf(out, `ViWorkS all-in-one is running on %s (REST API /api/v1, agents /ws/agent, %d demo agents);
the enrollment secret and the JWT secret are in the service's environment (AGENT_ENROLLMENT_SECRET, JWT_SECRET),
mint a token with: viworks token --data-dir %s --subject NAME --role admin (run with that environment)
ready
`, cfg.ListenAddr(), o.DemoAgents, o.DataDir)
		return err
	}
	ttl := min(24*time.Hour, jwt.MaxLifetime())
	shown := fmt.Sprintf("%gh", ttl.Hours())
	token, err := jwt.Issue("admin", auth.RoleAdmin, ttl)
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
  enrollment secret: %s
    (an agent sends it once in the JSON body of POST http://localhost:%d/agent/v1/enroll,
     {"enrollment_secret": "...", "agent_id": "..."}, and then connects with the
     credential it gets back as "Authorization: Bearer ..."; see docs/protocol.md)
  admin token (%s; more with: bin/viworks token --data-dir %s --subject NAME --role operator):

export TOKEN=%s
curl -s -H "Authorization: Bearer $TOKEN" %s/api/v1/agents
curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' %s/api/v1/commands -d '{"verb":"echo","args":{"message":"hi"},"agent_targets":["sim-0"]}'

ready
`, cfg.ListenAddr(), storage, busName, api, cfg.Server.Port, o.DemoAgents, max(o.DemoAgents-1, 0),
		cfg.Security.AgentEnrollmentSecret, cfg.Server.Port, shown, o.DataDir, token, api, api)
	return err
}
