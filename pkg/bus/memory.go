package bus

import (
	"context"
	"sync"
	"time"
)

// Memory is the in-process implementation of Bus and Presence, for the
// one-process mode: all roles share one instance. Like Redis pub/sub it is at
// most once: a subscriber whose buffer is full loses the message (counted).
type Memory struct {
	mu       sync.Mutex
	closed   bool
	subs     map[string]map[*memorySub]struct{}
	presence map[string]memoryEntry
	now      func() time.Time
	dropped  int
}

type memoryEntry struct {
	e       Entry
	expires time.Time
}

var (
	_ Bus      = (*Memory)(nil)
	_ Presence = (*Memory)(nil)
)

// memoryBuffer is each subscription's queue length.
const memoryBuffer = 4096

// NewMemory returns an empty in-process bus.
func NewMemory() *Memory {
	return &Memory{subs: map[string]map[*memorySub]struct{}{}, presence: map[string]memoryEntry{}, now: time.Now}
}

type memorySub struct {
	m      *Memory
	topics []string
	out    chan Message
	once   sync.Once
}

func (s *memorySub) Messages() <-chan Message { return s.out }

func (s *memorySub) Close() error {
	s.once.Do(func() {
		s.m.mu.Lock()
		for _, t := range s.topics {
			delete(s.m.subs[t], s)
			if len(s.m.subs[t]) == 0 {
				delete(s.m.subs, t)
			}
		}
		s.m.mu.Unlock()
		close(s.out)
	})
	return nil
}

// Publish implements Bus.
func (m *Memory) Publish(_ context.Context, topic string, payload []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	n := 0
	for s := range m.subs[topic] {
		msg := Message{Topic: topic, Payload: append([]byte(nil), payload...)}
		select {
		case s.out <- msg:
			n++
		default:
			m.dropped++
		}
	}
	return n, nil
}

// Subscribe implements Bus.
func (m *Memory) Subscribe(_ context.Context, topics ...string) (Subscription, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	s := &memorySub{m: m, topics: append([]string(nil), topics...), out: make(chan Message, memoryBuffer)}
	for _, t := range topics {
		if m.subs[t] == nil {
			m.subs[t] = map[*memorySub]struct{}{}
		}
		m.subs[t][s] = struct{}{}
	}
	return s, nil
}

// Ping implements Bus.
func (m *Memory) Ping(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// Close implements Bus; open subscriptions are closed.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var all []*memorySub
	for _, set := range m.subs {
		for s := range set {
			all = append(all, s)
		}
	}
	m.mu.Unlock()
	for _, s := range all {
		_ = s.Close()
	}
	return nil
}

func (m *Memory) live(agentID string) (memoryEntry, bool) {
	e, ok := m.presence[agentID]
	if !ok {
		return e, false
	}
	if !m.now().Before(e.expires) {
		delete(m.presence, agentID)
		return e, false
	}
	return e, true
}

// SetPresence implements Presence.
func (m *Memory) SetPresence(_ context.Context, agentID string, e Entry, ttl time.Duration) (*Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.live(agentID)
	m.presence[agentID] = memoryEntry{e: e, expires: m.now().Add(ttl)}
	if !ok {
		return nil, nil
	}
	prev := old.e
	return &prev, nil
}

// RefreshPresence implements Presence.
func (m *Memory) RefreshPresence(_ context.Context, agentID string, e Entry, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.live(agentID)
	if !ok || cur.e != e {
		return false, nil
	}
	m.presence[agentID] = memoryEntry{e: e, expires: m.now().Add(ttl)}
	return true, nil
}

// RefreshPresences implements Presence.
func (m *Memory) RefreshPresences(_ context.Context, entries map[string]Entry, ttl time.Duration) (map[string]Refresh, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Refresh, len(entries))
	for id, e := range entries {
		cur, ok := m.live(id)
		switch {
		case !ok:
			out[id] = Missing
		case cur.e != e:
			out[id] = Replaced
		default:
			m.presence[id] = memoryEntry{e: e, expires: m.now().Add(ttl)}
			out[id] = Refreshed
		}
	}
	return out, nil
}

// DeletePresence implements Presence.
func (m *Memory) DeletePresence(_ context.Context, agentID string, e Entry) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.live(agentID)
	if !ok || cur.e != e {
		return false, nil
	}
	delete(m.presence, agentID)
	return true, nil
}

// LookupPresence implements Presence.
func (m *Memory) LookupPresence(_ context.Context, agentIDs []string) (map[string]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Entry, len(agentIDs))
	for _, id := range agentIDs {
		if e, ok := m.live(id); ok {
			out[id] = e.e
		}
	}
	return out, nil
}
