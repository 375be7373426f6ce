package events

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/bus"
)

// Filter selects events for one client; empty fields match everything.
type Filter struct {
	Types     map[string]bool
	AgentID   string
	CommandID string
}

// Match reports whether e passes the filter.
func (f Filter) Match(e Event) bool {
	if len(f.Types) > 0 && !f.Types[e.Type] {
		return false
	}
	if f.AgentID != "" && e.AgentID != f.AgentID {
		return false
	}
	if f.CommandID != "" && e.CommandID != f.CommandID {
		return false
	}
	return true
}

// HubConfig bounds the hub.
type HubConfig struct {
	Buffer      int           // events queued per client before it is dropped as too slow (default 256)
	MaxClients  int           // clients served at once (default 1000)
	MaxPerOwner int           // clients of one owner (principal) served at once (default 4)
	Retry       time.Duration // wait before resubscribing after the bus failed (default 1s)
}

func (c *HubConfig) setDefaults() {
	if c.Buffer <= 0 {
		c.Buffer = 256
	}
	if c.MaxClients <= 0 {
		c.MaxClients = 1000
	}
	if c.MaxPerOwner <= 0 {
		c.MaxPerOwner = 4
	}
	if c.Retry <= 0 {
		c.Retry = time.Second
	}
}

// Errors of Subscribe.
var (
	ErrTooManyClients  = errors.New("events: too many clients")
	ErrTooManyForOwner = errors.New("events: too many clients of this owner")
	ErrHubClosed       = errors.New("events: hub closed")
)

// Client is one subscriber. Events arrive on C; C is closed when the hub
// drops the client (it fell behind by a whole buffer) or closes.
type Client struct {
	C      <-chan Event
	ch     chan Event
	filter Filter
	owner  string
}

// Hub holds one bus subscription per process and fans events out to clients.
type Hub struct {
	bus bus.Bus
	log logrus.FieldLogger
	cfg HubConfig

	mu      sync.Mutex
	clients map[*Client]struct{}
	owners  map[string]int // clients per owner
	closed  bool
	ready   chan struct{}
	once    sync.Once
}

// NewHub returns a hub on b; Run subscribes.
func NewHub(b bus.Bus, log logrus.FieldLogger, cfg HubConfig) *Hub {
	cfg.setDefaults()
	return &Hub{bus: b, log: log, cfg: cfg, clients: map[*Client]struct{}{}, owners: map[string]int{}, ready: make(chan struct{})}
}

// Ready is closed once the first bus subscription is live.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Run receives events until ctx is done, resubscribing after bus failures,
// then closes the hub.
func (h *Hub) Run(ctx context.Context) error {
	defer h.Close()
	for ctx.Err() == nil {
		sub, err := h.bus.Subscribe(ctx, Topic)
		if err != nil {
			if ctx.Err() == nil {
				h.log.WithError(err).Warn("subscribing to events failed; retrying")
			}
			select {
			case <-ctx.Done():
			case <-time.After(h.cfg.Retry):
			}
			continue
		}
		h.once.Do(func() { close(h.ready) })
		h.receive(ctx, sub)
		_ = sub.Close()
	}
	return nil
}

func (h *Hub) receive(ctx context.Context, sub bus.Subscription) {
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-sub.Messages():
			if !ok {
				return
			}
			evs, err := Decode(m.Payload)
			if err != nil {
				h.log.WithError(err).Warn("dropping malformed events message")
				continue
			}
			h.dispatch(evs)
		}
	}
}

func (h *Hub) dispatch(evs []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		if !c.offer(evs) {
			// Too slow: drop it rather than hold up everyone else; it reconnects.
			h.drop(c)
		}
	}
}

// offer queues the events that pass the client's filter; false: its buffer is full.
func (c *Client) offer(evs []Event) bool {
	for _, e := range evs {
		if !c.filter.Match(e) {
			continue
		}
		select {
		case c.ch <- e:
		default:
			return false
		}
	}
	return true
}

// drop removes c and closes its channel; h.mu is held.
func (h *Hub) drop(c *Client) {
	delete(h.clients, c)
	if h.owners[c.owner]--; h.owners[c.owner] <= 0 {
		delete(h.owners, c.owner)
	}
	close(c.ch)
}

// Subscribe adds a client of owner (the principal it serves): at most
// MaxClients in all (ErrTooManyClients) and MaxPerOwner of one owner
// (ErrTooManyForOwner), so that one principal cannot take every stream.
func (h *Hub) Subscribe(owner string, f Filter) (*Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrHubClosed
	}
	if h.owners[owner] >= h.cfg.MaxPerOwner {
		return nil, ErrTooManyForOwner
	}
	if len(h.clients) >= h.cfg.MaxClients {
		return nil, ErrTooManyClients
	}
	ch := make(chan Event, h.cfg.Buffer)
	c := &Client{C: ch, ch: ch, filter: f, owner: owner}
	h.clients[c] = struct{}{}
	h.owners[owner]++
	return c, nil
}

// Unsubscribe removes a client; safe after the hub dropped it.
func (h *Hub) Unsubscribe(c *Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; ok {
		h.drop(c)
	}
}

// Clients returns the number of clients served.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// Close ends every client's stream and refuses new ones (shutdown).
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for c := range h.clients {
		h.drop(c)
	}
}
