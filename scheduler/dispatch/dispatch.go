// Package dispatch is the scheduler role: it claims due executions from
// Postgres (FOR UPDATE SKIP LOCKED, so replicas never claim one twice), routes
// each to the gateway holding its agent's session, publishes the COMMAND there,
// and applies deadlines (ack timeouts with backoff, command timeouts, TTLs).
// It is woken by bus messages; a slow periodic sweep is only the safety net.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/argseal"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/signing"
	"github.com/viworks/backend-agent/pkg/store"
)

// Store is the durable state the scheduler works on.
type Store interface {
	ClaimDue(ctx context.Context, o store.ClaimOptions, route store.Router) ([]store.DueExecution, int, error)
	ReleaseUndelivered(ctx context.Context, executionID string) (bool, error)
	MarkCommandsRunning(ctx context.Context, ids []string) error
	Sweep(ctx context.Context, now time.Time, policy store.RetryPolicy) ([]store.Timeout, error)
	TryLead(ctx context.Context, name string) (*store.Leader, error)
	RegisterSigningKey(ctx context.Context, keyID, publicKey string) error
	MarkStaleAgentsOffline(ctx context.Context, cutoff time.Time) ([]store.StaleAgent, error)
	ReleaseAgentExecutions(ctx context.Context, agentID, gatewayID string, policy store.RetryPolicy) ([]string, error)
	DeleteTelemetryBefore(ctx context.Context, cutoff time.Time, maxBatches int) (int64, error)
	DeleteCommandsFinishedBefore(ctx context.Context, cutoff time.Time, maxBatches int) (int64, error)
	DeleteIdempotencyKeysBefore(ctx context.Context, cutoff time.Time, maxBatches int) (int64, error)
	PurgeSealedArgs(ctx context.Context, limit int) (int, error)
	FireSchedules(ctx context.Context, o store.FireOptions) ([]store.ScheduleRun, error)
}

// Task is extra leader-only maintenance (alert evaluation, say), run every sweep.
type Task func(ctx context.Context, now time.Time) error

// Config configures a scheduler.
type Config struct {
	BatchSize     int           // executions claimed per transaction
	AckTimeout    time.Duration // COMMAND to ACK before a retry
	SweepInterval time.Duration // safety-net period for dispatch and deadlines
	RetryDelay    time.Duration // base of the exponential backoff
	MaxRetryDelay time.Duration
	MaxInFlight   int // executions dispatched or running across all replicas; 0: unlimited
	PerAgent      int // executions in flight per agent
	Workers       int // goroutines signing a batch's COMMAND frames (server.workers; default config.DefaultWorkers), at most GOMAXPROCS run

	// Leader-only maintenance.
	StaleAfter         time.Duration // an online agent unseen this long is marked offline (default: config.Default().OfflineAfter())
	TelemetryRetention time.Duration // 0: keep forever
	CommandRetention   time.Duration // finished commands; 0: keep forever
	RetentionInterval  time.Duration
	Tasks              []Task
	Now                func() time.Time // the clock; tests control it

	// Signer signs every COMMAND (required).
	Signer *signing.Signer
	// Args opens the encrypted secret values of command args to build the
	// COMMAND (security.args_encryption_key); nil: commands with sealed args
	// cannot be dispatched.
	Args *argseal.Keyring
	// Events, optional, receives executions dispatched and timed out and agents marked offline.
	Events *events.Publisher

	// Schedules (schedules.go).
	ScheduleTick  time.Duration // how often due schedules are looked for (default DefaultScheduleTick)
	ScheduleGrace time.Duration // how late a due time still fires as such (default DefaultScheduleGrace)
	MaxQueued     int           // bound on queued executions (command.max_command_queue_size) for schedules' runs; 0: unbounded
}

func (c *Config) setDefaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = config.DefaultDispatchBatchSize
	}
	if c.Workers <= 0 {
		c.Workers = config.DefaultWorkers
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 10 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 2 * time.Second
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = config.DefaultRetryDelayMs * time.Millisecond
	}
	if c.MaxRetryDelay <= 0 {
		c.MaxRetryDelay = 5 * time.Minute
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = config.SilentFor(config.OfflineHeartbeats, config.DefaultHeartbeatIntervalSeconds*time.Second, config.DefaultFlushIntervalSeconds*time.Second)
	}
	if c.RetentionInterval <= 0 {
		c.RetentionInterval = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.scheduleDefaults()
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.MaxRetryDelay < c.RetryDelay {
		errs = append(errs, errors.New("scheduler: max retry delay is below the retry delay"))
	}
	if c.Signer == nil {
		errs = append(errs, errors.New("scheduler: a command signer is required"))
	}
	return errors.Join(errs...)
}

