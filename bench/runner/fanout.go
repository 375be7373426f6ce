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

// maxTargetsPerCommand is the API's bound on agent_targets: a larger fleet
// is sent as several commands posted back to back.
const maxTargetsPerCommand = 10000

// fanOut posts echo commands to agents prefix0..prefix(n-1), which are online
// (one command, or one per maxTargetsPerCommand agents), and waits until every
// execution is terminal in Postgres.
func fanOut(ctx context.Context, s system, db *sql.DB, prefix string, n int) (fanOutResult, error) {
	res := fanOutResult{agents: n}
	t0 := time.Now()
	var ids []string
	for lo := 0; lo < n; lo += maxTargetsPerCommand {
		targets := make([]string, min(maxTargetsPerCommand, n-lo))
		for i := range targets {
			targets[i] = prefix + strconv.Itoa(lo+i)
		}
		id, err := s.post("echo", targets)
		if err != nil {
			return res, fmt.Errorf("fan-out: posting the command: %w", err)
		}
		ids = append(ids, id)
	}
	res.post = time.Since(t0)
	deadline := t0.Add(2 * time.Minute)
	for {
		var unfinished int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM commands WHERE id = ANY($1) AND finished_at IS NULL`, ids).Scan(&unfinished); err != nil {
			return res, fmt.Errorf("fan-out: reading the commands: %w", err)
		}
		if unfinished == 0 {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("fan-out: %d of %d commands unfinished after 2 minutes", unfinished, len(ids))
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	var lastDispatch, lastRecord sql.NullTime
	err := db.QueryRowContext(ctx, `SELECT max(dispatched_at), max(updated_at), count(*) FILTER (WHERE status = 'succeeded')
FROM executions WHERE command_id = ANY($1)`, ids).Scan(&lastDispatch, &lastRecord, &res.succeeded)
	if err != nil {
		return res, fmt.Errorf("fan-out: reading the executions: %w", err)
	}
	res.allDispatched, res.durable = lastDispatch.Time.Sub(t0), lastRecord.Time.Sub(t0)
	if res.succeeded != n {
		return res, fmt.Errorf("fan-out: %d of %d executions succeeded", res.succeeded, n)
	}
	return res, nil
}
