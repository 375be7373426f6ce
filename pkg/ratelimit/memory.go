package ratelimit

import (
	"context"
	"sync"
	"time"
)

// MemoryConfig configures a Memory limiter.
type MemoryConfig struct {
	MaxKeys int              // keys tracked; beyond it idle keys are dropped, then all (default 100,000)
	Now     func() time.Time // clock (default time.Now)
}

// Memory is the in-process Limiter for a single replica.
type Memory struct {
	cfg  MemoryConfig
	mu   sync.Mutex
	tats map[string]time.Time
}

var _ Limiter = (*Memory)(nil)

// NewMemory builds an in-process limiter.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{cfg: cfg, tats: map[string]time.Time{}}
}

// Allow implements Limiter.
func (m *Memory) Allow(_ context.Context, key string, l Limit) (Result, error) {
	if err := l.Validate(); err != nil {
		return Result{}, err
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	res, tat := gcra(now, m.tats[key], l)
	if res.Allowed {
		if _, ok := m.tats[key]; !ok && len(m.tats) >= m.cfg.MaxKeys {
			m.evict(now)
		}
		m.tats[key] = tat
	}
	return res, nil
}

// Peek implements Limiter.
func (m *Memory) Peek(_ context.Context, key string, l Limit) (Result, error) {
	if err := l.Validate(); err != nil {
		return Result{}, err
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	res, _ := gcra(now, m.tats[key], l)
	return res, nil
}

// evict drops keys whose burst is full again (they hold no information), and
// everything if that frees nothing.
func (m *Memory) evict(now time.Time) {
	for k, tat := range m.tats {
		if !tat.After(now) {
			delete(m.tats, k)
		}
	}
	if len(m.tats) >= m.cfg.MaxKeys {
		clear(m.tats)
	}
}
