package broker

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/broker/purpose"
	"github.com/openqhin/openqhin/broker/telemetry"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// metrics are the broker's own: queries, the members' answers, fan-out
// width, Raft and the directory.
type metrics struct {
	queries          *prometheus.CounterVec
	queryLatency     *prometheus.HistogramVec
	responders       *prometheus.CounterVec
	responderLatency *prometheus.HistogramVec
	fanoutWidth      prometheus.Histogram
	blocking         *prometheus.CounterVec
	withheld         *prometheus.CounterVec

	// members are the ids a participant label may hold: the directory's
	// members that have not retired. Any other id counts as unknownMember.
	mu      sync.Mutex
	members map[string]bool
}

// unknownMember is the participant label of an id that is not a member.
const unknownMember = "unknown"

const ns = telemetry.Namespace

// newMetrics registers the broker's metrics. refresh is called at each
// scrape before the directory is reported, so that the participant labels
// follow the directory even when no query runs.
func newMetrics(reg *prometheus.Registry, node *cluster.Node, refresh func()) *metrics {
	m := &metrics{
		members: map[string]bool{},
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "queries_total",
			Help: "Queries through the Gateway by method (discover, documents, retrieve), purpose and outcome (gRPC code).",
		}, []string{"method", "purpose", "outcome"}),
		queryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "query_duration_seconds",
			Help: "Time to answer a Gateway query, by method.", Buckets: telemetry.LatencyBuckets,
		}, []string{"method"}),
		responders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "responder_outcomes_total",
			Help: "Members' parts in queries, by member and status (ok, no_match, timeout, error, denied, skipped).",
		}, []string{"participant", "status"}),
		responderLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "responder_latency_seconds",
			Help: "Time a member took to answer its part of a query.", Buckets: telemetry.LatencyBuckets,
		}, []string{"participant"}),
		fanoutWidth: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "fanout_width",
			Help: "Members asked per query.", Buckets: []float64{0, 1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		blocking: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "information_blocking_total",
			Help: "Queries of a purpose every member must answer that a member declined (did not list the purpose, or refused), by member and purpose: possible information blocking.",
		}, []string{"participant", "purpose"}),
		withheld: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "consent_withheld_total",
			Help: "Records kept out of answers because the patient's consent directive does not permit the query's purpose, by purpose.",
		}, []string{"purpose"}),
	}
	gauge := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: "raft", Name: name, Help: help}, fn)
	}
	reg.MustRegister(m.queries, m.queryLatency, m.responders, m.responderLatency, m.fanoutWidth, m.blocking, m.withheld,
		gauge("state", "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.", func() float64 {
			return float64(node.NodeStatus().State - 1)
		}),
		gauge("term", "Current Raft term.", func() float64 { return float64(node.NodeStatus().Term) }),
		gauge("commit_index", "Raft commit index.", func() float64 { return float64(node.NodeStatus().CommitIndex) }),
		gauge("applied_index", "Raft applied index.", func() float64 { return float64(node.NodeStatus().AppliedIndex) }),
		gauge("last_contact_seconds", "Time since this follower last heard from the leader (0 on the leader).", func() float64 {
			return node.NodeStatus().GetLastContact().AsDuration().Seconds()
		}),
		gauge("last_snapshot_index", "Index of this node's latest snapshot.", func() float64 { return float64(node.LastSnapshotIndex()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Subsystem: "raft", Name: "leader_changes_total",
			Help: "Leader changes this node has observed."}, func() float64 { return float64(node.LeaderChanges()) }),
		newDirectoryCollector(node, refresh),
	)
	return m
}

// purposeLabel keeps label values to the known purpose codes, whatever a
// caller sends.
func purposeLabel(code string) string {
	if _, ok := purpose.Lookup(code); ok {
		return code
	}
	return "invalid"
}

func (m *metrics) query(method, purposeCode string, start time.Time, err error) {
	m.queries.WithLabelValues(method, purposeLabel(purposeCode), status.Code(err).String()).Inc()
	m.queryLatency.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (m *metrics) fanout(asked int, statuses []*qhinv1.ResponderStatus) {
	m.fanoutWidth.Observe(float64(asked))
	type series struct {
		member string
		state  qhinv1.ResponderState
	}
	counts := map[series]int{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range statuses {
		id := r.ParticipantId
		if !m.members[id] {
			id = unknownMember
		}
		counts[series{id, r.Status}]++
		if r.Status != qhinv1.ResponderState_RESPONDER_STATE_SKIPPED {
			m.responderLatency.WithLabelValues(id).Observe(r.Latency.AsDuration().Seconds())
		}
	}
	for s, n := range counts {
		m.responders.WithLabelValues(s.member, stateLabel(s.state)).Add(float64(n))
	}
}

// informationBlocking counts the members that declined a query of a
// purpose they must answer.
func (m *metrics) informationBlocking(purposeCode string, members []string) {
	if len(members) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range members {
		if !m.members[id] {
			id = unknownMember
		}
		m.blocking.WithLabelValues(id, purposeLabel(purposeCode)).Inc()
	}
}

// stateLabel is a responder state as a label value, from the enum's fixed
// names.
func stateLabel(s qhinv1.ResponderState) string {
	if _, ok := qhinv1.ResponderState_name[int32(s)]; !ok {
		return unknownMember
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "RESPONDER_STATE_"))
}

// setMembers makes ps the members participant labels may name, and removes
// the series of those that are no longer members (they retired, or left the
// directory).
func (m *metrics) setMembers(ps []*qhinv1.Participant) {
	next := make(map[string]bool, len(ps))
	for _, p := range ps {
		next[p.Id] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.members {
		if !next[id] {
			m.blocking.DeletePartialMatch(prometheus.Labels{"participant": id})
			m.responders.DeletePartialMatch(prometheus.Labels{"participant": id})
			m.responderLatency.DeletePartialMatch(prometheus.Labels{"participant": id})
		}
	}
	m.members = next
}

// refreshRouting reloads the routing table if the directory moved, which
// also updates the metrics' members.
func (s *Server) refreshRouting() {
	if _, _, err := s.routing.get(s.node.FSM()); err != nil {
		s.log.Debug("routing table not refreshed for metrics", "error", err)
	}
}

// directoryCollector reports members by status at each scrape.
type directoryCollector struct {
	node    *cluster.Node
	refresh func()
	desc    *prometheus.Desc
}

func newDirectoryCollector(node *cluster.Node, refresh func()) *directoryCollector {
	return &directoryCollector{node: node, refresh: refresh, desc: prometheus.NewDesc(ns+"_directory_participants",
		"Members in this broker's directory, by status.", []string{"status"}, nil)}
}

func (c *directoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *directoryCollector) Collect(ch chan<- prometheus.Metric) {
	if c.refresh != nil {
		c.refresh()
	}
	ps, err := c.node.FSM().Participants(qhinv1.ParticipantStatus_PARTICIPANT_STATUS_UNSPECIFIED)
	if err != nil {
		return
	}
	counts := map[string]int{"active": 0, "suspended": 0, "retired": 0}
	for _, p := range ps {
		counts[strings.ToLower(strings.TrimPrefix(p.Status.String(), "PARTICIPANT_STATUS_"))]++
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), s)
	}
}

// consentWithheld counts records consent kept out of answers.
func (m *metrics) consentWithheld(purposeCode string, n int) {
	m.withheld.WithLabelValues(purposeCode).Add(float64(n))
}
