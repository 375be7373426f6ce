package agentsdk

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// hostSampleMinInterval is how long a host sample is reused: calls closer
// together than this get a copy of the previous sample, so many agents
// sharing one sampler read /proc at most once per interval, and cpu_percent
// is always measured over at least this long.
const hostSampleMinInterval = time.Second

// HostTelemetry returns a Config.Telemetry function that reports the metrics
// of the machine it runs on, read from Linux's /proc and statfs(2):
//
//   - cpu_percent: busy share of all CPUs since the previous sample (0 on the
//     first), from /proc/stat
//   - mem_percent, mem_used_bytes (MemTotal - MemAvailable), mem_total_bytes:
//     from /proc/meminfo
//   - disk_percent, disk_used_bytes, disk_total_bytes: the file system holding
//     "/" (statfs(2); the percentage as df counts it)
//   - load1, load5, load15: from /proc/loadavg
//   - net_rx_bytes, net_tx_bytes: counters summed over every interface but
//     "lo", from /proc/net/dev
//   - uptime_s: from /proc/uptime
//
// A metric whose source cannot be read or parsed (on other systems, all of
// them) is left out; the function never panics and returns an empty map when
// nothing is readable, which the Agent sends no TELEMETRY for. The function is
// safe for concurrent use; calls less than a second apart return a copy of the
// previous sample, so one sampler can serve many agents.
func HostTelemetry() func() map[string]float64 {
	return HostTelemetryMounts()
}

// HostTelemetryMounts is HostTelemetry with disk_percent, disk_used_bytes and
// disk_total_bytes also reported for each file system mounted at one of
// mounts, named "<metric>:<mount>" with the mount path's slashes as
// underscores ("disk_used_bytes:var_lib" for /var/lib, "…:root" for /): the
// names the telemetry API and alert rules accept.
func HostTelemetryMounts(mounts ...string) func() map[string]float64 {
	s := &hostSampler{proc: "/proc", root: "/", mounts: slices.Clone(mounts), minInterval: hostSampleMinInterval}
	return s.sample
}

// MountMetricSuffix is the suffix HostTelemetryMounts names a mount's metrics
// with: "root" for "/", otherwise the path without its leading and trailing
// slashes, every other byte outside A-Z a-z 0-9 _ . - as "_".
func MountMetricSuffix(mount string) string {
	p := strings.Trim(filepath.Clean(mount), "/")
	if p == "" || p == "." {
		return "root"
	}
	b := []byte(p)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// hostSampler reads host metrics from the proc file system mounted at proc
// and the file system holding root.
type hostSampler struct {
	proc, root  string
	mounts      []string
	minInterval time.Duration

	mu      sync.Mutex
	prevCPU procCPUTimes
	haveCPU bool
	cpuPct  float64
	last    map[string]float64
	lastAt  time.Time
}

func (s *hostSampler) sample() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.last != nil && s.minInterval > 0 && now.Sub(s.lastAt) < s.minInterval && now.Sub(s.lastAt) >= 0 {
		return maps.Clone(s.last)
	}
	m := make(map[string]float64, 12)

	var cpu procCPUTimes
	if s.read("stat", func(r io.Reader) (err error) { cpu, err = parseProcStat(r); return err }) {
		m["cpu_percent"] = hostRound2(s.cpuPercent(cpu))
	}
	var mem procMemInfo
	if s.read("meminfo", func(r io.Reader) (err error) { mem, err = parseMeminfo(r); return err }) {
		used := mem.total - min(mem.available, mem.total)
		m["mem_used_bytes"] = float64(used)
		m["mem_total_bytes"] = float64(mem.total)
		m["mem_percent"] = hostRound2(100 * float64(used) / float64(mem.total))
	}
	addDisk(m, "", s.root)
	for _, mnt := range s.mounts {
		addDisk(m, ":"+MountMetricSuffix(mnt), mnt)
	}
	var load [3]float64
	if s.read("loadavg", func(r io.Reader) (err error) { load, err = parseLoadavg(r); return err }) {
		m["load1"], m["load5"], m["load15"] = load[0], load[1], load[2]
	}
	var rx, tx uint64
	if s.read(filepath.Join("net", "dev"), func(r io.Reader) (err error) { rx, tx, err = parseNetDev(r); return err }) {
		m["net_rx_bytes"], m["net_tx_bytes"] = float64(rx), float64(tx)
	}
	var up float64
	if s.read("uptime", func(r io.Reader) (err error) { up, err = parseUptime(r); return err }) {
		m["uptime_s"] = up
	}

	s.last, s.lastAt = m, now
	return maps.Clone(m)
}

