package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Errors callers branch on. Not-leader, no-leader and shutdown are
// retryable: the service edge maps them to Unavailable.
var (
	ErrNotLeader = errors.New("not the raft leader")
	ErrNoLeader  = errors.New("no raft leader")
	ErrShutdown  = errors.New("broker is shutting down")
)

// Defaults for Config fields left zero.
const (
	DefaultSnapshotThreshold = 8192
	DefaultSnapshotInterval  = 2 * time.Minute
	DefaultTrailingLogs      = 10240
	defaultApplyTimeout      = 10 * time.Second
	// DefaultMaxStale bounds how long a follower keeps serving from its
	// own state without hearing from a leader. It outlasts an election, so
	// queries go on through a failover, but not a partition.
	DefaultMaxStale = 10 * time.Second
	joinTimeout     = 2 * time.Minute
	commitTimeout   = 5 * time.Millisecond
)

// Config describes one broker's Raft node.
type Config struct {
	// NodeID is the broker's id, the last segment of its SPIFFE ID.
	NodeID string
	// RaftListener carries the Raft transport. RaftAdvertise, when set, is
	// the address peers dial; otherwise the listener's address.
	RaftListener  net.Listener
	RaftAdvertise string
	// GRPCAddr is the address other brokers and clients reach this broker's
	// gRPC services at.
	GRPCAddr string
	// DataDir holds raft.db (log and stable store), fsm.db and snapshots/.
	DataDir string
	// Bootstrap makes this node the first member of a new cluster when it
	// has no Raft state yet.
	Bootstrap bool
	// Join lists gRPC addresses of existing members to ask for membership
	// when this node has no Raft state yet.
	Join []string

	Source      pki.Source
	TrustDomain spiffeid.TrustDomain

	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// Raft timing; zero keeps hashicorp/raft's defaults.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// MaxStale: DefaultMaxStale when zero.
	MaxStale time.Duration

	Logger *slog.Logger
	// RaftLog receives hashicorp/raft's own log at RaftLogLevel (default
	// warn); nil discards it.
	RaftLog      io.Writer
	RaftLogLevel string
}

// Node is one broker's member of the Raft cluster.
type Node struct {
	cfg       Config
	log       *slog.Logger
	raft      *raft.Raft
	fsm       *fsm.FSM
	logStore  *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	stream    *tlsStreamLayer
	peers     *peers

	leaderChanges atomic.Uint64

	stop     chan struct{}
	wg       sync.WaitGroup
	shutdown sync.Once
}

// Open starts the node: it opens its stores, starts Raft, bootstraps or joins
// when configured to and this node has no state yet, and keeps its own broker
// record current in the replicated state.
func Open(cfg Config) (*Node, error) {
	if err := pki.ValidateName(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("node id %w", err)
	}
	if cfg.RaftListener == nil {
		return nil, errors.New("no raft listener")
	}
	if cfg.GRPCAddr == "" {
		return nil, errors.New("no gRPC address to advertise")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.NodeID)
	if cfg.MaxStale <= 0 {
		cfg.MaxStale = DefaultMaxStale
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}

	n := &Node{cfg: cfg, log: log, stop: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			n.closeStores()
		}
	}()

	var err error
	n.fsm, err = fsm.Open(filepath.Join(cfg.DataDir, "fsm.db"), fsm.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	n.logStore, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(cfg.DataDir, "raft.db"),
		BoltOptions: &bolt.Options{Timeout: 5 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", filepath.Join(cfg.DataDir, "raft.db"), err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.LevelFromString(orDefault(cfg.RaftLogLevel, "warn")),
		Output: orDiscard(cfg.RaftLog),
	})
	// The store keeps its snapshots in DataDir/snapshots.
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}

	advertise := cfg.RaftListener.Addr()
	if cfg.RaftAdvertise != "" {
		advertise, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
		if err != nil {
			return nil, fmt.Errorf("raft advertise address: %w", err)
		}
	}
	brokersOnly := pki.AuthorizeRoles(cfg.TrustDomain, pki.RoleBroker)
	n.stream = newTLSStreamLayer(cfg.RaftListener, advertise,
		pki.ServerTLS(cfg.Source, brokersOnly), pki.ClientTLS(cfg.Source, brokersOnly), log)
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.stream,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hlog,
	})
	n.peers = newPeers(pki.ClientCredentials(cfg.Source, brokersOnly))

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.SnapshotThreshold = orDefaultU64(cfg.SnapshotThreshold, DefaultSnapshotThreshold)
	rc.SnapshotInterval = orDefaultDur(cfg.SnapshotInterval, DefaultSnapshotInterval)
	rc.TrailingLogs = orDefaultU64(cfg.TrailingLogs, DefaultTrailingLogs)
	// The state file survives restarts and records the index it has
	// applied, so Raft need not rebuild it from the last snapshot.
	rc.NoSnapshotRestoreOnStart = true
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	// Followers learn that an entry is committed from the leader's next
	// AppendEntries; an idle leader sends one after CommitTimeout (50-100ms
	// by default). Directory writes wait for every broker to apply them, so
	// the leader tells them sooner.
	rc.CommitTimeout = commitTimeout

	hasState, err := raft.HasExistingState(n.logStore, n.logStore, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, n.logStore, n.logStore, snaps, n.transport)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	obs := make(chan raft.Observation, 16)
	n.raft.RegisterObserver(raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-obs:
				n.leaderChanges.Add(1)
			case <-n.stop:
				return
			}
		}
	}()
	if !hasState && cfg.Bootstrap {
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: n.transport.LocalAddr(), Suffrage: raft.Voter,
		}}})
		if err := f.Error(); err != nil {
			n.raft.Shutdown()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		log.Info("bootstrapped a new cluster", "raft_addr", string(n.transport.LocalAddr()))
	}
	ok = true

	if !hasState && !cfg.Bootstrap && len(cfg.Join) > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.joinLoop()
		}()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.announceLoop()
	}()
	return n, nil
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// RaftAddr returns the address peers reach this node's Raft transport at.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// GRPCAddr returns the gRPC address this node advertises.
func (n *Node) GRPCAddr() string { return n.cfg.GRPCAddr }

