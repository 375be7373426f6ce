// Package logging builds the logrus loggers of the service binaries from the
// [logging] configuration section: JSON by default, text for a terminal; to
// stdout, stderr or a file rotated by size (lumberjack).
package logging

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Options selects the level, format and output of a logger; the fields mirror
// config.Logging.
type Options struct {
	// Level is a logrus level name: trace, debug, info, warn(ing), error, fatal,
	// panic (case-insensitive). Empty means info.
	Level string
	// Format is "json" or "text" (case-insensitive). Empty means json.
	Format string
	// Output is "stdout", "stderr" or a file path, opened for appending with mode
	// 0600. Empty means stdout.
	Output string
	// MaxFileSize rotates a file Output when a write would take it past this
	// many bytes, rounded up to whole MiB (the rotation library's unit); 0
	// never rotates.
	MaxFileSize int64
	// MaxFiles is how many rotated files are kept beside the current one; 0
	// keeps them all.
	MaxFiles int
}

// mib is the unit of lumberjack's MaxSize.
const mib = 1 << 20

// New returns a logger configured by o. The JSON format uses the field names time,
// level and msg with RFC 3339 timestamps in nanoseconds; the text format prints full
// timestamps. A bad level or format, or a file that cannot be opened, is an error.
//
// When Output is a file, the logger's Out is the *os.File (MaxFileSize 0) or
// the rotating *lumberjack.Logger; the caller may close it (it implements
// io.Closer) when the logger is no longer used.
func New(o Options) (*logrus.Logger, error) {
	levelName := o.Level
	if levelName == "" {
		levelName = "info"
	}
	level, err := logrus.ParseLevel(levelName)
	if err != nil {
		return nil, fmt.Errorf("logging: invalid level %q", o.Level)
	}

	var formatter logrus.Formatter
	switch strings.ToLower(o.Format) {
	case "", "json":
		formatter = &logrus.JSONFormatter{
			TimestampFormat: time.RFC3339Nano,
			FieldMap: logrus.FieldMap{
				logrus.FieldKeyTime:  "time",
				logrus.FieldKeyLevel: "level",
				logrus.FieldKeyMsg:   "msg",
			},
		}
	case "text":
		formatter = &logrus.TextFormatter{
			FullTimestamp:   true,
			TimestampFormat: time.RFC3339Nano,
		}
	default:
		return nil, fmt.Errorf("logging: invalid format %q (want json or text)", o.Format)
	}

	var out io.Writer
	switch o.Output {
	case "", "stdout":
		out = os.Stdout
	case "stderr":
		out = os.Stderr
	default:
		f, err := os.OpenFile(o.Output, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("logging: open output: %w", err)
		}
		if o.MaxFileSize <= 0 {
			out = f
			break
		}
		// The file exists and is writable; the rotator reopens it on first write.
		_ = f.Close()
		out = &lumberjack.Logger{
			Filename:   o.Output,
			MaxSize:    int((o.MaxFileSize + mib - 1) / mib),
			MaxBackups: o.MaxFiles,
		}
	}

	l := logrus.New()
	l.SetLevel(level)
	l.SetFormatter(formatter)
	l.SetOutput(out)
	return l, nil
}