// read opens name under the proc directory and parses it; false when either
// fails.
func (s *hostSampler) read(name string, parse func(io.Reader) error) bool {
	f, err := os.Open(filepath.Join(s.proc, name))
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }()
	return parse(f) == nil
}

// cpuPercent turns a /proc/stat reading into the busy percentage since the
// previous reading (0 for the first). When no time passed the previous value
// is kept; counters that went backwards (CPU hot-unplug) restart the baseline.
func (s *hostSampler) cpuPercent(cur procCPUTimes) float64 {
	if !s.haveCPU || cur.total < s.prevCPU.total {
		s.prevCPU, s.haveCPU = cur, true
		return s.cpuPct
	}
	dTotal := cur.total - s.prevCPU.total
	if dTotal == 0 {
		return s.cpuPct
	}
	// iowait may go backwards on tickless kernels: clamp instead of trusting it.
	dIdle := float64(cur.idle) - float64(s.prevCPU.idle)
	s.cpuPct = min(max(100*(float64(dTotal)-dIdle)/float64(dTotal), 0), 100)
	s.prevCPU = cur
	return s.cpuPct
}

// hostDiskUsage reports the size, free and available bytes of the file system
// holding path; it is set on
// systems that have statfs(2) and reports false elsewhere.
var hostDiskUsage = func(path string) (blocks, free, avail uint64, ok bool) { return 0, 0, 0, false }

// addDisk adds the disk metrics of the file system holding path, their names
// ending with suffix.
func addDisk(m map[string]float64, suffix, path string) {
	total, free, avail, ok := hostDiskUsage(path)
	if !ok {
		return
	}
	if pct, ok := hostDiskPercentOf(total, free, avail); ok {
		m["disk_percent"+suffix] = hostRound2(pct)
		m["disk_used_bytes"+suffix] = float64(total - free)
		m["disk_total_bytes"+suffix] = float64(total)
	}
}

// hostDiskPercent is the used share of the file system holding path, as df(1)
// computes it: used / (used + available to unprivileged users).
func hostDiskPercent(path string) (float64, bool) {
	blocks, free, avail, ok := hostDiskUsage(path)
	if !ok {
		return 0, false
	}
	return hostDiskPercentOf(blocks, free, avail)
}

func hostDiskPercentOf(blocks, free, avail uint64) (float64, bool) {
	if free > blocks {
		return 0, false
	}
	used := blocks - free
	if used+avail == 0 {
		return 0, false
	}
	return 100 * float64(used) / float64(used+avail), true
}

// procCPUTimes is the aggregate CPU time of /proc/stat, in clock ticks.
type procCPUTimes struct {
	total uint64 // user+nice+system+idle+iowait+irq+softirq+steal
	idle  uint64 // idle+iowait
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat. guest and
// guest_nice are left out of the total: user and nice already include them.
func parseProcStat(r io.Reader) (procCPUTimes, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "cpu" {
			continue
		}
		if len(fields) < 5 {
			return procCPUTimes{}, errors.New("/proc/stat: short cpu line")
		}
		var t procCPUTimes
		for i, f := range fields[1:min(len(fields), 9)] {
			v, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return procCPUTimes{}, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
			}
			t.total += v
			if i == 3 || i == 4 { // idle, iowait
				t.idle += v
			}
		}
		return t, nil
	}
	if err := sc.Err(); err != nil {
		return procCPUTimes{}, err
	}
	return procCPUTimes{}, errors.New("/proc/stat: no cpu line")
}

