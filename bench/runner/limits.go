package runner

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limits are the raw speeds of this machine's Postgres and Redis, measured in
// the same run, so a figure can be read against what the parts allow.
type Limits struct {
	RedisRTT        time.Duration // PING round trip, p50
	RedisPublishPS  float64       // PUBLISH/s, one client, sequential
	PGCommit        time.Duration // single-row INSERT + commit, p50
	PGInsertTPS     float64       // single-row INSERT transactions/s, one client
	RedisRTTSamples int
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(p * float64(len(s)-1))
	return s[idx]
}

func measureLimits(ctx context.Context, db *sql.DB, rdb *redis.Client, n int) (Limits, error) {
	var l Limits
	rtts := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return l, fmt.Errorf("redis ping: %w", err)
		}
		rtts = append(rtts, time.Since(t))
	}
	l.RedisRTT, l.RedisRTTSamples = percentile(rtts, 0.5), n
	start := time.Now()
	for range n {
		if err := rdb.Publish(ctx, "viworks-bench-limit", "x").Err(); err != nil {
			return l, fmt.Errorf("redis publish: %w", err)
		}
	}
	l.RedisPublishPS = float64(n) / time.Since(start).Seconds()

	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS bench_probe (id bigserial PRIMARY KEY, v text NOT NULL)`); err != nil {
		return l, fmt.Errorf("creating probe table: %w", err)
	}
	commits := make([]time.Duration, 0, n)
	start = time.Now()
	for range n {
		t := time.Now()
		if _, err := db.ExecContext(ctx, `INSERT INTO bench_probe (v) VALUES ('x')`); err != nil {
			return l, fmt.Errorf("probe insert: %w", err)
		}
		commits = append(commits, time.Since(t))
	}
	l.PGInsertTPS = float64(n) / time.Since(start).Seconds()
	l.PGCommit = percentile(commits, 0.5)
	_, _ = db.ExecContext(ctx, `DROP TABLE bench_probe`)
	return l, nil
}
