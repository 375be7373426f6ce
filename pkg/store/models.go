package store

import (
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"time"
)

// Agent statuses.
const (
	AgentOnline  = "online"
	AgentOffline = "offline"
)

// Execution statuses (docs/states.md, the execution state machine).
const (
	ExecQueued     = "queued"
	ExecDispatched = "dispatched"
	ExecRunning    = "running"
	ExecRetrying   = "retrying"
	ExecSucceeded  = "succeeded"
	ExecFailed     = "failed"
	ExecTimedOut   = "timed_out"
	ExecCancelled  = "cancelled"
	ExecExpired    = "expired"
)

// Command aggregate statuses beyond the execution ones.
const (
	CommandQueued             = "queued"
	CommandRunning            = "running"
	CommandSucceeded          = "succeeded"
	CommandFailed             = "failed"
	CommandPartiallySucceeded = "partially_succeeded"
	CommandCancelled          = "cancelled"
	CommandTimedOut           = "timed_out"
	CommandExpired            = "expired"
)

// IsTerminal reports whether an execution status is final.
func IsTerminal(status string) bool {
	switch status {
	case ExecSucceeded, ExecFailed, ExecTimedOut, ExecCancelled, ExecExpired:
		return true
	}
	return false
}

// Priority orders the dispatch queue; higher first.
type Priority int16

// Priorities.
const (
	PriorityLow      Priority = 0
	PriorityNormal   Priority = 1
	PriorityHigh     Priority = 2
	PriorityCritical Priority = 3
)

var priorityNames = map[Priority]string{PriorityLow: "low", PriorityNormal: "normal", PriorityHigh: "high", PriorityCritical: "critical"}

func (p Priority) String() string {
	if n, ok := priorityNames[p]; ok {
		return n
	}
	return fmt.Sprintf("priority(%d)", int16(p))
}

// ParsePriority maps a name to a Priority; "" is normal.
func ParsePriority(s string) (Priority, bool) {
	if s == "" {
		return PriorityNormal, true
	}
	for p, n := range priorityNames {
		if n == s {
			return p, true
		}
	}
	return 0, false
}

// JSON is a jsonb column holding raw JSON.
type JSON json.RawMessage

// Value implements driver.Valuer.
func (j JSON) Value() (driver.Value, error) {
	if len(j) == 0 {
		return "null", nil
	}
	return string(j), nil
}

// Scan implements sql.Scanner.
func (j *JSON) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*j = nil
	case []byte:
		*j = append((*j)[:0], v...)
	case string:
		*j = JSON(v)
	default:
		return fmt.Errorf("scanning JSON from %T", src)
	}
	return nil
}

// MarshalJSON keeps the raw bytes.
func (j JSON) MarshalJSON() ([]byte, error) {
	if len(j) == 0 {
		return []byte("null"), nil
	}
	return j, nil
}

// StringList is a jsonb array of strings.
type StringList []string

// Value implements driver.Valuer.
func (l StringList) Value() (driver.Value, error) {
	if l == nil {
		return "[]", nil
	}
	b, err := json.Marshal([]string(l))
	return string(b), err
}

// Scan implements sql.Scanner.
func (l *StringList) Scan(src any) error { return scanJSON(src, (*[]string)(l), decodeStringList) }

// StringMap is a jsonb object of strings.
type StringMap map[string]string

// Value implements driver.Valuer.
func (m StringMap) Value() (driver.Value, error) {
	if m == nil {
		return "{}", nil
	}
	b, err := json.Marshal(map[string]string(m))
	return string(b), err
}

// Scan implements sql.Scanner.
func (m *StringMap) Scan(src any) error {
	return scanJSON(src, (*map[string]string)(m), decodeStringMap)
}

// scanJSON decodes the JSON text a driver gives for a jsonb column into dst;
// SQL NULL leaves dst as it is.
func scanJSON[T any](src any, dst *T, decode func([]byte) (T, error)) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		return nil
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("scanning JSON from %T", src)
	}
	v, err := decode(b)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

// Agent is a registered OS agent.
//
// Site, Labels and Capabilities are the trusted attributes that selectors and
// the agent list filters match: site and labels fixed at enrollment or by an
// admin (AttributesSource says which), capabilities those announced that the
// agent's enrollment secret allows. The Reported fields are what the agent
// claimed in its latest HELLO; they never widen what a selector matches.
type Agent struct {
	ID           string     `gorm:"primaryKey"`
	Status       string     `gorm:"not null"`
	Site         string     `gorm:"not null"`
	Version      string     `gorm:"not null"`
	Hostname     string     `gorm:"not null"`
	OS           string     `gorm:"column:os;not null"`
	Arch         string     `gorm:"not null"`
	Capabilities StringList `gorm:"type:jsonb;not null"`
	Labels       StringMap  `gorm:"type:jsonb;not null"`
	GatewayID    string     `gorm:"not null"`
	SessionID    string     `gorm:"not null"`
	HealthStatus string     `gorm:"not null"`

	UptimeS     int64 `gorm:"column:uptime_s;not null"`
	ConnectedAt *time.Time
	LastSeenAt  *time.Time
	CreatedAt   time.Time
	UpdatedAt   time.Time

	ReportedSite         string     `gorm:"not null"`
	ReportedLabels       StringMap  `gorm:"type:jsonb;not null"`
	ReportedCapabilities StringList `gorm:"type:jsonb;not null"`
	AttributesSource     string     `gorm:"not null"` // one of the AttributesFrom constants
}

