package agentsdk

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const statFixture = `cpu  4705 356 584 3699 23 0 27 5 11 0
cpu0 1393 280 254 1849 12 0 12 3 5 0
cpu1 3312 76 330 1850 11 0 15 2 6 0
intr 114930548 113199788 3 0 5 263 0 4 [... 65 more]
ctxt 1990473
btime 1062191376
processes 2915
`

const meminfoFixture = `MemTotal:       16384000 kB
MemFree:         1024000 kB
MemAvailable:    4096000 kB
Buffers:          512000 kB
Cached:          2048000 kB
SwapCached:            0 kB
HugePages_Total:       0
`

const netDevFixture = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9000000    1000    0    0    0     0          0         0  9000000    1000    0    0    0     0       0          0
  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
 wlan0:300 3 0 0 0 0 0 0 400 4 0 0 0 0 0 0
`

func TestParseProcStat(t *testing.T) {
	got, err := parseProcStat(strings.NewReader(statFixture))
	require.NoError(t, err)
	// user..steal; guest and guest_nice are already in user and nice.
	require.Equal(t, procCPUTimes{total: 4705 + 356 + 584 + 3699 + 23 + 0 + 27 + 5, idle: 3699 + 23}, got)

	// Old kernels: only user nice system idle.
	got, err = parseProcStat(strings.NewReader("cpu 10 20 30 40\n"))
	require.NoError(t, err)
	require.Equal(t, procCPUTimes{total: 100, idle: 40}, got)

	for name, in := range map[string]string{
		"empty":    "",
		"no cpu":   "cpu0 1 2 3 4 5\nctxt 5\n",
		"short":    "cpu 1 2 3\n",
		"garbage":  "cpu 1 2 x 4 5\n",
		"negative": "cpu 1 2 -3 4 5\n",
	} {
		_, err := parseProcStat(strings.NewReader(in))
		require.Error(t, err, name)
	}
}

func TestParseMeminfo(t *testing.T) {
	got, err := parseMeminfo(strings.NewReader(meminfoFixture))
	require.NoError(t, err)
	require.Equal(t, procMemInfo{total: 16384000 * 1024, available: 4096000 * 1024}, got)

	// Before Linux 3.14 there is no MemAvailable.
	got, err = parseMeminfo(strings.NewReader("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n"))
	require.NoError(t, err)
	require.Equal(t, procMemInfo{total: 1000 * 1024, available: 400 * 1024}, got)

	for name, in := range map[string]string{
		"empty":    "",
		"no total": "MemFree: 100 kB\nMemAvailable: 50 kB\n",
		"zero":     "MemTotal: 0 kB\nMemAvailable: 0 kB\n",
		"no free":  "MemTotal: 100 kB\n",
		"garbage":  "MemTotal: lots kB\nMemAvailable: 1 kB\n",
		"no value": "MemTotal:\nMemAvailable: 1 kB\n",
	} {
		_, err := parseMeminfo(strings.NewReader(in))
		require.Error(t, err, name)
	}
}

func TestParseLoadavg(t *testing.T) {
	got, err := parseLoadavg(strings.NewReader("0.52 1.75 12.00 2/1234 56789\n"))
	require.NoError(t, err)
	require.Equal(t, [3]float64{0.52, 1.75, 12}, got)

	for name, in := range map[string]string{
		"empty":    "",
		"short":    "0.1 0.2\n",
		"garbage":  "0.1 x 0.3 1/2 3\n",
		"negative": "0.1 -0.2 0.3 1/2 3\n",
		"inf":      "0.1 0.2 +Inf 1/2 3\n",
	} {
		_, err := parseLoadavg(strings.NewReader(in))
		require.Error(t, err, name)
	}
}

func TestParseNetDev(t *testing.T) {
	rx, tx, err := parseNetDev(strings.NewReader(netDevFixture))
	require.NoError(t, err)
	require.Equal(t, uint64(1300), rx, "lo is left out")
	require.Equal(t, uint64(2400), tx)

	// Only loopback: zero, not an error.
	rx, tx, err = parseNetDev(strings.NewReader("h1\nh2\n lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"))
	require.NoError(t, err)
	require.Zero(t, rx)
	require.Zero(t, tx)

	for name, in := range map[string]string{
		"empty":     "",
		"headers":   "Inter-|   Receive  |  Transmit\n face |bytes packets|bytes packets\n",
		"short":     "h\n eth0: 1 2 3\n",
		"garbage":   "h\n eth0: x 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n",
		"bad tx":    "h\n eth0: 1 1 0 0 0 0 0 0 -5 1 0 0 0 0 0 0\n",
		"bad in lo": "h\n lo: 1 1 0 0 0 0 0 0 y 1 0 0 0 0 0 0\n",
	} {
		_, _, err := parseNetDev(strings.NewReader(in))
		require.Error(t, err, name)
	}
}

func TestParseUptime(t *testing.T) {
	got, err := parseUptime(strings.NewReader("350735.47 234388.90\n"))
	require.NoError(t, err)
	require.Equal(t, 350735.47, got)

	for name, in := range map[string]string{"empty": "", "blank": "\n", "garbage": "up 5\n", "negative": "-1 2\n"} {
		_, err := parseUptime(strings.NewReader(in))
		require.Error(t, err, name)
	}
}

func TestHostDiskPercentOf(t *testing.T) {
	// df: used / (used + available to unprivileged users).
	pct, ok := hostDiskPercentOf(1000, 400, 300)
	require.True(t, ok)
	require.InDelta(t, 100*600.0/900, pct, 1e-9)

	_, ok = hostDiskPercentOf(0, 0, 0)
	require.False(t, ok, "empty file system")
	_, ok = hostDiskPercentOf(10, 20, 5)
	require.False(t, ok, "more free than blocks")
}

// writeProc lays out a fake proc directory.
func writeProc(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}

func TestHostSamplerFixtures(t *testing.T) {
	dir := t.TempDir()
	writeProc(t, dir, map[string]string{
		"stat":    "cpu 100 0 100 800 0 0 0 0 0 0\n",
		"meminfo": meminfoFixture,
		"loadavg": "0.50 0.25 0.10 1/100 4242\n",
		"net/dev": netDevFixture,
		"uptime":  "123.45 67.89\n",
	})
	s := &hostSampler{proc: dir, root: filepath.Join(dir, "no-such-dir")}
	first := s.sample()
	require.Equal(t, map[string]float64{
		"cpu_percent":     0, // no previous sample yet
		"mem_used_bytes":  (16384000 - 4096000) * 1024,
		"mem_total_bytes": 16384000 * 1024,
		"mem_percent":     75,
		"load1":           0.5, "load5": 0.25, "load15": 0.1,
		"net_rx_bytes": 1300, "net_tx_bytes": 2400,
		"uptime_s": 123.45,
	}, first, "disk_percent is absent: its path does not exist")

	// 1000 more ticks, 250 of them idle: 75% busy.
	writeProc(t, dir, map[string]string{"stat": "cpu 500 100 200 1000 50 50 100 0 0 0\n"})
	require.Equal(t, 75.0, s.sample()["cpu_percent"])
	// No tick passed: the last value stays.
	require.Equal(t, 75.0, s.sample()["cpu_percent"])
	// 100 more ticks, all idle (iowait going backwards is clamped).
	writeProc(t, dir, map[string]string{"stat": "cpu 500 100 200 1110 40 50 100 0 0 0\n"})
	require.Equal(t, 0.0, s.sample()["cpu_percent"])
	// Counters going backwards restart the baseline and keep the last value.
	writeProc(t, dir, map[string]string{"stat": "cpu 1 1 1 1 0 0 0 0 0 0\n"})
	require.Equal(t, 0.0, s.sample()["cpu_percent"])
	writeProc(t, dir, map[string]string{"stat": "cpu 3 1 1 3 0 0 0 0 0 0\n"})
	require.Equal(t, 50.0, s.sample()["cpu_percent"])

	// Unreadable or broken sources drop their metrics only.
	require.NoError(t, os.Remove(filepath.Join(dir, "uptime")))
	writeProc(t, dir, map[string]string{"loadavg": "broken\n", "meminfo": "nothing useful\n"})
	got := s.sample()
	for _, k := range []string{"uptime_s", "load1", "load5", "load15", "mem_percent", "mem_used_bytes", "mem_total_bytes"} {
		require.NotContains(t, got, k)
	}
	require.Contains(t, got, "cpu_percent")
	require.Contains(t, got, "net_rx_bytes")

	// Nothing at all (another OS): an empty sample, no panic.
	empty := (&hostSampler{proc: filepath.Join(dir, "missing"), root: filepath.Join(dir, "missing")}).sample()
	require.Empty(t, empty)
	require.NotNil(t, empty)
}

func TestHostSamplerReusesRecentSample(t *testing.T) {
	dir := t.TempDir()
	writeProc(t, dir, map[string]string{"stat": "cpu 1 0 0 1 0\n", "uptime": "1.00 1.00\n"})
	s := &hostSampler{proc: dir, root: dir, minInterval: time.Hour}
	first := s.sample()
	require.Equal(t, 1.0, first["uptime_s"])
	first["uptime_s"] = -1 // callers get copies
	writeProc(t, dir, map[string]string{"uptime": "2.00 1.00\n"})
	require.Equal(t, 1.0, s.sample()["uptime_s"], "within minInterval the previous sample is reused")

	s.lastAt = s.lastAt.Add(-2 * time.Hour)
	require.Equal(t, 2.0, s.sample()["uptime_s"])
}

func TestHostTelemetryConcurrent(t *testing.T) {
	dir := t.TempDir()
	writeProc(t, dir, map[string]string{"stat": "cpu 1 0 0 1 0\n", "loadavg": "1 2 3 1/1 1\n"})
	s := &hostSampler{proc: dir, root: dir}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				m := s.sample()
				m["load1"]++ // each caller owns its map
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1.0, s.sample()["load1"])
}

// TestHostTelemetryRealHost samples the machine the test runs on and checks
// the numbers are plausible; metrics whose source is missing are skipped.
func TestHostTelemetryRealHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		m := HostTelemetry()()
		require.NotNil(t, m)
		t.Skipf("no /proc on %s", runtime.GOOS)
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join("/proc", name))
		return err == nil
	}
	sample := HostTelemetry()
	first := sample()
	if exists("stat") {
		require.Equal(t, 0.0, first["cpu_percent"], "first cpu_percent is 0")
	}
	// Burn some CPU past the reuse interval so the second sample measures it.
	deadline := time.Now().Add(hostSampleMinInterval + 100*time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	m := sample()

	percent := func(k string) {
		t.Helper()
		require.Contains(t, m, k)
		require.GreaterOrEqual(t, m[k], 0.0, k)
		require.LessOrEqual(t, m[k], 100.0, k)
	}
	if exists("stat") {
		percent("cpu_percent")
		require.Greater(t, m["cpu_percent"], 0.0, "a busy loop ran")
	}
	if exists("meminfo") {
		percent("mem_percent")
		require.Greater(t, m["mem_percent"], 0.0)
		require.Greater(t, m["mem_used_bytes"], float64(1<<20))
		require.Less(t, m["mem_used_bytes"], float64(1<<50))
	}
	if _, ok := hostDiskPercent("/"); ok {
		percent("disk_percent")
		require.Greater(t, m["disk_total_bytes"], 0.0)
		require.LessOrEqual(t, m["disk_used_bytes"], m["disk_total_bytes"])
	} else {
		require.NotContains(t, m, "disk_percent")
	}
	if exists("loadavg") {
		for _, k := range []string{"load1", "load5", "load15"} {
			require.Contains(t, m, k)
			require.GreaterOrEqual(t, m[k], 0.0, k)
			require.Less(t, m[k], 100000.0, k)
		}
	}
	if exists("net/dev") {
		require.GreaterOrEqual(t, m["net_rx_bytes"], first["net_rx_bytes"])
		require.GreaterOrEqual(t, m["net_tx_bytes"], first["net_tx_bytes"])
	}
	if exists("uptime") {
		require.Greater(t, m["uptime_s"], 0.0)
		require.GreaterOrEqual(t, m["uptime_s"], first["uptime_s"])
	}
	t.Logf("host telemetry: %v", m)
}

func TestHostTelemetryMounts(t *testing.T) {
	for _, tc := range []struct{ mount, want string }{
		{"/", "root"}, {"/var/lib", "var_lib"}, {"/srv/", "srv"}, {"/mnt/a b", "mnt_a_b"}, {"/x:y", "x_y"},
	} {
		require.Equal(t, tc.want, MountMetricSuffix(tc.mount), tc.mount)
	}
	if runtime.GOOS != "linux" {
		t.Skipf("no statfs on %s", runtime.GOOS)
	}
	dir := t.TempDir()
	m := HostTelemetryMounts("/", dir, filepath.Join(dir, "missing"))()
	var st syscall.Statfs_t
	require.NoError(t, syscall.Statfs(dir, &st))
	suffix := ":" + MountMetricSuffix(dir)
	require.Equal(t, float64(st.Blocks*uint64(st.Bsize)), m["disk_total_bytes"+suffix])
	require.LessOrEqual(t, m["disk_used_bytes"+suffix], m["disk_total_bytes"+suffix])
	require.Contains(t, m, "disk_percent:root")
	require.NotContains(t, m, "disk_total_bytes:"+MountMetricSuffix(filepath.Join(dir, "missing")), "a missing mount reports nothing")
}
