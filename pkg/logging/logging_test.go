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
		"bad level":  {Level: "loud"},
		"bad format": {Format: "xml"},
		"bad output": {Output: filepath.Join(t.TempDir(), "missing-dir", "x.log")},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(o)
			require.Error(t, err)
		})
	}
}
