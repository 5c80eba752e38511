package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

var tracing atomic.Bool

// TracingConfig says where spans go.
type TracingConfig struct {
	// Endpoint is the OTLP/gRPC collector (host:port); tracing is off when
	// empty.
	Endpoint string
	// Insecure sends spans without TLS, to a collector on the same host.
	Insecure bool
	// Service names this process in traces, e.g. qhin-broker.
	Service string
	// Exporter overrides the OTLP exporter (tests use an in-memory one).
	Exporter sdktrace.SpanExporter
}

// SetupTracing installs a global tracer provider that exports to the
// configured collector, and turns on the gRPC instrumentation that
// ServerOptions and DialOptions add. It returns a function that flushes and
// stops it. With no endpoint and no exporter it does nothing.
func SetupTracing(ctx context.Context, cfg TracingConfig) (func(context.Context) error, error) {
	exp := cfg.Exporter
	if exp == nil {
		if cfg.Endpoint == "" {
			return func(context.Context) error { return nil }, nil
		}
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.Endpoint)}
		if cfg.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		var err error
		if exp, err = otlptracegrpc.New(ctx, opts...); err != nil {
			return nil, fmt.Errorf("OTLP exporter: %w", err)
		}
	}
	res := resource.NewSchemaless(semconv.ServiceName(cfg.Service))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	tracing.Store(true)
	return func(ctx context.Context) error {
		tracing.Store(false)
		return tp.Shutdown(ctx)
	}, nil
}

// TracingEnabled reports whether SetupTracing turned tracing on.
func TracingEnabled() bool { return tracing.Load() }

// ServerOptions instrument a gRPC server for tracing, when it is on.
func ServerOptions() []grpc.ServerOption {
	if !TracingEnabled() {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler())}
}

// DialOptions instrument a gRPC client for tracing, when it is on; the
// trace context travels to the server in the call's metadata.
func DialOptions() []grpc.DialOption {
	if !TracingEnabled() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler())}
}

// LogHandler adds the trace and span ids of the context's span, if any, to
// every record, and bounds every record: no value over MaxLogValue bytes,
// no record over MaxLogRecord (see BoundRecord).
func LogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (t traceHandler) Handle(ctx context.Context, r slog.Record) error {
	r = BoundRecord(r)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return t.Handler.Handle(ctx, r)
}

func (t traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	bounded := make([]slog.Attr, len(as))
	for i, a := range as {
		bounded[i] = boundAttr(a)
	}
	return traceHandler{t.Handler.WithAttrs(bounded)}
}

func (t traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{t.Handler.WithGroup(name)}
}
