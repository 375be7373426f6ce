// Package service wires a service binary's process around its role: config
// from file, environment and flags; the logger; Postgres and Redis with
// readiness checks; and an HTTP server that shuts down in order (fail
// readiness, drain the role, stop serving, close connections).
package service

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/audithead"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/lifecycle"
	"github.com/viworks/backend-agent/pkg/logging"
	"github.com/viworks/backend-agent/pkg/store"
)

// LoadConfig parses args (the common flags plus any the caller adds to fs)
// over the defaults with the binary's own port, then the file and environment.
func LoadConfig(fs *flag.FlagSet, args []string, port int) (config.Config, error) {
	return LoadConfigWith(fs, args, func() (config.Config, error) {
		base := config.Default()
		base.Server.Port = port
		return base, nil
	})
}

// LoadConfigWith is LoadConfig with a base built after the flags are parsed
// (so it may depend on them, like the all-in-one's data directory).
func LoadConfigWith(fs *flag.FlagSet, args []string, base func() (config.Config, error)) (config.Config, error) {
	flags := config.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	b, err := base()
	if err != nil {
		return config.Config{}, err
	}
	return flags.Load(b, os.Getenv)
}

// PrintErrors writes err to w one line per problem, prefixed with the binary name.
func PrintErrors(w io.Writer, name string, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if line != "" {
			fmt.Fprintf(w, "%s: %s\n", name, line)
		}
	}
}

