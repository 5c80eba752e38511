package participant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/purpose"
	"github.com/openqhin/openqhin/broker/sizes"
	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// DefaultMaxCandidates bounds the candidates one discovery answer carries.
const DefaultMaxCandidates = 10

// Config describes one participant node.
type Config struct {
	// Listener serves the Responder service to brokers.
	Listener net.Listener
	// DataDir holds the record store, participant.db.
	DataDir string
	Source  pki.Source
	// MatchThreshold is the lowest score a candidate needs;
	// match.DefaultThreshold when zero.
	MatchThreshold float64
	MaxCandidates  int
	// TrainMatcher fits the matcher's model to the member's own records
	// (EM, match.Index.Train) once they are loaded at start; otherwise the
	// network's default model scores. Server.TrainMatcher does it on demand.
	TrainMatcher bool
	// Delay holds every answer back by this long: an injected latency for
	// benchmarks and fault tests. Zero in production.
	Delay time.Duration
	// MetricsListener, when set, serves Prometheus metrics at /metrics.
	MetricsListener net.Listener
	Logger          *slog.Logger
	// LinkageKey, when set, is the network's linkage key: the member
	// computes its patients' record-locator tokens under it and publishes
	// them through Brokers, which it then needs.
	LinkageKey *match.LinkageKey
	// Brokers reaches the broker cluster (a client.Conn) for the member's
	// own calls: publishing its tokens.
	Brokers grpc.ClientConnInterface
	// Limits bound connections, handshakes, streams and messages of the
	// Responder's listener; Fields caps the fields of brokers' requests.
	// Zero fields take the defaults.
	Limits pki.ServerLimits
	Fields sizes.Limits
	// AnswerPurposes are the purposes the member answers by its own
	// policy, as a purpose list ("all", or codes covering their sub-codes);
	// every purpose when nil. A query of another purpose is refused
	// (PermissionDenied), which the broker reports — as possible
	// information blocking when the purpose is one members must answer.
	AnswerPurposes []string
	// LabelPolicy says which purposes may see documents carrying each
	// security label; the zero policy withholds every labelled document
	// (other than U, L, M, N) from every purpose.
	LabelPolicy LabelPolicy
	// NoAudit runs without an audit ledger: benchmarks only.
	NoAudit bool
	// Upstream, when set, answers the brokers instead of the store and
	// matcher: an existing FHIR server (participant/upstream). Writes to the
	// store are then refused (ErrUpstream).
	Upstream Records
}

// Server is a participant node.
type Server struct {
	cfg       Config
	id        pki.Identity
	log       *slog.Logger
	store     *store.Store
	index     *match.Index
	grpc      *grpc.Server
	health    *health.Server
	telemetry *telemetry.Metrics
	metrics   *metrics
	locator   *locator
	ledger    *audit.Ledger
	records   Records
	once      sync.Once

	feedMu sync.Mutex // serializes Apply; guards hooks
	hooks  []func(context.Context, Change)
}

