package sim

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/agentsdk"
	"github.com/viworks/backend-agent/pkg/signing"
)

// Version is the version the simulated agents announce.
const Version = "0.1.0-sim"

// Progress reporting: a line every progressEvery while agents are missing,
// checked every progressPoll.
const (
	progressEvery = 2 * time.Second
	progressPoll  = 250 * time.Millisecond
)

// Fleet is a set of simulated agents run in one process.
type Fleet struct {
	opts    Options
	log     logrus.FieldLogger
	agents  []*agentsdk.Agent
	started atomic.Int64
	// allConnected is set once every agent has connected
	// (--telemetry-when-connected holds telemetry until then).
	allConnected atomic.Bool
}

// NewFleet builds (but does not connect) the agents described by o.
func NewFleet(o Options, log logrus.FieldLogger) (*Fleet, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	// Small buffers and a shared write-buffer pool keep many idle agents cheap.
	dialer := &websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: agentsdk.DefaultHandshakeTimeout,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		WriteBufferPool:  &sync.Pool{},
	}
	var trusted map[string]ed25519.PublicKey
	if o.SigningPublicKey != "" {
		pub, err := signing.LoadPublicKey(o.SigningPublicKey)
		if err != nil {
			return nil, fmt.Errorf("--signing-public-key: %w", err)
		}
		trusted = map[string]ed25519.PublicKey{signing.KeyID(pub): pub}
		log.WithField("key_id", signing.KeyID(pub)).Info("agents pin the platform signing key")
	}
	if o.InsecureSkipVerify {
		log.Warn("COMMAND signatures are not verified (--insecure-skip-verify): use only in tests")
	}
	dialers := sourceDialers(dialer, o.SourceIPs)
	if o.SourceIPs > 0 {
		log.WithFields(logrus.Fields{"source_ips": o.SourceIPs, "first": dialerSource(0).String(), "last": dialerSource(o.SourceIPs - 1).String()}).
			Info("agents spread their connections over loopback source addresses")
	}
	var hostTel func() map[string]float64
	if o.HostTelemetry {
		// One sampler for the whole fleet: it reads the host at most once a
		// second however many agents ask. This first call sets the CPU baseline.
		hostTel = agentsdk.HostTelemetry()
		if len(hostTel()) == 0 {
			log.Warn("--host-telemetry: no host metrics readable here (Linux /proc is needed): agents send no TELEMETRY")
		} else {
			log.Info("agents report this host's telemetry")
		}
	}
	handlers := Handlers()
	f := &Fleet{opts: o, log: log, agents: make([]*agentsdk.Agent, 0, o.Agents)}
	for i := range o.Agents {
		idx := o.StartIndex + i
		id := o.Prefix + strconv.Itoa(idx)
		telemetry := hostTel
		if telemetry == nil {
			telemetry = NewTelemetry(uint64(idx)).Sample
		}
		if o.TelemetryWhenConnected {
			telemetry = f.heldUntilConnected(telemetry)
		}
		a, err := agentsdk.New(agentsdk.Config{
			URL:     o.Gateway,
			AgentID: id,
			// Each agent enrolls with the secret for its own credential.
			EnrollmentSecret:  o.EnrollmentSecret,
			Site:              o.Site,
			Version:           Version,
			Hostname:          id,
			Labels:            o.Labels,
			Handlers:          handlers,
			Telemetry:         telemetry,
			TelemetryInterval: o.TelemetryInterval,
			HeartbeatInterval: o.HeartbeatInterval,
			MinBackoff:        o.MinBackoff,
			MaxBackoff:        o.MaxBackoff,
			Dialer:            dialers[i%len(dialers)],
			Logger:            log,

			TrustedKeys:        trusted,
			TrustOnFirstUse:    o.TrustOnFirstUse,
			InsecureSkipVerify: o.InsecureSkipVerify,
			StateDir:           AgentStateDir(o.StateDir, id),
		})
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", id, err)
		}
		f.agents = append(f.agents, a)
	}
	return f, nil
}

// heldUntilConnected wraps a telemetry function to return nothing (the SDK
// then sends no TELEMETRY) until every agent of the fleet has connected.
func (f *Fleet) heldUntilConnected(sample func() map[string]float64) func() map[string]float64 {
	return func() map[string]float64 {
		if !f.allConnected.Load() {
			return nil
		}
		return sample()
	}
}

