package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestRaftLogger_OneFormatNamingTheNode: hashicorp/raft's lines reach the
// node's slog logger as JSON with the node's id, at the configured level.
func TestRaftLogger_OneFormatNamingTheNode(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "b2")
	l, err := newRaftLogger(base, "info")
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("dropped: below the raft level")
	l.Named("snapshot").With("peer", "b3").Warn("failed to contact", "error", errors.New("connection refused"), "term", uint64(7), "detail", hclog.Fmt("%d-%s", 1, "x"))
	l.StandardLogger(nil).Print("from the standard logger")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %s", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"node": "b2", "component": "raft", "subsystem": "raft.snapshot", "level": "WARN",
		"msg": "failed to contact", "error": "connection refused", "peer": "b3", "term": float64(7), "detail": "1-x"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v (line %s)", k, m[k], want, lines[0])
		}
	}
	if _, err := newRaftLogger(base, "loud"); err == nil {
		t.Error("unknown level accepted")
	}
}
