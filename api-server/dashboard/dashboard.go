// Package dashboard is the operator dashboard served at / by every
// api-server (and bin/viworks): one HTML page and plain ES modules, all
// embedded, that talk to the REST API with a token held in memory only.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// CSP is the Content-Security-Policy of every dashboard response: scripts
// and styles only from this origin (no inline code, no eval), API calls only
// to this origin, never framed.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"

// Config configures the dashboard.
type Config struct {
	// Prefix is the path the static files are served under (default /ui/).
	Prefix string
	// Title is shown in the page's title and header (default "ViWorkS").
	Title string
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = "/ui/"
	}
	if c.Title == "" {
		c.Title = "ViWorkS"
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if !strings.HasPrefix(c.Prefix, "/") || !strings.HasSuffix(c.Prefix, "/") || c.Prefix == "/" || strings.HasPrefix(c.Prefix, "/api/") {
		return fmt.Errorf("dashboard: prefix %q must be a path like /ui/ outside /api/", c.Prefix)
	}
	return nil
}

// Dashboard serves the page and its files.
type Dashboard struct {
	cfg    Config
	page   []byte // the rendered index page
	static http.Handler
}

// New renders the page once; the files are served from the binary.
func New(cfg Config) (*Dashboard, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	files, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("dashboard: opening the embedded files: %w", err)
	}
	version, err := digest(files)
	if err != nil {
		return nil, err
	}
	tmpl, err := template.ParseFS(files, "index.html.tmpl")
	if err != nil {
		return nil, fmt.Errorf("dashboard: parsing the page: %w", err)
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, map[string]string{"Title": cfg.Title, "Static": cfg.Prefix, "Version": version})
	if err != nil {
		return nil, fmt.Errorf("dashboard: rendering the page: %w", err)
	}
	return &Dashboard{cfg: cfg, page: buf.Bytes(), static: http.StripPrefix(cfg.Prefix, http.FileServerFS(files))}, nil
}

// digest is a short hash of every embedded file: the page names its scripts
// with it, so a new build is never served from a stale cache.
func digest(files fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(b))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("dashboard: hashing the embedded files: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// Register mounts the page at / and the files under the prefix.
func (d *Dashboard) Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", d.Handler())
	mux.Handle("GET "+d.cfg.Prefix, d.Handler())
}

// Handler serves the page (at /) and the static files (under the prefix),
// with the security headers on every answer.
func (d *Dashboard) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		switch {
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		case r.URL.Path == "/":
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Cache-Control", "no-store")
			http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(d.page))
		case strings.HasPrefix(r.URL.Path, d.cfg.Prefix) && servable(strings.TrimPrefix(r.URL.Path, d.cfg.Prefix)):
			h.Set("Cache-Control", "public, max-age=300")
			d.static.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// servable: a file of the page (no directory listing, not the template).
func servable(name string) bool {
	switch path.Ext(name) {
	case ".js", ".css", ".svg":
		return !strings.Contains(name, "..")
	}
	return false
}
