package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/store"
)

// Enrolling creates an identity and never replaces a live one: the takeover by
// re-enrollment with the bootstrap secret or any enrollment secret is refused.
func testAgentCredentials(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Now()
	_, err := s.AgentForCredential(ctx, "h1")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	require.NoError(t, s.EnrollBootstrap(ctx, "a1", "h1", 0, now))
	id, err := s.AgentForCredential(ctx, "h1")
	require.NoError(t, err)
	require.Equal(t, "a1", id)

	// The attack: enrolling a1 again with the bootstrap secret.
	require.ErrorIs(t, s.EnrollBootstrap(ctx, "a1", "attacker", 0, now), store.ErrAgentEnrolled)
	// ... or with a stored secret: refused, and no use spent.
	sec, err := s.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "any", SecretHash: "any", CreatedBy: "admin",
		Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	require.NoError(t, err)
	_, err = s.EnrollWithSecret(ctx, "any", "a1", "attacker2", now)
	require.ErrorIs(t, err, store.ErrAgentEnrolled)
	list, _, err := s.ListEnrollmentSecrets(ctx, store.Page{Limit: 10})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, sec.ID, list[0].ID)
	require.Zero(t, list[0].Uses)
	for _, h := range []string{"attacker", "attacker2"} {
		_, err = s.AgentForCredential(ctx, h)
		require.ErrorIs(t, err, store.ErrUnknownCredential)
	}
	id, err = s.AgentForCredential(ctx, "h1")
	require.NoError(t, err)
	require.Equal(t, "a1", id)

	// An id known by its agent row alone (client certificate) is taken too.
	Online(t, s, "cert-agent", "gw", "s1")
	require.ErrorIs(t, s.EnrollBootstrap(ctx, "cert-agent", "hc", 0, now), store.ErrAgentEnrolled)

	// Concurrent enrollments of one new id: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.EnrollBootstrap(ctx, "race", "race-"+string(rune('a'+i)), 0, now)
			if err == nil {
				mu.Lock()
				won++
				mu.Unlock()
				return
			}
			require.ErrorIs(t, err, store.ErrAgentEnrolled)
		}()
	}
	wg.Wait()
	require.Equal(t, 1, won)
}

func testRotateAgentCredential(t *testing.T, s *store.Store) {
	ctx := context.Background()
	require.NoError(t, s.EnrollBootstrap(ctx, "r1", "old", 0, time.Now()))
	require.ErrorIs(t, s.RotateAgentCredential(ctx, "r1", "wrong", "new", time.Now()), store.ErrUnknownCredential)
	require.NoError(t, s.EnrollBootstrap(ctx, "r2", "other", 0, time.Now()))
	// Another agent's credential does not rotate r1.
	require.ErrorIs(t, s.RotateAgentCredential(ctx, "r1", "other", "new", time.Now()), store.ErrUnknownCredential)
	require.NoError(t, s.RotateAgentCredential(ctx, "r1", "old", "new", time.Now()))
	_, err := s.AgentForCredential(ctx, "old")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	id, err := s.AgentForCredential(ctx, "new")
	require.NoError(t, err)
	require.Equal(t, "r1", id)
}

func testReenrollSecret(t *testing.T, s *store.Store) {
	ctx := context.Background()
	audit := store.AuditEvent{Actor: "admin", Action: "agent.reenroll_secret"}
	exp := time.Now().Add(time.Hour)
	require.ErrorIs(t, s.CreateReenrollSecret(ctx, "nobody", "rs", "admin", exp, audit), store.ErrNotFound)
	require.NoError(t, s.EnrollBootstrap(ctx, "w1", "lost", 0, time.Now()))
	require.NoError(t, s.EnrollBootstrap(ctx, "w2", "w2cred", 0, time.Now()))
	require.NoError(t, s.CreateReenrollSecret(ctx, "w1", "rs", "admin", exp, audit))
	// Bound to its id: it does not re-enroll another agent.
	require.ErrorIs(t, s.ReenrollAgent(ctx, "w2", "rs", "stolen", time.Now()), store.ErrUnknownReenrollSecret)
	require.ErrorIs(t, s.ReenrollAgent(ctx, "w1", "wrong", "fresh", time.Now()), store.ErrUnknownReenrollSecret)
	require.NoError(t, s.ReenrollAgent(ctx, "w1", "rs", "fresh", time.Now()))
	_, err := s.AgentForCredential(ctx, "lost")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	id, err := s.AgentForCredential(ctx, "fresh")
	require.NoError(t, err)
	require.Equal(t, "w1", id)
	// Single use.
	require.ErrorIs(t, s.ReenrollAgent(ctx, "w1", "rs", "again", time.Now()), store.ErrUnknownReenrollSecret)
	// Expired.
	require.NoError(t, s.CreateReenrollSecret(ctx, "w1", "rs2", "admin", time.Now().Add(time.Second), audit))
	require.ErrorIs(t, s.ReenrollAgent(ctx, "w1", "rs2", "late", time.Now().Add(2*time.Second)), store.ErrUnknownReenrollSecret)
}

