package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/store"
)

// InstanceStore keeps the liveness records of service processes.
type InstanceStore interface {
	UpsertServiceInstance(ctx context.Context, in store.ServiceInstance) error
	DeleteServiceInstance(ctx context.Context, role, id string) error
	DeleteServiceInstancesBefore(ctx context.Context, cutoff time.Time) (int64, error)
}

// PresenceConfig configures a Presence.
type PresenceConfig struct {
	InstanceID string        // the process's instance id (a gateway's gateway_id)
	Roles      []string      // store.RoleAPIServer, store.RoleGateway, store.RoleScheduler
	Version    string        // default: the build's version
	Hostname   string        // default: os.Hostname
	Interval   time.Duration // between refreshes (default 5s)
	PruneAfter time.Duration // records not refreshed this long are deleted (default 10m)
	Now        func() time.Time
}

func (c *PresenceConfig) setDefaults() {
	if c.Version == "" {
		c.Version = BuildVersion()
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if c.Interval <= 0 {
		c.Interval = 5 * time.Second
	}
	if c.PruneAfter <= 0 {
		c.PruneAfter = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports a configuration that cannot work.
func (c PresenceConfig) Validate() error {
	var errs []error
	if c.InstanceID == "" {
		errs = append(errs, errors.New("presence: an instance id is required"))
	}
	if len(c.Roles) == 0 {
		errs = append(errs, errors.New("presence: at least one role is required"))
	}
	for _, r := range c.Roles {
		if !slices.Contains([]string{store.RoleAPIServer, store.RoleGateway, store.RoleScheduler}, r) {
			errs = append(errs, fmt.Errorf("presence: unknown role %q", r))
		}
	}
	if c.PruneAfter > 0 && c.Interval > 0 && c.PruneAfter <= 2*c.Interval {
		errs = append(errs, errors.New("presence: prune-after must exceed twice the interval"))
	}
	return errors.Join(errs...)
}

// Presence keeps this process's rows in service_instances fresh while it runs
// (one per role), so GET /api/v1/status can list the live instances, and
// deletes them on a clean shutdown. Records of processes that died are pruned
// by whichever process refreshes next.
type Presence struct {
	cfg     PresenceConfig
	st      InstanceStore
	log     logrus.FieldLogger
	started time.Time
	leader  atomic.Pointer[func() bool]
}

// NewPresence builds a Presence.
func NewPresence(st InstanceStore, log logrus.FieldLogger, cfg PresenceConfig) (*Presence, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Presence{cfg: cfg, st: st, log: log, started: cfg.Now().UTC()}, nil
}

// ReportLeader makes the scheduler row carry leading() (the scheduler's
// maintenance lease).
func (p *Presence) ReportLeader(leading func() bool) { p.leader.Store(&leading) }

// Run refreshes the records every interval until ctx is done, then deletes them.
func (p *Presence) Run(ctx context.Context) error {
	p.Beat(ctx)
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			p.Remove(dctx)
			cancel()
			return nil
		case <-t.C:
			p.Beat(ctx)
		}
	}
}

// Beat writes the records once and prunes dead processes' records.
func (p *Presence) Beat(ctx context.Context) {
	now := p.cfg.Now().UTC()
	leading := false
	if f := p.leader.Load(); f != nil {
		leading = (*f)()
	}
	for _, role := range p.cfg.Roles {
		in := store.ServiceInstance{
			Role: role, ID: p.cfg.InstanceID, Version: p.cfg.Version, Hostname: p.cfg.Hostname,
			Leader: role == store.RoleScheduler && leading, StartedAt: p.started, LastSeenAt: now,
		}
		if err := p.st.UpsertServiceInstance(ctx, in); err != nil && ctx.Err() == nil {
			p.log.WithError(err).WithField("role", role).Warn("recording service presence failed")
		}
	}
	if _, err := p.st.DeleteServiceInstancesBefore(ctx, now.Add(-p.cfg.PruneAfter)); err != nil && ctx.Err() == nil {
		p.log.WithError(err).Warn("pruning dead service instances failed")
	}
}

// Remove deletes the records (clean shutdown).
func (p *Presence) Remove(ctx context.Context) {
	for _, role := range p.cfg.Roles {
		if err := p.st.DeleteServiceInstance(ctx, role, p.cfg.InstanceID); err != nil {
			p.log.WithError(err).WithField("role", role).Warn("removing service presence failed")
		}
	}
}

// BuildVersion is the main module's version, else the VCS revision, else "dev".
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return s.Value[:12]
		}
	}
	return "dev"
}
