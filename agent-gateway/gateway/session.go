package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/events"
	"github.com/viworks/backend-agent/pkg/protocol"
	"github.com/viworks/backend-agent/pkg/store"
)

// session is one agent's WebSocket.
type session struct {
	g      *Gateway
	conn   *websocket.Conn
	remote string

	id      string
	authID  string // the agent the upgrade request authenticated as
	slot    *slot  // its place under max_agent_connections until attached
	agentID string
	entry   bus.Entry

	// Outgoing frames. No goroutine waits on an idle session: send starts a
	// writer only while frames wait, and it exits when the queue is empty.
	wmu     sync.Mutex
	queue   [][]byte
	writing bool

	closed    atomic.Bool // set before the socket is closed; send refuses frames after it
	closeOnce sync.Once

	acked map[string]struct{} // executions acknowledged on this session (read loop only)

	// The read buffer gorilla reads from, and the socket under it when the
	// session can wait for it to become readable (plain TCP on Unix; nil
	// under TLS: the frame is then awaited inside the read).
	br  *bufio.Reader
	raw syscall.RawConn

	tokens float64   // frame rate limit (read loop only)
	refill time.Time // when tokens were last topped up
}

// frameWait applies the per-agent frame rate, a token bucket of MaxFrameRate
// per second holding up to twice that, and returns how long the reader must
// wait before it takes the frame (0: at once).
func (s *session) frameWait(now time.Time) time.Duration {
	rate := float64(s.g.cfg.MaxFrameRate)
	if s.refill.IsZero() {
		s.tokens, s.refill = 2*rate, now
	}
	s.tokens = min(2*rate, s.tokens+now.Sub(s.refill).Seconds()*rate) - 1
	s.refill = now
	if s.tokens >= 0 {
		return 0
	}
	return time.Duration(-s.tokens / rate * float64(time.Second))
}

// logger builds the session's log entry when something is logged, so an idle
// session holds no entry of its own.
func (s *session) logger() *logrus.Entry {
	f := logrus.Fields{"remote_addr": s.remote}
	if s.agentID != "" {
		f["agent_id"], f["session_id"] = s.agentID, s.id
	}
	return s.g.log.WithFields(f)
}

// maxAcked bounds the per-session memory of acknowledged executions.
const maxAcked = 256

// firstAck reports whether this is the first ACK of the execution on this
// session; only the first needs a write.
func (s *session) firstAck(executionID string) bool {
	if _, ok := s.acked[executionID]; ok {
		return false
	}
	if s.acked == nil || len(s.acked) >= maxAcked {
		s.acked = make(map[string]struct{})
	}
	s.acked[executionID] = struct{}{}
	return true
}

// newSession makes the session of an upgraded connection; br is its read
// buffer (nil: unknown, so the session cannot wait for a frame before reading it).
func newSession(g *Gateway, conn *websocket.Conn, br *bufio.Reader, remote, authID string) *session {
	s := &session{
		g: g, conn: conn, remote: remote, authID: authID, id: uuid.NewString(), br: br,
	}
	if sc, ok := conn.NetConn().(syscall.Conn); ok && br != nil && canPeek {
		if raw, err := sc.SyscallConn(); err == nil {
			s.raw = raw
		}
	}
	return s
}

// send queues a frame; a full queue means a slow agent, which is disconnected
// rather than allowed to block the gateway.
func (s *session) send(frame []byte) bool {
	s.wmu.Lock()
	if s.closed.Load() {
		s.wmu.Unlock()
		return false
	}
	if len(s.queue) >= s.g.cfg.SendQueue {
		s.wmu.Unlock()
		s.g.metrics.closed.WithLabelValues("slow").Inc()
		s.close(protocol.ClosePolicyViolation, "send queue full")
		return false
	}
	s.queue = append(s.queue, frame)
	if !s.writing {
		s.writing = true
		go s.drain()
	}
	s.wmu.Unlock()
	return true
}

