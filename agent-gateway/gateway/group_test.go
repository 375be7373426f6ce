package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
	"github.com/viworks/backend-agent/pkg/testenv"
)

// An enrollment whose client gave up while its credential waited in the group
// is not written, so it cannot overwrite the credential of the retry.
func TestGroupDropsAbandonedItems(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{AuditKey: testenv.AuditKey, URL: testenv.Postgres(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	_, err = st.Migrate(ctx)
	require.NoError(t, err)
	g := newGroup("credential", st.SetAgentCredentials, logrus.New(), newMetrics(nil))

	// The retry is queued first and the abandoned request after it: written
	// in one batch, the later grant would win.
	retry := make(chan error, 1)
	go func() {
		retry <- g.submit(ctx, store.CredentialGrant{AgentID: "a1", CredentialHash: "retry", EnrolledFrom: "bootstrap"})
	}()
	require.Eventually(t, func() bool { return len(g.in) == 1 }, 5*time.Second, time.Millisecond)
	abandoned, giveUp := context.WithCancel(ctx)
	first := make(chan error, 1)
	go func() {
		first <- g.submit(abandoned, store.CredentialGrant{AgentID: "a1", CredentialHash: "abandoned", EnrolledFrom: "bootstrap"})
	}()
	require.Eventually(t, func() bool { return len(g.in) == 2 }, 5*time.Second, time.Millisecond, "queued before the group runs")
	giveUp()
	require.ErrorIs(t, <-first, context.Canceled)

	runCtx, stop := context.WithCancel(ctx)
	go g.run(runCtx)
	t.Cleanup(func() { stop(); <-g.done })
	require.NoError(t, <-retry)
	id, err := st.AgentForCredential(ctx, "retry")
	require.NoError(t, err)
	require.Equal(t, "a1", id)
	_, err = st.AgentForCredential(ctx, "abandoned")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
}
