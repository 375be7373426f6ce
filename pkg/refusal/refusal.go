// Package refusal aggregates refused anonymous requests (bad tokens, refused
// enrollments) into at most one audit event per source address and window, so
// that a flood of refusals costs a map update each instead of a write to the
// audit chain under its global lock.
package refusal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/store"
)

// Defaults of Config.
const (
	DefaultWindow     = time.Minute
	DefaultMaxSources = 10000
	// OverflowSource is the source under which refusals from addresses beyond
	// MaxSources are counted in a window.
	OverflowSource = "other"
	maxReasons     = 16
	flushTimeout   = 10 * time.Second
)

// Recorder appends audit events (store.Store.RecordAudits).
type Recorder interface {
	RecordAudits(ctx context.Context, es []store.AuditEvent) error
}

// Config configures an Aggregator.
type Config struct {
	// Action is the audit action of the aggregated events ("auth.failure").
	Action string
	// Actor is the actor of the aggregated events; default "anonymous".
	Actor string
	// Window is how long refusals are collected before one event per source is
	// written; default DefaultWindow.
	Window time.Duration
	// MaxSources bounds the addresses tracked in one window; refusals from
	// more are counted under OverflowSource. Default DefaultMaxSources.
	MaxSources int
}

func (c *Config) setDefaults() {
	if c.Actor == "" {
		c.Actor = "anonymous"
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MaxSources <= 0 {
		c.MaxSources = DefaultMaxSources
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Action == "" {
		return errors.New("refusal: action is required")
	}
	return nil
}

type source struct {
	count   int64
	first   time.Time
	last    time.Time
	reasons map[string]int64
	targets map[string]int64
}

// Aggregator counts refusals per source address and writes them as one
// audit event per source and window. Record never blocks on the database.
type Aggregator struct {
	rec Recorder
	log logrus.FieldLogger
	cfg Config

	mu      sync.Mutex
	sources map[string]*source
}

// New returns an Aggregator writing to rec.
func New(rec Recorder, log logrus.FieldLogger, cfg Config) (*Aggregator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errors.New("refusal: a recorder is required")
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Aggregator{rec: rec, log: log, cfg: cfg, sources: map[string]*source{}}, nil
}

// Record counts one refusal of addr for reason on target (e.g. "GET /api/v1/agents").
func (a *Aggregator) Record(addr, reason, target string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sources[addr]
	if s == nil {
		if len(a.sources) >= a.cfg.MaxSources {
			addr = OverflowSource
			s = a.sources[addr]
		}
		if s == nil {
			s = &source{first: now, reasons: map[string]int64{}, targets: map[string]int64{}}
			a.sources[addr] = s
		}
	}
	s.count++
	s.last = now
	bump(s.reasons, reason)
	bump(s.targets, target)
}

// bump counts k in m, folding keys beyond maxReasons into "other".
func bump(m map[string]int64, k string) {
	if _, ok := m[k]; !ok && len(m) >= maxReasons {
		k = "other"
	}
	m[k]++
}

// Pending is the number of sources waiting for the next flush.
func (a *Aggregator) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sources)
}

// Flush writes one audit event per source counted since the last flush.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.mu.Lock()
	sources := a.sources
	a.sources = map[string]*source{}
	a.mu.Unlock()
	if len(sources) == 0 {
		return nil
	}
	addrs := make([]string, 0, len(sources))
	for addr := range sources {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	es := make([]store.AuditEvent, 0, len(addrs))
	for _, addr := range addrs {
		s := sources[addr]
		details, err := json.Marshal(map[string]any{
			"count": s.count, "reasons": s.reasons, "targets": s.targets,
			"first": s.first.UTC(), "last": s.last.UTC(),
		})
		if err != nil {
			return fmt.Errorf("encoding refusal details: %w", err)
		}
		es = append(es, store.AuditEvent{At: s.last, Actor: a.cfg.Actor, Action: a.cfg.Action, Target: addr, ClientIP: addr, Details: details})
	}
	if err := a.rec.RecordAudits(ctx, es); err != nil {
		return fmt.Errorf("writing %d refusal audit events: %w", len(es), err)
	}
	return nil
}

// Run flushes every window until ctx is done, then flushes once more.
func (a *Aggregator) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			defer cancel()
			a.flush(fctx)
			return nil
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, flushTimeout)
			a.flush(fctx)
			cancel()
		}
	}
}

func (a *Aggregator) flush(ctx context.Context) {
	if err := a.Flush(ctx); err != nil {
		a.log.WithError(err).WithField("action", a.cfg.Action).Warn("writing refusal audit events failed")
	}
}
