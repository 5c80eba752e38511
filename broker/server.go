package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Defaults for Config fields left zero.
const (
	DefaultResponderTimeout = 3 * time.Second
	DefaultMaxQueryTimeout  = 10 * time.Second
)

// Config describes one broker node.
type Config struct {
	// NodeID names the node; it must match the name in its SVID
	// (spiffe://<td>/broker/<node-id>), and is taken from it when empty.
	NodeID string
	// GRPCListener serves Gateway, Directory and Cluster. GRPCAdvertise is
	// the address others reach it at; the listener's address when empty.
	GRPCListener  net.Listener
	GRPCAdvertise string
	// RaftListener carries the Raft transport (mutual TLS, brokers only).
	RaftListener  net.Listener
	RaftAdvertise string
	DataDir       string
	Bootstrap     bool
	Join          []string
	Source        pki.Source

	// ResponderTimeout bounds each member's answer to a query, and each
	// pause in a document stream.
	ResponderTimeout time.Duration
	// MaxQueryTimeout caps a query's overall deadline, whatever the caller
	// asks for.
	MaxQueryTimeout time.Duration
	// Limits bound the work one caller or member can cause.
	Limits Limits
	// Routing chooses the members of a discovery query (DefaultRouting
	// when empty).
	Routing Routing

	// LinkTTL is how long the links the broker issues stay valid
	// (DefaultLinkTTL when zero); LinkKeyRotation how often the leader
	// replaces the key they are sealed with (DefaultLinkKeyRotation when
	// zero). A link must not outlive the key after the one that sealed
	// it: LinkTTL is at most LinkKeyRotation.
	LinkTTL         time.Duration
	LinkKeyRotation time.Duration
	// NoAudit runs the broker without an audit ledger: benchmarks only, to
	// measure what the ledger costs a query.
	NoAudit bool

	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// Raft timers; zero takes cluster's defaults. The election timeout is
	// also the lease of the fence that stops a broker from serving stale
	// state.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// VerifyInterval is how often the broker reads its state back and
	// compares it with the leader's; cluster.DefaultVerifyInterval when zero.
	VerifyInterval time.Duration
	// RaftConnMaxAge bounds the reuse of a Raft connection, so that rotated
	// certificates reach Raft; cluster.DefaultRaftConnMaxAge when zero.
	RaftConnMaxAge time.Duration

	// MetricsListener, when set, serves Prometheus metrics at /metrics.
	MetricsListener net.Listener

	// Logger receives the broker's log, hashicorp/raft's included (at
	// RaftLogLevel, warn by default).
	Logger       *slog.Logger
	RaftLogLevel string
}

