// Package cli holds what the OpenQHIN commands share: how they log and how
// they export traces.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	flag "github.com/spf13/pflag"

	"github.com/openqhin/openqhin/broker/telemetry"
)

// NewLogger builds a logger at the named level (debug, info, warn, error),
// writing JSON lines or text, with trace ids on every line of a traced call.
func NewLogger(w io.Writer, level string, json bool) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if json {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(telemetry.LogHandler(h)), nil
}

// Tracing is the tracing flags of a command.
type Tracing struct {
	endpoint string
	insecure bool
}

// AddFlags registers --otlp-endpoint and --otlp-insecure.
func (t *Tracing) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&t.endpoint, "otlp-endpoint", "", "export traces over OTLP/gRPC to this collector (host:port); off when empty")
	fs.BoolVar(&t.insecure, "otlp-insecure", false, "send traces to the collector without TLS")
}

// Args returns the flags that give a child process the same tracing.
func (t *Tracing) Args() []string {
	if t.endpoint == "" {
		return nil
	}
	args := []string{"--otlp-endpoint", t.endpoint}
	if t.insecure {
		args = append(args, "--otlp-insecure")
	}
	return args
}

// Start turns tracing on when an endpoint was given. Call it before building
// any gRPC server or client; the returned function flushes and stops it.
func (t *Tracing) Start(ctx context.Context, service string) (func(context.Context) error, error) {
	return telemetry.SetupTracing(ctx, telemetry.TracingConfig{Endpoint: t.endpoint, Insecure: t.insecure, Service: service})
}

// ListenMetrics opens the metrics listener of --metrics-listen; nil when the
// flag is empty.
func ListenMetrics(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	return net.Listen("tcp", addr)
}

// StartNode prepares what every node process needs: a context that SIGINT
// and SIGTERM cancel, tracing when --otlp-endpoint was given, and the
// --metrics-listen listener (nil when empty). stop flushes tracing and
// releases the signals.
func (t *Tracing) StartNode(service, metricsAddr string) (ctx context.Context, metrics net.Listener, stop func(), err error) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	stopTracing, err := t.Start(ctx, service)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	stop = func() {
		stopTracing(context.Background())
		cancel()
	}
	if metrics, err = ListenMetrics(metricsAddr); err != nil {
		stop()
		return nil, nil, nil, err
	}
	return ctx, metrics, stop, nil
}