func testRevokeAgent(t *testing.T, s *store.Store) {
	ctx := context.Background()
	audit := store.AuditEvent{Actor: "admin", Action: "agent.revoke"}
	_, err := s.RevokeAgent(ctx, "nobody", audit)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.EnrollBootstrap(ctx, "v1", "vcred", 0, time.Now()))
	Online(t, s, "v1", "gw", "s1")
	cmd, _, err := s.CreateCommand(ctx, store.NewCommand{Verb: "echo", Targeting: store.Targeting{AgentIDs: []string{"v1"}}, TTLSeconds: 60, TimeoutSeconds: 60, CreatedBy: "t", Audit: store.AuditEvent{Actor: "t", Action: "command.create"}})
	require.NoError(t, err)

	n, err := s.RevokeAgent(ctx, "v1", audit)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = s.AgentForCredential(ctx, "vcred")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	got, execs, err := s.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	require.Equal(t, store.ExecCancelled, execs[0].Status)
	require.Equal(t, store.ExecAgentRevoked, execs[0].Error)
	require.NotNil(t, got.FinishedAt)

	// Enrolling again is refused until an admin lifts the block.
	require.ErrorIs(t, s.EnrollBootstrap(ctx, "v1", "again", 0, time.Now()), store.ErrAgentRevoked)
	require.NoError(t, s.UnrevokeAgent(ctx, "v1", store.AuditEvent{Actor: "admin", Action: "agent.unrevoke"}))
	require.ErrorIs(t, s.UnrevokeAgent(ctx, "v1", store.AuditEvent{Actor: "admin", Action: "agent.unrevoke"}), store.ErrNotFound)
	require.NoError(t, s.EnrollBootstrap(ctx, "v1", "again", 0, time.Now()))
	id, err := s.AgentForCredential(ctx, "again")
	require.NoError(t, err)
	require.Equal(t, "v1", id)

	// Deleting forgets it: the id is a new identity afterwards; history stays.
	_, err = s.DeleteAgent(ctx, "v1", store.AuditEvent{Actor: "admin", Action: "agent.delete"})
	require.NoError(t, err)
	_, err = s.GetAgent(ctx, "v1")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.AgentForCredential(ctx, "again")
	require.ErrorIs(t, err, store.ErrUnknownCredential)
	_, _, err = s.GetCommand(ctx, cmd.ID)
	require.NoError(t, err)
	_, err = s.DeleteAgent(ctx, "v1", store.AuditEvent{Actor: "admin", Action: "agent.delete"})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NoError(t, s.EnrollBootstrap(ctx, "v1", "new-identity", 0, time.Now()))
}

func testEnrollmentLimits(t *testing.T, s *store.Store) {
	ctx := context.Background()
	now := time.Now()
	// The bootstrap cap.
	for i := range 3 {
		require.NoError(t, s.EnrollBootstrap(ctx, "boot-"+string(rune('a'+i)), "bh-"+string(rune('a'+i)), 3, now))
	}
	require.ErrorIs(t, s.EnrollBootstrap(ctx, "boot-z", "bh-z", 3, now), store.ErrMaxAgents)

	// A lab-scoped secret cannot claim a prod id, and creates at most max_agents.
	_, err := s.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "bad", SecretHash: "bad", CreatedBy: "admin", AgentIDPattern: "lab-(",
		Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	require.Error(t, err)
	two := 2
	_, err = s.CreateEnrollmentSecret(ctx, store.NewEnrollmentSecret{Name: "lab", SecretHash: "lab", Site: "lab", CreatedBy: "admin",
		AgentIDPattern: `lab-[a-z0-9]+`, MaxAgents: &two, Audit: store.AuditEvent{Actor: "admin", Action: "enrollment_secret.create"}})
	require.NoError(t, err)
	_, err = s.EnrollWithSecret(ctx, "lab", "prod-db1", "p", now)
	require.ErrorIs(t, err, store.ErrAgentIDNotAllowed)
	_, err = s.EnrollWithSecret(ctx, "lab", "xlab-1", "p", now) // anchored: the whole id must match
	require.ErrorIs(t, err, store.ErrAgentIDNotAllowed)
	_, err = s.EnrollWithSecret(ctx, "lab", "lab-1", "l1", now)
	require.NoError(t, err)
	_, err = s.EnrollWithSecret(ctx, "lab", "lab-2", "l2", now)
	require.NoError(t, err)
	_, err = s.EnrollWithSecret(ctx, "lab", "lab-3", "l3", now)
	require.ErrorIs(t, err, store.ErrMaxAgents)
	list, _, err := s.ListEnrollmentSecrets(ctx, store.Page{Limit: 10})
	require.NoError(t, err)
	require.Equal(t, 2, list[0].Agents)
	require.Equal(t, 2, list[0].Uses, "refusals spend no use")
}
