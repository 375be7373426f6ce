package agentsdk

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/signing"
)

// countingConfig is baseConfig whose echo handler counts its runs, with a
// log hook.
func countingConfig(g *gateway) (Config, *atomic.Int32, *logtest.Hook) {
	cfg := baseConfig(g)
	runs := &atomic.Int32{}
	cfg.Handlers["echo"] = func(ctx context.Context, cmd protocol.Command) Result {
		runs.Add(1)
		return echoHandler(ctx, cmd)
	}
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	cfg.Logger = logger
	return cfg, runs, hook
}

func (c *gwConn) expectRuns(t *testing.T, execID, output string) {
	t.Helper()
	c.expectAck(t, execID, protocol.AckReceived)
	c.expectAck(t, execID, protocol.AckStarted)
	r := c.expectResult(t, execID)
	require.Equal(t, protocol.ResultSucceeded, r.Status, r.Error)
	require.Equal(t, output, r.Output)
}

// resultAcked sends RESULT_ACK and waits until the agent's outbox is empty,
// so nothing is re-sent after the next reconnect.
func (c *gwConn) resultAcked(t *testing.T, a *Agent, execID string) {
	t.Helper()
	c.send(t, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: execID})
	require.Eventually(t, func() bool { return a.PendingResults() == 0 }, waitFor, 5*time.Millisecond)
}

func rejections(hook *logtest.Hook) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Message == "command rejected" {
			out = append(out, e)
		}
	}
	return out
}

func TestSignedCommandRuns(t *testing.T) {
	g := newGateway(t)
	cfg, runs, hook := countingConfig(g)
	start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")
	c.command(t, "e1", "echo", map[string]string{"message": "signed <&> ok"})
	c.expectRuns(t, "e1", "signed <&> ok")
	require.Equal(t, int32(1), runs.Load())
	require.Empty(t, rejections(hook))
}

func TestRejectedCommands(t *testing.T) {
	other := newSigner(t)
	cases := []struct {
		name   string
		reason string
		build  func(t *testing.T, s *signing.Signer) protocol.Command
	}{
		{"tampered args", "bad signature", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := signed(t, s, newCommand(t, "x1", "echo", map[string]string{"message": "harmless"}))
			cmd.Args = json.RawMessage(`{"message":"rm -rf /"}`)
			return cmd
		}},
		{"tampered verb", "bad signature", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := signed(t, s, newCommand(t, "x1", "nope", map[string]string{"message": "m"}))
			cmd.Verb = "echo"
			return cmd
		}},
		{"extended expiry", "bad signature", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := signed(t, s, newCommand(t, "x1", "echo", nil))
			cmd.ExpiresAt = cmd.ExpiresAt.Add(24 * time.Hour)
			return cmd
		}},
		{"unsigned", "unknown signing key", func(t *testing.T, s *signing.Signer) protocol.Command {
			return newCommand(t, "x1", "echo", nil)
		}},
		{"signed by an unknown key", "unknown signing key", func(t *testing.T, s *signing.Signer) protocol.Command {
			return signed(t, other, newCommand(t, "x1", "echo", nil))
		}},
		{"another key's signature under the trusted key id", "bad signature", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := signed(t, other, newCommand(t, "x1", "echo", nil))
			cmd.KeyID = s.KeyID()
			return cmd
		}},
		{"signature not base64", "malformed signature", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := signed(t, s, newCommand(t, "x1", "echo", nil))
			cmd.Signature = "%%%"
			return cmd
		}},
		{"wrong agent_id", "wrong agent_id", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := newCommand(t, "x1", "echo", nil)
			cmd.AgentID = "agent-2"
			return signed(t, s, cmd)
		}},
		{"no agent_id", "wrong agent_id", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := newCommand(t, "x1", "echo", nil)
			cmd.AgentID = ""
			return signed(t, s, cmd)
		}},
		{"expired", "expired", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := newCommand(t, "x1", "echo", nil)
			cmd.IssuedAt = time.Now().Add(-time.Hour)
			cmd.ExpiresAt = time.Now().Add(-time.Minute)
			return signed(t, s, cmd)
		}},
		{"no expiry", "expired", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := newCommand(t, "x1", "echo", nil)
			cmd.ExpiresAt = time.Time{}
			return signed(t, s, cmd)
		}},
		{"issued in the future", "issued in the future", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := newCommand(t, "x1", "echo", nil)
			cmd.IssuedAt = time.Now().Add(5 * time.Minute)
			cmd.ExpiresAt = time.Now().Add(time.Hour)
			return signed(t, s, cmd)
		}},
		{"no nonce", "missing or invalid nonce", func(t *testing.T, s *signing.Signer) protocol.Command {
			cmd := newCommand(t, "x1", "echo", nil)
			cmd.Nonce = ""
			return signed(t, s, cmd)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t)
			cfg, runs, hook := countingConfig(g)
			a, _ := start(t, cfg)
			c := g.accept(t)
			c.welcome(t, "s")

			c.sendCommand(t, tc.build(t, c.signer))
			c.expectRejected(t, "x1", tc.reason)
			// The session goes on and a valid command still runs.
			c.command(t, "ok", "echo", map[string]string{"message": "fine"})
			c.expectRuns(t, "ok", "fine")
			require.Equal(t, int32(1), runs.Load(), "the refused command did not run")

			// The refusal is the execution's final result: kept in the
			// outbox until RESULT_ACK, sent again for a re-sent COMMAND.
			require.Equal(t, 2, a.PendingResults())
			c.sendCommand(t, tc.build(t, c.signer))
			c.expectRejected(t, "x1", tc.reason)
			require.Equal(t, int32(1), runs.Load())

			logged := rejections(hook)
			require.Len(t, logged, 1)
			require.Equal(t, tc.reason, logged[0].Data["reason"])
			require.Equal(t, "x1", logged[0].Data["execution_id"])
			require.Equal(t, testAgentID, logged[0].Data["agent_id"])
		})
	}
}