// drain writes queued frames (the only goroutine writing data frames) until
// the queue is empty, then exits.
func (s *session) drain() {
	for {
		s.wmu.Lock()
		batch := s.queue
		s.queue = nil
		if len(batch) == 0 {
			s.writing = false
			s.wmu.Unlock()
			return
		}
		s.wmu.Unlock()
		for _, frame := range batch {
			_ = s.conn.SetWriteDeadline(time.Now().Add(s.g.cfg.WriteTimeout))
			if err := s.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
				s.close(protocol.CloseGoingAway, "write failed")
				s.wmu.Lock()
				s.writing, s.queue = false, nil
				s.wmu.Unlock()
				return
			}
			s.g.metrics.framesOut.WithLabelValues(frameType(frame)).Inc()
			s.g.metrics.bytesOut.Add(float64(len(frame)))
		}
	}
}

// ping sends a WebSocket ping with a short deadline (called by the gateway's
// pinger for every session, so idle sessions need no timer of their own).
func (s *session) ping() {
	if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
		s.close(protocol.CloseGoingAway, "ping failed")
	}
}

func (s *session) sendFrame(typ string, payload any) bool {
	b, err := protocol.Encode(typ, "", payload)
	if err != nil {
		s.logger().WithError(err).Error("encoding frame failed")
		return false
	}
	return s.send(b)
}

// close sends a close frame with code and tears the connection down; safe to
// call from any goroutine, more than once.
func (s *session) close(code int, reason string) { s.shutdown(closeLabel(code), code, reason, false) }

// closeFromReader is close for the reading goroutine: before closing the socket
// it drains what the agent is still sending (bounded by lingerTimeout), so the
// close frame is not lost to a TCP reset when unread data remains, e.g. the
// rest of an oversize frame.
func (s *session) closeFromReader(code int, reason string) {
	s.shutdown(closeLabel(code), code, reason, true)
}

const lingerTimeout = 2 * time.Second

// closeLabel names the close code the gateway sends, for the closed-sessions
// counter (read errors name what the agent did instead, see readFailed).
func closeLabel(code int) string {
	switch code {
	case protocol.CloseNormal:
		return "normal"
	case protocol.CloseGoingAway:
		return "going_away"
	case protocol.CloseInvalidPayload:
		return "invalid_payload"
	case protocol.ClosePolicyViolation:
		return "policy_violation"
	case protocol.CloseMessageTooBig:
		return "too_big"
	case protocol.CloseServiceRestart:
		return "service_restart"
	}
	return "other"
}

// shutdown closes the session once; cause labels it in the closed-sessions counter.
func (s *session) shutdown(cause string, code int, reason string, linger bool) {
	s.closeOnce.Do(func() {
		s.g.metrics.sessionsClosed.WithLabelValues(cause).Inc()
		msg := websocket.FormatCloseMessage(code, reason)
		_ = s.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		s.closed.Store(true)
		if linger {
			raw := s.conn.NetConn()
			_ = raw.SetReadDeadline(time.Now().Add(lingerTimeout))
			_, _ = io.Copy(io.Discard, raw)
		}
		_ = s.conn.Close()
	})
}

