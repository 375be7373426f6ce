package gateway_test

import (
	"bufio"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/viworks/backend-agent/agent-gateway/gateway"
)

// BenchmarkIdleSessionMemory measures what an idle session costs the
// gateway: IDLE_SESSIONS agents (default 3,000) connected by a child process
// (so their side of the sockets is not counted) to a real gateway, then the
// gateway process's heap in use, goroutine stacks and RSS, after a forced
// collection, against the same before they connected, per session.
func BenchmarkIdleSessionMemory(b *testing.B) {
	n := 3000
	if v, err := strconv.Atoi(os.Getenv("IDLE_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	profile := os.Getenv("IDLE_HEAP_PROFILE") // a heap profile of the connected gateway, every allocation sampled
	if profile != "" {
		runtime.MemProfileRate = 1
	}
	f := start(b, gateway.Config{MaxConnections: n + 10})
	for range b.N {
		before := settledMemory(b)
		if profile != "" {
			writeHeapProfile(b, profile+".before")
		}
		child := exec.Command(os.Args[0], "-test.run=^TestIdleAgentsChild$", "-test.v")
		child.Env = append(os.Environ(), "IDLE_CHILD_URL="+f.srv.URL, "IDLE_CHILD_AGENTS="+strconv.Itoa(n), "IDLE_CHILD_PREFIX=idle-"+strconv.Itoa(b.N)+"-")
		stdin, err := child.StdinPipe()
		require.NoError(b, err)
		stdout, err := child.StdoutPipe()
		require.NoError(b, err)
		child.Stderr = os.Stderr
		require.NoError(b, child.Start())
		ready := false
		for sc := bufio.NewScanner(stdout); sc.Scan(); {
			if sc.Text() == "ready" {
				ready = true
				break
			}
		}
		require.True(b, ready, "the child connected its agents")
		time.Sleep(2 * time.Second) // the handshakes' batches and garbage settle
		after := settledMemory(b)
		if profile != "" {
			writeHeapProfile(b, profile)
		}
		_ = stdin.Close()
		_ = child.Wait()
		per := func(a, z uint64) float64 { return (float64(z) - float64(a)) / float64(n) }
		b.ReportMetric(per(before.heap, after.heap), "heap-B/session")
		b.ReportMetric(per(before.stack, after.stack), "stack-B/session")
		b.ReportMetric(per(before.heap+before.stack, after.heap+after.stack), "B/session")
		b.ReportMetric(per(before.rss, after.rss), "rss-B/session")
		b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/session")
	}
}

func writeHeapProfile(t testing.TB, path string) {
	t.Helper()
	out, err := os.Create(path)
	require.NoError(t, err)
	require.NoError(t, pprof.Lookup("heap").WriteTo(out, 0))
	require.NoError(t, out.Close())
}

type memory struct {
	heap, stack, rss uint64
	goroutines       int
}

func settledMemory(t testing.TB) memory {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	var rss uint64
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			require.NoError(t, err)
			rss = kib << 10
		}
	}
	return memory{heap: ms.HeapInuse, stack: ms.StackInuse, rss: rss, goroutines: runtime.NumGoroutine()}
}

// TestIdleAgentsChild is BenchmarkIdleSessionMemory's child process: it
// enrolls and connects its agents, says "ready" and holds them idle until its
// standard input closes. Without the benchmark's environment it does nothing.
func TestIdleAgentsChild(t *testing.T) {
	url := os.Getenv("IDLE_CHILD_URL")
	if url == "" {
		t.Skip("run by BenchmarkIdleSessionMemory")
	}
	n, err := strconv.Atoi(os.Getenv("IDLE_CHILD_AGENTS"))
	require.NoError(t, err)
	f := fixture{srv: &httptest.Server{URL: url}}
	var wg sync.WaitGroup
	ids := make(chan int)
	errs := make(chan error, n)
	for range 32 {
		wg.Go(func() {
			for i := range ids {
				c, err := f.connect(fmt.Sprintf("%s%d", os.Getenv("IDLE_CHILD_PREFIX"), i))
				if err != nil {
					errs <- err
					continue
				}
				t.Cleanup(func() { _ = c.Close() })
			}
		})
	}
	for i := range n {
		ids <- i
	}
	close(ids)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString(0)
}
