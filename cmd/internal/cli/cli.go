// Package cli holds what the OpenQHIN commands share: how they log, how
// they export traces, and the flags of the limits every node has.
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

	"github.com/openqhin/openqhin/broker/sizes"
	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/pki"
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

// AddServerLimitFlags registers the flags of the limits every node's gRPC
// server has: handshake time, connections, streams, message size and
// flow-control windows.
func AddServerLimitFlags(fs *flag.FlagSet, l *pki.ServerLimits) {
	fs.DurationVar(&l.HandshakeTimeout, "handshake-timeout", pki.DefaultHandshakeTimeout, "time a new connection has to finish its TLS handshake")
	fs.IntVar(&l.MaxConnections, "max-connections", pki.DefaultMaxConnections, "open connections in total; more are closed on arrival")
	fs.IntVar(&l.MaxConnectionsPerSource, "max-connections-per-source", pki.DefaultMaxConnectionsPerSource, "open connections per source IP address; more are closed on arrival")
	fs.IntVar(&l.MaxStreamsPerConnection, "max-streams-per-connection", pki.DefaultMaxStreamsPerConnection, "concurrent calls on one connection")
	fs.IntVar(&l.MaxRequestBytes, "max-request-bytes", pki.DefaultMaxRequestBytes, "largest message the server receives")
	fs.IntVar(&l.StreamWindowBytes, "stream-window-bytes", pki.DefaultStreamWindowBytes, "flow-control window of a stream: what a peer may send ahead of what this node has read")
	fs.IntVar(&l.ConnWindowBytes, "conn-window-bytes", pki.DefaultConnWindowBytes, "flow-control window of a connection")
}

// AddFieldLimitFlags registers the flags of the size limits of request
// fields.
func AddFieldLimitFlags(fs *flag.FlagSet, l *sizes.Limits) {
	fs.IntVar(&l.IDBytes, "max-id-bytes", sizes.DefaultIDBytes, "longest id, code or digest in a request (bytes)")
	fs.IntVar(&l.TextBytes, "max-text-bytes", sizes.DefaultTextBytes, "longest other string in a request: a name, an address line, a title (bytes)")
	fs.IntVar(&l.ListItems, "max-list-items", sizes.DefaultListItems, "most items of a repeated field: identifiers, address lines, type codes")
	fs.IntVar(&l.Links, "max-links", sizes.DefaultLinks, "most patient links in one document query")
}
