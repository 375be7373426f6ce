package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/viworks/backend-agent/viworksctl/client"
	"github.com/viworks/backend-agent/viworksctl/config"
)

// refreshBefore is how long before its expiry a stored token is replaced.
const refreshBefore = 2 * time.Minute

// session is the credentials of one context: VIWORKS_TOKEN as is, or the
// stored token, exchanged again for the stored API key before it expires or
// once the server refuses it.
type session struct {
	mu       sync.Mutex
	path     string
	file     *config.File
	name     string
	ctx      *config.Context
	envToken string
	exchange *client.Client // without credentials: POST /auth/token
	now      func() time.Time
}

var errNotLoggedIn = errors.New("not logged in: run `viworksctl login --server URL` or set VIWORKS_TOKEN")

func (s *session) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.envToken != "" {
		return s.envToken, nil
	}
	if s.ctx.Token != "" && s.ctx.TokenExpiresAt != nil && s.now().Add(refreshBefore).Before(*s.ctx.TokenExpiresAt) {
		return s.ctx.Token, nil
	}
	if s.ctx.APIKey == "" {
		if s.ctx.Token != "" {
			return s.ctx.Token, nil // no key to refresh it with: let the server judge
		}
		return "", withCode(ExitAuth, errNotLoggedIn)
	}
	return s.refreshLocked(ctx)
}

func (s *session) Refresh(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.envToken != "" || s.ctx.APIKey == "" {
		return "", nil
	}
	return s.refreshLocked(ctx)
}

func (s *session) refreshLocked(ctx context.Context) (string, error) {
	t, err := s.exchange.ExchangeAPIKey(ctx, s.ctx.APIKey)
	if err != nil {
		return "", fmt.Errorf("exchanging the API key of context %q for a token: %w", s.name, err)
	}
	s.ctx.Token = t.Token
	exp := t.ExpiresAt.UTC()
	s.ctx.TokenExpiresAt = &exp
	if err := s.file.Save(s.path); err != nil {
		return "", err
	}
	return t.Token, nil
}

// load reads the configuration file and picks the context.
func (a *app) load() (path string, f *config.File, name string, err error) {
	path, err = a.path()
	if err != nil {
		return "", nil, "", err
	}
	f, err = config.Load(path)
	if err != nil {
		return "", nil, "", withCode(ExitUsage, err)
	}
	name = a.contextName
	if name == "" {
		name = f.CurrentContext
	}
	if name == "" {
		name = config.DefaultContext
	}
	return path, f, name, nil
}

// client is an API client of the chosen context, with VIWORKS_SERVER and
// VIWORKS_TOKEN applied.
func (a *app) client() (*client.Client, error) {
	path, f, name, err := a.load()
	if err != nil {
		return nil, err
	}
	c, ok := f.Contexts[name]
	if !ok {
		if a.contextName != "" {
			return nil, withCode(ExitNotFound, fmt.Errorf("no context %q in %s (viworksctl config get-contexts lists them)", name, path))
		}
		c = &config.Context{}
	}
	server := c.Server
	if v := strings.TrimRight(a.io.Getenv("VIWORKS_SERVER"), "/"); v != "" && v != c.Server {
		// The context's key and token belong to its server: never send them
		// to another one.
		server, c = v, &config.Context{}
	}
	cfg := client.Config{Server: server}
	if err := cfg.Validate(); err != nil {
		return nil, withCode(ExitUsage, err)
	}
	exchange, err := client.New(nil, cfg)
	if err != nil {
		return nil, withCode(ExitUsage, err)
	}
	s := &session{path: path, file: f, name: name, ctx: c, envToken: a.io.Getenv("VIWORKS_TOKEN"), exchange: exchange, now: time.Now}
	if s.envToken == "" && c.Token == "" && c.APIKey == "" {
		return nil, withCode(ExitAuth, fmt.Errorf("%w (no credentials for %s in context %q)", errNotLoggedIn, server, name))
	}
	return client.New(s, cfg)
}
