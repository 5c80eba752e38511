package participant

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/purpose"
	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/participant/store"
)

// metrics are the participant's own: answers given, and the size of its
// store.
type metrics struct {
	answers       *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	withheldTotal *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry, st *store.Store) *metrics {
	ns := telemetry.Namespace
	m := &metrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "answers_total",
			Help: "Queries this member answered, by method (discover, documents, retrieve), purpose and outcome (gRPC code).",
		}, []string{"method", "purpose", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "answer_duration_seconds",
			Help: "Time to answer a query, by method.", Buckets: telemetry.LatencyBuckets,
		}, []string{"method"}),
		withheldTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "member_withheldTotaltotal",
			Help: "Patients and documents this member's own policy (local restrictions, security labels) kept out of answers, by purpose.",
		}, []string{"purpose"}),
	}
	count := func(name, help string, pick func(p, d int) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: "store", Name: name, Help: help}, func() float64 {
			p, d, err := st.Counts()
			if err != nil {
				return 0
			}
			return float64(pick(p, d))
		})
	}
	reg.MustRegister(m.answers, m.latency, m.withheldTotal,
		count("patients", "Patients in the record store.", func(p, _ int) int { return p }),
		count("documents", "Documents in the record store.", func(_, d int) int { return d }),
	)
	return m
}

func (m *metrics) answer(method, purposeCode string, start time.Time, err error) {
	label := "invalid"
	if _, ok := purpose.Lookup(purposeCode); ok {
		label = purposeCode
	}
	m.answers.WithLabelValues(method, label, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (m *metrics) withheld(purposeCode string, n int) {
	if _, ok := purpose.Lookup(purposeCode); !ok {
		purposeCode = "invalid"
	}
	m.withheldTotal.WithLabelValues(purposeCode).Add(float64(n))
}
