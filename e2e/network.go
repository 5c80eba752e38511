package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker"
	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/facade"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// DefaultTrustDomain is the development network's trust domain.
const DefaultTrustDomain = "qhin.test"

// OperatorName is the development network's operator identity.
const OperatorName = "admin"

// Options describe a network.
type Options struct {
	// Dir holds the CA, every node's SVID and data, and qhinctl.yaml. A
	// network started again on the same Dir keeps its CA and state.
	Dir         string
	TrustDomain string
	// Brokers and Participants count the nodes: brokers b1…bN, participants
	// p1…pM.
	Brokers      int
	Participants int
	// BasePort fixes the ports: broker i serves gRPC on BasePort+i and Raft
	// on BasePort+10+i, participant j listens on BasePort+20+j. Zero picks
	// free ports (and keeps them across restarts of a node).
	BasePort int

	// ResponderTimeout and MaxQueryTimeout configure the brokers.
	ResponderTimeout time.Duration
	MaxQueryTimeout  time.Duration
	// Limits bound the brokers' work per caller and member.
	Limits broker.Limits
	// FastRaft shortens Raft's timers, for tests.
	FastRaft          bool
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// Delay injects latency into participants' answers (by participant id).
	Delay map[string]time.Duration
	// Metrics serves Prometheus metrics from every node: brokers on
	// BasePort+30+i, participants on BasePort+40+j (free ports when BasePort
	// is zero).
	Metrics bool

	// FHIR serves a FHIR facade on every participant ([ParticipantNode.FHIRURL]),
	// checking bearer tokens with FHIRVerifier when it is set.
	FHIR         bool
	FHIRVerifier *facade.Verifier

	// Logger receives every node's log, hashicorp/raft's included.
	Logger *slog.Logger
}

// BrokerNode is one broker of the network.
type BrokerNode struct {
	ID          string
	Dir         string
	GRPCAddr    string
	RaftAddr    string
	MetricsAddr string
	// NoJoin starts the broker without asking to join: an operator adds
	// it with Cluster.Join.
	NoJoin bool
	Server *broker.Server
	source pki.Source
	served chan error
}

// ParticipantNode is one participant of the network.
type ParticipantNode struct {
	ID          string
	Dir         string
	Addr        string
	MetricsAddr string
	Server      *participant.Server
	// Upstream, when set before the participant starts, answers the
	// network instead of its store (upstream mode).
	Upstream participant.Records
	// FHIRURL is the base URL of the participant's FHIR facade, with
	// Options.FHIR.
	FHIRURL string
	fhir    *facadeNode
	source  pki.Source
	served  chan error
}

// Network is a running network.
type Network struct {
	opts         Options
	td           spiffeid.TrustDomain
	CA           *pki.CA
	Brokers      []*BrokerNode
	Participants []*ParticipantNode
	operator     pki.Source
	log          *slog.Logger

	mu sync.Mutex
}

// Start brings a network up and waits until every broker is ready and every
// participant is registered in the directory.
func Start(ctx context.Context, opts Options) (*Network, error) {
	n, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			n.Stop(context.Background())
		}
	}()
	for i := range n.Brokers {
		if err := n.StartBroker(i); err != nil {
			return nil, err
		}
	}
	if err := n.WaitReady(ctx); err != nil {
		return nil, err
	}
	for j := range n.Participants {
		if err := n.StartParticipant(j); err != nil {
			return nil, err
		}
	}
	if err := n.registerParticipants(ctx); err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

