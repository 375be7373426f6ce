package service

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
)

// MemoryPolicy is how a binary sizes its garbage collector. The Go runtime's
// own variables win: GOGC and GOMEMLIMIT, when set, are left alone.
type MemoryPolicy struct {
	// GOGC is the collector's target percentage when GOGC is unset (0: the
	// runtime's 100). Lower trades CPU for memory: a heap of mostly long-lived
	// session state needs little headroom.
	GOGC int
	// LimitFraction of the container's memory limit (cgroup v2 memory.max or
	// v1 memory.limit_in_bytes) becomes the soft memory limit when GOMEMLIMIT
	// is unset (0: 0.9), so the collector works harder before the kernel kills
	// the process instead of after.
	LimitFraction float64
	// CgroupRoot is where the cgroup filesystem is mounted (default /sys/fs/cgroup).
	CgroupRoot string
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
}

// MemorySettings is what ApplyMemoryPolicy chose, for the startup log.
type MemorySettings struct {
	GOGC        int    // in effect
	GOGCFrom    string // "GOGC", "default" or "runtime"
	Limit       int64  // soft memory limit in bytes; math.MaxInt64 means none
	LimitFrom   string // "GOMEMLIMIT", "cgroup" or "none"
	CgroupLimit int64  // the container's limit (0: none found)
}

// UseMemoryPolicy applies p and logs what it chose.
func UseMemoryPolicy(log logrus.FieldLogger, p MemoryPolicy) MemorySettings {
	s := ApplyMemoryPolicy(p)
	log.WithFields(logrus.Fields{"gogc": s.GOGC, "gogc_from": s.GOGCFrom, "memory_limit_bytes": s.Limit, "memory_limit_from": s.LimitFrom}).Info("memory policy applied")
	return s
}

// ApplyMemoryPolicy sets the collector's target and soft memory limit.
func ApplyMemoryPolicy(p MemoryPolicy) MemorySettings {
	if p.Getenv == nil {
		p.Getenv = os.Getenv
	}
	if p.CgroupRoot == "" {
		p.CgroupRoot = "/sys/fs/cgroup"
	}
	if p.LimitFraction <= 0 || p.LimitFraction > 1 {
		p.LimitFraction = 0.9
	}
	var s MemorySettings
	switch {
	case p.Getenv("GOGC") != "":
		s.GOGCFrom = "GOGC"
	case p.GOGC > 0:
		s.GOGCFrom = "default"
		debug.SetGCPercent(p.GOGC)
	default:
		s.GOGCFrom = "runtime"
	}
	s.GOGC = debug.SetGCPercent(-1)
	debug.SetGCPercent(s.GOGC)

	s.CgroupLimit, _ = CgroupMemoryLimit(p.CgroupRoot)
	switch {
	case p.Getenv("GOMEMLIMIT") != "":
		s.LimitFrom = "GOMEMLIMIT"
	case s.CgroupLimit > 0:
		s.LimitFrom = "cgroup"
		debug.SetMemoryLimit(int64(float64(s.CgroupLimit) * p.LimitFraction))
	default:
		s.LimitFrom = "none"
	}
	s.Limit = debug.SetMemoryLimit(-1)
	return s
}

// CgroupMemoryLimit reads the memory limit of this process's cgroup (v2, then
// v1) under root; 0 means the cgroup sets none.
func CgroupMemoryLimit(root string) (int64, error) {
	if raw, err := os.ReadFile(filepath.Join(root, "memory.max")); err == nil {
		v := strings.TrimSpace(string(raw))
		if v == "max" {
			return 0, nil
		}
		return parseLimit(v)
	}
	raw, err := os.ReadFile(filepath.Join(root, "memory", "memory.limit_in_bytes"))
	if err != nil {
		return 0, fmt.Errorf("reading cgroup memory limit: %w", err)
	}
	n, err := parseLimit(strings.TrimSpace(string(raw)))
	if err != nil || n >= math.MaxInt64/2 { // v1 reports "unlimited" as a page-rounded MaxInt64
		return 0, err
	}
	return n, nil
}

func parseLimit(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("parsing cgroup memory limit %q: invalid", v)
	}
	return n, nil
}