// Where an agent's trusted site and labels come from (Agent.AttributesSource).
const (
	AttributesFromNothing    = ""           // nothing fixed them: site "", no labels
	AttributesFromEnrollment = "enrollment" // the enrollment secret the agent enrolled with
	AttributesFromAdmin      = "admin"      // PATCH /api/v1/agents/{id}
	AttributesFromReported   = "reported"   // the agent's HELLO, under trust_reported_attributes
)

// Targeting modes.
const (
	ModeAll = "all" // every chosen agent runs the command
	ModeAny = "any" // one healthy matching agent with the least work runs it
)

// Selector chooses agents by their attributes.
type Selector struct {
	Site       string            `json:"site,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Capability string            `json:"capability,omitempty"`
}

// Empty reports whether the selector selects nothing by itself.
func (s *Selector) Empty() bool {
	return s == nil || (s.Site == "" && len(s.Labels) == 0 && s.Capability == "")
}

// Targeting is how a command chose its agents (kept for any-mode failover).
type Targeting struct {
	AgentIDs []string  `json:"agent_targets,omitempty"`
	Selector *Selector `json:"selector,omitempty"`
}

// Command is one request of an operator, fanned out to executions.
type Command struct {
	ID             string   `gorm:"primaryKey"`
	Verb           string   `gorm:"not null"`
	Args           JSON     `gorm:"type:jsonb;not null"`
	ArgsSealed     bool     `gorm:"not null"` // Args hold encrypted values (argseal), purged once final
	Priority       Priority `gorm:"not null"`
	Status         string   `gorm:"not null"`
	CreatedBy      string   `gorm:"not null"`
	TimeoutSeconds int      `gorm:"not null"`
	MaxRetries     int      `gorm:"not null"`
	TTLSeconds     int      `gorm:"column:ttl_seconds;not null"`
	Mode           string   `gorm:"not null"`
	Targeting      JSON     `gorm:"not null"` // Targeting, as requested
	MaxConcurrency int      `gorm:"not null"` // 0: unlimited
	MaxErrors      *int     // nil: unlimited
	CancelledBy    string   `gorm:"not null"`
	ExpiresAt      time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     *time.Time

	// A schedule's run (schedules.go) carries the schedule and its due time.
	ScheduleID *string
	DueAt      *time.Time
}

// Execution is one command on one agent.
type Execution struct {
	ID            string   `gorm:"primaryKey"`
	CommandID     string   `gorm:"not null"`
	AgentID       string   `gorm:"not null"`
	Status        string   `gorm:"not null"`
	Priority      Priority `gorm:"not null"`
	Attempts      int      `gorm:"not null"`
	NextAttemptAt time.Time
	AckDeadline   *time.Time
	GatewayID     string `gorm:"not null"`
	ExitCode      *int
	Output        string `gorm:"not null"`
	// OutputTruncated says Output was cut to the agent protocol's output limit.
	OutputTruncated bool   `gorm:"not null"`
	Error           string `gorm:"not null"`
	DispatchedAt    *time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// TelemetrySample is one TELEMETRY frame.
type TelemetrySample struct {
	AgentID    string    `gorm:"not null"`
	TS         time.Time `gorm:"column:ts;not null"`
	Metrics    JSON      `gorm:"type:jsonb;not null"`
	ReceivedAt time.Time `gorm:"not null"`
}

// TableName pins the telemetry table name.
func (TelemetrySample) TableName() string { return "telemetry" }

// AuditEvent is one entry of the audit trail.
type AuditEvent struct {
	ID        int64     `gorm:"primaryKey"`
	At        time.Time `gorm:"not null"`
	Actor     string    `gorm:"not null"`
	Action    string    `gorm:"not null"`
	Target    string    `gorm:"not null"`
	RequestID string    `gorm:"not null"`
	ClientIP  string    `gorm:"column:client_ip;not null"`
	Details   JSON      `gorm:"type:jsonb;not null"`
	KeyID     string    `gorm:"not null"` // audit key the hash is under ("" on legacy rows)
	PrevHash  string    `gorm:"not null"` // hash of the row before (see audit.go)
	Hash      string    `gorm:"not null"` // HMAC-SHA256 under the key KeyID names
}
