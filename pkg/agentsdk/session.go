package agentsdk

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sirupsen/logrus"

	"github.com/viworks/backend-agent/pkg/protocol"
)

// session is one WebSocket connection. Only its writer goroutine writes data
// frames; control frames (ping, pong, close) use WriteControl, which gorilla
// allows concurrently with the writer.
type session struct {
	ws           *websocket.Conn
	out          chan []byte
	done         chan struct{}
	writerDone   chan struct{}
	writeTimeout time.Duration

	once  sync.Once
	cause error // why the session was closed; read only after close returned
}

func newSession(ws *websocket.Conn, writeTimeout time.Duration) *session {
	return &session{
		ws:           ws,
		out:          make(chan []byte, outQueueSize),
		done:         make(chan struct{}),
		writerDone:   make(chan struct{}),
		writeTimeout: writeTimeout,
	}
}

// close ends the session once. A non-zero code sends a close frame first.
func (s *session) close(code int, text string, cause error) {
	s.once.Do(func() {
		s.cause = cause
		close(s.done)
		if code != 0 {
			_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text),
				time.Now().Add(min(s.writeTimeout, time.Second)))
		}
		_ = s.ws.Close()
	})
}

// enqueue hands a frame to the writer. It waits at most the write timeout for
// room in the bounded queue, and closes the session when the queue stays full.
// It reports whether the frame was queued.
func (s *session) enqueue(frame []byte) bool {
	select {
	case s.out <- frame:
		return true
	case <-s.done:
		return false
	default:
	}
	t := time.NewTimer(s.writeTimeout)
	defer t.Stop()
	select {
	case s.out <- frame:
		return true
	case <-s.done:
		return false
	case <-t.C:
		s.close(protocol.ClosePolicyViolation, "outgoing queue full", errors.New("outgoing queue full"))
		return false
	}
}

// write sends one data frame; called only by the writer goroutine (or before
// it starts).
func (s *session) write(frame []byte) error {
	_ = s.ws.SetWriteDeadline(time.Now().Add(s.writeTimeout))
	return s.ws.WriteMessage(websocket.TextMessage, frame)
}

// sessionOutcome tells Run how a session ended.
type sessionOutcome struct {
	welcomed     bool
	authRejected bool
	retryAfter   time.Duration
	err          error
}

// runSession dials, handshakes and serves one connection until it ends.
func (a *Agent) runSession(ctx context.Context) (out sessionOutcome) {
	cred, err := a.credential(ctx)
	if err != nil {
		out.err = err
		var ee *EnrollError
		if errors.As(err, &ee) {
			// 409: the id is enrolled (and this agent lost its credential) or
			// revoked; an admin must act (docs/identity.md).
			out.authRejected = ee.Status == http.StatusUnauthorized || ee.Status == http.StatusForbidden || ee.Status == http.StatusConflict
			out.retryAfter = ee.RetryAfter
		}
		return out
	}
	header := http.Header{}
	if cred != "" {
		header.Set("Authorization", "Bearer "+cred)
	}
	dctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
	ws, resp, err := a.cfg.Dialer.DialContext(dctx, a.cfg.URL, header) //nolint:bodyclose // gorilla/websocket: a failed handshake's body needs no closing
	cancel()
	if err != nil {
		out.err = err
		if resp != nil {
			out.err = fmt.Errorf("upgrade refused: HTTP %d", resp.StatusCode)
			switch resp.StatusCode {
			case http.StatusUnauthorized, http.StatusForbidden:
				out.authRejected = true
				a.forgetCredential(cred) // enroll again next time, if we can
			case http.StatusServiceUnavailable, http.StatusTooManyRequests:
				out.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
			}
		}
		return out
	}
	ws.SetReadLimit(protocol.DefaultReadLimit)
	s := newSession(ws, a.cfg.WriteTimeout)
	stop := context.AfterFunc(ctx, func() {
		s.close(websocket.CloseGoingAway, "agent shutting down", context.Cause(ctx))
	})
	defer stop()

	welcome, err := a.handshake(s)
	if err != nil {
		s.close(0, "", err)
		out.err = firstErr(s.cause, err)
		return out
	}
	out.welcomed = true
	a.observeWelcome(welcome)
	a.reconnect.Store(reconnectFrom(welcome))
	hb := interval(a.cfg.HeartbeatInterval, welcome.HeartbeatIntervalS, DefaultHeartbeatInterval)
	tel := interval(a.cfg.TelemetryInterval, welcome.TelemetryIntervalS, DefaultTelemetryInterval)

	a.mu.Lock()
	a.sess = s
	a.sessionID = welcome.SessionID
	close(a.connCh)
	pending := a.pendingResults()
	a.mu.Unlock()
	a.log.WithFields(logrus.Fields{"session_id": welcome.SessionID, "pending_results": len(pending)}).Debug("agent connected")

	go a.writeLoop(s, pending, hb, tel)
	err = a.readLoop(ctx, s, 2*hb+a.cfg.WriteTimeout)
	s.close(0, "", err)
	<-s.writerDone

	a.mu.Lock()
	a.sess = nil
	a.sessionID = ""
	a.connCh = make(chan struct{})
	a.mu.Unlock()
	out.err = firstErr(s.cause, err)
	return out
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func interval(override time.Duration, serverS int, def time.Duration) time.Duration {
	switch {
	case override > 0:
		return override
	case serverS > 0:
		return time.Duration(serverS) * time.Second
	}
	return def
}

// parseRetryAfter reads a Retry-After header (seconds or an HTTP date),
// bounded by maxRetryAfter; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, maxRetryAfter))
}