// New opens the participant's store, loads its patients into the matcher and
// builds its gRPC server. Serve starts answering.
func New(cfg Config) (*Server, error) {
	id, err := pki.SourceRole(cfg.Source, pki.RoleParticipant)
	if err != nil {
		return nil, fmt.Errorf("participant: %w", err)
	}
	if cfg.Listener == nil {
		return nil, errors.New("participant: no listener")
	}
	if cfg.MatchThreshold <= 0 {
		cfg.MatchThreshold = match.DefaultThreshold
	}
	if cfg.MaxCandidates <= 0 {
		cfg.MaxCandidates = DefaultMaxCandidates
	}
	if cfg.LinkageKey != nil && cfg.Brokers == nil {
		return nil, errors.New("participant: a linkage key needs the brokers to publish tokens to")
	}
	cfg.Limits, cfg.Fields = cfg.Limits.WithDefaults(), cfg.Fields.WithDefaults()
	if cfg.AnswerPurposes == nil {
		cfg.AnswerPurposes = []string{purpose.Everything}
	}
	if i, err := purpose.ValidateList(cfg.AnswerPurposes); err != nil {
		return nil, fmt.Errorf("participant: answer purposes, entry %d: %w", i, err)
	}
	listener := pki.LimitListener(cfg.Listener, cfg.Limits)
	cfg.Listener = listener
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("participant", id.Name)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("participant %s: data dir: %w", id.Name, err)
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, "participant.db"))
	if err != nil {
		return nil, fmt.Errorf("participant %s: %w", id.Name, err)
	}
	var ledger *audit.Ledger
	if cfg.NoAudit {
		log.Warn("no audit ledger: answers are not recorded (benchmarks only)")
	} else if ledger, err = audit.Open(filepath.Join(cfg.DataDir, "audit.db"), id.String(), log); err != nil {
		st.Close()
		return nil, fmt.Errorf("participant %s: %w", id.Name, err)
	}
	s := &Server{cfg: cfg, id: id, log: log, store: st, ledger: ledger, index: match.NewIndex(), health: health.NewServer()}
	if err := st.ForEachPatient(func(p store.Patient) error {
		s.index.Add(p.ID, match.Normalize(p.Demographics))
		return nil
	}); err != nil {
		st.Close()
		ledger.Close()
		return nil, fmt.Errorf("participant %s: load patients: %w", id.Name, err)
	}
	s.records = localRecords{store: st, index: s.index}
	if cfg.Upstream != nil {
		s.records = cfg.Upstream
	}
	if cfg.TrainMatcher {
		if err := s.TrainMatcher(context.Background()); err != nil {
			log.Warn("matcher keeps the default model", "err", err)
		}
	}

	// The Responder is for brokers only. The TLS handshake refuses
	// participants outright (operators may connect for health checks), and
	// the policy decides per method.
	s.telemetry = telemetry.NewMetrics(cfg.Source)
	s.telemetry.WatchListener(listener)
	s.metrics = newMetrics(s.telemetry.Registry, st)
	opts, err := pki.ServerConfig{
		Source: cfg.Source, Policy: pki.DefaultPolicy, Logger: log, Limits: cfg.Limits,
		Roles:   []pki.Role{pki.RoleBroker, pki.RoleOperator},
		Unary:   []grpc.UnaryServerInterceptor{s.telemetry.UnaryInterceptor()},
		Stream:  []grpc.StreamServerInterceptor{s.telemetry.StreamInterceptor()},
		Observe: ledger.Observer(relayAudited),
	}.ServerOptions()
	if err != nil {
		st.Close()
		ledger.Close()
		return nil, fmt.Errorf("participant %s: %w", id.Name, err)
	}
	s.grpc = grpc.NewServer(append(opts, telemetry.ServerOptions()...)...)
	qhinv1.RegisterResponderServer(s.grpc, &responder{s: s})
	qhinv1.RegisterRestrictionsServer(s.grpc, &restrictions{s: s})
	if ledger != nil {
		qhinv1.RegisterAuditServer(s.grpc, audit.NewService(ledger, log))
	}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(qhinv1.Responder_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if cfg.LinkageKey != nil {
		s.locator = newLocator(cfg.LinkageKey, st, cfg.Brokers, s.telemetry.Registry, log)
		s.locator.start()
		if cfg.Upstream == nil {
			s.records = localRecords{store: st, index: s.index, confirmed: s.locator.confirmed}
		}
		// Every committed write queues its patients' tokens before it
		// returns; a failure here is caught up by the recomputation at the
		// next start.
		s.OnChange(func(ctx context.Context, ch Change) {
			if len(ch.Put) > 0 {
				if err := s.locator.update(ctx, ch.Put); err != nil {
					log.Error("record-locator tokens not queued; they are recomputed at the next start", "patients", len(ch.Put), "error", err)
				}
			}
			if len(ch.Deleted) > 0 {
				s.locator.signal()
			}
		})
		log.Info("record locator on", "key_id", cfg.LinkageKey.ID())
	}
	return s, nil
}