// handshake reads HELLO, checks the identity and registers the session, then
// answers WELCOME; release frees its handshake slot. It reports whether the
// session is registered (and must be served).
func (s *session) handshake(ctx context.Context, release func(), started time.Time) (registered bool) {
	defer release()
	defer func() {
		if !registered {
			s.close(protocol.CloseNormal, "")
		}
	}()
	s.conn.SetReadLimit(s.g.cfg.ReadLimit)
	_ = s.conn.SetReadDeadline(time.Now().Add(s.g.cfg.HelloTimeout))

	hello, ok := s.readHello()
	if !ok {
		return false
	}
	if hello.AgentID != s.authID {
		// Identity comes from the channel: nobody poses as another agent.
		s.g.metrics.protocolErrors.WithLabelValues("identity_mismatch").Inc()
		s.logger().WithFields(logrus.Fields{"agent_id": s.authID, "claimed_agent_id": hello.AgentID}).Warn("HELLO names another agent; closing")
		s.g.audit(ctx, "agent:"+s.authID, "agent.identity_mismatch", hello.AgentID, map[string]any{"client": s.remote})
		s.refuseHello(protocol.ErrorPayload{Code: protocol.ErrCodeIdentity, Message: "agent_id does not match the credential", Field: "payload.agent_id"})
		return false
	}
	version, ok := protocol.Negotiate(hello.ProtocolVersions)
	if !ok {
		s.g.metrics.protocolErrors.WithLabelValues("unsupported_version").Inc()
		s.refuseHello(protocol.ErrorPayload{Code: protocol.ErrCodeUnsupported, Field: "payload.protocol_versions",
			Message: "no protocol version in common; this gateway speaks " + versionList()})
		return false
	}
	s.agentID = s.authID // the same id; keeps no string of the HELLO alive
	s.entry = bus.Entry{GatewayID: s.g.cfg.GatewayID, SessionID: s.id}

	if err := s.register(ctx, hello); err != nil {
		s.logger().WithError(err).Error("registering agent session failed")
		s.close(protocol.CloseServiceRestart, "registration failed; retry")
		return false
	}
	if s.g.endedSince(s.agentID, started) {
		// Revoked between the upgrade's authentication and now.
		s.unregister()
		s.close(protocol.ClosePolicyViolation, "agent revoked")
		return false
	}

	key := s.g.signingKey()
	if key.KeyID == "" {
		// No scheduler has registered a key yet: agents that trust on first use
		// must not pin nothing, so look again before answering.
		s.g.refreshKey(ctx)
		key = s.g.signingKey()
	}
	s.sendFrame(protocol.TypeWelcome, protocol.Welcome{
		SigningKeyID:       key.KeyID,
		SigningPublicKey:   key.PublicKey,
		SessionID:          s.id,
		HeartbeatIntervalS: int(s.g.cfg.HeartbeatInterval / time.Second),
		TelemetryIntervalS: int(s.g.cfg.TelemetryInterval / time.Second),
		ServerTime:         time.Now().UTC(),
		ProtocolVersion:    version,
		OutputLimit:        protocol.MaxOutputBytes,
		MaxFrameBytes:      s.g.cfg.ReadLimit,

		ReconnectBackoffMs:   int(s.g.cfg.ReconnectBackoff / time.Millisecond),
		MaxReconnectAttempts: s.g.cfg.MaxReconnectAttempts,
	})
	s.g.metrics.handshake.Observe(time.Since(started).Seconds())
	s.logger().Info("agent connected")
	s.g.cfg.Events.Agent(ctx, events.AgentOnline, s.agentID, s.g.cfg.GatewayID, "")
	s.g.send.Wake(ctx, bus.Wake{Reason: bus.WakeAgent, AgentID: s.agentID})
	return true
}

// serve reads the registered session's frames until it ends, then cleans up.
func (s *session) serve(ctx context.Context) {
	defer s.close(protocol.CloseNormal, "")
	defer s.unregister()
	s.readLoop(ctx)
}

// versionList names the protocol versions this gateway speaks, for ERROR frames.
func versionList() string {
	vs := make([]string, len(protocol.SupportedVersions))
	for i, v := range protocol.SupportedVersions {
		vs[i] = strconv.Itoa(v)
	}
	return strings.Join(vs, ", ")
}

// refuseHello answers a HELLO that cannot open a session with an ERROR frame
// (written at once: nothing else is queued yet), then closes with 1008.
func (s *session) refuseHello(e protocol.ErrorPayload) {
	e.FrameType = protocol.TypeHello
	if b, err := protocol.Encode(protocol.TypeError, "", e); err == nil {
		_ = s.conn.SetWriteDeadline(time.Now().Add(s.g.cfg.WriteTimeout))
		if s.conn.WriteMessage(websocket.TextMessage, b) == nil {
			s.g.metrics.framesOut.WithLabelValues(protocol.TypeError).Inc()
			s.g.metrics.bytesOut.Add(float64(len(b)))
		}
	}
	reason := e.Message
	if len(reason) > 120 { // a close reason must fit in a control frame
		reason = reason[:120]
	}
	s.closeFromReader(protocol.ClosePolicyViolation, reason)
}