// handshake sends HELLO and waits for WELCOME.
func (a *Agent) handshake(s *session) (*protocol.Welcome, error) {
	hello, err := protocol.Encode(protocol.TypeHello, "", a.hello)
	if err != nil {
		return nil, err
	}
	if err := s.write(hello); err != nil {
		return nil, fmt.Errorf("sending HELLO: %w", err)
	}
	_ = s.ws.SetReadDeadline(time.Now().Add(a.cfg.HandshakeTimeout))
	mt, data, err := s.ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("waiting for WELCOME: %w", err)
	}
	if mt != websocket.TextMessage {
		return nil, errors.New("waiting for WELCOME: got a binary frame")
	}
	f, err := protocol.DecodeServerFrame(data)
	if err != nil {
		return nil, fmt.Errorf("waiting for WELCOME: %w", err)
	}
	switch p := f.Payload.(type) {
	case *protocol.Welcome:
		return p, nil
	case *protocol.ErrorPayload:
		a.log.WithFields(logrus.Fields{"code": p.Code, "message": p.Message}).Warn("gateway refused HELLO")
		return nil, fmt.Errorf("gateway refused HELLO: %s: %s", p.Code, p.Message)
	}
	return nil, fmt.Errorf("waiting for WELCOME: got %s", f.Type)
}

// writeLoop is the connection's only writer of data frames: pending results
// first, then queued frames, heartbeats (with a ping) and telemetry.
func (a *Agent) writeLoop(s *session, pending [][]byte, hb, tel time.Duration) {
	defer close(s.writerDone)
	fail := func(err error) { s.close(0, "", fmt.Errorf("write: %w", err)) }
	for _, f := range pending {
		if err := s.write(f); err != nil {
			fail(err)
			return
		}
	}
	hbTicker := time.NewTicker(hb)
	defer hbTicker.Stop()
	var telC <-chan time.Time
	if a.cfg.Telemetry != nil {
		t := time.NewTicker(tel)
		defer t.Stop()
		telC = t.C
	}
	for {
		var frame []byte
		select {
		case <-s.done:
			return
		case frame = <-s.out:
		case <-hbTicker.C:
			if err := s.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.writeTimeout)); err != nil {
				fail(err)
				return
			}
			frame = a.heartbeatFrame()
			// Results unconfirmed for a whole heartbeat interval go again.
			for _, f := range a.unacknowledged(time.Now().Add(-hb)) {
				if err := s.write(f); err != nil {
					fail(err)
					return
				}
			}
		case <-telC:
			frame = a.telemetryFrame()
		}
		if frame == nil {
			continue
		}
		if err := s.write(frame); err != nil {
			fail(err)
			return
		}
	}
}