// Scheduler dispatches executions.
type Scheduler struct {
	cfg      Config
	store    Store
	bus      bus.Bus
	send     *bus.Sender
	presence bus.Presence
	log      logrus.FieldLogger
	metrics  *metrics

	wake    chan struct{}
	leading atomic.Bool
}

// Leading reports whether this replica holds the maintenance lease.
func (s *Scheduler) Leading() bool { return s.leading.Load() }

// New builds a scheduler.
func New(st Store, b bus.Bus, p bus.Presence, reg prometheus.Registerer, log logrus.FieldLogger, cfg Config) (*Scheduler, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg, store: st, bus: b, send: bus.NewSender(b, log), presence: p, log: log, metrics: newMetrics(reg), wake: make(chan struct{}, 1)}, nil
}

// Run dispatches until ctx is done.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.registerKeys(ctx); err != nil {
		return err
	}
	sub, err := s.bus.Subscribe(ctx, bus.TopicScheduler)
	if err != nil {
		return fmt.Errorf("subscribing to scheduler topic: %w", err)
	}
	defer func() { _ = sub.Close() }()

	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		s.dispatchLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.maintenanceLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.scheduleLoop(ctx)
	}()
	defer wg.Wait()

	s.poke()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-sub.Messages():
			if !ok {
				return errors.New("scheduler topic subscription closed")
			}
			s.handleWake(ctx, m.Payload)
		}
	}
}

// registerKeys publishes the signing keys' public halves for the gateways to
// announce; the primary last, so it is the newest.
func (s *Scheduler) registerKeys(ctx context.Context) error {
	primary := s.cfg.Signer.KeyID()
	for id, pub := range s.cfg.Signer.PublicKeys() {
		if id == primary {
			continue
		}
		if err := s.store.RegisterSigningKey(ctx, id, signing.EncodePublicKey(pub)); err != nil {
			return err
		}
	}
	if err := s.store.RegisterSigningKey(ctx, primary, signing.EncodePublicKey(s.cfg.Signer.PublicKey())); err != nil {
		return err
	}
	s.log.WithField("key_id", primary).Info("signing commands")
	return nil
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default: // a dispatch round is already pending; it will see this work too
	}
}

func (s *Scheduler) handleWake(ctx context.Context, payload []byte) {
	w, err := bus.DecodeWake(payload)
	if err != nil {
		s.log.WithError(err).Warn("dropping malformed wake message")
		return
	}
	s.metrics.wakes.WithLabelValues(w.Reason).Inc()
	if w.Reason == bus.WakeUndelivered && w.ExecutionID != "" {
		released, err := s.store.ReleaseUndelivered(ctx, w.ExecutionID)
		if err != nil {
			s.log.WithError(err).WithField("execution_id", w.ExecutionID).Error("releasing undelivered execution failed")
		} else if released {
			s.log.WithFields(logrus.Fields{"execution_id": w.ExecutionID, "agent_id": w.AgentID}).Info("execution undelivered, requeued")
		}
	}
	s.poke()
}

func (s *Scheduler) dispatchLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			s.dispatchAll(ctx)
		case <-t.C:
			s.dispatchAll(ctx)
		}
	}
}

// maintenanceLoop runs the leader-only work: one replica at a time holds the
// lease; when it dies its connection drops the lock and another takes over
// within a sweep interval.
func (s *Scheduler) maintenanceLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	var lead *store.Leader
	defer func() {
		if lead != nil {
			lead.Release(context.WithoutCancel(ctx))
			s.leading.Store(false)
		}
	}()
	var lastRetention time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if lead != nil {
			if err := lead.Check(ctx); err != nil {
				s.log.WithError(err).Warn("maintenance leadership lost")
				lead.Release(ctx)
				lead = nil
				s.metrics.leader.Set(0)
				s.leading.Store(false)
			}
		}
		if lead == nil {
			l, err := s.store.TryLead(ctx, "maintenance")
			if err != nil {
				if ctx.Err() == nil {
					s.log.WithError(err).Error("trying maintenance leadership failed")
				}
				continue
			}
			if l == nil {
				continue // another replica leads
			}
			lead = l
			s.metrics.leader.Set(1)
			s.leading.Store(true)
			s.log.Info("maintenance leadership acquired")
		}
		now := s.cfg.Now()
		s.sweep(ctx, now)
		s.releaseStale(ctx, now)
		s.purgeArgs(ctx)
		if now.Sub(lastRetention) >= s.cfg.RetentionInterval {
			lastRetention = now
			s.retention(ctx, now)
		}
		for _, task := range s.cfg.Tasks {
			if err := task(ctx, now); err != nil && ctx.Err() == nil {
				s.log.WithError(err).Error("maintenance task failed")
			}
		}
	}
}

