package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/pki"
)

// Namespace prefixes every OpenQHIN metric.
const Namespace = "qhin"

// Metrics is one node's registry with the metrics every node has: gRPC calls
// served by method and code, their latency, the node's own certificate
// expiry, and the Go runtime and process collectors.
type Metrics struct {
	Registry *prometheus.Registry
	handled  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// LatencyBuckets suit calls from sub-millisecond to tens of seconds.
var LatencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NewMetrics builds a node's registry. src is asked for its SVID at each
// scrape, so the expiry follows rotation.
func NewMetrics(src pki.Source) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "grpc_server", Name: "handled_total",
			Help: "gRPC calls served, by full method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "grpc_server", Name: "handling_seconds",
			Help: "Time to serve a gRPC call, by full method.", Buckets: LatencyBuckets,
		}, []string{"method"}),
	}
	reg.MustRegister(m.handled, m.latency,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "certificate_expiry_timestamp_seconds",
			Help: "When this node's X.509-SVID expires (Unix time).",
		}, func() float64 {
			svid, err := src.GetX509SVID()
			if err != nil || len(svid.Certificates) == 0 {
				return 0
			}
			return float64(svid.Certificates[0].NotAfter.Unix())
		}),
	)
	return m
}

// WatchListener reports a node's connections: how many are open, and how
// many were closed on arrival because a cap was reached.
func (m *Metrics) WatchListener(l *pki.Listener) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "connections_open",
			Help: "Connections open on the node's gRPC listener.",
		}, func() float64 { return float64(l.Open()) }),
		refusedCollector{l: l, desc: prometheus.NewDesc(Namespace+"_connections_refused_total",
			"Connections closed on arrival, by the cap they met (total, per_source).", []string{"cap"}, nil)},
	)
}

type refusedCollector struct {
	l    *pki.Listener
	desc *prometheus.Desc
}

func (c refusedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c refusedCollector) Collect(ch chan<- prometheus.Metric) {
	total, perSource := c.l.Refused()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(total), "total")
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(perSource), "per_source")
}

func (m *Metrics) observe(method string, start time.Time, err error) {
	m.handled.WithLabelValues(method, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

// UnaryInterceptor counts and times unary calls.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observe(info.FullMethod, start, err)
		return resp, err
	}
}

// StreamInterceptor counts and times streaming calls.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observe(info.FullMethod, start, err)
		return err
	}
}

// Serve answers GET /metrics on l until ctx ends.
func Serve(ctx context.Context, l net.Listener, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ServeNode runs a node's gRPC server on l and, when metrics is not nil, its
// metrics on metrics, until the gRPC server stops; it returns nil after a
// graceful stop.
func ServeNode(s *grpc.Server, l, metrics net.Listener, reg *prometheus.Registry, log *slog.Logger) error {
	if metrics != nil {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			if err := Serve(ctx, metrics, reg); err != nil {
				log.Error("metrics server stopped", "error", err)
			}
		}()
	}
	if err := s.Serve(l); !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}
