package raftfsm

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter bridges hashicorp/raft's hclog.Logger to slog, so Raft's logs go through the
// daemon's one handler with the same format and keys. Raft's messages and keys are already lowercase
// and stable; the logger name goes under "logger".
type hclogAdapter struct {
	base  *slog.Logger // without name and implied args
	l     *slog.Logger // base with "logger" and the implied args
	name  string
	level hclog.Level // NoLevel: let the slog handler decide
	args  []interface{}
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{base: l, l: l.With("logger", name), name: name}
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (a *hclogAdapter) enabled(level hclog.Level) bool {
	if a.level == hclog.Off {
		return false
	}
	if a.level != hclog.NoLevel && level < a.level {
		return false
	}
	return a.l.Enabled(context.Background(), slogLevel(level))
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...interface{}) {
	if !a.enabled(level) {
		return
	}
	// hclog passes key/value pairs, like slog; an odd trailing value becomes slog's "!BADKEY".
	// Raft formats some values lazily with hclog.Fmt; render those here.
	for i, v := range args {
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if format, ok := f[0].(string); ok {
				args[i] = fmt.Sprintf(format, f[1:]...)
			}
		}
	}
	a.l.Log(context.Background(), slogLevel(level), msg, args...)
}

func (a *hclogAdapter) Trace(msg string, args ...interface{}) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...interface{}) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...interface{})  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...interface{})  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...interface{}) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) IsTrace() bool                         { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool                         { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool                          { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool                          { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool                         { return a.enabled(hclog.Error) }
func (a *hclogAdapter) ImpliedArgs() []interface{}            { return a.args }
func (a *hclogAdapter) Name() string                          { return a.name }
func (a *hclogAdapter) SetLevel(level hclog.Level)            { a.level = level }
func (a *hclogAdapter) GetLevel() hclog.Level                 { return a.level }

func (a *hclogAdapter) With(args ...interface{}) hclog.Logger {
	c := *a
	c.l = a.l.With(args...)
	c.args = append(append([]interface{}(nil), a.args...), args...)
	return &c
}

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return a.ResetNamed(name)
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	// Rebuilt from base so the record carries one "logger" key, not one per Named call.
	c.l = a.base.With("logger", name).With(a.args...)
	return &c
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		a.Info(strings.TrimSpace(string(p)))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
