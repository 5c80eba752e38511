package telemetry

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestLogHandler_BoundsEveryRecord(t *testing.T) {
	huge := strings.Repeat("Quackenbush ", 400_000) // about 4.8 MB, as an echoed request once was
	for _, tc := range []struct {
		name string
		log  func(l *slog.Logger)
		// keep is text that must survive; gone must not appear.
		keep, gone string
	}{
		{"a short line is untouched", func(l *slog.Logger) { l.Info("rpc", "method", "/qhin.v1.Gateway/DiscoverPatients", "code", "OK") },
			"/qhin.v1.Gateway/DiscoverPatients", ""},
		{"a long string value is withheld", func(l *slog.Logger) { l.Info("rpc", "code", "InvalidArgument", "error", huge) },
			"InvalidArgument", "Quackenbush"},
		{"a long error is withheld", func(l *slog.Logger) { l.Info("rpc", "query_id", "q1", "error", errors.New(huge)) },
			"q1", "Quackenbush"},
		{"a long message is withheld", func(l *slog.Logger) { l.Info(huge, "query_id", "q1") }, "q1", "Quackenbush"},
		{"a long value in a group is withheld", func(l *slog.Logger) { l.Info("x", slog.Group("g", "a", huge, "b", "kept")) }, "kept", "Quackenbush"},
		{"many values fill the line", func(l *slog.Logger) {
			args := []any{"query_id", "q1"}
			for range 100 {
				args = append(args, "v", strings.Repeat("x", MaxLogValue))
			}
			l.Info("many", args...)
		}, "log_attrs_dropped", ""},
		{"values added with With are bounded too", func(l *slog.Logger) { l.With("error", huge).Info("rpc", "code", "OK") }, "OK", "Quackenbush"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tc.log(slog.New(LogHandler(slog.NewJSONHandler(&buf, nil))))
			line := buf.String()
			if tc.gone != "" && strings.Contains(line, tc.gone) {
				t.Errorf("the line holds %q", tc.gone)
			}
			if !strings.Contains(line, tc.keep) {
				t.Errorf("the line lost %q: %.300s", tc.keep, line)
			}
			if len(line) > MaxLogRecord+1024 {
				t.Errorf("a line of %d bytes", len(line))
			}
		})
	}
}
