package service

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/config"
	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// Under a Type=notify unit, Serve tells systemd READY=1 once it serves and
// STOPPING=1 when it starts draining, before the drain runs.
func TestServeNotifiesSystemd(t *testing.T) {
	// A short directory: a unix socket path is limited to about 100 bytes.
	sockDir, err := os.MkdirTemp("", "sdn")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	sockPath := filepath.Join(sockDir, "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sock.Close() })
	t.Setenv("NOTIFY_SOCKET", sockPath)

	dir := t.TempDir()
	cfg := config.Default()
	cfg.Database.URL = store.SQLitePrefix + filepath.Join(dir, "viworks.db")
	cfg.Security.AuditKey = string(testenv.AuditKey)
	cfg.Server.BindAddress, cfg.Server.Port = "127.0.0.1", 0
	p, err := StartWith(context.Background(), cfg, Options{Name: "viworks", Migrate: true, Bus: bus.NewMemory()})
	require.NoError(t, err)
	defer p.Close()

	read := func() string {
		buf := make([]byte, 256)
		require.NoError(t, sock.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, err := sock.Read(buf)
		require.NoError(t, err)
		return string(buf[:n])
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drained := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- p.Serve(ctx, http.NewServeMux(),
			func(ctx context.Context) error { <-ctx.Done(); return nil },
			func(context.Context) { close(drained) })
	}()

	require.Equal(t, "READY=1", read())
	w := httptest.NewRecorder()
	p.Health.Readyz(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	require.Equal(t, http.StatusOK, w.Code, "ready before systemd is told")
	cancel()
	require.Equal(t, "STOPPING=1", read())
	<-drained
	require.NoError(t, <-served)
}