func (s *Scheduler) policy() store.RetryPolicy {
	return store.RetryPolicy{Base: s.cfg.RetryDelay, Max: s.cfg.MaxRetryDelay}
}

// releaseStale marks offline the agents whose gateway stopped reporting them
// and retries the work they held.
func (s *Scheduler) releaseStale(ctx context.Context, now time.Time) {
	stale, err := s.store.MarkStaleAgentsOffline(ctx, now.Add(-s.cfg.StaleAfter))
	if err != nil {
		if ctx.Err() == nil {
			s.log.WithError(err).Error("offline detection failed")
		}
		return
	}
	for _, a := range stale {
		s.metrics.staleAgents.Inc()
		s.cfg.Events.Agent(ctx, events.AgentOffline, a.ID, a.GatewayID, "missed heartbeats")
		s.log.WithFields(logrus.Fields{"agent_id": a.ID, "gateway_id": a.GatewayID}).Warn("agent missed its heartbeats; marked offline")
		if _, err := s.store.ReleaseAgentExecutions(ctx, a.ID, a.GatewayID, s.policy()); err != nil && ctx.Err() == nil {
			s.log.WithError(err).WithField("agent_id", a.ID).Error("releasing executions of a stale agent failed")
		}
	}
	if len(stale) > 0 {
		s.poke()
	}
}

// purgeSealedBatch bounds the commands whose sealed args one sweep purges.
const purgeSealedBatch = 500

// purgeArgs removes the encrypted secrets of commands that became final.
func (s *Scheduler) purgeArgs(ctx context.Context) {
	n, err := s.store.PurgeSealedArgs(ctx, purgeSealedBatch)
	if err != nil && ctx.Err() == nil {
		s.log.WithError(err).Error("purging sealed command args failed")
	}
	s.metrics.deleted.WithLabelValues("sealed_args").Add(float64(n))
}

func (s *Scheduler) retention(ctx context.Context, now time.Time) {
	const maxBatches = 20
	if s.cfg.TelemetryRetention > 0 {
		n, err := s.store.DeleteTelemetryBefore(ctx, now.Add(-s.cfg.TelemetryRetention), maxBatches)
		if err != nil && ctx.Err() == nil {
			s.log.WithError(err).Error("telemetry retention failed")
		}
		s.metrics.deleted.WithLabelValues("telemetry").Add(float64(n))
	}
	if s.cfg.CommandRetention > 0 {
		n, err := s.store.DeleteCommandsFinishedBefore(ctx, now.Add(-s.cfg.CommandRetention), maxBatches)
		if err != nil && ctx.Err() == nil {
			s.log.WithError(err).Error("command retention failed")
		}
		s.metrics.deleted.WithLabelValues("commands").Add(float64(n))
	}
	// Idempotency-Keys carry their own expiry (24 h by default).
	n, err := s.store.DeleteIdempotencyKeysBefore(ctx, now, maxBatches)
	if err != nil && ctx.Err() == nil {
		s.log.WithError(err).Error("idempotency key purge failed")
	}
	s.metrics.deleted.WithLabelValues("idempotency_keys").Add(float64(n))
}

// dispatchAll claims and publishes batches until a batch comes back short.
func (s *Scheduler) dispatchAll(ctx context.Context) {
	for ctx.Err() == nil {
		claimed, err := s.dispatchBatch(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.WithError(err).Error("dispatch round failed")
			}
			return
		}
		if claimed < s.cfg.BatchSize {
			return
		}
	}
}

