// Package client calls the REST API of the control plane: requests with a
// bearer token, problem+json errors with their request id, the API-key
// exchange and the Server-Sent Events stream.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxBody bounds the answers read into memory.
const maxBody = 64 << 20

// Tokens gives the bearer token of a request; Refresh is called once after a
// 401 and may return a new token ("" when it cannot refresh).
type Tokens interface {
	Token(ctx context.Context) (string, error)
	Refresh(ctx context.Context) (string, error)
}

// Config of a Client.
type Config struct {
	Server    string        // base URL, such as http://localhost:8080
	Timeout   time.Duration // of a request (not of the event stream); default 30 s
	UserAgent string        // default viworksctl
}

// Client is a REST client of one server.
type Client struct {
	base   *url.URL
	cfg    Config
	tokens Tokens
	http   *http.Client
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Server == "" {
		return errors.New("no server: log in with `viworksctl login --server URL` or set VIWORKS_SERVER")
	}
	u, err := url.Parse(c.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("server %q is not an http or https URL", c.Server)
	}
	return nil
}

// New is a client of cfg.Server authenticating with tokens (nil: none).
func New(tokens Tokens, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "viworksctl"
	}
	u, _ := url.Parse(strings.TrimRight(cfg.Server, "/"))
	return &Client{base: u, cfg: cfg, tokens: tokens, http: &http.Client{}}, nil
}

// Server is the base URL.
func (c *Client) Server() string { return c.base.String() }

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// APIError is an answer of 400 or above.
type APIError struct {
	Status    int
	Problem   Problem
	RequestID string
	Method    string
	Path      string
}

func (e *APIError) Error() string {
	title := e.Problem.Title
	if title == "" {
		title = http.StatusText(e.Status)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.Method, e.Path, e.Status, title)
	if e.Problem.Detail != "" {
		b.WriteString(": " + e.Problem.Detail)
	}
	for _, fe := range e.Problem.Errors {
		fmt.Fprintf(&b, "\n  %s: %s", fe.Field, fe.Message)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, "\n  request id: %s", e.RequestID)
	}
	return b.String()
}

// NetworkError is a request that got no answer.
type NetworkError struct{ Err error }

func (e *NetworkError) Error() string { return e.Err.Error() }
func (e *NetworkError) Unwrap() error { return e.Err }

// Request is one API call.
type Request struct {
	Method  string
	Path    string     // such as /api/v1/agents
	Query   url.Values // nil: none
	Body    any        // marshalled as JSON; nil: no body
	Header  http.Header
	NoAuth  bool // the token exchange and the health checks
	Timeout time.Duration
}

// Response is a successful answer: its status and body, unchanged.
type Response struct {
	Status    int
	Body      []byte
	RequestID string
}

// Do sends r; an answer of 400 or above is an *APIError, no answer a
// *NetworkError. A 401 is retried once with a refreshed token.
func (c *Client) Do(ctx context.Context, r Request) (*Response, error) {
	resp, err := c.do(ctx, r)
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized && !r.NoAuth && c.tokens != nil {
		tok, rerr := c.tokens.Refresh(ctx)
		if rerr == nil && tok != "" {
			return c.do(ctx, r)
		}
	}
	return resp, err
}

// JSON sends r and decodes the answer into out.
func (c *Client) JSON(ctx context.Context, r Request, out any) (*Response, error) {
	resp, err := c.Do(ctx, r)
	if err != nil {
		return nil, err
	}
	if out != nil && len(resp.Body) > 0 {
		if err := json.Unmarshal(resp.Body, out); err != nil {
			return nil, fmt.Errorf("decoding the answer of %s %s: %w", r.Method, r.Path, err)
		}
	}
	return resp, nil
}

func (c *Client) newRequest(ctx context.Context, r Request) (*http.Request, error) {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + r.Path
	if len(r.Query) > 0 {
		u.RawQuery = r.Query.Encode()
	}
	var body io.Reader
	if r.Body != nil {
		raw, err := json.Marshal(r.Body)
		if err != nil {
			return nil, fmt.Errorf("encoding the request body: %w", err)
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("building the request: %w", err)
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if r.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if !r.NoAuth && c.tokens != nil {
		tok, err := c.tokens.Token(ctx)
		if err != nil {
			return nil, err
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	return req, nil
}

func (c *Client) do(ctx context.Context, r Request) (*Response, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = c.cfg.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := c.newRequest(ctx, r)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &NetworkError{Err: fmt.Errorf("%s %s: %w", r.Method, r.Path, err)}
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, &NetworkError{Err: fmt.Errorf("reading the answer of %s %s: %w", r.Method, r.Path, err)}
	}
	if resp.StatusCode >= 400 {
		return nil, apiError(r.Method, r.Path, resp, raw)
	}
	return &Response{Status: resp.StatusCode, Body: raw, RequestID: resp.Header.Get("X-Request-ID")}, nil
}

func apiError(method, path string, resp *http.Response, raw []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-ID"), Method: method, Path: path}
	if json.Unmarshal(raw, &e.Problem) != nil || e.Problem.Title == "" {
		// Not a problem document (a proxy's page): show its first line.
		e.Problem = Problem{Title: http.StatusText(resp.StatusCode)}
		if line, _, _ := strings.Cut(strings.TrimSpace(string(raw)), "\n"); line != "" && len(line) <= 200 {
			e.Problem.Detail = line
		}
	}
	return e
}

// Token is the answer of POST /api/v1/auth/token.
type Token struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	TokenType string    `json:"token_type"`
}

// ExchangeAPIKey trades an API key for a short-lived token.
func (c *Client) ExchangeAPIKey(ctx context.Context, apiKey string) (Token, error) {
	var t Token
	_, err := c.JSON(ctx, Request{Method: http.MethodPost, Path: "/api/v1/auth/token", Body: map[string]string{"api_key": apiKey}, NoAuth: true}, &t)
	if err != nil {
		return Token{}, err
	}
	if t.Token == "" {
		return Token{}, errors.New("the server answered the token exchange without a token")
	}
	return t, nil
}
