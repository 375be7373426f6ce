package runner

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// pgSampler samples what the bench database's active sessions are doing
// (pg_stat_activity) while a scenario runs: Postgres's side of a profile,
// for the figures whose services sit idle waiting on it.
type pgSampler struct {
	mu      sync.Mutex
	counts  map[string]int
	samples int
	stop    context.CancelFunc
	done    chan struct{}
}

func startPGSampler(ctx context.Context, db *sql.DB, every time.Duration) *pgSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &pgSampler{counts: map[string]int{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := db.QueryContext(ctx, `SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), left(regexp_replace(query, '\s+', ' ', 'g'), 70)
FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()`)
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.samples++
			for rows.Next() {
				var wait, query string
				if rows.Scan(&wait, &query) == nil {
					s.counts[wait+" | "+query]++
				}
			}
			s.mu.Unlock()
			_ = rows.Close()
		}
	}()
	return s
}

// Stop ends sampling and returns the top n (wait event | query) pairs with
// the average number of sessions in each.
func (s *pgSampler) Stop(n int) []string {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range s.counts {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || (all[i].v == all[j].v && all[i].k < all[j].k) })
	var out []string
	for i := 0; i < len(all) && i < n; i++ {
		out = append(out, fmt.Sprintf("%.2f sessions  %s", float64(all[i].v)/float64(max(1, s.samples)), strings.TrimSpace(all[i].k)))
	}
	return out
}
