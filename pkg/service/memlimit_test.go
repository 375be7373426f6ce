package service

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func cgroupDir(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	return root
}

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		want    int64
		wantErr bool
	}{
		{"v2 limit", map[string]string{"memory.max": "1073741824\n"}, 1 << 30, false},
		{"v2 unlimited", map[string]string{"memory.max": "max\n"}, 0, false},
		{"v1 limit", map[string]string{"memory/memory.limit_in_bytes": "536870912\n"}, 512 << 20, false},
		{"v1 unlimited", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, false},
		{"v2 garbage", map[string]string{"memory.max": "lots\n"}, 0, true},
		{"no cgroup files", nil, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CgroupMemoryLimit(cgroupDir(t, tc.files))
			if tc.wantErr {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.want, got)
		})
	}
}

func TestApplyMemoryPolicy(t *testing.T) {
	oldGC, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(oldGC); debug.SetMemoryLimit(oldLimit) })
	env := func(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }
	limited := cgroupDir(t, map[string]string{"memory.max": "1000000000"})
	unlimited := cgroupDir(t, map[string]string{"memory.max": "max"})

	for _, tc := range []struct {
		name   string
		policy MemoryPolicy
		want   MemorySettings
	}{
		{"defaults from the policy and the cgroup", MemoryPolicy{GOGC: 25, CgroupRoot: limited, Getenv: env(nil)},
			MemorySettings{GOGC: 25, GOGCFrom: "default", Limit: 900000000, LimitFrom: "cgroup", CgroupLimit: 1000000000}},
		{"fraction", MemoryPolicy{GOGC: 25, LimitFraction: 0.5, CgroupRoot: limited, Getenv: env(nil)},
			MemorySettings{GOGC: 25, GOGCFrom: "default", Limit: 500000000, LimitFrom: "cgroup", CgroupLimit: 1000000000}},
		{"no limit anywhere", MemoryPolicy{CgroupRoot: unlimited, Getenv: env(nil)},
			MemorySettings{GOGC: 100, GOGCFrom: "runtime", Limit: math.MaxInt64, LimitFrom: "none"}},
		// The runtime applied the environment at start; the policy leaves it alone.
		{"environment wins", MemoryPolicy{GOGC: 25, CgroupRoot: limited, Getenv: env(map[string]string{"GOGC": "100", "GOMEMLIMIT": "2GiB"})},
			MemorySettings{GOGC: 100, GOGCFrom: "GOGC", Limit: math.MaxInt64, LimitFrom: "GOMEMLIMIT", CgroupLimit: 1000000000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			require.Equal(t, tc.want, ApplyMemoryPolicy(tc.policy))
			require.Equal(t, tc.want.GOGC, debug.SetGCPercent(tc.want.GOGC))
			require.Equal(t, tc.want.Limit, debug.SetMemoryLimit(-1))
		})
	}
}
