// Package cli holds what the OpenQHIN commands share: how they log.
package cli

import (
	"fmt"
	"io"
	"log/slog"
)

// NewLogger builds a logger at the named level (debug, info, warn, error),
// writing JSON lines or text.
func NewLogger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}
