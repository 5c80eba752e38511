package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker"
	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/broker/purpose"
	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/facade"
	"github.com/openqhin/openqhin/participant/match"
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

	// LinkageKey, when set, is the network's linkage key: participants
	// publish their patients' record-locator tokens under it, and it is
	// registered with the brokers once they run.
	LinkageKey *match.LinkageKey
	// Routing is the brokers' discovery routing (broker.DefaultRouting
	// when empty).
	Routing broker.Routing
	// LinkTTL is how long the links brokers issue stay valid; the
	// brokers' default when zero.
	LinkTTL time.Duration
	// Answers are, by participant id, the purposes a participant answers
	// by its own policy (it refuses the others); every purpose when absent.
	Answers map[string][]string
	// LabelPolicy are, by participant id, the members' policies for
	// documents with security labels (the default withholds them all).
	LabelPolicy map[string]participant.LabelPolicy
	// NoAudit runs every node without an audit ledger (benchmarks that
	// measure what the ledgers cost).
	NoAudit bool
	// WorkloadAPI gives every node its SVID through the network's own SPIFFE
	// Workload API (a pki.Issuer on a Unix socket) instead of SVID files:
	// each node takes its own SVID from the same socket by SPIFFE ID.
	// SVIDTTL is their lifetime (pki.DefaultWorkloadSVIDTTL when zero); the
	// issuer renews each at half of it. CAPropagation is how long a new CA
	// is in the bundle before it signs (pki.DefaultPropagation when zero).
	WorkloadAPI   bool
	SVIDTTL       time.Duration
	CAPropagation time.Duration
	// RaftConnMaxAge bounds the reuse of the brokers' Raft connections
	// (cluster.DefaultRaftConnMaxAge when zero).
	RaftConnMaxAge time.Duration
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
	// raftGate can cut the broker off from Raft traffic (Partition).
	raftGate *gate
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
	// brokers is the participant's connection to the brokers, with a
	// linkage key.
	brokers *client.Conn
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
	// Issuer is the network's Workload API (Options.WorkloadAPI), nil
	// otherwise.
	Issuer  *pki.Issuer
	closers []io.Closer

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
	if err := n.registerLinkageKey(ctx); err != nil {
		return nil, err
	}
	ok = true
	return n, nil
}

// registerLinkageKey adds the network's linkage key to the brokers, and
// tells the participants to publish their tokens now.
func (n *Network) registerLinkageKey(ctx context.Context) error {
	if n.opts.LinkageKey == nil {
		return nil
	}
	conn, err := n.Dial(n.operator)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := setLinkageKey(ctx, conn, n.opts.LinkageKey.ID()); err != nil {
		return err
	}
	for _, p := range n.Participants {
		if p.Server != nil {
			p.Server.KickLocator()
		}
	}
	return nil
}

// setLinkageKey makes key id the network's active linkage key.
func setLinkageKey(ctx context.Context, conn *client.Conn, id string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := qhinv1.NewLocatorClient(conn).SetLinkageKey(cctx, &qhinv1.SetLinkageKeyRequest{
		KeyId: id, State: qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE, RequestId: "linkage-key-" + id})
	if err != nil {
		return fmt.Errorf("register linkage key %s: %w", id, err)
	}
	return nil
}

