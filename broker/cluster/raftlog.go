package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends hashicorp/raft's log (an hclog.Logger) to slog, so a
// node's log is one stream in one format, every line naming the node.
// Raft's own levels map onto slog's; trace becomes debug-4.
type hclogAdapter struct {
	l     *slog.Logger
	name  string
	level *slog.LevelVar
	args  []any
}

func newRaftLogger(l *slog.Logger, level string) (hclog.Logger, error) {
	v := new(slog.LevelVar)
	lvl, ok := hclogToSlog(hclog.LevelFromString(level))
	if !ok {
		return nil, fmt.Errorf("raft log level %q: want trace, debug, info, warn, error or off", level)
	}
	v.Set(lvl)
	return &hclogAdapter{l: l.With("component", "raft"), name: "raft", level: v}, nil
}

func hclogToSlog(l hclog.Level) (slog.Level, bool) {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4, true
	case hclog.Debug:
		return slog.LevelDebug, true
	case hclog.Info:
		return slog.LevelInfo, true
	case hclog.Warn:
		return slog.LevelWarn, true
	case hclog.Error:
		return slog.LevelError, true
	case hclog.Off:
		return slog.LevelError + 100, true
	}
	return 0, false
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lvl, ok := hclogToSlog(level)
	if agedPipeline(args) {
		// A pipeline replaced because its connection is old is routine,
		// not the error Raft reports for any failed pipeline.
		lvl = slog.LevelDebug
	}
	if !ok || lvl < a.level.Level() {
		return
	}
	ctx := context.Background()
	if !a.l.Enabled(ctx, lvl) {
		return
	}
	a.l.Log(ctx, lvl, msg, append(flatten(args), a.args...)...)
}

func agedPipeline(args []any) bool {
	for _, a := range args {
		if err, ok := a.(error); ok && errors.Is(err, errConnAged) {
			return true
		}
	}
	return false
}

// flatten renders hclog's value types (hclog.Fmt, hclog.Hex, …) and
// errors as strings slog prints the same way in text and JSON.
func flatten(args []any) []any {
	out := make([]any, 0, len(args))
	for i, a := range args {
		if i%2 == 1 {
			switch v := a.(type) {
			case error:
				a = v.Error()
			case hclog.Format:
				a = fmt.Sprint(v...)
				if len(v) > 0 {
					if f, ok := v[0].(string); ok {
						a = fmt.Sprintf(f, v[1:]...)
					}
				}
			case fmt.Stringer:
				a = v.String()
			}
		}
		out = append(out, a)
	}
	return out
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(l hclog.Level) bool {
	lvl, _ := hclogToSlog(l)
	return lvl >= a.level.Level() && a.l.Enabled(context.Background(), lvl)
}

func (a *hclogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *hclogAdapter) ImpliedArgs() []any { return a.args }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(append([]any{}, a.args...), flatten(args)...)
	return &c
}

func (a *hclogAdapter) Name() string { return a.name }

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	c.l = a.l.With("subsystem", name)
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	c.l = a.l.With("subsystem", name)
	return &c
}

func (a *hclogAdapter) SetLevel(level hclog.Level) {
	if l, ok := hclogToSlog(level); ok {
		a.level.Set(l)
	}
}

func (a *hclogAdapter) GetLevel() hclog.Level {
	switch l := a.level.Level(); {
	case l < slog.LevelDebug:
		return hclog.Trace
	case l < slog.LevelInfo:
		return hclog.Debug
	case l < slog.LevelWarn:
		return hclog.Info
	case l < slog.LevelError:
		return hclog.Warn
	case l <= slog.LevelError:
		return hclog.Error
	}
	return hclog.Off
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return stdWriter{a}
}

// stdWriter turns lines of the standard library's logger into info lines.
type stdWriter struct{ a *hclogAdapter }

func (w stdWriter) Write(p []byte) (int, error) {
	w.a.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