// ID returns the participant id.
func (s *Server) ID() string { return s.id.Name }

// Addr returns the address the Responder listens on.
func (s *Server) Addr() string { return s.cfg.Listener.Addr().String() }

// Metrics returns the participant's metrics registry.
func (s *Server) Metrics() *prometheus.Registry { return s.telemetry.Registry }

// Ledger returns the participant's audit ledger (nil when it runs without
// one).
func (s *Server) Ledger() *audit.Ledger { return s.ledger }

// Store returns the participant's record store.
func (s *Server) Store() *store.Store { return s.store }

// Serve answers brokers (and metrics, when configured) until Stop.
func (s *Server) Serve() error {
	return telemetry.ServeNode(s.grpc, s.cfg.Listener, s.cfg.MetricsListener, s.telemetry.Registry, s.log)
}

// Stop lets running calls finish (until ctx ends), then closes the store.
func (s *Server) Stop(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		s.health.Shutdown()
		pki.GracefulStop(ctx, s.grpc)
		if s.locator != nil {
			s.locator.close()
		}
		err = errors.Join(s.store.Close(), s.ledger.Close())
	})
	return err
}

// Kill stops the participant abruptly, as a crash would. Tests use it.
func (s *Server) Kill() {
	s.once.Do(func() {
		s.grpc.Stop()
		if s.locator != nil {
			s.locator.close()
		}
		s.store.Close()
		s.ledger.Close()
	})
}

// PutPatient stores a patient and makes it findable, by the member's
// matcher and, with a linkage key, through the record locator.
func (s *Server) PutPatient(ctx context.Context, id string, d *qhinv1.Demographics) error {
	return s.Apply(ctx, store.Batch{Patients: []store.Patient{{ID: id, Demographics: d}}})
}

// PutPatients stores many patients in one transaction and makes them
// findable. Their record-locator tokens are queued for the brokers before
// it returns.
func (s *Server) PutPatients(ctx context.Context, ps []store.Patient) error {
	return s.Apply(ctx, store.Batch{Patients: ps})
}

// PutDocument stores a document of a stored patient.
func (s *Server) PutDocument(ctx context.Context, meta *qhinv1.DocumentMetadata, content io.Reader) (*qhinv1.DocumentMetadata, error) {
	m := cloneDoc(meta)
	if m.Patient == nil {
		m.Patient = &qhinv1.PatientLink{}
	}
	m.Patient.ParticipantId = s.id.Name
	m.SourceParticipantId = s.id.Name
	return s.store.PutDocument(ctx, m, content)
}

// PutDocuments stores many small documents of stored patients in one
// transaction.
func (s *Server) PutDocuments(ctx context.Context, docs []store.NewDocument) error {
	return s.Apply(ctx, store.Batch{Documents: docs})
}

// Counts returns how many patients and documents the participant holds.
func (s *Server) Counts() (patients, documents int, err error) { return s.store.Counts() }

// TrainMatcher fits the matcher's model to the member's own records by EM:
// u (how often strangers agree) and term frequencies from them, m from them
// only where they hold enough duplicates, the default's otherwise.
func (s *Server) TrainMatcher(ctx context.Context) error {
	rep, err := s.index.Train(ctx, match.TrainOptions{})
	if err != nil {
		return fmt.Errorf("train matcher: %w", err)
	}
	used := 0
	for _, r := range rep.Rules {
		if r.Used {
			used++
		}
	}
	s.log.Info("matcher trained", "records", rep.Records, "random_pairs", rep.RandomPairs, "m_rules_used", used)
	return nil
}

// Search finds the local patients that match demographics, best first.
func (s *Server) Search(d *qhinv1.Demographics) []match.Result {
	return s.index.Search(match.Normalize(d), s.cfg.MatchThreshold, s.cfg.MaxCandidates)
}
