package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Event is one event of GET /api/v1/events.
type Event struct {
	Type        string `json:"type"`
	At          string `json:"at"`
	AgentID     string `json:"agent_id,omitempty"`
	CommandID   string `json:"command_id,omitempty"`
	ExecutionID string `json:"execution_id,omitempty"`
	Status      string `json:"status,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// ErrStreamEnded is returned by Stream.Next when the server ended the stream
// (its replica shuts down, or the token expired: event "end").
var ErrStreamEnded = errors.New("the event stream ended")

// Stream reads Server-Sent Events.
type Stream struct {
	body io.ReadCloser
	sc   *bufio.Scanner
}

// Events opens the event stream with query (type, agent, command).
func (c *Client) Events(ctx context.Context, query url.Values) (*Stream, error) {
	open := func() (*http.Response, error) {
		req, err := c.newRequest(ctx, Request{Method: http.MethodGet, Path: "/api/v1/events", Query: query})
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "text/event-stream")
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, &NetworkError{Err: fmt.Errorf("GET /api/v1/events: %w", err)}
		}
		return resp, nil
	}
	resp, err := open()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized && c.tokens != nil {
		_ = resp.Body.Close()
		tok, rerr := c.tokens.Refresh(ctx)
		if rerr != nil || tok == "" {
			return nil, &APIError{Status: http.StatusUnauthorized, Problem: Problem{Title: "Unauthorized", Detail: "the token was refused and could not be refreshed"}, Method: http.MethodGet, Path: "/api/v1/events"}
		}
		if resp, err = open(); err != nil {
			return nil, err
		}
	}
	if resp.StatusCode != http.StatusOK {
		defer func() { _ = resp.Body.Close() }()
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, apiError(http.MethodGet, "/api/v1/events", resp, raw)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &Stream{body: resp.Body, sc: sc}, nil
}

// Next is the next event; ErrStreamEnded when the server ended the stream,
// another error when the connection broke.
func (s *Stream) Next() (Event, error) {
	var typ string
	var data strings.Builder
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "":
			if typ == "" && data.Len() == 0 {
				continue
			}
			if typ == "end" {
				return Event{}, ErrStreamEnded
			}
			var e Event
			if err := json.Unmarshal([]byte(data.String()), &e); err != nil {
				return Event{}, fmt.Errorf("decoding event %q: %w", typ, err)
			}
			if e.Type == "" {
				e.Type = typ
			}
			return e, nil
		case strings.HasPrefix(line, ":"): // keep-alive comment
		case strings.HasPrefix(line, "event:"):
			typ = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if err := s.sc.Err(); err != nil {
		return Event{}, &NetworkError{Err: fmt.Errorf("reading the event stream: %w", err)}
	}
	return Event{}, ErrStreamEnded
}

// Close ends the stream.
func (s *Stream) Close() error { return s.body.Close() }
