// Package bus carries messages between the roles (api-server, scheduler,
// gateways) and keeps agent presence: which gateway session holds each agent.
// Delivery is at most once; Postgres stays the source of truth.
package bus

import (
	"context"
	"errors"
	"time"
)

// Message is one message received on a topic.
type Message struct {
	Topic   string
	Payload []byte
}

// Subscription is a live subscription; Messages is closed after Close.
type Subscription interface {
	Messages() <-chan Message
	Close() error
}

// Bus publishes and subscribes to topics. Topic names are relative: an
// implementation adds its installation prefix.
type Bus interface {
	// Publish sends payload to the topic's current subscribers and returns how
	// many received it (0 means nobody listens: the addressee is gone).
	Publish(ctx context.Context, topic string, payload []byte) (int, error)
	// Subscribe starts receiving the topics; it returns once the subscription is live.
	Subscribe(ctx context.Context, topics ...string) (Subscription, error)
	Ping(ctx context.Context) error
	Close() error
}

// Entry locates an agent's live session.
type Entry struct {
	GatewayID string `json:"gateway_id"`
	SessionID string `json:"session_id"`
}

// Presence records which gateway session holds each agent, with a TTL refreshed by heartbeats.
type Presence interface {
	// SetPresence records the agent's session, replacing any other, and returns the previous entry if any.
	SetPresence(ctx context.Context, agentID string, e Entry, ttl time.Duration) (prev *Entry, err error)
	// RefreshPresence extends the TTL if the agent is still on this session.
	RefreshPresence(ctx context.Context, agentID string, e Entry, ttl time.Duration) (bool, error)
	// RefreshPresences does RefreshPresence for many agents in one round trip
	// and says, per agent, what it found.
	RefreshPresences(ctx context.Context, entries map[string]Entry, ttl time.Duration) (map[string]Refresh, error)
	// DeletePresence removes the entry only if it is still this session's (compare-and-delete).
	DeletePresence(ctx context.Context, agentID string, e Entry) (bool, error)
	// LookupPresence returns the entries of those agents that are present.
	LookupPresence(ctx context.Context, agentIDs []string) (map[string]Entry, error)
}

// Backend is a bus with presence, as both implementations (Redis, Memory) provide.
type Backend interface {
	Bus
	Presence
}

// Refresh is what refreshing an agent's presence found.
type Refresh int

// Refresh outcomes.
const (
	Refreshed Refresh = 1  // the entry was this session's; its TTL is extended
	Missing   Refresh = 0  // no entry (expired, or Redis lost it)
	Replaced  Refresh = -1 // another session's entry: this one is stale
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("bus closed")

// Topics used between the roles.
const (
	// TopicScheduler wakes schedulers: work arrived, an agent came online, a
	// delivery failed. Payload: a Wake.
	TopicScheduler = "scheduler"
	// TopicAgents tells every gateway that an agent's credential was revoked
	// or the agent deleted: each drops what it cached of the credential and
	// closes the agent's session. Payload: an AgentEnded.
	TopicAgents = "agents"
)

// GatewayTopic is the topic of one gateway: COMMAND and CANCEL deliveries for
// the agents it holds. Per-gateway names let sharded pub/sub spread them.
func GatewayTopic(gatewayID string) string { return "gateway:" + gatewayID }
