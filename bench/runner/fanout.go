package runner

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"
)

// fanOutResult is one command to a whole fleet, timed from the client's POST.
type fanOutResult struct {
	agents        int
	post          time.Duration // POST answered (command and executions stored)
	allDispatched time.Duration // last dispatched_at
	durable       time.Duration // last execution recorded terminal (its updated_at)
	succeeded     int
	rounds        int           // scheduler dispatch rounds during the fan-out
	roundAvg      time.Duration // their mean duration
	pgTop         []string      // what Postgres's sessions did meanwhile
}

// fanOut posts one echo command to agents prefix0..prefix(n-1), which are
// online, and waits until every execution is terminal in Postgres.
func fanOut(ctx context.Context, s system, db *sql.DB, prefix string, n int) (fanOutResult, error) {
	res := fanOutResult{agents: n}
	targets := make([]string, n)
	for i := range targets {
		targets[i] = prefix + strconv.Itoa(i)
	}
	t0 := time.Now()
	id, err := s.post("echo", targets)
	if err != nil {
		return res, fmt.Errorf("fan-out: posting the command: %w", err)
	}
	res.post = time.Since(t0)
	deadline := t0.Add(2 * time.Minute)
	for {
		var status string
		var finished sql.NullTime
		if err := db.QueryRowContext(ctx, `SELECT status, finished_at FROM commands WHERE id = $1`, id).Scan(&status, &finished); err != nil {
			return res, fmt.Errorf("fan-out: reading the command: %w", err)
		}
		if finished.Valid {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("fan-out: command %s still %s after 2 minutes", id, status)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	var lastDispatch, lastRecord sql.NullTime
	err = db.QueryRowContext(ctx, `SELECT max(dispatched_at), max(updated_at), count(*) FILTER (WHERE status = 'succeeded')
FROM executions WHERE command_id = $1`, id).Scan(&lastDispatch, &lastRecord, &res.succeeded)
	if err != nil {
		return res, fmt.Errorf("fan-out: reading the executions: %w", err)
	}
	res.allDispatched, res.durable = lastDispatch.Time.Sub(t0), lastRecord.Time.Sub(t0)
	if res.succeeded != n {
		return res, fmt.Errorf("fan-out: %d of %d executions succeeded", res.succeeded, n)
	}
	return res, nil
}