// WaitLocator waits until every running participant has told the brokers
// every token it holds, and every running broker has applied what the
// leader has: a discovery query then finds every member's patients through
// the locator, whichever broker it reaches.
func (n *Network) WaitLocator(ctx context.Context) error {
	for {
		pending := ""
		for _, p := range n.Participants {
			if p.Server == nil {
				continue
			}
			st, ok, err := p.Server.Locator()
			if err != nil {
				return err
			}
			if ok && (!st.Computed || st.Publish+st.Withdraw > 0) {
				pending = fmt.Sprintf("participant %s: %d to publish, %d to withdraw, computed %v", p.ID, st.Publish, st.Withdraw, st.Computed)
				break
			}
		}
		if pending == "" {
			if l := n.Leader(); l >= 0 {
				want := n.Brokers[l].Server.Node().FSM().AppliedIndex()
				pending = ""
				for _, b := range n.Brokers {
					if b.Server != nil && b.Server.Node().FSM().AppliedIndex() < want {
						pending = fmt.Sprintf("broker %s behind the leader", b.ID)
					}
				}
				if pending == "" {
					return nil
				}
			} else {
				pending = "no leader"
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("locator not settled (%s): %w", pending, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
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
	if opts.WorkloadAPI {
		if err := n.startIssuer(); err != nil {
			return nil, err
		}
	}
	n.operator, err = n.svid(filepath.Join(opts.Dir, "operator"), pki.RoleOperator, OperatorName)
	if err != nil {
		n.Close()
		return nil, err
	}
	for i := 1; i <= opts.Brokers; i++ {
		id := "b" + strconv.Itoa(i)
		dir := filepath.Join(opts.Dir, "brokers", id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			n.Close()
			return nil, err
		}
		src, err := n.svid(filepath.Join(dir, "svid"), pki.RoleBroker, id)
		if err != nil {
			n.Close()
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
		if err := os.MkdirAll(dir, 0o700); err != nil {
			n.Close()
			return nil, err
		}
		src, err := n.svid(filepath.Join(dir, "svid"), pki.RoleParticipant, id)
		if err != nil {
			n.Close()
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

// startIssuer starts the network's Workload API: an SVID for the operator
// and every node, handed to this uid. The operator's and the participants'
// SVIDs are also kept as files (DIR/operator, DIR/participants/pN/svid), for
// qhinctl.
func (n *Network) startIssuer() error {
	var ws []pki.Workload
	add := func(role pki.Role, name, dir string) {
		w := pki.Workload{ID: pki.MustIdentity(n.td, role, name).ID, UID: uint32(os.Getuid()), Dir: dir}
		if role != pki.RoleOperator {
			w.Hosts = []string{"localhost", "127.0.0.1"}
		}
		ws = append(ws, w)
	}
	add(pki.RoleOperator, OperatorName, filepath.Join(n.opts.Dir, "operator"))
	for i := 1; i <= n.opts.Brokers+4; i++ {
		// A few more brokers than start, for tests that add some.
		add(pki.RoleBroker, "b"+strconv.Itoa(i), "")
	}
	for j := 1; j <= n.opts.Participants; j++ {
		id := "p" + strconv.Itoa(j)
		add(pki.RoleParticipant, id, filepath.Join(n.opts.Dir, "participants", id, "svid"))
	}
	socket := filepath.Join(n.opts.Dir, "issuer.sock")
	if len(socket) > 100 {
		dir, err := os.MkdirTemp("", "qhin-issuer")
		if err != nil {
			return err
		}
		socket = filepath.Join(dir, "api.sock")
	}
	is, err := pki.StartIssuer(pki.IssuerConfig{
		CADir: filepath.Join(n.opts.Dir, "ca"), Socket: socket, SVIDTTL: n.opts.SVIDTTL, Workloads: ws,
		Propagation: n.opts.CAPropagation, Logger: n.log,
	})
	if err != nil {
		return err
	}
	n.Issuer = is
	n.closers = append(n.closers, is)
	return nil
}

// Close releases the network's Workload API and the nodes' streams to it;
// Stop calls it.
func (n *Network) Close() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i].Close()
	}
	n.closers = nil
}

// svid loads the SVID in dir, issuing a new one when it is missing or
// expires within a day. Nodes' SVIDs also name localhost and 127.0.0.1, so
// that grpcurl with the CA certificate reaches them. With a Workload API,
// the operator's SVID comes from the issuer and a node's from its own
// stream to the socket, opened when it starts.
func (n *Network) svid(dir string, role pki.Role, name string) (pki.Source, error) {
	if n.Issuer != nil {
		id := pki.MustIdentity(n.td, role, name).ID
		if role == pki.RoleOperator {
			return n.Issuer.Source(id), nil
		}
		return &lazyWorkloadSource{n: n, id: id}, nil
	}
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
	rl = b.gateRaft(rl)
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
		LinkTTL:           n.opts.LinkTTL,
		NoAudit:           n.opts.NoAudit,
		SnapshotThreshold: n.opts.SnapshotThreshold,
		SnapshotInterval:  n.opts.SnapshotInterval,
		TrailingLogs:      n.opts.TrailingLogs,
		Routing:           n.opts.Routing,
		RaftConnMaxAge:    n.opts.RaftConnMaxAge,
		Logger:            n.log,
	}
	if err := openSource(b.source); err != nil {
		gl.Close()
		rl.Close()
		return fmt.Errorf("broker %s: %w", b.ID, err)
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
	if err := openSource(p.source); err != nil {
		l.Close()
		return fmt.Errorf("participant %s: %w", p.ID, err)
	}
	var ml net.Listener
	if n.opts.Metrics {
		if ml, err = net.Listen("tcp", p.MetricsAddr); err != nil {
			l.Close()
			return fmt.Errorf("participant %s: listen metrics: %w", p.ID, err)
		}
		p.MetricsAddr = ml.Addr().String()
	}
	cfg := participant.Config{
		MetricsListener: ml,
		Listener:        l,
		DataDir:         filepath.Join(p.Dir, "data"),
		Source:          p.source,
		Delay:           n.opts.Delay[p.ID],
		AnswerPurposes:  n.opts.Answers[p.ID],
		LabelPolicy:     n.opts.LabelPolicy[p.ID],
		NoAudit:         n.opts.NoAudit,
		Logger:          n.log,
		Upstream:        p.Upstream,
	}
	if n.opts.LinkageKey != nil {
		if p.brokers, err = n.Dial(p.source); err != nil {
			l.Close()
			return err
		}
		cfg.LinkageKey, cfg.Brokers = n.opts.LinkageKey, p.brokers
	}
	s, err := participant.New(cfg)
	if err != nil {
		l.Close()
		p.closeBrokers()
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
	p.closeBrokers()
}

// StopParticipant stops participant j gracefully.
func (n *Network) StopParticipant(ctx context.Context, j int) error {
	p := n.Participants[j]
	if p.Server == nil {
		return nil
	}
	p.stopFacade()
	err := p.Server.Stop(ctx)
	<-p.served
	p.Server = nil
	p.closeBrokers()
	return err
}

func (p *ParticipantNode) closeBrokers() {
	if p.brokers != nil {
		p.brokers.Close()
		p.brokers = nil
	}
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
// endpoint in addrs, initiating and answering every purpose, or updates the
// endpoint when it moved. A member registered before purpose lists were
// default deny (both lists empty) is given every purpose again.
func registerParticipants(ctx context.Context, dir qhinv1.DirectoryClient, ids []string, addrs map[string]string) error {
	for _, id := range ids {
		all := []string{purpose.Everything}
		want := &qhinv1.Participant{Id: id, Organization: organization(id), Endpoint: addrs[id], InitiatePurposes: all, RespondPurposes: all}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		got, err := dir.GetParticipant(cctx, &qhinv1.GetParticipantRequest{ParticipantId: id, Consistent: true})
		switch {
		case status.Code(err) == codes.NotFound:
			_, err = dir.RegisterParticipant(cctx, &qhinv1.RegisterParticipantRequest{Participant: want, RequestId: "register-" + id})
		case err == nil && len(got.Participant.InitiatePurposes) == 0 && len(got.Participant.RespondPurposes) == 0:
			_, err = dir.UpdateParticipant(cctx, &qhinv1.UpdateParticipantRequest{Participant: want})
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
	for j := range n.Participants {
		n.StopParticipant(ctx, j)
	}
	for i := range n.Brokers {
		n.StopBroker(ctx, i)
	}
	n.Close()
}

// lazyWorkloadSource is a node's stream to the network's Workload API,
// opened when the node first starts, as a node process opens it with
// --workload-api and --spiffe-id.
type lazyWorkloadSource struct {
	n  *Network
	id spiffeid.ID

	mu  sync.Mutex
	src *pki.WorkloadSource
}

func openSource(src pki.Source) error {
	if l, ok := src.(*lazyWorkloadSource); ok {
		return l.open()
	}
	return nil
}

func (l *lazyWorkloadSource) open() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.src != nil {
		return nil
	}
	src, err := pki.OpenWorkloadAPI(context.Background(), pki.WorkloadOptions{Addr: l.n.Issuer.Addr(), ID: l.id, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	l.src = src
	l.n.closers = append(l.n.closers, src)
	return nil
}

func (l *lazyWorkloadSource) get() (*pki.WorkloadSource, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.src == nil {
		return nil, fmt.Errorf("%s: not started", l.id)
	}
	return l.src, nil
}

func (l *lazyWorkloadSource) GetX509SVID() (*x509svid.SVID, error) {
	src, err := l.get()
	if err != nil {
		return nil, err
	}
	return src.GetX509SVID()
}

func (l *lazyWorkloadSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	src, err := l.get()
	if err != nil {
		return nil, err
	}
	return src.GetX509BundleForTrustDomain(td)
}
