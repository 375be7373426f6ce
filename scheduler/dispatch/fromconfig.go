package dispatch

import (
	"github.com/viworks/backend-agent/pkg/audithead"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/service"
	"github.com/viworks/backend-agent/scheduler/alerting"
)

// ConfigFrom is the scheduler's Config from the shared configuration, without
// the dependencies NewFromProcess wires (signer, args keyring, tasks, events).
func ConfigFrom(cfg config.Config) Config {
	return Config{
		RetryDelay:         cfg.RetryDelay(),
		MaxInFlight:        cfg.Command.MaxConcurrentCommands,
		PerAgent:           cfg.Command.MaxPerAgent,
		BatchSize:          cfg.Command.DispatchBatchSize,
		Workers:            cfg.Server.Workers,
		StaleAfter:         cfg.OfflineAfter(),
		TelemetryRetention: cfg.Retention(),
		CommandRetention:   cfg.CommandRetention(),
		MaxQueued:          cfg.Command.MaxCommandQueueSize,
	}
}

// NewFromProcess builds the scheduler of process p: its Config is
// ConfigFrom(p.Cfg) signing with p.Cfg's signing key, opening args with its
// keyring, publishing on p's events, and running as leader the alerter
// (webhooks limited to p.Cfg's targets) and the audit head keeper (on p's
// audit heads). p's presence reports when it leads.
func NewFromProcess(p *service.Process) (*Scheduler, error) {
	c := ConfigFrom(p.Cfg)
	c.Events = p.Events
	var err error
	if c.Signer, err = service.LoadSigner(p.Cfg, p.Log); err != nil {
		return nil, err
	}
	if c.Args, err = service.ArgsKeyring(p.Cfg, p.Log); err != nil {
		return nil, err
	}
	ac := alerting.ConfigFrom(p.Cfg)
	ac.Events = p.Events
	if ac.Targets, err = service.WebhookTargets(p.Cfg); err != nil {
		return nil, err
	}
	alerter, err := alerting.New(p.Store, p.Log, p.Registry, ac)
	if err != nil {
		return nil, err
	}
	heads, err := audithead.New(p.Store, p.AuditHeads, p.Log, audithead.Config{})
	if err != nil {
		return nil, err
	}
	c.Tasks = []Task{alerter.Tick, heads.Tick}
	s, err := New(p.Store, p.Bus, p.Bus, p.Registry, p.Log, c)
	if err != nil {
		return nil, err
	}
	if p.Presence != nil {
		p.Presence.ReportLeader(s.Leading)
	}
	return s, nil
}
