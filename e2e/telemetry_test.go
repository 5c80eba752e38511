package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/openqhin/openqhin/broker/telemetry"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue finds the sample of a metric with exactly the given labels
// (in the exposition's order) and returns its value.
func metricValue(text, name, labels string) (float64, bool) {
	prefix := name
	if labels != "" {
		prefix += "{" + labels + "}"
	}
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

func TestMetrics_QueriesMembersAndRaftAreCounted(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 4, Metrics: true})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(3)).Gateway()
	for i := 0; i < 2; i++ {
		if _, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria}); err != nil {
			t.Fatal(err)
		}
	}
	// A refused query is counted under its code; the bogus purpose does not
	// become a label value.
	gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-MADE-UP", Requester: requester(), Demographics: maria})

	text := scrape(t, n.Brokers[0].MetricsAddr)
	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"qhin_queries_total", `method="discover",outcome="OK",purpose="T-TRTMNT"`, 2},
		{"qhin_queries_total", `method="discover",outcome="InvalidArgument",purpose="invalid"`, 1},
		{"qhin_responder_outcomes_total", `participant="p1",status="ok"`, 2},
		{"qhin_responder_outcomes_total", `participant="p3",status="no_match"`, 2},
		{"qhin_fanout_width_count", "", 2},
		{"qhin_raft_state", "", 2},
		{"qhin_directory_participants", `status="active"`, 4},
		{"qhin_grpc_server_handled_total", `code="OK",method="/qhin.v1.Gateway/DiscoverPatients"`, 2},
	} {
		got, ok := metricValue(text, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s{%s} = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if exp, ok := metricValue(text, "qhin_certificate_expiry_timestamp_seconds", ""); !ok || time.Unix(int64(exp), 0).Before(time.Now()) {
		t.Errorf("certificate expiry %v (found %v)", exp, ok)
	}
	if strings.Contains(text, "T-MADE-UP") {
		t.Error("a caller's made-up purpose became a label value")
	}
	for _, phi := range []string{"Ordóñez", "Maria", "1961-04-17", "01103"} {
		if containsValue(text, phi) {
			t.Errorf("metrics contain patient data %q", phi)
		}
	}
	ptext := scrape(t, n.Participants[0].MetricsAddr)
	if v, _ := metricValue(ptext, "qhin_answers_total", `method="discover",outcome="OK",purpose="T-TRTMNT"`); v != 2 {
		t.Errorf("p1 answered %v discovery queries, want 2", v)
	}
	if v, _ := metricValue(ptext, "qhin_store_patients", ""); v != 1 {
		t.Errorf("p1 store holds %v patients by its metrics, want 1", v)
	}
}

func TestHealthAndReflection_ReportTheServices(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 1})
	cc := rawConn(t, n.Brokers[0].GRPCAddr, brokerCreds(n, n.Operator()))
	// The broker is ready (Start waited for it); its health service says so
	// within its next readiness check.
	pollUntil(t, 5*time.Second, "broker health SERVING", func() error {
		resp, err := healthpb.NewHealthClient(cc).Check(callCtx(t), &healthpb.HealthCheckRequest{Service: "qhin.v1.Gateway"})
		if err != nil {
			return err
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("status %v", resp.Status)
		}
		return nil
	})
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"qhin.v1.Gateway", "qhin.v1.Directory", "qhin.v1.Cluster", "grpc.health.v1.Health"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
}

// TestTracing_OneTraceFromInitiatorThroughBrokerToEveryResponder turns
// tracing on with an in-memory exporter and checks that one discovery query
// makes one trace: the initiator's client span, the broker's server span, and
// a client and a server span for every responder asked; and that the
// network's log lines for the query carry the trace id.
func TestTracing_OneTraceFromInitiatorThroughBrokerToEveryResponder(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	stop, err := telemetry.SetupTracing(context.Background(), telemetry.TracingConfig{Exporter: exp, Service: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	defer stop(context.Background())
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 3})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	if _, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria}); err != nil {
		t.Fatal(err)
	}
	// The client has its answer before the servers' spans have all ended:
	// otelgrpc ends a server span after the response is on its way. Poll,
	// flushing without shutting down (the in-memory exporter forgets its
	// spans on shutdown), until every span of the query has been exported.
	want := map[string]int{
		"qhin.v1.Gateway/DiscoverPatients/client":   1,
		"qhin.v1.Gateway/DiscoverPatients/server":   1,
		"qhin.v1.Responder/DiscoverPatients/client": 2,
		"qhin.v1.Responder/DiscoverPatients/server": 2,
	}
	var root trace.TraceID
	count := map[string]int{}
	pollUntil(t, 20*time.Second, "every span of the query ended and exported", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := otel.GetTracerProvider().(*sdktrace.TracerProvider).ForceFlush(ctx); err != nil {
			return err
		}
		spans := exp.GetSpans().Snapshots()
		for _, s := range spans {
			if s.Name() == "qhin.v1.Gateway/DiscoverPatients" && s.SpanKind() == trace.SpanKindClient {
				root = s.SpanContext().TraceID()
			}
		}
		if !root.IsValid() {
			return fmt.Errorf("no initiator span among %d spans", len(spans))
		}
		clear(count)
		for _, s := range spans {
			if s.SpanContext().TraceID() == root {
				count[s.Name()+"/"+s.SpanKind().String()]++
			}
		}
		for name, w := range want {
			if count[name] < w {
				return fmt.Errorf("%d %s spans in the trace so far, want %d (all: %v)", count[name], name, w, count)
			}
		}
		return nil
	})
	for name, w := range want {
		if count[name] != w {
			t.Errorf("%d %s spans in the trace, want %d (all: %v)", count[name], name, w, count)
		}
	}

	stamped := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "discover" {
			continue
		}
		if rec["trace_id"] != root.String() {
			t.Errorf("discover log line without the query's trace id: %s", line)
		}
		stamped++
	}
	if stamped < 3 { // the broker's line and one per responder
		t.Errorf("%d discover log lines carry the trace id, want 3", stamped)
	}
}