// procMemInfo is the part of /proc/meminfo the sampler uses, in bytes.
type procMemInfo struct {
	total, available uint64
}

// parseMeminfo reads MemTotal and MemAvailable from /proc/meminfo. Kernels
// older than 3.14 have no MemAvailable: MemFree+Buffers+Cached stands in.
func parseMeminfo(r io.Reader) (procMemInfo, error) {
	vals := map[string]uint64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch key {
		case "MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached":
		default:
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return procMemInfo{}, fmt.Errorf("/proc/meminfo: %s has no value", key)
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return procMemInfo{}, fmt.Errorf("/proc/meminfo: %s: %w", key, err)
		}
		if len(fields) > 1 && fields[1] == "kB" {
			v *= 1024
		}
		vals[key] = v
	}
	if err := sc.Err(); err != nil {
		return procMemInfo{}, err
	}
	total, ok := vals["MemTotal"]
	if !ok || total == 0 {
		return procMemInfo{}, errors.New("/proc/meminfo: no MemTotal")
	}
	avail, ok := vals["MemAvailable"]
	if !ok {
		free, hasFree := vals["MemFree"]
		if !hasFree {
			return procMemInfo{}, errors.New("/proc/meminfo: neither MemAvailable nor MemFree")
		}
		avail = free + vals["Buffers"] + vals["Cached"]
	}
	return procMemInfo{total: total, available: avail}, nil
}

// parseLoadavg reads the 1, 5 and 15 minute load averages of /proc/loadavg.
func parseLoadavg(r io.Reader) ([3]float64, error) {
	var load [3]float64
	line, err := procFirstLine(r)
	if err != nil {
		return load, fmt.Errorf("/proc/loadavg: %w", err)
	}
	fields := strings.Fields(line)
	if len(fields) < 3 {
		return load, errors.New("/proc/loadavg: fewer than 3 fields")
	}
	for i := range load {
		v, err := parseProcFloat(fields[i])
		if err != nil {
			return [3]float64{}, fmt.Errorf("/proc/loadavg: %w", err)
		}
		load[i] = v
	}
	return load, nil
}

// parseNetDev sums the received and transmitted bytes of /proc/net/dev over
// every interface but the loopback "lo".
func parseNetDev(r io.Reader) (rx, tx uint64, err error) {
	sc := bufio.NewScanner(r)
	seen := false
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue // the two header lines
		}
		name = strings.TrimSpace(name)
		fields := strings.Fields(rest)
		if len(fields) < 9 {
			return 0, 0, fmt.Errorf("/proc/net/dev: %s: fewer than 9 fields", name)
		}
		r, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/net/dev: %s: %w", name, err)
		}
		t, err := strconv.ParseUint(fields[8], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/net/dev: %s: %w", name, err)
		}
		seen = true
		if name == "lo" {
			continue
		}
		rx += r
		tx += t
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !seen {
		return 0, 0, errors.New("/proc/net/dev: no interface")
	}
	return rx, tx, nil
}

// parseUptime reads the seconds since boot from /proc/uptime.
func parseUptime(r io.Reader) (float64, error) {
	line, err := procFirstLine(r)
	if err != nil {
		return 0, fmt.Errorf("/proc/uptime: %w", err)
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return 0, errors.New("/proc/uptime: empty")
	}
	v, err := parseProcFloat(fields[0])
	if err != nil {
		return 0, fmt.Errorf("/proc/uptime: %w", err)
	}
	return v, nil
}

func procFirstLine(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	if sc.Scan() {
		return sc.Text(), nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", io.ErrUnexpectedEOF
}

func parseProcFloat(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	if v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is out of range", s)
	}
	return v, nil
}

func hostRound2(v float64) float64 { return math.Round(v*100) / 100 }