// FSM returns the node's state machine for local reads. Use Read for a
// stated consistency.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// IsLeader reports whether this node leads the cluster now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's node id and gRPC address, or empty strings
// while there is no leader or its address is not yet known.
func (n *Node) Leader() (id, grpcAddr string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	if string(lid) == n.cfg.NodeID {
		return n.cfg.NodeID, n.cfg.GRPCAddr
	}
	return string(lid), n.brokerAddr(string(lid))
}

func (n *Node) brokerAddr(id string) string {
	brokers, err := n.fsm.Brokers()
	if err != nil {
		return ""
	}
	for _, b := range brokers {
		if b.NodeId == id {
			return b.GrpcAddr
		}
	}
	return ""
}

// Ready reports whether the node can serve: its own broker record has
// reached its state (it has joined and caught up that far) and its state is
// not stale.
func (n *Node) Ready() bool {
	return !n.Stale() && n.brokerAddr(n.cfg.NodeID) == n.cfg.GRPCAddr
}

// Stale reports whether this node's state may be too old to serve: it is a
// follower or candidate that has not heard from a leader for longer than
// MaxStale. A leader is never stale; it steps down when it loses its quorum.
func (n *Node) Stale() bool {
	switch n.raft.State() {
	case raft.Leader:
		return false
	case raft.Follower, raft.Candidate:
		lc := n.raft.LastContact()
		return lc.IsZero() || time.Since(lc) > n.cfg.MaxStale
	}
	return true
}

// LeaderChanges counts the leader changes this node has observed.
func (n *Node) LeaderChanges() uint64 { return n.leaderChanges.Load() }

// LeaderCh reports leadership changes of this node, as raft.LeaderCh does.
func (n *Node) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// Apply commits cmd and returns its result value and log index once the
// leader has applied it. A refused command returns the fsm error that refused
// it (or, when forwarded, the gRPC status the leader mapped it to). While
// there is no leader, Apply holds the write and retries with jitter until ctx
// ends.
func (n *Node) Apply(ctx context.Context, cmd *qhinv1.Command) (proto.Message, uint64, error) {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		v, index, err := n.applyOnce(ctx, cmd.Type, data)
		if err == nil || !retryable(err) {
			return v, index, err
		}
		if err := n.hold(ctx, attempt, start, err); err != nil {
			return nil, 0, err
		}
	}
}

func (n *Node) applyOnce(ctx context.Context, t qhinv1.CommandType, data []byte) (proto.Message, uint64, error) {
	if n.IsLeader() {
		return n.ApplyLocal(ctx, data)
	}
	id, addr := n.Leader()
	if id == "" || addr == "" {
		return nil, 0, ErrNoLeader
	}
	c, err := n.peers.client(addr)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.Apply(ctx, &qhinv1.ApplyRequest{Command: data})
	if err != nil {
		return nil, 0, forwardError(id, err)
	}
	// Let a read on this node that follows the write see it.
	waitCtx, cancel := context.WithTimeout(ctx, time.Second)
	_ = n.waitApplied(waitCtx, resp.Index)
	cancel()
	v := fsm.ResultType(t)
	if v == nil {
		return nil, resp.Index, nil
	}
	if err := proto.Unmarshal(resp.Result, v); err != nil {
		return nil, resp.Index, fmt.Errorf("decode result from leader: %w", err)
	}
	return v, resp.Index, nil
}

// ApplyLocal applies an encoded command on this node, which must be the
// leader; it never forwards. It returns the result value and the entry's
// index.
func (n *Node) ApplyLocal(ctx context.Context, data []byte) (proto.Message, uint64, error) {
	timeout := defaultApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return nil, 0, raftError(err)
	}
	r, ok := f.Response().(*fsm.Result)
	if !ok || r == nil {
		return nil, f.Index(), fmt.Errorf("entry %d produced no result", f.Index())
	}
	return r.Value, r.Index, r.Err
}

func raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrAbortedByRestore),
		errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	}
	return err
}

