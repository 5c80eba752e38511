// Package telemetry is how every OpenQHIN node is observed: Prometheus
// metrics on a per-node registry, gRPC interceptors that count and time
// calls, OpenTelemetry tracing across initiator, broker and responders (off
// unless an OTLP endpoint is configured), and a log handler that stamps trace
// ids on log lines. Labels carry methods, purposes, codes and participant ids,
// never patient data.
package telemetry