func (s *session) readHello() (*protocol.Hello, bool) {
	_, data, err := s.conn.ReadMessage()
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A socket that says nothing holds a connection slot for free: close it.
		s.g.metrics.protocolErrors.WithLabelValues("hello_timeout").Inc()
		s.shutdown("hello_timeout", protocol.ClosePolicyViolation, "no HELLO within "+s.g.cfg.HelloTimeout.String(), false)
		return nil, false
	}
	if err != nil {
		s.readFailed(err)
		return nil, false
	}
	s.g.metrics.bytesIn.Add(float64(len(data)))
	f, err := protocol.Decode(data)
	var de *protocol.DecodeError
	switch {
	case errors.As(err, &de) && de.CloseCode == 0:
		s.g.metrics.protocolErrors.WithLabelValues("invalid_hello").Inc()
		s.refuseHello(protocol.ErrorPayload{Code: protocol.ErrCodeInvalidPayload, Message: de.Error(), Field: de.Field})
		return nil, false
	case err != nil && !errors.Is(err, protocol.ErrUnknownType):
		s.rejectFrame(f, err)
		return nil, false
	}
	hello, ok := f.Payload.(*protocol.Hello)
	if !ok {
		s.g.metrics.protocolErrors.WithLabelValues("hello_required").Inc()
		s.refuseHello(protocol.ErrorPayload{Code: protocol.ErrCodeInvalidPayload, Message: "the first frame must be HELLO", Field: "type"})
		return nil, false
	}
	s.g.metrics.frames.WithLabelValues(f.Type).Inc()
	return hello, true
}

func (s *session) register(ctx context.Context, h *protocol.Hello) error {
	if old := s.g.attach(s); old != nil {
		old.close(protocol.ClosePolicyViolation, "replaced by a newer session")
	}
	ttl := s.g.cfg.silenceLimit()
	prev, err := s.g.presence.SetPresence(ctx, s.agentID, s.entry, ttl)
	if err != nil {
		s.g.detach(s)
		return err
	}
	if prev != nil && prev.GatewayID != s.g.cfg.GatewayID {
		s.g.send.Kick(ctx, prev.GatewayID, s.agentID, prev.SessionID)
	}
	_, err = s.g.online.submit(ctx, store.AgentSession{
		ID: s.agentID, Site: h.Site, Version: h.Version, Hostname: h.Hostname, OS: h.OS, Arch: h.Arch,
		Capabilities: h.Capabilities, Labels: h.Labels, GatewayID: s.g.cfg.GatewayID, SessionID: s.id,
		At: time.Now(), TrustReported: s.g.cfg.TrustReported,
	})
	if err != nil {
		s.g.detach(s)
		_, _ = s.g.presence.DeletePresence(ctx, s.agentID, s.entry)
		return err
	}
	return nil
}

func (s *session) unregister() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.g.detach(s)
	if _, err := s.g.presence.DeletePresence(ctx, s.agentID, s.entry); err != nil {
		s.logger().WithError(err).Warn("removing presence failed")
	}
	if offline, err := s.g.store.MarkAgentOffline(ctx, s.agentID, s.id, time.Now()); err != nil {
		s.logger().WithError(err).Warn("marking agent offline failed")
	} else if offline {
		s.g.cfg.Events.Agent(ctx, events.AgentOffline, s.agentID, s.g.cfg.GatewayID, "")
	}
	// Work the agent held through this gateway did not finish here: retry it.
	touched, err := s.g.store.ReleaseAgentExecutions(ctx, s.agentID, s.g.cfg.GatewayID, s.g.cfg.Retry)
	if err != nil {
		s.logger().WithError(err).Error("releasing the agent's executions failed")
	} else if len(touched) > 0 {
		s.g.send.Wake(ctx, bus.Wake{Reason: bus.WakeAgent, AgentID: s.agentID})
	}
	s.logger().Info("agent disconnected")
}