func isUnavailable(err error) bool {
	return status.Code(err) == codes.Unavailable
}

func retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)
}

// maxHold bounds how long a node holds a request while there is no leader;
// after that the caller hears Unavailable and can try another broker.
const maxHold = 5 * time.Second

// ErrNotMember is returned by a node that belongs to no cluster yet.
var ErrNotMember = errors.New("this broker is not a member of a cluster yet")

// hold waits before the next attempt of a request that found no leader. It
// gives up at once on a node outside any cluster (no leader will come), and
// after maxHold on any node, returning the last attempt's error.
func (n *Node) hold(ctx context.Context, attempt int, since time.Time, last error) error {
	if cf := n.raft.GetConfiguration(); cf.Error() == nil && len(cf.Configuration().Servers) == 0 {
		return ErrNotMember
	}
	if time.Since(since) > maxHold {
		return last
	}
	if err := sleepJitter(ctx, attempt, n.stop); err != nil {
		return fmt.Errorf("%w (last attempt: %v)", err, last)
	}
	return nil
}

// sleepJitter waits a growing, jittered delay: 25ms doubling to 500ms, each
// ±50%.
func sleepJitter(ctx context.Context, attempt int, stop <-chan struct{}) error {
	d := 25 * time.Millisecond << min(attempt, 5)
	d = min(d, 500*time.Millisecond)
	d = d/2 + time.Duration(rand.Int64N(int64(d)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-stop:
		return ErrShutdown
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrNoLeader, ctx.Err())
	}
}

// ReadLevel is how consistent a read must be.
type ReadLevel int

const (
	// ReadLocal reads this node's state as it is: fast, possibly a little
	// behind the leader. Routing reads use it.
	ReadLocal ReadLevel = iota
	// ReadLinearizable confirms the leader's commit index through the log
	// and waits until this node has applied it, so the read reflects every
	// write acknowledged before it started.
	ReadLinearizable
)

// Read returns the state machine once it is consistent to the given level.
func (n *Node) Read(ctx context.Context, level ReadLevel) (*fsm.FSM, error) {
	if level == ReadLocal {
		return n.fsm, nil
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		idx, err := n.readIndex(ctx)
		if err == nil {
			if err := n.waitApplied(ctx, idx); err != nil {
				return nil, err
			}
			return n.fsm, nil
		}
		if !retryable(err) {
			return nil, err
		}
		if err := n.hold(ctx, attempt, start, err); err != nil {
			return nil, err
		}
	}
}

func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	if n.IsLeader() {
		return n.ReadIndexLocal(ctx)
	}
	id, addr := n.Leader()
	if id == "" || addr == "" {
		return 0, ErrNoLeader
	}
	c, err := n.peers.client(addr)
	if err != nil {
		return 0, err
	}
	resp, err := c.ReadIndex(ctx, &qhinv1.ReadIndexRequest{})
	if err != nil {
		return 0, forwardError(id, err)
	}
	return resp.Index, nil
}

// ReadIndexLocal confirms this node still leads, by committing a barrier
// through the log, and returns the index every acknowledged write is at or
// below.
func (n *Node) ReadIndexLocal(ctx context.Context) (uint64, error) {
	if !n.IsLeader() {
		return 0, ErrNotLeader
	}
	timeout := defaultApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		return 0, raftError(err)
	}
	return n.raft.AppliedIndex(), nil
}

// waitApplied waits until this node has applied index.
func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for n.raft.AppliedIndex() < index {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, n.raft.AppliedIndex(), ctx.Err())
		case <-n.stop:
			return ErrShutdown
		case <-t.C:
		}
	}
	return nil
}

// Close stops the node: it hands leadership over when it leads, shuts Raft
// down and closes the transport and stores, in that order.
func (n *Node) Close() error {
	var err error
	n.shutdown.Do(func() {
		close(n.stop)
		n.wg.Wait()
		if n.IsLeader() {
			if terr := n.raft.LeadershipTransfer().Error(); terr != nil {
				n.log.Debug("leadership transfer before shutdown", "error", terr)
			}
		}
		err = n.raft.Shutdown().Error()
		n.closeStores()
	})
	return err
}

// Kill stops the node without handing leadership over, as a crash would.
// Tests use it.
func (n *Node) Kill() error {
	var err error
	n.shutdown.Do(func() {
		close(n.stop)
		n.stream.Close()
		err = n.raft.Shutdown().Error()
		n.wg.Wait()
		n.closeStores()
	})
	return err
}

func (n *Node) closeStores() {
	if n.peers != nil {
		n.peers.close()
	}
	if n.transport != nil {
		n.transport.Close()
	} else if n.cfg.RaftListener != nil {
		n.cfg.RaftListener.Close()
	}
	if n.logStore != nil {
		n.logStore.Close()
	}
	if n.fsm != nil {
		n.fsm.Close()
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func orDefaultU64(v, d uint64) uint64 {
	if v == 0 {
		return d
	}
	return v
}

func orDefaultDur(v, d time.Duration) time.Duration {
	if v == 0 {
		return d
	}
	return v
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
