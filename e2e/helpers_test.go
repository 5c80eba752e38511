package e2e

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// logBuffer collects every log line of a network, so tests can check that no
// patient data reached it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startNetwork starts a network for one test and stops it at the end.
func startNetwork(t *testing.T, opts Options) (*Network, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.FastRaft = true
	opts.Logger = slog.New(telemetry.LogHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start network: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Stop(ctx)
	})
	return n, logs
}

func dial(t *testing.T, n *Network, src pki.Source) *client.Conn {
	t.Helper()
	c, err := n.Dial(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func requester() *qhinv1.Requester {
	return &qhinv1.Requester{Id: "1234567893", Npi: "1234567893", Name: "Dr. Test", Role: "physician", Organization: "Riverside General Hospital"}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}
