package logging

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
)

func TestJSONToFileAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")

	for i, msg := range []string{"first", "second"} {
		l, err := New(Options{Level: "debug", Format: "json", Output: path})
		require.NoError(t, err)
		require.Equal(t, logrus.DebugLevel, l.GetLevel())
		l.WithField("agent_id", "a-1").Debug(msg)
		l.Trace("filtered out")
		require.NoError(t, l.Out.(io.Closer).Close())

		data, err := os.ReadFile(path)
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		require.Len(t, lines, i+1, "each logger appends one line")
	}

	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.Split(string(data), "\n")[1]), &rec))
	require.Equal(t, "second", rec["msg"])
	require.Equal(t, "debug", rec["level"])
	require.Equal(t, "a-1", rec["agent_id"])
	ts, ok := rec["time"].(string)
	require.True(t, ok, "time field: %v", rec)
	parsed, err := time.Parse(time.RFC3339Nano, ts)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), parsed, time.Minute)
}

func TestTextFormatHasFullTimestamp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "text.log")
	l, err := New(Options{Level: "INFO", Format: "text", Output: path})
	require.NoError(t, err)
	defer l.Out.(io.Closer).Close()
	l.WithField("command_id", "c-9").Info("dispatched")
	l.Debug("filtered out")

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	line := strings.TrimSpace(string(data))
	require.NotContains(t, line, "filtered out")
	require.Contains(t, line, `level=info msg=dispatched command_id=c-9`)
	require.Regexp(t, regexp.MustCompile(`^time="\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}`), line)
}

func TestOutputsAndDefaults(t *testing.T) {
	l, err := New(Options{})
	require.NoError(t, err)
	require.Same(t, os.Stdout, l.Out)
	require.Equal(t, logrus.InfoLevel, l.GetLevel())
	require.IsType(t, &logrus.JSONFormatter{}, l.Formatter)

	l, err = New(Options{Level: "warning", Format: "text", Output: "stderr"})
	require.NoError(t, err)
	require.Same(t, os.Stderr, l.Out)
	require.Equal(t, logrus.WarnLevel, l.GetLevel())
	require.IsType(t, &logrus.TextFormatter{}, l.Formatter)
}

func TestErrors(t *testing.T) {
	for name, o := range map[string]Options{
		"bad level":           {Level: "loud"},
		"bad format":          {Format: "xml"},
		"bad output":          {Output: filepath.Join(t.TempDir(), "missing-dir", "x.log")},
		"bad output, rotated": {Output: filepath.Join(t.TempDir(), "missing-dir", "x.log"), MaxFileSize: 1 << 20},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(o)
			require.Error(t, err)
		})
	}
}

func TestFileRotatesAtMaxFileSizeKeepingMaxFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "viworks.log")
	// 1 byte rounds up to the rotator's unit, 1 MiB.
	l, err := New(Options{Output: path, MaxFileSize: 1, MaxFiles: 2})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Out.(io.Closer).Close() })
	payload := strings.Repeat("x", 1000)
	// About 5 MiB of lines: four rotations, of which two files are kept.
	for i := range 5 * 1100 {
		l.WithField("n", i).Info(payload)
	}

	rotated := func() []string {
		m, err := filepath.Glob(filepath.Join(dir, "viworks-*.log"))
		require.NoError(t, err)
		return m
	}
	// The rotator removes the oldest files in the background.
	require.Eventually(t, func() bool { return len(rotated()) == 2 }, 5*time.Second, 20*time.Millisecond,
		"rotated files: %v", rotated())
	for _, p := range append(rotated(), path) {
		info, err := os.Stat(p)
		require.NoError(t, err)
		require.LessOrEqual(t, info.Size(), int64(1<<20), p)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), p)
	}
	// The current file holds the newest line, whole.
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var last map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &last))
	require.EqualValues(t, 5*1100-1, last["n"])
}

func TestFileWithoutMaxFileSizeNeverRotates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "viworks.log")
	l, err := New(Options{Output: path, MaxFileSize: 0, MaxFiles: 1})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Out.(io.Closer).Close() })
	require.IsType(t, &os.File{}, l.Out)
	payload := strings.Repeat("y", 1000)
	for range 1200 {
		l.Info(payload)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Greater(t, info.Size(), int64(1<<20))
}
