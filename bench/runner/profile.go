package runner

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// profiler captures CPU profiles of the services while a scenario measures,
// when the run was started with profiling on (BENCH_PROFILE=1: the services
// then serve /debug/pprof/, VIWORKS_PPROF=1).
type profiler struct {
	dir   string // "" when profiling is off
	stamp string
}

// capture starts a CPU profile of each named service (name → base URL) for
// d and returns a function that waits for them and writes
// DIR/profile-STAMP-SCENARIO-NAME.pb.gz.
func (p profiler) capture(ctx context.Context, scenario string, d time.Duration, services map[string]string) func() []string {
	if p.dir == "" {
		return func() []string { return nil }
	}
	type done struct {
		path string
		err  error
	}
	ch := make(chan done, len(services))
	for name, base := range services {
		go func() {
			path := filepath.Join(p.dir, fmt.Sprintf("profile-%s-%s-%s.pb.gz", p.stamp, scenario, name))
			ch <- done{path, fetchProfile(ctx, base, d, path)}
		}()
	}
	return func() []string {
		var out []string
		for range services {
			r := <-ch
			if r.err != nil {
				out = append(out, fmt.Sprintf("%s: %v", r.path, r.err))
				continue
			}
			out = append(out, r.path)
		}
		return out
	}
}

func fetchProfile(ctx context.Context, base string, d time.Duration, path string) error {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: d + 30*time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("fetching profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching profile: status %d (is VIWORKS_PPROF on?)", resp.StatusCode)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading profile: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}