func (s *session) deadline() time.Time {
	return time.Now().Add(s.g.cfg.silenceLimit())
}

// readLoop serves the session's frames one after the other until it ends.
// Its goroutine, the one an idle session holds, only waits for the socket to
// become readable (awaitFrame: a shallow stack, the runtime's smallest); a
// frame is read, decoded and handled on a short-lived goroutine (frameJob),
// because reading a frame through gorilla and decoding it need a deep stack,
// which would stay grown on the idle session's goroutine until a collection
// happened to shrink it.
func (s *session) readLoop(ctx context.Context) {
	_ = s.conn.SetReadDeadline(s.deadline())
	s.conn.SetPongHandler(func(string) error { return s.conn.SetReadDeadline(s.deadline()) })
	for {
		var r io.Reader
		if s.raw == nil {
			// No socket to wait on (TLS): the frame is awaited inside the
			// read, on this goroutine, holding no job meanwhile.
			var err error
			if _, r, err = s.conn.NextReader(); err != nil {
				s.readFailed(err)
				return
			}
		} else if err := s.awaitFrame(); err != nil {
			s.readFailed(err)
			return
		}
		j := frameJobs.Get().(*frameJob)
		j.s, j.ctx, j.r = s, ctx, r
		go j.run()
		<-j.done
		ok := j.ok
		j.release()
		if !ok {
			return
		}
	}
}

// awaitFrame returns once the next frame can be read: something is buffered
// or the socket is readable (or closed, or past the read deadline: the read
// then tells).
func (s *session) awaitFrame() error {
	if s.br.Buffered() > 0 {
		return nil
	}
	return s.raw.Read(readable)
}

// frameJob reads, decodes and handles one frame on a short-lived goroutine;
// jobs and their buffers are reused, so an idle session holds neither and a
// frame costs no allocation of its own.
type frameJob struct {
	s    *session
	ctx  context.Context
	r    io.Reader // the frame's reader when the session's goroutine began it
	data []byte
	ok   bool
	done chan struct{}
}

// maxPooledFrame is the largest buffer kept for reuse; a rare bigger frame's
// buffer (up to the read limit) is left to the collector.
const maxPooledFrame = 64 << 10

var frameJobs = sync.Pool{New: func() any {
	return &frameJob{data: make([]byte, 0, 1024), done: make(chan struct{}, 1)}
}}

// release returns the job and its buffer to the pool.
func (j *frameJob) release() {
	if cap(j.data) > maxPooledFrame {
		return
	}
	j.s, j.ctx, j.r, j.data, j.ok = nil, nil, nil, j.data[:0], false
	frameJobs.Put(j)
}

func (j *frameJob) run() {
	j.ok = j.s.nextFrame(j.ctx, j)
	j.done <- struct{}{}
}

// nextFrame reads one frame into j and handles it; false ends the session.
func (s *session) nextFrame(ctx context.Context, j *frameJob) bool {
	if err := s.readFrame(j); err != nil {
		s.readFailed(err)
		return false
	}
	s.g.metrics.bytesIn.Add(float64(len(j.data)))
	_ = s.conn.SetReadDeadline(s.deadline())
	if wait := s.frameWait(time.Now()); wait > 0 {
		// Over its rate: the reader pauses, so TCP slows the agent down.
		// Not a close: frames a busy gateway read late arrive in a burst
		// that is the gateway's backlog, not the agent's.
		s.g.metrics.throttled.Inc()
		time.Sleep(wait)
	}
	return s.processFrame(ctx, j.data)
}