// Server is a broker node.
type Server struct {
	cfg        Config
	id         pki.Identity
	log        *slog.Logger
	node       *cluster.Node
	grpc       *grpc.Server
	health     *health.Server
	responders *responders
	routing    routingTable
	telemetry  *telemetry.Metrics
	metrics    *metrics
	limits     Limits
	listener   *pki.Listener
	queries    *inflight
	retrievals *inflight
	routes     *prometheus.CounterVec
	ledger     *audit.Ledger
	links      linkKeys

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// New opens the broker's Raft node and builds its gRPC server. Serve starts
// answering.
func New(cfg Config) (*Server, error) {
	id, err := pki.SourceRole(cfg.Source, pki.RoleBroker)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if cfg.NodeID == "" {
		cfg.NodeID = id.Name
	}
	if cfg.NodeID != id.Name {
		return nil, fmt.Errorf("broker: node id %q does not match SVID %s", cfg.NodeID, id)
	}
	if cfg.GRPCListener == nil || cfg.RaftListener == nil {
		return nil, errors.New("broker: gRPC and Raft listeners are required")
	}
	if cfg.GRPCAdvertise == "" {
		cfg.GRPCAdvertise = cfg.GRPCListener.Addr().String()
	}
	if cfg.ResponderTimeout <= 0 {
		cfg.ResponderTimeout = DefaultResponderTimeout
	}
	if cfg.MaxQueryTimeout <= 0 {
		cfg.MaxQueryTimeout = DefaultMaxQueryTimeout
	}
	if cfg.Routing == "" {
		cfg.Routing = DefaultRouting
	}
	if _, err := ParseRouting(string(cfg.Routing)); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.LinkTTL <= 0 {
		cfg.LinkTTL = DefaultLinkTTL
	}
	if cfg.LinkKeyRotation <= 0 {
		cfg.LinkKeyRotation = max(DefaultLinkKeyRotation, cfg.LinkTTL)
	}
	if cfg.LinkTTL > cfg.LinkKeyRotation {
		return nil, fmt.Errorf("broker: the link lifetime (%v) must not exceed the link key rotation interval (%v)", cfg.LinkTTL, cfg.LinkKeyRotation)
	}
	listener := pki.LimitListener(cfg.GRPCListener, cfg.Limits.Server)
	cfg.GRPCListener = listener
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("broker", cfg.NodeID)

	node, err := cluster.Open(cluster.Config{
		NodeID:             cfg.NodeID,
		RaftListener:       cfg.RaftListener,
		RaftAdvertise:      cfg.RaftAdvertise,
		GRPCAddr:           cfg.GRPCAdvertise,
		DataDir:            cfg.DataDir,
		Bootstrap:          cfg.Bootstrap,
		Join:               cfg.Join,
		Source:             cfg.Source,
		TrustDomain:        id.ID.TrustDomain(),
		SnapshotThreshold:  cfg.SnapshotThreshold,
		SnapshotInterval:   cfg.SnapshotInterval,
		TrailingLogs:       cfg.TrailingLogs,
		HeartbeatTimeout:   cfg.HeartbeatTimeout,
		ElectionTimeout:    cfg.ElectionTimeout,
		LeaderLeaseTimeout: cfg.LeaderLeaseTimeout,
		VerifyInterval:     cfg.VerifyInterval,
		RaftConnMaxAge:     cfg.RaftConnMaxAge,
		Logger:             log,
		RaftLogLevel:       cfg.RaftLogLevel,
	})
	if err != nil {
		cfg.GRPCListener.Close()
		return nil, fmt.Errorf("broker %s: %w", cfg.NodeID, err)
	}

	ledger, err := openLedger(cfg, id.String(), log)
	if err != nil {
		node.Close()
		cfg.GRPCListener.Close()
		return nil, fmt.Errorf("broker %s: %w", cfg.NodeID, err)
	}
	s := &Server{
		ledger:     ledger,
		cfg:        cfg,
		id:         id,
		log:        log,
		node:       node,
		health:     health.NewServer(),
		responders: newResponders(cfg.Source, cfg.Limits),
		stop:       make(chan struct{}),
		limits:     cfg.Limits,
		listener:   listener,
		queries:    newInflight(cfg.Limits.MaxQueriesPerInitiator, "queries", "--max-queries-per-initiator"),
		retrievals: newInflight(cfg.Limits.MaxRetrievesPerInitiator, "retrievals", "--max-retrieves-per-initiator"),
	}
	s.telemetry = telemetry.NewMetrics(cfg.Source)
	s.telemetry.WatchListener(listener)
	s.metrics = newMetrics(s.telemetry.Registry, node, s.refreshRouting)
	s.routing.onReload = s.metrics.setMembers
	s.routes = newRoutesMetric(s.telemetry.Registry)
	opts, err := pki.ServerConfig{
		Source: cfg.Source, Policy: pki.DefaultPolicy, Logger: log, Limits: cfg.Limits.Server,
		Unary:   []grpc.UnaryServerInterceptor{s.telemetry.UnaryInterceptor()},
		Stream:  []grpc.StreamServerInterceptor{s.telemetry.StreamInterceptor()},
		Observe: ledger.Observer(auditedMethods),
	}.ServerOptions()
	if err != nil {
		ledger.Close()
		node.Close()
		cfg.GRPCListener.Close()
		return nil, fmt.Errorf("broker %s: %w", cfg.NodeID, err)
	}
	s.grpc = grpc.NewServer(append(opts, telemetry.ServerOptions()...)...)
	qhinv1.RegisterGatewayServer(s.grpc, &gateway{s: s})
	qhinv1.RegisterDirectoryServer(s.grpc, &directory{s: s})
	qhinv1.RegisterClusterServer(s.grpc, cluster.NewService(node, log))
	qhinv1.RegisterLocatorServer(s.grpc, &locator{s: s})
	qhinv1.RegisterConsentServer(s.grpc, &consentService{s: s})
	if ledger != nil {
		qhinv1.RegisterAuditServer(s.grpc, audit.NewService(ledger, log))
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	for _, svc := range []string{"", qhinv1.Gateway_ServiceDesc.ServiceName, qhinv1.Directory_ServiceDesc.ServiceName, qhinv1.Cluster_ServiceDesc.ServiceName, qhinv1.Locator_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}

	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.watchReadiness()
	}()
	go func() {
		defer s.wg.Done()
		s.keepLinkKeys()
	}()
	return s, nil
}

// watchReadiness reports SERVING on the health service only while the node
// serves (cluster.Node.Serving: it holds what the leader committed a lease
// ago, and its log and state machine work), has caught up to its own
// membership and holds a link key.
func (s *Server) watchReadiness() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	last := false
	for {
		ready := s.Ready()
		if ready != last {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if ready {
				st = healthpb.HealthCheckResponse_SERVING
			}
			s.health.SetServingStatus("", st)
			for _, svc := range []string{qhinv1.Gateway_ServiceDesc.ServiceName, qhinv1.Directory_ServiceDesc.ServiceName, qhinv1.Cluster_ServiceDesc.ServiceName, qhinv1.Locator_ServiceDesc.ServiceName} {
				s.health.SetServingStatus(svc, st)
			}
			if ready {
				s.log.Info("readiness changed", "ready", ready)
			} else {
				reason := "its own broker record is not in its state yet"
				if err := s.node.Serving(); err != nil {
					reason = err.Error()
				} else if s.node.Ready() {
					reason = "it holds no link key yet"
				}
				s.log.Info("readiness changed", "ready", ready, "reason", reason)
			}
			last = ready
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// Serve answers gRPC calls (and metrics, when configured) until Stop; it
// returns nil after a graceful stop.
func (s *Server) Serve() error {
	return telemetry.ServeNode(s.grpc, s.cfg.GRPCListener, s.cfg.MetricsListener, s.telemetry.Registry, s.log)
}

// ID returns the node id.
func (s *Server) ID() string { return s.cfg.NodeID }

// Addr returns the advertised gRPC address.
func (s *Server) Addr() string { return s.cfg.GRPCAdvertise }

// Metrics returns the broker's metrics registry.
func (s *Server) Metrics() *prometheus.Registry { return s.telemetry.Registry }

// Node returns the broker's Raft node.
func (s *Server) Node() *cluster.Node { return s.node }

// Ready reports whether the broker serves queries: its node is ready and
// it holds a key to issue links with.
func (s *Server) Ready() bool { return s.node.Ready() && s.hasLinkKey() }

// Ledger returns the broker's audit ledger (nil when it runs without one).
func (s *Server) Ledger() *audit.Ledger { return s.ledger }

// Stop shuts the broker down in order: stop taking calls and let running ones
// finish (until ctx ends), then leave Raft (handing leadership over), then
// close the stores.
func (s *Server) Stop(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		s.health.Shutdown()
		pki.GracefulStop(ctx, s.grpc)
		s.wg.Wait()
		s.responders.close()
		err = errors.Join(s.node.Close(), s.ledger.Close())
	})
	return err
}

// Kill stops the broker abruptly, as a crash would: connections drop,
// leadership is not handed over. Tests use it.
func (s *Server) Kill() {
	s.once.Do(func() {
		close(s.stop)
		s.grpc.Stop()
		s.node.Kill()
		s.wg.Wait()
		s.responders.close()
		s.ledger.Close()
	})
}

// logQuery records a finished query: ids, purpose, counts and outcomes only.
func (s *Server) logQuery(ctx context.Context, kind string, qc *qhinv1.QueryContext, start time.Time, responders []*qhinv1.ResponderStatus, extra ...any) {
	counts := map[string]int{}
	for _, r := range responders {
		counts[r.Status.String()]++
	}
	attrs := []any{"query_id", qc.QueryId, "initiator", qc.InitiatorParticipantId, "purpose", qc.PurposeOfUse,
		"responders", len(responders), "ms", time.Since(start).Milliseconds()}
	for _, st := range []qhinv1.ResponderState{
		qhinv1.ResponderState_RESPONDER_STATE_OK, qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH,
		qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT, qhinv1.ResponderState_RESPONDER_STATE_ERROR,
		qhinv1.ResponderState_RESPONDER_STATE_DENIED, qhinv1.ResponderState_RESPONDER_STATE_SKIPPED,
	} {
		if n := counts[st.String()]; n > 0 {
			attrs = append(attrs, strings.ToLower(strings.TrimPrefix(st.String(), "RESPONDER_STATE_")), n)
		}
	}
	s.log.InfoContext(ctx, kind, append(attrs, extra...)...)
}