// sourceDialers returns base alone when n is 0, and otherwise n copies of it,
// copy k dialing from the loopback address dialerSource(k). The copies share
// base's buffer sizes and write-buffer pool.
func sourceDialers(base *websocket.Dialer, n int) []*websocket.Dialer {
	if n <= 0 {
		return []*websocket.Dialer{base}
	}
	dialers := make([]*websocket.Dialer, n)
	for k := range dialers {
		d := *base
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: dialerSource(k)}}
		d.NetDialContext = nd.DialContext
		dialers[k] = &d
	}
	return dialers
}

// dialerSource is the k-th loopback source address, 127.0.0.(1+k).
func dialerSource(k int) net.IP { return net.IPv4(127, 0, 0, byte(1+k)).To4() }

// Total is the number of agents in the fleet.
func (f *Fleet) Total() int { return len(f.agents) }

// Connected is the number of agents that currently hold a welcomed session.
func (f *Fleet) Connected() int {
	n := 0
	for _, a := range f.agents {
		if a.Connected() {
			n++
		}
	}
	return n
}

// Agents returns the fleet's agents, in index order.
func (f *Fleet) Agents() []*agentsdk.Agent { return f.agents }

// Run starts the agents at the configured connect rate and runs them until
// ctx is done, then waits for them to close their sessions.
func (f *Fleet) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.reportProgress(ctx)
	}()
	begin := time.Now()
	perAgent := float64(time.Second) / f.opts.ConnectRate
	timer := time.NewTimer(0)
	defer timer.Stop()
start:
	for i, a := range f.agents {
		// Start agent i at begin + i/rate; sleep only when ahead of schedule,
		// so coarse timers still give the right average rate.
		if wait := time.Until(begin.Add(time.Duration(float64(i) * perAgent))); wait > time.Millisecond {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				break start
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		f.started.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil {
				f.log.WithError(err).WithField("agent_id", a.ID()).Error("agent stopped")
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

func (f *Fleet) reportProgress(ctx context.Context) {
	total := f.Total()
	t := time.NewTicker(progressPoll)
	defer t.Stop()
	last := time.Now()
	announced := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			connected := f.Connected()
			if connected == total {
				f.allConnected.Store(true)
				if !announced {
					f.log.WithFields(logrus.Fields{"connected": connected, "total": total}).Info("all agents connected")
					announced = true
				}
				continue
			}
			announced = false
			if now.Sub(last) >= progressEvery {
				last = now
				f.log.WithFields(logrus.Fields{
					"connected": connected, "total": total, "started": f.started.Load(),
				}).Info("agents connecting")
			}
		}
	}
}

// trustMode names how agents verify COMMANDs, for the start-up log.
func (o Options) trustMode() string {
	switch {
	case o.InsecureSkipVerify:
		return "insecure-skip-verify"
	case o.SigningPublicKey != "":
		return "pinned"
	case o.TrustOnFirstUse:
		return "trust-on-first-use"
	}
	return "none"
}

// Main is the agentsim command: it parses args, runs the fleet until ctx is
// done and returns the process exit code (2 for command line errors, one line
// per problem on stderr).
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	o, err := ParseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		Usage(stderr)
		return 0
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "agentsim: %s\n", line)
		}
		return 2
	}
	log, err := NewLogger(o.LogLevel, o.LogFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "agentsim: %v\n", err)
		return 2
	}
	fleet, err := NewFleet(o, log)
	if err != nil {
		log.WithError(err).Error("building the fleet failed")
		return 1
	}
	log.WithFields(logrus.Fields{
		"gateway": o.Gateway, "agents": o.Agents, "prefix": o.Prefix, "start_index": o.StartIndex,
		"site": o.Site, "connect_rate": o.ConnectRate, "command_trust": o.trustMode(),
		"host_telemetry": o.HostTelemetry, "source_ips": o.SourceIPs,
		"min_backoff": o.MinBackoff.String(), "max_backoff": o.MaxBackoff.String(), "telemetry_when_connected": o.TelemetryWhenConnected,
	}).Info("agentsim starting")
	if err := fleet.Run(ctx); err != nil {
		log.WithError(err).Error("agentsim failed")
		return 1
	}
	log.Info("agentsim stopped")
	return 0
}

// AgentStateDir is the state directory of agent id under base ("" when base
// is ""): the id path-escaped, so "/" and ".." stay inside base.
func AgentStateDir(base, id string) string {
	if base == "" {
		return ""
	}
	name := url.PathEscape(id)
	if name == "." || name == ".." {
		name = strings.ReplaceAll(name, ".", "%2E")
	}
	return filepath.Join(base, name)
}
