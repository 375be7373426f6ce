// Package audithead keeps the audit chain's head outside the database: the
// scheduler's leader reads the signed head (last id, hash, count) of the
// chain, keeps the highest it has seen in Redis (or a file, for the
// all-in-one) and logs it, and the API's verification compares the table
// against it, so rows cut off the chain's end are reported as truncation.
package audithead

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/atomicfile"
	"github.com/viworks/backend-agent/pkg/store"
)

// Defaults of Config.
const (
	DefaultInterval    = time.Minute
	DefaultLogInterval = 10 * time.Minute
)

// Keeper holds the highest head seen.
type Keeper interface {
	// Load returns the kept head, nil when none was kept yet.
	Load(ctx context.Context) (*store.AuditHead, error)
	// Raise keeps h unless the kept head is ahead of it; it returns the head
	// kept afterwards.
	Raise(ctx context.Context, h store.AuditHead) (store.AuditHead, error)
}

// Source reads and checks signed heads (store.Store).
type Source interface {
	AuditHead(ctx context.Context) (store.AuditHead, error)
	CheckAuditHead(h store.AuditHead) error
}

// raiseScript keeps ARGV[3] (a head's JSON) unless the kept head has a higher
// last id or count (ARGV[1], ARGV[2]); it returns the head kept.
var raiseScript = redis.NewScript(`
local id = tonumber(redis.call('HGET', KEYS[1], 'last_id') or '-1')
local n = tonumber(redis.call('HGET', KEYS[1], 'count') or '-1')
if tonumber(ARGV[1]) >= id and tonumber(ARGV[2]) >= n then
  redis.call('HSET', KEYS[1], 'last_id', ARGV[1], 'count', ARGV[2], 'head', ARGV[3])
  return ARGV[3]
end
return redis.call('HGET', KEYS[1], 'head')
`)

// Redis keeps the head in a Redis hash under the installation's key prefix.
type Redis struct {
	client *redis.Client
	key    string
}

// NewRedis returns a Keeper storing under prefix+"audit:head".
func NewRedis(client *redis.Client, prefix string) *Redis {
	return &Redis{client: client, key: prefix + "audit:head"}
}

// Load implements Keeper.
func (r *Redis) Load(ctx context.Context) (*store.AuditHead, error) {
	raw, err := r.client.HGet(ctx, r.key, "head").Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading the kept audit head: %w", err)
	}
	return decode(raw)
}

// Raise implements Keeper.
func (r *Redis) Raise(ctx context.Context, h store.AuditHead) (store.AuditHead, error) {
	enc, err := json.Marshal(h)
	if err != nil {
		return store.AuditHead{}, fmt.Errorf("encoding the audit head: %w", err)
	}
	raw, err := raiseScript.Run(ctx, r.client, []string{r.key}, h.LastID, h.Count, string(enc)).Text()
	if err != nil {
		return store.AuditHead{}, fmt.Errorf("keeping the audit head: %w", err)
	}
	kept, err := decode(raw)
	if err != nil {
		return store.AuditHead{}, err
	}
	return *kept, nil
}

func decode(raw string) (*store.AuditHead, error) {
	var h store.AuditHead
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		return nil, fmt.Errorf("decoding the kept audit head: %w", err)
	}
	return &h, nil
}

// File keeps the head in a file (the all-in-one's data directory), written
// atomically; one process uses it.
type File struct {
	path string
	mu   sync.Mutex
}

// NewFile returns a Keeper storing in path.
func NewFile(path string) *File { return &File{path: path} }

// Load implements Keeper.
func (f *File) Load(context.Context) (*store.AuditHead, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.load()
}

func (f *File) load() (*store.AuditHead, error) {
	raw, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading the kept audit head: %w", err)
	}
	return decode(string(raw))
}

// Raise implements Keeper.
func (f *File) Raise(_ context.Context, h store.AuditHead) (store.AuditHead, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	kept, err := f.load()
	if err != nil {
		return store.AuditHead{}, err
	}
	if kept != nil && h.Behind(*kept) {
		return *kept, nil
	}
	enc, err := json.Marshal(h)
	if err != nil {
		return store.AuditHead{}, fmt.Errorf("encoding the audit head: %w", err)
	}
	if err := atomicfile.Write(f.path, enc); err != nil {
		return store.AuditHead{}, fmt.Errorf("keeping the audit head: %w", err)
	}
	return h, nil
}

// Config configures a Watcher.
type Config struct {
	Interval    time.Duration // how often the head is read and kept; default DefaultInterval
	LogInterval time.Duration // how often the kept head is logged; default DefaultLogInterval
}

func (c *Config) setDefaults() {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.LogInterval <= 0 {
		c.LogInterval = DefaultLogInterval
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.LogInterval < c.Interval {
		return errors.New("audithead: the log interval is shorter than the interval")
	}
	return nil
}

// Watcher reads the chain's head and keeps the highest seen, in the Keeper and
// in its own memory (so that a Keeper emptied behind its back is refilled and
// a head behind the remembered one is reported).
type Watcher struct {
	src    Source
	keeper Keeper
	log    logrus.FieldLogger
	cfg    Config

	mu      sync.Mutex
	highest *store.AuditHead
	lastRun time.Time
	lastLog time.Time
}

// New returns a Watcher.
func New(src Source, k Keeper, log logrus.FieldLogger, cfg Config) (*Watcher, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src == nil || k == nil {
		return nil, errors.New("audithead: a source and a keeper are required")
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &Watcher{src: src, keeper: k, log: log, cfg: cfg}, nil
}

// Tick reads and keeps the head when Interval has passed since the last time;
// the scheduler's leader calls it every sweep (a scheduler.Task).
func (w *Watcher) Tick(ctx context.Context, now time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.lastRun.IsZero() && now.Sub(w.lastRun) < w.cfg.Interval {
		return nil
	}
	w.lastRun = now
	head, err := w.src.AuditHead(ctx)
	if err != nil {
		return fmt.Errorf("reading the audit head: %w", err)
	}
	if w.highest != nil && head.Behind(*w.highest) {
		w.logHead(w.log.WithField("remembered_last_id", w.highest.LastID).WithField("remembered_count", w.highest.Count), head).
			Error("audit chain head is behind the highest head seen")
	} else {
		w.highest = &head
	}
	kept, err := w.keeper.Raise(ctx, *w.highest)
	if err != nil {
		return err
	}
	if err := w.src.CheckAuditHead(kept); err != nil {
		w.logHead(w.log.WithError(err), kept).Error("kept audit head does not verify")
	} else if head.Behind(kept) {
		w.logHead(w.log.WithField("kept_last_id", kept.LastID).WithField("kept_count", kept.Count), head).
			Error("audit chain head is behind the kept head")
	}
	if now.Sub(w.lastLog) >= w.cfg.LogInterval {
		w.lastLog = now
		w.logHead(w.log, kept).Info("audit chain head")
	}
	return nil
}

func (w *Watcher) logHead(l logrus.FieldLogger, h store.AuditHead) logrus.FieldLogger {
	return l.WithFields(logrus.Fields{"last_id": h.LastID, "count": h.Count, "hash": h.Hash, "keyed_from": h.KeyedFrom, "key_id": h.KeyID})
}