// InstanceID returns the configured replica id or hostname plus a random suffix.
func InstanceID(cfg config.Config) string {
	if cfg.Server.InstanceID != "" {
		return cfg.Server.InstanceID
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "viworks"
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// Process holds what every service binary opens.
type Process struct {
	Name       string
	InstanceID string    // this process's replica id (a gateway's gateway_id)
	Presence   *Presence // when set, Serve keeps the process's service_instances rows fresh
	Cfg        config.Config
	Log        *logrus.Logger
	Store      *store.Store
	Bus        bus.Backend
	Registry   *prometheus.Registry
	Health     *lifecycle.Health
	TLS        *tls.Config // when set, Serve serves TLS
	Events     *events.Publisher
	AuditHeads audithead.Keeper // where the audit chain's head is kept outside the database; nil: nowhere
}

// StartEvents publishes the live event stream of this process on its bus,
// including every command and execution status change its store commits, in
// the store's commit order (an execution's result before the command status
// it leads to).
func (p *Process) StartEvents() {
	p.Events = events.NewPublisher(p.Bus, p.Log)
	p.Store.ObserveCommands(func(ctx context.Context, changes []store.CommandChange) {
		evs := make([]events.Event, len(changes))
		for i, c := range changes {
			evs[i] = events.Event{Type: events.CommandStatus, CommandID: c.CommandID, Status: c.Status}
		}
		p.Events.Publish(ctx, evs...)
	})
	p.Store.ObserveExecutions(func(ctx context.Context, changes []store.ExecutionChange) {
		evs := make([]events.Event, len(changes))
		for i, c := range changes {
			evs[i] = events.Event{Type: events.ExecutionStatus, ExecutionID: c.ExecutionID, CommandID: c.CommandID, AgentID: c.AgentID, Status: c.Status}
		}
		p.Events.Publish(ctx, evs...)
	})
}

// Options are what a process may do differently from a split service binary;
// the zero value (plus a Name) is a service binary's.
type Options struct {
	Name string
	// Roles are the service_instances roles the process reports; nil: Name,
	// when it is one of the three roles.
	Roles []string
	// Migrate applies the schema at start; false refuses an old schema
	// (CheckSchema: `scheduler migrate` applies it).
	Migrate bool
	// Bus is the bus to use; nil: Redis from the configuration.
	Bus bus.Backend
	// AuditHeadFile keeps the audit chain's head when the bus is not Redis;
	// "": not kept.
	AuditHeadFile string
}

// Start builds the logger, opens Postgres (refusing an old schema) and Redis,
// and registers their readiness checks.
func Start(ctx context.Context, name string, cfg config.Config) (*Process, error) {
	return StartWith(ctx, cfg, Options{Name: name})
}

// StartWith is Start with the differences o asks for.
func StartWith(ctx context.Context, cfg config.Config, o Options) (*Process, error) {
	log, err := logging.New(logging.Options{
		Level: cfg.Logging.Level, Format: cfg.Logging.Format, Output: cfg.Logging.Output,
		MaxFileSize: cfg.Logging.MaxFileSize, MaxFiles: cfg.Logging.MaxFiles,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring logging: %w", err)
	}
	if cfg.Server.DevMode {
		log.Warn("dev mode: weak secrets are accepted (a placeholder JWT secret is replaced by a random one) and the server binds to 127.0.0.1 unless told otherwise; never run like this in production")
	}
	p := &Process{Name: o.Name, InstanceID: InstanceID(cfg), Cfg: cfg, Log: log, Registry: lifecycle.NewRegistry(), Health: &lifecycle.Health{}}
	st, err := OpenStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p.Store = st
	if o.Migrate {
		_, err = st.Migrate(ctx)
	} else {
		err = st.CheckSchema(ctx)
	}
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	roles := o.Roles
	if roles == nil && slices.Contains([]string{store.RoleAPIServer, store.RoleGateway, store.RoleScheduler}, o.Name) {
		roles = []string{o.Name}
	}
	if len(roles) > 0 {
		if p.Presence, err = NewPresence(st, log, PresenceConfig{InstanceID: p.InstanceID, Roles: roles}); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	b := o.Bus
	if b == nil {
		if b, err = OpenBus(ctx, cfg); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	p.Bus = b
	p.AuditHeads = AuditHeads(b, o.AuditHeadFile)
	p.Health.AddCheck(lifecycle.Check{Name: "database", Fn: st.Ping})
	p.Health.AddCheck(lifecycle.Check{Name: busCheckName(b), Fn: b.Ping})
	p.StartEvents()
	return p, nil
}

// busCheckName names the bus's readiness check after what backs it.
func busCheckName(b bus.Backend) string {
	if _, ok := b.(*bus.Redis); ok {
		return "redis"
	}
	return "bus"
}

// OpenStore connects to the configured Postgres.
func OpenStore(ctx context.Context, cfg config.Config) (*store.Store, error) {
	return store.Open(ctx, store.Config{
		URL: cfg.Database.URL, MaxConns: cfg.Database.MaxConnections, MinConns: cfg.Database.MinConnections,
		ConnectTimeout: cfg.DatabaseConnectTimeout(), ConnMaxIdleTime: cfg.DatabaseIdleTimeout(), ConnMaxLifetime: cfg.DatabaseMaxLifetime(),
		AuditKey: []byte(cfg.Security.AuditKey), PreviousAuditKeys: auditKeys(cfg.Security.PreviousAuditKeys),
	})
}

func auditKeys(ks []string) [][]byte {
	out := make([][]byte, len(ks))
	for i, k := range ks {
		out[i] = []byte(k)
	}
	return out
}

// OpenBus connects to the configured Redis.
func OpenBus(ctx context.Context, cfg config.Config) (*bus.Redis, error) {
	return bus.NewRedis(ctx, bus.RedisConfig{
		URL: cfg.Redis.URL, KeyPrefix: cfg.Redis.KeyPrefix, PoolSize: cfg.Redis.PoolSize,
		DialTimeout: cfg.RedisConnectionTimeout(), ReadTimeout: cfg.RedisReadTimeout(), WriteTimeout: cfg.RedisWriteTimeout(),
	})
}

// Close releases the connections and a log file.
func (p *Process) Close() {
	if p.Bus != nil {
		_ = p.Bus.Close()
	}
	if p.Store != nil {
		_ = p.Store.Close()
	}
	if c, ok := p.Log.Out.(io.Closer); ok && c != os.Stdout && c != os.Stderr {
		_ = c.Close()
	}
}

// Serve runs the role and the HTTP server (with /livez, /readyz, /metrics
// mounted on mux) until ctx is done or either fails, then shuts down in order:
// readiness fails, drain runs (may be nil), the server stops, the role stops.
func (p *Process) Serve(ctx context.Context, mux *http.ServeMux, run func(context.Context) error, drain func(context.Context)) error {
	lifecycle.Mount(mux, p.Health, p.Registry)
	if p.Cfg.Server.Pprof {
		lifecycle.MountPprof(mux)
		p.Log.Warn("profiler served at /debug/pprof/ (server.pprof); do not expose it publicly")
	}
	ln, err := lifecycle.Listen(p.Cfg.ListenAddr())
	if err != nil {
		return err
	}
	if p.TLS != nil {
		ln = tls.NewListener(ln, p.TLS)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}

	roleCtx, stopRole := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRole()
	roleErr := make(chan error, 1)
	go func() { roleErr <- run(roleCtx) }()

	presenceDone := make(chan struct{})
	presenceCtx, stopPresence := context.WithCancel(context.WithoutCancel(ctx))
	defer func() { stopPresence(); <-presenceDone }() // removes the records on the way out
	go func() {
		defer close(presenceDone)
		if p.Presence != nil {
			_ = p.Presence.Run(presenceCtx)
		}
	}()

	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	srvErr := make(chan error, 1)
	go func() { srvErr <- lifecycle.Serve(srvCtx, srv, ln, p.Cfg.ShutdownTimeout(), p.Log) }()

	p.Health.SetReady(true)
	p.Log.WithFields(logrus.Fields{"service": p.Name, "addr": ln.Addr().String()}).Info("service started")
	p.notify(daemon.SdNotifyReady)

	var failure error
	select {
	case <-ctx.Done():
	case err := <-roleErr:
		failure = fmt.Errorf("%s role stopped: %w", p.Name, errOrStopped(err))
		roleErr <- nil
	case err := <-srvErr:
		failure = errOrStopped(err)
		srvErr <- nil
	}
	p.Log.WithField("service", p.Name).Info("shutting down")
	p.notify(daemon.SdNotifyStopping)
	p.Health.SetReady(false)
	if drain != nil {
		dctx, cancel := context.WithTimeout(context.Background(), p.Cfg.ShutdownTimeout())
		drain(dctx)
		cancel()
	}
	stopSrv()
	if err := <-srvErr; err != nil && failure == nil {
		failure = err
	}
	stopRole()
	if err := <-roleErr; err != nil && failure == nil {
		failure = err
	}
	return failure
}

// notify tells systemd about the service's state (READY=1 once it serves,
// STOPPING=1 when it starts draining) when it runs as a Type=notify unit
// (NOTIFY_SOCKET set); elsewhere it does nothing.
func (p *Process) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		p.Log.WithError(err).WithField("state", state).Warn("sd_notify failed")
	}
}

func errOrStopped(err error) error {
	if err == nil {
		return errors.New("stopped unexpectedly")
	}
	return err
}

// AuditHeads is where the audit chain's head is kept outside the database: in
// Redis under the key prefix when b is Redis, else in the file at path (the
// all-in-one's data directory); nil when neither applies.
func AuditHeads(b bus.Backend, path string) audithead.Keeper {
	if r, ok := b.(*bus.Redis); ok {
		return audithead.NewRedis(r.Client(), r.KeyPrefix())
	}
	if path != "" {
		return audithead.NewFile(path)
	}
	return nil
}