func TestClockSkew(t *testing.T) {
	now := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	cases := []struct {
		name            string
		skew            time.Duration
		issued, expires time.Duration // relative to now
		reason          string        // "" runs
	}{
		{"valid", 0, -time.Minute, time.Minute, ""},
		{"expired within default skew", 0, -time.Minute, -20 * time.Second, ""},
		{"expired beyond default skew", 0, -time.Minute, -31 * time.Second, "expired"},
		{"issued ahead within default skew", 0, 20 * time.Second, time.Minute, ""},
		{"issued ahead beyond default skew", 0, 31 * time.Second, time.Minute, "issued in the future"},
		{"expired beyond a tighter skew", 5 * time.Second, -time.Minute, -6 * time.Second, "expired"},
		{"issued ahead beyond a tighter skew", 5 * time.Second, 6 * time.Second, time.Minute, "issued in the future"},
		{"wider skew", 5 * time.Minute, 4 * time.Minute, -4 * time.Minute, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t)
			cfg, runs, _ := countingConfig(g)
			cfg.Clock = func() time.Time { return now }
			cfg.MaxClockSkew = tc.skew
			start(t, cfg)
			c := g.accept(t)
			c.welcome(t, "s")
			cmd := newCommand(t, "e1", "echo", map[string]string{"message": "m"})
			cmd.IssuedAt, cmd.ExpiresAt = now.Add(tc.issued), now.Add(tc.expires)
			c.sendCommand(t, signed(t, c.signer, cmd))
			if tc.reason == "" {
				c.expectRuns(t, "e1", "m")
				require.Equal(t, int32(1), runs.Load())
				return
			}
			c.expectRejected(t, "e1", tc.reason)
			require.Zero(t, runs.Load())
		})
	}
}

func TestNonceReplay(t *testing.T) {
	g := newGateway(t)
	cfg, runs, hook := countingConfig(g)
	a, _ := start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")

	first := newCommand(t, "e1", "echo", map[string]string{"message": "once"})
	first.Nonce = "the-nonce"
	c.sendCommand(t, signed(t, c.signer, first))
	c.expectRuns(t, "e1", "once")

	// A validly signed COMMAND for another execution reusing the nonce.
	replay := newCommand(t, "e2", "echo", map[string]string{"message": "twice"})
	replay.Nonce = "the-nonce"
	c.sendCommand(t, signed(t, c.signer, replay))
	c.expectRejected(t, "e2", "nonce replay")

	// The same execution again, before and after RESULT_ACK: answered by
	// the dedupe, never run twice.
	c.sendCommand(t, signed(t, c.signer, first))
	require.Equal(t, "once", c.expectResult(t, "e1").Output)
	c.send(t, protocol.TypeResultAck, protocol.ResultAck{ExecutionID: "e1"})
	require.Eventually(t, func() bool { return a.PendingResults() == 1 }, waitFor, 5*time.Millisecond)
	c.sendCommand(t, signed(t, c.signer, first))
	c.expectAck(t, "e1", protocol.AckReceived)
	// Re-signed by the platform with a fresh nonce: still the same execution.
	resent := first
	resent.Nonce = "fresh-nonce"
	c.sendCommand(t, signed(t, c.signer, resent))
	c.expectAck(t, "e1", protocol.AckReceived)

	c.command(t, "probe", "echo", map[string]string{"message": "p"})
	c.expectRuns(t, "probe", "p")
	require.Equal(t, int32(2), runs.Load())
	require.Len(t, rejections(hook), 1)
}

