package runner

import (
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// Limits are the raw speeds of this machine's Postgres and Redis, measured in
// the same run, so a figure can be read against what the parts allow.
type Limits struct {
	RedisTool        string        // "redis-benchmark" or "Go client" (redis-benchmark missing)
	RedisRTT         time.Duration // PING round trip, p50, one client
	RedisPublishPS   float64       // PUBLISH/s, one client, sequential
	RedisPublishPS50 float64       // PUBLISH/s, 50 clients (redis-benchmark only)
	PGCommit         time.Duration // single-row INSERT + commit, p50
	PGInsertTPS      float64       // single-row INSERT transactions/s, one client
	CopyRowsPS       float64       // COPY rows/s into the telemetry table, one client
	CopyRows         int
	RedisRTTSamples  int
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

func measureLimits(ctx context.Context, db *sql.DB, rdb *redis.Client, redisURL string, n int) (Limits, error) {
	var l Limits
	if err := redisLimits(ctx, rdb, redisURL, n, &l); err != nil {
		return l, err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS bench_probe (id bigserial PRIMARY KEY, v text NOT NULL)`); err != nil {
		return l, fmt.Errorf("creating probe table: %w", err)
	}
	commits := make([]time.Duration, 0, n)
	start := time.Now()
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

// redisLimits measures PING and PUBLISH with redis-benchmark when it is
// installed, else with the Go client, one sequential client.
func redisLimits(ctx context.Context, rdb *redis.Client, redisURL string, n int, l *Limits) error {
	if path, err := exec.LookPath("redis-benchmark"); err == nil {
		if err := redisBenchmark(ctx, path, redisURL, n, l); err == nil {
			return nil
		}
	}
	l.RedisTool = "Go client"
	rtts := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis ping: %w", err)
		}
		rtts = append(rtts, time.Since(t))
	}
	l.RedisRTT, l.RedisRTTSamples = percentile(rtts, 0.5), n
	start := time.Now()
	for range n {
		if err := rdb.Publish(ctx, "viworks-bench-limit", "x").Err(); err != nil {
			return fmt.Errorf("redis publish: %w", err)
		}
	}
	l.RedisPublishPS = float64(n) / time.Since(start).Seconds()
	return nil
}

func redisBenchmark(ctx context.Context, path, redisURL string, n int, l *Limits) error {
	u, err := url.Parse(redisURL)
	if err != nil {
		return fmt.Errorf("parsing redis URL: %w", err)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "6379"
	}
	run := func(clients int, cmd ...string) ([]string, error) {
		args := append([]string{"-h", host, "-p", port, "-n", strconv.Itoa(n * 10), "-c", strconv.Itoa(clients), "--csv"}, cmd...)
		if pw, ok := u.User.Password(); ok {
			args = append([]string{"-a", pw}, args...)
		}
		out, err := exec.CommandContext(ctx, path, args...).Output()
		if err != nil {
			return nil, fmt.Errorf("running redis-benchmark: %w", err)
		}
		recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
		if err != nil || len(recs) < 2 || len(recs[1]) < 5 {
			return nil, fmt.Errorf("reading redis-benchmark output %q: %v", out, err)
		}
		return recs[1], nil // test, rps, avg, min, p50, ...
	}
	ping, err := run(1, "PING")
	if err != nil {
		return err
	}
	pub1, err := run(1, "PUBLISH", "viworks-bench-limit", "x")
	if err != nil {
		return err
	}
	pub50, err := run(50, "PUBLISH", "viworks-bench-limit", "x")
	if err != nil {
		return err
	}
	p50ms, err1 := strconv.ParseFloat(ping[4], 64)
	r1, err2 := strconv.ParseFloat(pub1[1], 64)
	r50, err3 := strconv.ParseFloat(pub50[1], 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return fmt.Errorf("redis-benchmark: unexpected numbers %v %v %v", ping, pub1, pub50)
	}
	l.RedisTool, l.RedisRTTSamples = "redis-benchmark", n*10
	l.RedisRTT = time.Duration(p50ms * float64(time.Millisecond))
	l.RedisPublishPS, l.RedisPublishPS50 = r1, r50
	return nil
}

// telemetryMetrics returns a sample of the shape agentsim sends (the same nine
// keys, similar magnitudes), so COPY writes rows like the product's.
func telemetryMetrics(r *rand.Rand) []byte {
	m := map[string]float64{
		"cpu_percent": float64(int(r.Float64()*10000)) / 100, "mem_percent": float64(int(r.Float64()*10000)) / 100,
		"mem_used_bytes": float64(r.Int64N(32 << 30)), "disk_percent": float64(int(r.Float64()*10000)) / 100,
		"load1": float64(int(r.Float64()*400)) / 100, "load5": float64(int(r.Float64()*400)) / 100,
		"load15": float64(int(r.Float64()*400)) / 100, "net_rx_bytes": float64(r.Int64N(1 << 40)), "net_tx_bytes": float64(r.Int64N(1 << 40)),
	}
	raw, _ := json.Marshal(m)
	return raw
}

// measureCopy is the raw ingest limit: rows of the product's shape COPYed into
// the telemetry table by one pgx connection, in batches of batch rows (each its
// own COPY and commit), then deleted again.
func measureCopy(ctx context.Context, dbURL string, rows, batch int) (float64, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, fmt.Errorf("connecting for COPY: %w", err)
	}
	defer conn.Close(ctx)
	r := rand.New(rand.NewPCG(1, 2))
	// Prepare the rows first: the limit is Postgres's, not the generator's.
	all := make([][]any, rows)
	now := time.Now().UTC()
	for i := range all {
		all[i] = []any{"copy-probe-" + strconv.Itoa(i%10000), now.Add(time.Duration(i) * time.Microsecond), string(telemetryMetrics(r)), now}
	}
	start := time.Now()
	for off := 0; off < rows; off += batch {
		part := all[off:min(off+batch, rows)]
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"telemetry"}, []string{"agent_id", "ts", "metrics", "received_at"}, pgx.CopyFromRows(part)); err != nil {
			return 0, fmt.Errorf("copying telemetry rows: %w", err)
		}
	}
	rate := float64(rows) / time.Since(start).Seconds()
	if _, err := conn.Exec(ctx, `DELETE FROM telemetry WHERE agent_id LIKE 'copy-probe-%'`); err != nil {
		return 0, fmt.Errorf("deleting COPY probe rows: %w", err)
	}
	return rate, nil
}
