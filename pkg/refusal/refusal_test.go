package refusal_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/refusal"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

type recorder struct {
	mu    sync.Mutex
	calls int
	es    []store.AuditEvent
}

func (r *recorder) RecordAudits(_ context.Context, es []store.AuditEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.es = append(r.es, es...)
	return nil
}

func TestNewValidates(t *testing.T) {
	_, err := refusal.New(&recorder{}, nil, refusal.Config{})
	require.ErrorContains(t, err, "action is required")
	_, err = refusal.New(nil, nil, refusal.Config{Action: "auth.failure"})
	require.ErrorContains(t, err, "recorder")
}

func TestFloodBecomesOneEventPerSource(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: testenv.Postgres(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)

	a, err := refusal.New(st, nil, refusal.Config{Action: "auth.failure"})
	require.NoError(t, err)
	now := time.Now()
	for i := range 2000 {
		reason := "invalid or expired token"
		if (i/2)%2 == 0 {
			reason = "no bearer token"
		}
		a.Record([]string{"192.0.2.1", "192.0.2.2"}[i%2], reason, "GET /api/v1/agents", now)
	}
	require.Equal(t, 2, a.Pending())
	require.NoError(t, a.Flush(ctx))
	require.Zero(t, a.Pending())
	require.NoError(t, a.Flush(ctx)) // nothing new: nothing written

	n, err := st.CountAudit(ctx, "auth.failure")
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	events, _, err := st.ListAudit(ctx, store.AuditFilter{Action: "auth.failure"})
	require.NoError(t, err)
	for _, e := range events {
		var d struct {
			Count   int64            `json:"count"`
			Reasons map[string]int64 `json:"reasons"`
		}
		require.NoError(t, json.Unmarshal(e.Details, &d))
		require.EqualValues(t, 1000, d.Count, e.ClientIP)
		require.Equal(t, e.ClientIP, e.Target)
		require.Equal(t, "anonymous", e.Actor)
		require.EqualValues(t, map[string]int64{"no bearer token": 500, "invalid or expired token": 500}, d.Reasons)
	}
	v, err := st.VerifyAudit(ctx, nil)
	require.NoError(t, err)
	require.True(t, v.OK, "%+v", v)
}

func TestSourcesAndReasonsAreBounded(t *testing.T) {
	rec := &recorder{}
	a, err := refusal.New(rec, nil, refusal.Config{Action: "auth.failure", MaxSources: 2})
	require.NoError(t, err)
	now := time.Now()
	for i := range 50 {
		a.Record("198.51.100."+string(rune('a'+i%26)), "reason-"+string(rune('a'+i%26)), "t", now)
	}
	require.Equal(t, 3, a.Pending()) // two addresses and the overflow bucket
	require.NoError(t, a.Flush(context.Background()))
	require.Len(t, rec.es, 3)
	var d struct {
		Reasons map[string]int64 `json:"reasons"`
	}
	for _, e := range rec.es {
		if e.Target == refusal.OverflowSource {
			require.NoError(t, json.Unmarshal(e.Details, &d))
			require.LessOrEqual(t, len(d.Reasons), 17)
		}
	}
}

func TestRunFlushesPeriodicallyAndOnShutdown(t *testing.T) {
	rec := &recorder{}
	a, err := refusal.New(rec, nil, refusal.Config{Action: "agent.enroll.denied", Window: 20 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	a.Record("192.0.2.9", "bad secret", "agent-1", time.Now())
	require.Eventually(t, func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.es) == 1
	}, 2*time.Second, 5*time.Millisecond)
	a.Record("192.0.2.9", "bad secret", "agent-1", time.Now())
	cancel()
	require.NoError(t, <-done)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.es, 2, "the refusal counted before shutdown is flushed")
}
