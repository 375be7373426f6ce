package service

import (
	"context"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/store/storetest"
	"github.com/viworks/backend-agent/pkg/testenv"
)

func TestPresenceConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  PresenceConfig
		ok   bool
	}{
		{"valid", PresenceConfig{InstanceID: "x", Roles: []string{store.RoleGateway}}, true},
		{"all roles", PresenceConfig{InstanceID: "x", Roles: []string{store.RoleAPIServer, store.RoleGateway, store.RoleScheduler}}, true},
		{"no id", PresenceConfig{Roles: []string{store.RoleGateway}}, false},
		{"no roles", PresenceConfig{InstanceID: "x"}, false},
		{"unknown role", PresenceConfig{InstanceID: "x", Roles: []string{"viworks"}}, false},
		{"prune too soon", PresenceConfig{InstanceID: "x", Roles: []string{store.RoleGateway}, Interval: time.Minute, PruneAfter: time.Minute}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPresence(nil, logrus.New(), tc.cfg)
			if tc.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

func TestPresenceRunRefreshesAndRemoves(t *testing.T) {
	urls := map[string]string{
		store.Postgres: storetest.MigratedPostgres(t),
		store.SQLite:   store.SQLitePrefix + filepath.Join(t.TempDir(), "p.db"),
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: url})
			require.NoError(t, err)
			t.Cleanup(func() { _ = st.Close() })
			_, err = st.Migrate(ctx)
			require.NoError(t, err)
			// A record of a process that died an hour ago: pruned by the next beat.
			require.NoError(t, st.UpsertServiceInstance(ctx, store.ServiceInstance{Role: store.RoleGateway, ID: "dead", StartedAt: time.Now().Add(-2 * time.Hour), LastSeenAt: time.Now().Add(-time.Hour)}))

			log := logrus.New()
			log.SetOutput(io.Discard)
			p, err := NewPresence(st, log, PresenceConfig{
				InstanceID: "one", Roles: []string{store.RoleAPIServer, store.RoleScheduler}, Version: "v1", Hostname: "h1",
				Interval: 20 * time.Millisecond,
			})
			require.NoError(t, err)
			var leading atomic.Bool
			p.ReportLeader(leading.Load)
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- p.Run(runCtx) }()

			seen := func() []store.ServiceInstance {
				in, err := st.ServiceInstancesSeen(ctx, time.Now().Add(-24*time.Hour))
				require.NoError(t, err)
				return in
			}
			// Both rows written and the dead one pruned (a beat may be seen halfway).
			require.Eventually(t, func() bool {
				in := seen()
				return len(in) == 2 && in[0].ID == "one" && in[1].ID == "one"
			}, 5*time.Second, 10*time.Millisecond)
			in := seen()
			require.Equal(t, store.RoleAPIServer, in[0].Role)
			require.Equal(t, "one", in[0].ID)
			require.Equal(t, "v1", in[0].Version)
			require.Equal(t, "h1", in[0].Hostname)
			require.False(t, in[1].Leader)
			first := in[0].LastSeenAt

			leading.Store(true)
			require.Eventually(t, func() bool {
				in := seen()
				return len(in) == 2 && in[1].Leader && !in[0].Leader && in[0].LastSeenAt.After(first)
			}, 5*time.Second, 10*time.Millisecond, "refreshed, and the scheduler row carries the lease")

			stop()
			require.NoError(t, <-done)
			require.Empty(t, seen(), "a clean shutdown removes the records")
		})
	}
}