// prepare lays a network out in opts.Dir without starting any node: the CA,
// the operator's SVID, and every node's SVID, directory and addresses. What
// is already there (from an earlier start) is kept.
func prepare(opts Options) (*Network, error) {
	if opts.Dir == "" {
		return nil, errors.New("network: no directory")
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = DefaultTrustDomain
	}
	if opts.Brokers <= 0 {
		opts.Brokers = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	td, err := spiffeid.TrustDomainFromString(opts.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("network: trust domain: %w", err)
	}
	n := &Network{opts: opts, td: td, log: opts.Logger}
	if err := n.loadOrCreateCA(); err != nil {
		return nil, err
	}
	n.operator, err = n.svid(filepath.Join(opts.Dir, "operator"), pki.RoleOperator, OperatorName)
	if err != nil {
		return nil, err
	}
	for i := 1; i <= opts.Brokers; i++ {
		id := "b" + strconv.Itoa(i)
		dir := filepath.Join(opts.Dir, "brokers", id)
		src, err := n.svid(filepath.Join(dir, "svid"), pki.RoleBroker, id)
		if err != nil {
			return nil, err
		}
		n.Brokers = append(n.Brokers, &BrokerNode{
			ID: id, Dir: dir, source: src,
			GRPCAddr: n.addr(i), RaftAddr: n.addr(10 + i), MetricsAddr: n.addr(30 + i),
		})
	}
	for j := 1; j <= opts.Participants; j++ {
		id := "p" + strconv.Itoa(j)
		dir := filepath.Join(opts.Dir, "participants", id)
		src, err := n.svid(filepath.Join(dir, "svid"), pki.RoleParticipant, id)
		if err != nil {
			return nil, err
		}
		n.Participants = append(n.Participants, &ParticipantNode{ID: id, Dir: dir, source: src, Addr: n.addr(20 + j), MetricsAddr: n.addr(40 + j)})
	}
	return n, nil
}

func (n *Network) addr(offset int) string {
	if n.opts.BasePort == 0 {
		return "127.0.0.1:0"
	}
	return "127.0.0.1:" + strconv.Itoa(n.opts.BasePort+offset)
}

func (n *Network) loadOrCreateCA() error {
	dir := filepath.Join(n.opts.Dir, "ca")
	if ca, err := pki.LoadCA(dir); err == nil {
		if ca.TrustDomain() != n.td {
			return fmt.Errorf("network: %s holds a CA for %s, not %s", dir, ca.TrustDomain(), n.td)
		}
		n.CA = ca
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network: %w", err)
	}
	ca, err := pki.NewCA(n.td, pki.DefaultCATTL)
	if err != nil {
		return err
	}
	if err := ca.Save(dir); err != nil {
		return err
	}
	n.CA = ca
	return nil
}

// svid loads the SVID in dir, issuing a new one when it is missing or
// expires within a day. Nodes' SVIDs also name localhost and 127.0.0.1, so
// that grpcurl with the CA certificate reaches them.
func (n *Network) svid(dir string, role pki.Role, name string) (pki.Source, error) {
	if src, err := pki.LoadDir(dir); err == nil {
		svid, _ := src.GetX509SVID()
		if time.Until(svid.Certificates[0].NotAfter) > 24*time.Hour && svid.ID.TrustDomain() == n.td &&
			(role == pki.RoleOperator || len(svid.Certificates[0].IPAddresses) > 0) {
			return src, nil
		}
	}
	var hosts []string
	if role != pki.RoleOperator {
		hosts = []string{"localhost", "127.0.0.1"}
	}
	svid, err := n.CA.IssueIdentity(role, name, pki.DefaultSVIDTTL, hosts...)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteSVID(dir, svid, n.CA.Bundle()); err != nil {
		return nil, err
	}
	return pki.LoadDir(dir)
}

// Issue mints an SVID of the network's CA, for tests that need a caller of a
// given role.
func (n *Network) Issue(role pki.Role, name string) (pki.Source, error) {
	svid, err := n.CA.IssueIdentity(role, name, time.Hour)
	if err != nil {
		return nil, err
	}
	return pki.StaticSource{SVID: svid, Bundle: n.CA.Bundle()}, nil
}

// StartBroker starts (or restarts) broker i from its data directory. The
// first broker bootstraps a new cluster; the others join through it.
func (n *Network) StartBroker(i int) error {
	b := n.Brokers[i]
	gl, err := net.Listen("tcp", b.GRPCAddr)
	if err != nil {
		return fmt.Errorf("broker %s: listen: %w", b.ID, err)
	}
	rl, err := net.Listen("tcp", b.RaftAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("broker %s: listen raft: %w", b.ID, err)
	}
	b.GRPCAddr, b.RaftAddr = gl.Addr().String(), rl.Addr().String()
	var ml net.Listener
	if n.opts.Metrics {
		if ml, err = net.Listen("tcp", b.MetricsAddr); err != nil {
			gl.Close()
			rl.Close()
			return fmt.Errorf("broker %s: listen metrics: %w", b.ID, err)
		}
		b.MetricsAddr = ml.Addr().String()
	}
	cfg := broker.Config{
		MetricsListener:   ml,
		NodeID:            b.ID,
		GRPCListener:      gl,
		RaftListener:      rl,
		DataDir:           filepath.Join(b.Dir, "data"),
		Bootstrap:         i == 0,
		Source:            b.source,
		ResponderTimeout:  n.opts.ResponderTimeout,
		MaxQueryTimeout:   n.opts.MaxQueryTimeout,
		Limits:            n.opts.Limits,
		SnapshotThreshold: n.opts.SnapshotThreshold,
		SnapshotInterval:  n.opts.SnapshotInterval,
		TrailingLogs:      n.opts.TrailingLogs,
		Logger:            n.log,
	}
	if i > 0 && !b.NoJoin {
		for _, other := range n.Brokers {
			if other != b && other.Server != nil {
				cfg.Join = append(cfg.Join, other.GRPCAddr)
			}
		}
	}
	if n.opts.FastRaft {
		cfg.HeartbeatTimeout = 300 * time.Millisecond
		cfg.ElectionTimeout = 300 * time.Millisecond
		cfg.LeaderLeaseTimeout = 150 * time.Millisecond
	}
	s, err := broker.New(cfg)
	if err != nil {
		rl.Close()
		return err
	}
	b.Server = s
	b.served = make(chan error, 1)
	go func() { b.served <- s.Serve() }()
	return nil
}

// AddBroker creates one more broker and starts it; it joins the cluster
// through the running brokers unless noJoin, when it waits for an operator
// to add it. It returns the new broker's index.
func (n *Network) AddBroker(noJoin bool) (int, error) {
	i := len(n.Brokers)
	id := "b" + strconv.Itoa(i+1)
	dir := filepath.Join(n.opts.Dir, "brokers", id)
	src, err := n.svid(filepath.Join(dir, "svid"), pki.RoleBroker, id)
	if err != nil {
		return 0, err
	}
	n.Brokers = append(n.Brokers, &BrokerNode{ID: id, Dir: dir, source: src, NoJoin: noJoin,
		GRPCAddr: n.addr(i + 1), RaftAddr: n.addr(10 + i + 1), MetricsAddr: n.addr(30 + i + 1)})
	return i, n.StartBroker(i)
}

// KillBroker stops broker i abruptly, as a crash would.
func (n *Network) KillBroker(i int) {
	b := n.Brokers[i]
	if b.Server == nil {
		return
	}
	b.Server.Kill()
	<-b.served
	b.Server = nil
}

// StopBroker stops broker i gracefully.
func (n *Network) StopBroker(ctx context.Context, i int) error {
	b := n.Brokers[i]
	if b.Server == nil {
		return nil
	}
	err := b.Server.Stop(ctx)
	<-b.served
	b.Server = nil
	return err
}

// StartParticipant starts (or restarts) participant j from its data
// directory.
func (n *Network) StartParticipant(j int) error {
	p := n.Participants[j]
	l, err := net.Listen("tcp", p.Addr)
	if err != nil {
		return fmt.Errorf("participant %s: listen: %w", p.ID, err)
	}
	p.Addr = l.Addr().String()
	var ml net.Listener
	if n.opts.Metrics {
		if ml, err = net.Listen("tcp", p.MetricsAddr); err != nil {
			l.Close()
			return fmt.Errorf("participant %s: listen metrics: %w", p.ID, err)
		}
		p.MetricsAddr = ml.Addr().String()
	}
	s, err := participant.New(participant.Config{
		MetricsListener: ml,
		Listener:        l,
		DataDir:         filepath.Join(p.Dir, "data"),
		Source:          p.source,
		Delay:           n.opts.Delay[p.ID],
		Logger:          n.log,
		Upstream:        p.Upstream,
	})
	if err != nil {
		l.Close()
		return err
	}
	p.Server = s
	p.served = make(chan error, 1)
	go func() { p.served <- s.Serve() }()
	if n.opts.FHIR {
		return n.startFacade(p)
	}
	return nil
}

// KillParticipant stops participant j abruptly.
func (n *Network) KillParticipant(j int) {
	p := n.Participants[j]
	if p.Server == nil {
		return
	}
	p.stopFacade()
	p.Server.Kill()
	<-p.served
	p.Server = nil
}

// WaitReady waits until every running broker is ready.
func (n *Network) WaitReady(ctx context.Context) error {
	for {
		ready := true
		for _, b := range n.Brokers {
			if b.Server != nil && !b.Server.Ready() {
				ready = false
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("brokers not ready: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Leader returns the index of the broker that leads, or -1.
func (n *Network) Leader() int {
	for i, b := range n.Brokers {
		if b.Server != nil && b.Server.Node().IsLeader() {
			return i
		}
	}
	return -1
}

// BrokerAddrs returns the gRPC addresses of every broker.
func (n *Network) BrokerAddrs() []string {
	out := make([]string, len(n.Brokers))
	for i, b := range n.Brokers {
		out[i] = b.GRPCAddr
	}
	return out
}

// Operator returns the operator's SVID source.
func (n *Network) Operator() pki.Source { return n.operator }

// ParticipantSource returns participant j's SVID source.
func (n *Network) ParticipantSource(j int) pki.Source { return n.Participants[j].source }

// Dial connects to every broker with an identity.
func (n *Network) Dial(src pki.Source) (*client.Conn, error) {
	return client.Dial(n.BrokerAddrs(), src, n.log)
}

// registerParticipants puts every participant in the directory, or updates
// its endpoint when it moved.
func (n *Network) registerParticipants(ctx context.Context) error {
	conn, err := n.Dial(n.operator)
	if err != nil {
		return err
	}
	defer conn.Close()
	members := map[string]string{}
	var ids []string
	for _, p := range n.Participants {
		ids = append(ids, p.ID)
		members[p.ID] = p.Addr
	}
	if err := registerParticipants(ctx, conn.Directory(), ids, members); err != nil {
		return err
	}
	// A registration is acknowledged once the leader applied it; wait until
	// every broker holds them, so that the network answers alike whichever
	// broker a query reaches.
	for _, b := range n.Brokers {
		for _, p := range n.Participants {
			for b.Server != nil {
				if got, err := b.Server.Node().FSM().Participant(p.ID); err == nil && got.Endpoint == p.Addr {
					break
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("participant %s not on broker %s: %w", p.ID, b.ID, ctx.Err())
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// registerParticipants puts each member of ids in the directory with its
// endpoint in addrs, or updates the endpoint when it moved.
func registerParticipants(ctx context.Context, dir qhinv1.DirectoryClient, ids []string, addrs map[string]string) error {
	for _, id := range ids {
		want := &qhinv1.Participant{Id: id, Organization: organization(id), Endpoint: addrs[id]}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := dir.GetParticipant(cctx, &qhinv1.GetParticipantRequest{ParticipantId: id, Consistent: true})
		switch {
		case status.Code(err) == codes.NotFound:
			_, err = dir.RegisterParticipant(cctx, &qhinv1.RegisterParticipantRequest{Participant: want, RequestId: "register-" + id})
		case err == nil && got.Participant.Endpoint != want.Endpoint:
			want.InitiatePurposes, want.RespondPurposes = got.Participant.InitiatePurposes, got.Participant.RespondPurposes
			_, err = dir.UpdateParticipant(cctx, &qhinv1.UpdateParticipantRequest{Participant: want})
		}
		cancel()
		if err != nil {
			return fmt.Errorf("register participant %s: %w", id, err)
		}
	}
	return nil
}

func organization(id string) string {
	names := []string{"Riverside General Hospital", "Lakeview Family Clinic", "Northern Valley HIE", "St. Elm Medical Center", "Harbor Community Health", "Summit Pediatrics"}
	i, _ := strconv.Atoi(id[1:])
	if i >= 1 && i <= len(names) {
		return names[i-1]
	}
	return "Member " + id
}

// Stop stops every node gracefully, participants first.
func (n *Network) Stop(ctx context.Context) {
	for _, p := range n.Participants {
		if p.Server != nil {
			p.stopFacade()
			p.Server.Stop(ctx)
			<-p.served
			p.Server = nil
		}
	}
	for i := range n.Brokers {
		n.StopBroker(ctx, i)
	}
}