func TestNonceSetWindow(t *testing.T) {
	n := nonceSet{execs: map[string]nonceEntry{}}
	exp := time.Now().Add(time.Hour)
	for i := range nonceWindow {
		n.add(fmt.Sprint("n", i), fmt.Sprint("e", i), exp)
	}
	exec, ok := n.lookup("n0")
	require.True(t, ok)
	require.Equal(t, "e0", exec)
	n.add("n0", "other", exp) // already known: unchanged, not re-added
	exec, _ = n.lookup("n0")
	require.Equal(t, "e0", exec)

	n.add("newest", "e-new", exp)
	recs := n.records()
	require.Len(t, recs, nonceWindow)
	require.Equal(t, "n1", recs[0].Nonce, "oldest first")
	require.Equal(t, "newest", recs[nonceWindow-1].Nonce)
	_, ok = n.lookup("n0")
	require.False(t, ok, "the oldest nonce is forgotten")
	_, ok = n.lookup("n1")
	require.True(t, ok)
	require.Len(t, n.execs, nonceWindow)
	require.Len(t, n.ring, nonceWindow)
}

func TestTrustOnFirstUse(t *testing.T) {
	g := newGateway(t)
	first := g.signer.Load()
	cfg, runs, hook := countingConfig(g)
	cfg.TrustedKeys = nil
	cfg.TrustOnFirstUse = true
	a, _ := start(t, cfg)

	c1 := g.accept(t)
	c1.welcome(t, "s1")
	c1.command(t, "e1", "echo", map[string]string{"message": "pinned"})
	c1.expectRuns(t, "e1", "pinned")
	c1.resultAcked(t, a, "e1")
	// The next server announces another key: it is not trusted. (Stored
	// before the close: the agent may reconnect at once.)
	second := newSigner(t)
	g.signer.Store(second)
	require.NoError(t, c1.ws.Close())
	c2 := g.accept(t)
	c2.welcome(t, "s2")
	c2.sendCommand(t, signed(t, second, newCommand(t, "e2", "echo", map[string]string{"message": "impostor"})))
	c2.expectRejected(t, "e2", "unknown signing key")
	// The pinned key still works on that session.
	c2.sendCommand(t, signed(t, first, newCommand(t, "e3", "echo", map[string]string{"message": "still pinned"})))
	c2.expectRuns(t, "e3", "still pinned")
	require.Equal(t, int32(2), runs.Load())

	var pinned, alarm *logrus.Entry
	for _, e := range hook.AllEntries() {
		switch e.Message {
		case "SECURITY: pinned the platform signing key announced in the first WELCOME (trust on first use); " +
			"pin it in the configuration to protect against an impostor reached first":
			require.Nil(t, pinned, "pinned once")
			pinned = e
		case "SECURITY: WELCOME announced a signing key other than the one pinned on first use; commands signed with it will be rejected":
			alarm = e
		}
	}
	require.NotNil(t, pinned)
	require.Equal(t, logrus.WarnLevel, pinned.Level, "trust on first use is loud")
	require.Equal(t, first.KeyID(), pinned.Data["key_id"])
	require.NotNil(t, alarm)
	require.Equal(t, logrus.ErrorLevel, alarm.Level)
	require.Equal(t, second.KeyID(), alarm.Data["announced_key_id"])
	require.Equal(t, []string{first.KeyID()}, alarm.Data["trusted_key_ids"])
	logged := rejections(hook)
	require.Len(t, logged, 1)
	require.Equal(t, logrus.ErrorLevel, logged[0].Level)
}

func TestTrustOnFirstUseNeedsAValidAnnouncedKey(t *testing.T) {
	g := newGateway(t)
	cfg, runs, _ := countingConfig(g)
	cfg.TrustedKeys = nil
	cfg.TrustOnFirstUse = true
	a, _ := start(t, cfg)
	s := g.signer.Load()

	// No key announced: nothing is trusted.
	c := g.accept(t)
	c.welcomeWith(t, protocol.Welcome{SessionID: "s1"})
	c.command(t, "e1", "echo", nil)
	c.expectRejected(t, "e1", "no trusted signing key")
	c.resultAcked(t, a, "e1")
	require.NoError(t, c.ws.Close())

	// A key whose id does not match it is ignored.
	c = g.accept(t)
	c.welcomeWith(t, protocol.Welcome{SessionID: "s2", SigningKeyID: "ed25519:0000000000000000", SigningPublicKey: signing.EncodePublicKey(s.PublicKey())})
	c.command(t, "e2", "echo", nil)
	c.expectRejected(t, "e2", "no trusted signing key")
	c.resultAcked(t, a, "e2")
	require.NoError(t, c.ws.Close())

	// The first valid announcement is pinned.
	c = g.accept(t)
	c.welcome(t, "s3")
	c.command(t, "e3", "echo", map[string]string{"message": "now"})
	c.expectRuns(t, "e3", "now")
	require.Equal(t, int32(1), runs.Load())
}