func (a *Agent) heartbeatFrame() []byte {
	hb := protocol.Heartbeat{
		Status:          protocol.HealthHealthy,
		UptimeS:         int64(time.Since(a.created) / time.Second),
		RunningCommands: min(a.RunningCommands(), protocol.MaxRunningCommands),
	}
	f, err := protocol.Encode(protocol.TypeHeartbeat, "", hb)
	if err != nil {
		a.log.WithError(err).Error("encoding HEARTBEAT failed")
		return nil
	}
	return f
}

func (a *Agent) telemetryFrame() []byte {
	metrics := a.sampleTelemetry()
	if len(metrics) == 0 {
		return nil
	}
	f, err := protocol.Encode(protocol.TypeTelemetry, "", protocol.Telemetry{TS: time.Now().UTC(), Metrics: metrics})
	if err != nil {
		a.log.WithError(err).Error("encoding TELEMETRY failed")
		return nil
	}
	return f
}

// sampleTelemetry calls the Telemetry function and keeps what the protocol
// accepts: finite values, names of 1..256 bytes, at most MaxMetrics (by name).
func (a *Agent) sampleTelemetry() (out map[string]float64) {
	defer func() {
		if r := recover(); r != nil {
			a.log.WithField("panic", fmt.Sprintf("%T", r)).Error("telemetry function panicked")
			out = nil
		}
	}()
	raw := a.cfg.Telemetry()
	names := make([]string, 0, len(raw))
	for k, v := range raw {
		if k == "" || len(k) > protocol.MaxShortFieldLen || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		names = append(names, k)
	}
	if len(names) > protocol.MaxMetrics {
		sort.Strings(names)
		names = names[:protocol.MaxMetrics]
	}
	out = make(map[string]float64, len(names))
	for _, k := range names {
		out[k] = raw[k]
	}
	return out
}

// readLoop reads frames until the connection fails. Every frame, ping or
// pong pushes the read deadline out by idle; the writer pings every heartbeat
// interval, so a live gateway always answers within it.
func (a *Agent) readLoop(ctx context.Context, s *session, idle time.Duration) error {
	extend := func() { _ = s.ws.SetReadDeadline(time.Now().Add(idle)) }
	extend()
	s.ws.SetPongHandler(func(string) error { extend(); return nil })
	s.ws.SetPingHandler(func(data string) error {
		extend()
		err := s.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(s.writeTimeout))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil
		}
		return err
	})
	for {
		mt, data, err := s.ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		extend()
		if mt != websocket.TextMessage {
			a.log.Warn("ignoring binary frame from gateway")
			continue
		}
		a.handleFrame(ctx, s, data)
	}
}

func (a *Agent) handleFrame(ctx context.Context, s *session, data []byte) {
	f, err := protocol.DecodeServerFrame(data)
	if err != nil {
		if errors.Is(err, protocol.ErrUnknownType) {
			a.log.WithField("type", trunc(f.Type, 64)).Warn("ignoring frame of unknown type")
		} else {
			a.log.WithError(err).WithField("type", trunc(f.Type, 64)).Warn("ignoring malformed frame")
		}
		return
	}
	switch p := f.Payload.(type) {
	case *protocol.Command:
		a.handleCommand(ctx, s, p)
	case *protocol.ResultAck:
		a.handleResultAck(p)
	case *protocol.Cancel:
		a.handleCancel(p)
	case *protocol.ErrorPayload:
		a.log.WithFields(logrus.Fields{"code": trunc(p.Code, 64), "message": trunc(p.Message, 1024), "field": trunc(p.Field, 256), "frame_type": trunc(p.FrameType, 64)}).
			Warn("gateway refused a frame")
	case *protocol.Welcome:
		a.log.Debug("ignoring WELCOME within a session")
	}
}
