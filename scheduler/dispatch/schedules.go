package dispatch

import (
	"context"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/store"
)

// Defaults of the schedule loop.
const (
	// DefaultScheduleTick is how often every replica looks for due schedules:
	// a due time fires within this of its time (plus its jitter).
	DefaultScheduleTick = 200 * time.Millisecond
	// DefaultScheduleGrace is how late a due time still fires as such; later,
	// it was missed while no scheduler ran and the schedule's catch_up decides.
	DefaultScheduleGrace = 30 * time.Second
	// scheduleBatch bounds the due times one look handles.
	scheduleBatch = 100
)

func (c *Config) scheduleDefaults() {
	if c.ScheduleTick <= 0 {
		c.ScheduleTick = DefaultScheduleTick
	}
	if c.ScheduleGrace <= 0 {
		c.ScheduleGrace = DefaultScheduleGrace
	}
}

// scheduleLoop fires schedules' due times on every replica: the store claims
// each due time in the transaction that creates its command (SKIP LOCKED on
// Postgres, a unique (schedule_id, due_at)), so replicas together fire each
// exactly once, and a replica killed mid-way leaves the due time to the next.
func (s *Scheduler) scheduleLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ScheduleTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.fireSchedules(ctx)
		}
	}
}

func (s *Scheduler) fireSchedules(ctx context.Context) {
	for ctx.Err() == nil {
		runs, err := s.store.FireSchedules(ctx, store.FireOptions{
			Now: s.cfg.Now(), Grace: s.cfg.ScheduleGrace, MaxQueued: s.cfg.MaxQueued, Limit: scheduleBatch,
		})
		if err != nil && ctx.Err() == nil {
			s.log.WithError(err).Error("firing schedules failed")
		}
		s.afterRuns(ctx, runs)
		if err != nil || len(runs) < scheduleBatch {
			return
		}
	}
}

// afterRuns does what follows the commit of runs: events, dispatch, CANCEL
// frames for what cancel_previous ended.
func (s *Scheduler) afterRuns(ctx context.Context, runs []store.ScheduleRun) {
	created := false
	for _, r := range runs {
		outcome, _, _ := strings.Cut(r.Outcome, ":")
		s.metrics.scheduleRuns.WithLabelValues(outcome).Inc()
		log := s.log.WithFields(logrus.Fields{"schedule_id": r.ScheduleID, "due_at": r.DueAt, "outcome": r.Outcome})
		if r.Command == nil {
			log.Warn("schedule due time ran no command")
		} else {
			created = true
			log.WithField("command_id", r.Command.ID).Debug("schedule run created")
			s.cfg.Events.Command(ctx, r.Command.ID, r.Command.Status)
		}
		s.sendCancels(ctx, r.Cancelled, "cancelled: the schedule's next run replaces it")
	}
	if created {
		s.poke()
	}
}

// sendCancels sends a CANCEL to the agent of each execution ended while
// dispatched or running.
func (s *Scheduler) sendCancels(ctx context.Context, ended []store.Timeout, reason string) {
	for _, t := range ended {
		if t.GatewayID != "" {
			s.send.Cancel(ctx, t.GatewayID, t.AgentID, t.ExecutionID, reason)
		}
	}
}