func TestTrustedKeysArePinned(t *testing.T) {
	g := newGateway(t)
	pinned := g.signer.Load()
	cfg, runs, hook := countingConfig(g)
	cfg.TrustOnFirstUse = true // ignored: TrustedKeys win
	announced := newSigner(t)
	g.signer.Store(announced)
	start(t, cfg)

	c := g.accept(t)
	c.welcome(t, "s") // announces a key the agent was not configured with
	c.command(t, "e1", "echo", nil)
	c.expectRejected(t, "e1", "unknown signing key")
	c.sendCommand(t, signed(t, pinned, newCommand(t, "e2", "echo", map[string]string{"message": "pinned"})))
	c.expectRuns(t, "e2", "pinned")
	require.Equal(t, int32(1), runs.Load())

	var warned bool
	for _, e := range hook.AllEntries() {
		if e.Message == "WELCOME announced a signing key that is not in TrustedKeys; commands signed with it will be rejected" {
			warned = true
			require.Equal(t, announced.KeyID(), e.Data["announced_key_id"])
		}
	}
	require.True(t, warned)
}

func TestKeyRotationWithBothKeysTrusted(t *testing.T) {
	g := newGateway(t)
	oldKey := g.signer.Load()
	_, newPriv, err := ed25519.GenerateKey(nil)
	require.NoError(t, err)
	rotated, err := signing.NewSigner(newPriv, oldKey.PublicKey())
	require.NoError(t, err)

	cfg, runs, _ := countingConfig(g)
	cfg.TrustedKeys = rotated.PublicKeys() // previous and new
	start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")
	c.sendCommand(t, signed(t, oldKey, newCommand(t, "e1", "echo", map[string]string{"message": "old"})))
	c.expectRuns(t, "e1", "old")
	c.sendCommand(t, signed(t, rotated, newCommand(t, "e2", "echo", map[string]string{"message": "new"})))
	c.expectRuns(t, "e2", "new")
	require.Equal(t, int32(2), runs.Load())
}

func TestInsecureSkipVerify(t *testing.T) {
	g := newGateway(t)
	cfg, runs, _ := countingConfig(g)
	cfg.TrustedKeys = nil
	cfg.InsecureSkipVerify = true
	start(t, cfg)
	c := g.accept(t)
	c.welcomeWith(t, protocol.Welcome{SessionID: "s"})

	c.sendCommand(t, newCommand(t, "e1", "echo", map[string]string{"message": "unsigned"}))
	c.expectRuns(t, "e1", "unsigned")
	// Target, expiry and nonce are still checked.
	wrong := newCommand(t, "e2", "echo", nil)
	wrong.AgentID = "agent-2"
	c.sendCommand(t, wrong)
	c.expectRejected(t, "e2", "wrong agent_id")
	expired := newCommand(t, "e3", "echo", nil)
	expired.ExpiresAt = time.Now().Add(-time.Hour)
	c.sendCommand(t, expired)
	c.expectRejected(t, "e3", "expired")
	require.Equal(t, int32(1), runs.Load())
}

// Refused and accepted commands interleaved: each gets the right result, and
// rejections do not race with running handlers (run with -race).
func TestManyCommandsMixed(t *testing.T) {
	g := newGateway(t)
	cfg, runs, _ := countingConfig(g)
	start(t, cfg)
	c := g.accept(t)
	c.welcome(t, "s")
	const n = 50
	for i := range n {
		cmd := signed(t, c.signer, newCommand(t, fmt.Sprint("m", i), "echo", map[string]string{"message": "m"}))
		if i%2 == 1 {
			cmd.RequestedBy = "someone else" // breaks the signature
		}
		c.sendCommand(t, cmd)
	}
	results := map[string]*protocol.CommandResult{}
	for len(results) < n {
		if r, ok := c.next(t).Payload.(*protocol.CommandResult); ok {
			results[r.ExecutionID] = r
		}
	}
	for i := range n {
		r := results[fmt.Sprint("m", i)]
		require.NotNil(t, r)
		if i%2 == 1 {
			require.Equal(t, ExitCodeRejected, r.ExitCode)
		} else {
			require.Equal(t, 0, r.ExitCode)
		}
	}
	require.Equal(t, int32(n/2), runs.Load())
}