func (s *Scheduler) dispatchBatch(ctx context.Context) (int, error) {
	start := time.Now()
	var sessions map[string]bus.Entry
	route := func(ctx context.Context, agentIDs []string) (map[string]string, error) {
		entries, err := s.presence.LookupPresence(ctx, agentIDs)
		if err != nil {
			return nil, err
		}
		sessions = entries
		out := make(map[string]string, len(entries))
		for id, e := range entries {
			out[id] = e.GatewayID
		}
		return out, nil
	}
	due, claimed, err := s.store.ClaimDue(ctx, store.ClaimOptions{
		Limit: s.cfg.BatchSize, AckTimeout: s.cfg.AckTimeout, MaxInFlight: s.cfg.MaxInFlight, PerAgent: s.cfg.PerAgent,
		Now: s.cfg.Now(), // the same clock as the deadline sweeps
	}, route)
	if err != nil {
		return 0, err
	}
	s.publish(ctx, due, sessions)
	if len(due) > 0 {
		ids := make([]string, len(due))
		for i, d := range due {
			ids[i] = d.CommandID
		}
		if err := s.store.MarkCommandsRunning(ctx, ids); err != nil {
			s.log.WithError(err).Warn("marking commands running failed")
		}
	}
	if claimed > 0 {
		s.metrics.claimSeconds.Observe(time.Since(start).Seconds())
	}
	return claimed, nil
}

// publish signs the claimed executions' COMMAND frames (in parallel:
// commandFrames) and sends them, one bus message per gateway.
func (s *Scheduler) publish(ctx context.Context, due []store.DueExecution, sessions map[string]bus.Entry) {
	byGateway := map[string][]bus.Delivery{}
	frames, errs := s.commandFrames(due)
	for i, d := range due {
		frame, err := frames[i], errs[i]
		if err != nil {
			s.log.WithError(err).WithField("execution_id", d.ExecutionID).Error("building command frame failed")
			continue
		}
		byGateway[d.GatewayID] = append(byGateway[d.GatewayID], bus.Delivery{
			AgentID: d.AgentID, SessionID: sessions[d.AgentID].SessionID, ExecutionID: d.ExecutionID, Frame: frame,
		})
	}
	for gw, items := range byGateway {
		n, err := s.send.Deliver(ctx, gw, items...)
		if err == nil && n > 0 {
			s.metrics.dispatched.Add(float64(len(items)))
			s.dispatchedEvents(ctx, due, gw)
			continue
		}
		// Nobody holds that gateway's topic (it died) or the bus failed: put the
		// executions back at once rather than waiting for their ack deadline.
		s.metrics.undeliverable.Add(float64(len(items)))
		log := s.log.WithFields(logrus.Fields{"gateway_id": gw, "executions": len(items)})
		if err != nil {
			log.WithError(err).Warn("publishing commands failed")
		} else {
			log.Warn("no gateway listening for the agents' sessions")
		}
		for _, d := range items {
			if _, err := s.store.ReleaseUndelivered(context.WithoutCancel(ctx), d.ExecutionID); err != nil {
				log.WithError(err).WithField("execution_id", d.ExecutionID).Error("releasing undelivered execution failed")
			}
		}
	}
}

func (s *Scheduler) dispatchedEvents(ctx context.Context, due []store.DueExecution, gatewayID string) {
	if s.cfg.Events == nil {
		return
	}
	var evs []events.Event
	for _, d := range due {
		if d.GatewayID == gatewayID {
			evs = append(evs, events.Event{Type: events.ExecutionStatus, ExecutionID: d.ExecutionID, CommandID: d.CommandID,
				AgentID: d.AgentID, GatewayID: gatewayID, Status: store.ExecDispatched})
		}
	}
	s.cfg.Events.Publish(ctx, evs...)
}

func (s *Scheduler) sweep(ctx context.Context, now time.Time) {
	ended, err := s.store.Sweep(ctx, now, s.policy())
	if err != nil {
		if ctx.Err() == nil {
			s.log.WithError(err).Error("deadline sweep failed")
		}
		return
	}
	if len(ended) > 0 {
		s.poke() // finished work frees capacity
	}
	evs := make([]events.Event, len(ended))
	for i, t := range ended {
		evs[i] = events.Event{Type: events.ExecutionStatus, ExecutionID: t.ExecutionID, CommandID: t.CommandID, AgentID: t.AgentID, Status: t.Status}
	}
	s.cfg.Events.Publish(ctx, evs...)
	s.metrics.timedOut.Add(float64(len(ended)))
	s.sendCancels(ctx, ended, "timed out")
}
