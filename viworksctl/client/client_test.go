package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/viworksctl/client"
)

// tokens hands out "old" until refreshed, then "new".
type tokens struct{ refreshed atomic.Int32 }

func (tk *tokens) Token(context.Context) (string, error) {
	if tk.refreshed.Load() > 0 {
		return "new", nil
	}
	return "old", nil
}

func (tk *tokens) Refresh(context.Context) (string, error) {
	tk.refreshed.Add(1)
	return "new", nil
}

func TestProblemsCarryTitleDetailAndRequestID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-ID", "rid-42")
		switch r.URL.Path {
		case "/api/v1/problem":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"type":"about:blank","title":"Unprocessable Entity","status":422,"detail":"invalid command","errors":[{"field":"verb","message":"is required"}]}`)
		case "/api/v1/proxy":
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "upstream unreachable\n<html>")
		}
	}))
	defer srv.Close()
	c, err := client.New(nil, client.Config{Server: srv.URL})
	require.NoError(t, err)
	for _, tc := range []struct {
		path, want string
		status     int
	}{
		{"/api/v1/problem", "GET /api/v1/problem: 422 Unprocessable Entity: invalid command\n  verb: is required\n  request id: rid-42", 422},
		{"/api/v1/proxy", "GET /api/v1/proxy: 502 Bad Gateway: upstream unreachable\n  request id: rid-42", 502},
	} {
		_, err := c.Do(context.Background(), client.Request{Method: http.MethodGet, Path: tc.path})
		var ae *client.APIError
		require.ErrorAs(t, err, &ae)
		require.Equal(t, tc.status, ae.Status)
		require.Equal(t, tc.want, err.Error())
	}
}

func TestUnauthorizedIsRetriedOnceWithARefreshedToken(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer new" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	defer srv.Close()
	tk := &tokens{}
	c, err := client.New(tk, client.Config{Server: srv.URL})
	require.NoError(t, err)
	resp, err := c.Do(context.Background(), client.Request{Method: http.MethodGet, Path: "/api/v1/status"})
	require.NoError(t, err)
	require.JSONEq(t, `{"ok":true}`, string(resp.Body))
	require.Equal(t, []string{"Bearer old", "Bearer new"}, seen)
	require.Equal(t, int32(1), tk.refreshed.Load())
}

func TestNoAnswerIsANetworkError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c, err := client.New(nil, client.Config{Server: srv.URL})
	require.NoError(t, err)
	_, err = c.Do(context.Background(), client.Request{Method: http.MethodGet, Path: "/api/v1/status"})
	var ne *client.NetworkError
	require.ErrorAs(t, err, &ne)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct{ server, want string }{
		{"", "no server"},
		{"localhost:8080", "not an http or https URL"},
		{"ftp://x", "not an http or https URL"},
		{"http://", "not an http or https URL"},
		{"https://viworks.example.com/base/", ""},
	} {
		err := client.Config{Server: tc.server}.Validate()
		if tc.want == "" {
			require.NoError(t, err, tc.server)
		} else {
			require.ErrorContains(t, err, tc.want, tc.server)
		}
	}
}

func TestEventStream(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "c1", r.URL.Query().Get("command"))
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": keep-alive\n\n")
		fmt.Fprint(w, "event: execution.status\ndata: {\"type\":\"execution.status\",\"command_id\":\"c1\",\"execution_id\":\"e1\",\"agent_id\":\"a1\",\"status\":\"running\"}\n\n")
		fmt.Fprint(w, "event: command.status\ndata: {\"type\":\"command.status\",\"command_id\":\"c1\",\"status\":\"succeeded\"}\n\n")
		fmt.Fprint(w, "event: end\ndata: {\"reason\":\"token expired\"}\n\n")
	}))
	defer srv.Close()
	c, err := client.New(nil, client.Config{Server: srv.URL})
	require.NoError(t, err)
	s, err := c.Events(context.Background(), url.Values{"command": {"c1"}})
	require.NoError(t, err)
	defer s.Close()
	e, err := s.Next()
	require.NoError(t, err)
	require.Equal(t, client.Event{Type: "execution.status", CommandID: "c1", ExecutionID: "e1", AgentID: "a1", Status: "running"}, e)
	e, err = s.Next()
	require.NoError(t, err)
	require.Equal(t, "succeeded", e.Status)
	_, err = s.Next()
	require.True(t, errors.Is(err, client.ErrStreamEnded), "%v", err)
}