// readFrame reads the next data frame (or the one begun, j.r) into j's
// buffer (gorilla's ReadMessage would allocate a new one for every frame).
// The read limit is the connection's: a larger frame fails with
// websocket.ErrReadLimit.
func (s *session) readFrame(j *frameJob) error {
	r := j.r
	if r == nil {
		var err error
		if _, r, err = s.conn.NextReader(); err != nil {
			return err
		}
	}
	b := j.data[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			j.data = b
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// processFrame decodes and handles one frame; false ends the session. data
// is the pooled read buffer: nothing may keep it (Decode copies what it keeps).
func (s *session) processFrame(ctx context.Context, data []byte) bool {
	f, err := protocol.Decode(data)
	if f.Type == protocol.TypeTelemetry && len(f.Dropped) > 0 {
		s.g.metrics.telemetryRefused.WithLabelValues("invalid_value").Add(float64(len(f.Dropped)))
		if err == nil { // a refused frame is answered below
			s.refuse(f.Type, protocol.ErrCodeInvalidPayload, f.Dropped)
		}
	}
	if err != nil {
		return s.decodeFailed(f, err)
	}
	s.g.metrics.frames.WithLabelValues(f.Type).Inc()
	return s.handle(ctx, f)
}

// decodeFailed answers a frame Decode refused; false ends the session.
func (s *session) decodeFailed(f protocol.Frame, err error) bool {
	var de *protocol.DecodeError
	switch {
	case errors.Is(err, protocol.ErrUnknownType):
		s.g.metrics.protocolErrors.WithLabelValues("unknown_type").Inc()
		s.sendFrame(protocol.TypeError, protocol.ErrorPayload{Code: protocol.ErrCodeUnknownType, Message: err.Error(), FrameType: truncate(f.Type, 64)})
		return true
	case errors.As(err, &de) && de.CloseCode == 0:
		// A bad field costs the frame, not the session.
		s.g.metrics.protocolErrors.WithLabelValues("invalid_field").Inc()
		s.refuse(f.Type, protocol.ErrCodeInvalidPayload, []*protocol.DecodeError{de})
		return true
	}
	s.rejectFrame(f, err)
	return false
}

// refuse tells the agent, in one ERROR frame, which fields of a frame were
// refused (the first named, the others counted), and logs it rate-limited.
func (s *session) refuse(frameType, code string, errs []*protocol.DecodeError) {
	msg := errs[0].Error()
	if len(errs) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(errs)-1)
	}
	s.sendFrame(protocol.TypeError, protocol.ErrorPayload{Code: code, Message: msg, Field: errs[0].Field, FrameType: frameType})
	if ok, suppressed := s.g.logLimit.allow("refused_"+code, time.Now()); ok {
		s.logger().WithFields(logrus.Fields{"frame_type": frameType, "field": errs[0].Field, "suppressed": suppressed}).
			WithError(errs[0]).Warn("refused a frame's field")
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func (s *session) handle(ctx context.Context, f protocol.Frame) bool {
	switch p := f.Payload.(type) {
	case *protocol.Hello:
		s.g.metrics.protocolErrors.WithLabelValues("duplicate_hello").Inc()
		s.closeFromReader(protocol.ClosePolicyViolation, "HELLO already received")
		return false
	case *protocol.Heartbeat:
		// Presence is refreshed in the gateway's next flush, in one round trip for all agents.
		s.g.noteHealth(store.HealthUpdate{AgentID: s.agentID, Status: p.Status, UptimeS: p.UptimeS, At: time.Now()})
	case *protocol.Telemetry:
		now := time.Now()
		if p.TS.Before(now.Add(-protocol.TelemetryMaxAge)) || p.TS.After(now.Add(protocol.TelemetryMaxAhead)) {
			// Stored, a sample from far ahead would outlive retention; from
			// long ago it would rewrite history.
			s.g.metrics.telemetryRefused.WithLabelValues("ts_out_of_window").Inc()
			s.refuse(f.Type, protocol.ErrCodeOutOfWindow, []*protocol.DecodeError{{Field: "payload.ts",
				Reason: fmt.Sprintf("must be within %s before and %s after the gateway's clock (%s)", protocol.TelemetryMaxAge, protocol.TelemetryMaxAhead, now.UTC().Format(time.RFC3339))}})
			return true
		}
		raw := p.AppendMetricsJSON(make([]byte, 0, 2+32*len(p.Metrics)))
		s.g.addTelemetry(store.TelemetrySample{AgentID: s.agentID, TS: p.TS.UTC(), Metrics: raw, ReceivedAt: time.Now().UTC()})
	case *protocol.Ack:
		if !s.firstAck(p.ExecutionID) {
			return true // "started" after "received": already moved to running
		}
		// Not waited for: the result's write does not depend on it, and the
		// ack's write is guarded (it only moves a dispatched execution).
		s.g.reports.enqueue(ctx, report{ack: &store.Ack{ExecutionID: p.ExecutionID, AgentID: s.agentID, At: time.Now()}},
			s.logger().WithField("execution_id", p.ExecutionID))
	case *protocol.CommandResult:
		return s.handleResult(ctx, p)
	}
	return true
}

// handleResult persists the result and only then sends RESULT_ACK; if the write
// fails the agent keeps the result in its outbox and re-sends it.
func (s *session) handleResult(ctx context.Context, r *protocol.CommandResult) bool {
	out, err := s.g.reports.submit(ctx, report{result: &store.Result{
		ExecutionID: r.ExecutionID, CommandID: r.CommandID, AgentID: s.agentID, Status: r.Status, ExitCode: r.ExitCode,
		Output: r.Output, OutputTruncated: r.OutputTruncated, Error: r.Error, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
	}})
	if err != nil {
		s.logger().WithError(err).WithField("execution_id", r.ExecutionID).Error("recording result failed")
		return true
	}
	// Every outcome ends the agent's duty to re-send: a result that cannot be
	// stored would be refused again after every reconnect.
	s.g.metrics.resultAcks.WithLabelValues(out.Outcome).Inc()
	s.sendFrame(protocol.TypeResultAck, protocol.ResultAck{ExecutionID: r.ExecutionID, Outcome: out.Outcome})
	if out.Recorded {
		s.g.metrics.results.WithLabelValues(r.Status).Inc()
		return true
	}
	if ok, suppressed := s.g.logLimit.allow("result_"+out.Outcome, time.Now()); ok {
		s.logger().WithFields(logrus.Fields{"execution_id": r.ExecutionID, "outcome": out.Outcome, "suppressed": suppressed}).
			Warn("result not stored")
	}
	return true
}

func (s *session) rejectFrame(f protocol.Frame, err error) {
	var de *protocol.DecodeError
	code, label := protocol.ClosePolicyViolation, "invalid"
	if errors.As(err, &de) {
		code = de.CloseCode
		if code == protocol.CloseInvalidPayload {
			label = "malformed"
		}
	}
	s.g.metrics.protocolErrors.WithLabelValues(label).Inc()
	s.logger().WithField("frame_type", f.Type).WithError(err).Warn("closing session on bad frame")
	reason := err.Error()
	if len(reason) > 120 { // a close reason must fit in a control frame
		reason = reason[:120]
	}
	s.closeFromReader(code, reason)
}

func (s *session) readFailed(err error) {
	if errors.Is(err, websocket.ErrReadLimit) {
		s.g.metrics.protocolErrors.WithLabelValues("too_big").Inc()
		s.closeFromReader(protocol.CloseMessageTooBig, "frame exceeds the read limit")
		return
	}
	cause := "connection_lost"
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
		cause = "agent_closed" // the agent sent a close frame (1006 is a lost connection)
	case errors.As(err, &ne) && ne.Timeout():
		cause = "timeout" // no pong or frame within the read deadline
	}
	s.shutdown(cause, protocol.CloseNormal, "", false)
}
