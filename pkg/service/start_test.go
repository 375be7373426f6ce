package service

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/audithead"
	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// StartWith's options are the all-in-one's differences from a service
// binary; the readiness check of the bus is named after what backs it.
func TestStartWith(t *testing.T) {
	redisURL, prefix := testenv.Redis(t)
	cases := []struct {
		name      string
		opts      func(dir string) Options
		refused   bool   // an unmigrated database is refused
		heads     any    // the type of p.AuditHeads; nil: none
		busCheck  string // the readiness check failing once the bus is closed
		presences bool
	}{
		{name: "service binary refuses an old schema", opts: func(string) Options { return Options{Name: store.RoleGateway} }, refused: true},
		{name: "all-in-one on the memory bus", opts: func(dir string) Options {
			return Options{Name: "viworks", Roles: []string{store.RoleAPIServer, store.RoleGateway, store.RoleScheduler},
				Migrate: true, Bus: bus.NewMemory(), AuditHeadFile: filepath.Join(dir, "audit.head")}
		}, heads: &audithead.File{}, busCheck: "bus", presences: true},
		{name: "all-in-one on Redis", opts: func(dir string) Options {
			return Options{Name: "viworks", Migrate: true, AuditHeadFile: filepath.Join(dir, "audit.head")}
		}, heads: &audithead.Redis{}, busCheck: "redis"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := config.Default()
			cfg.Database.URL = store.SQLitePrefix + filepath.Join(dir, "viworks.db")
			cfg.Redis.URL, cfg.Redis.KeyPrefix = redisURL, prefix
			p, err := StartWith(context.Background(), cfg, tc.opts(dir))
			if tc.refused {
				require.ErrorIs(t, err, store.ErrSchemaBehind)
				return
			}
			require.NoError(t, err)
			defer p.Close()
			require.IsType(t, tc.heads, p.AuditHeads)
			require.Equal(t, tc.presences, p.Presence != nil)

			require.NoError(t, p.Bus.Close())
			p.Health.SetReady(true)
			w := httptest.NewRecorder()
			p.Health.Readyz(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			require.Equal(t, http.StatusServiceUnavailable, w.Code)
			var body map[string]string
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &body))
			require.Equal(t, tc.busCheck, body["failing"])
		})
	}
}
