package cluster

import (
	"errors"
	"fmt"
	"log/slog"
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

	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Defaults for Config fields left zero.
const (
	DefaultSnapshotThreshold = 8192
	DefaultSnapshotInterval  = 2 * time.Minute
	DefaultTrailingLogs      = 10240
	// Raft timers (hashicorp/raft's defaults are 1s, 1s and 500ms). A
	// follower calls an election after missing the leader's heartbeats for
	// HeartbeatTimeout (randomized up to twice that); the leader sends one
	// every tenth of it, on a path no disk write holds up. 500ms fails over
	// in about a second after a crash; a leader cut off from its quorum
	// steps down after LeaderLeaseTimeout, which only a partition needs,
	// so it gets the most that Raft allows, sparing a leader whose
	// followers pause under load.
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond
	// DefaultVerifyInterval is how often a broker reads its whole state
	// back and compares its digests with the leader's.
	DefaultVerifyInterval = 10 * time.Minute

	defaultApplyTimeout = 10 * time.Second
	joinTimeout         = 2 * time.Minute
	// commitTimeout bounds how long an idle leader waits before telling
	// followers its commit index; the fence relies on hearing it often.
	commitTimeout = 5 * time.Millisecond
	// logCacheSize is the Raft entries kept in memory: enough for
	// replication to read the last rounds back, few enough that entries of
	// large batches (up to 10,000 writes each) stay a small cost.
	logCacheSize = 64
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
	// Raft timing; zero takes the defaults above. The election timeout is
	// also the fence's lease: a follower serves only while the leader told
	// it, less than that long ago, a commit index it has applied.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// VerifyInterval: DefaultVerifyInterval when zero.
	VerifyInterval time.Duration
	// RaftConnMaxAge bounds the reuse of a Raft connection
	// (DefaultRaftConnMaxAge when zero).
	RaftConnMaxAge time.Duration

	// Logger receives the node's log and hashicorp/raft's, which is
	// filtered at RaftLogLevel (trace, debug, info, warn — the default —,
	// error, off).
	Logger       *slog.Logger
	RaftLogLevel string

	// Test hooks, set by this package's tests only: a Raft transport in
	// place of the mutual-TLS one (hashicorp/raft's in-memory transport),
	// a wrapper of the log store, state machine options, and a hook called
	// with each group commit round before it is proposed.
	transport    raft.Transport
	wrapLogStore func(raft.LogStore) raft.LogStore
	fsmOptions   fsm.Options
	beforeRound  func([]*qhinv1.Command)
	// noGroupCommit proposes every single command as its own entry, as
	// before group commit, for the benchmarks' comparison.
	noGroupCommit bool
}

// Node is one broker's member of the Raft cluster.
type Node struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm.FSM
	bolt  *raftboltdb.BoltStore
	logs  *watchedLogStore
	trans *observingTransport
	inner raft.Transport
	// stream is the mutual-TLS layer under the production transport.
	stream *tlsStreamLayer
	peers  *peers
	fence  *fence
	lease  time.Duration
	// commits coalesces the single commands proposed on this node while
	// it leads (commit.go).
	commits *groupCommit

	// leaderReadyTerm is the term in which this node, as leader, has
	// committed and applied a barrier: from then on its state holds
	// everything committed.
	leaderReadyTerm atomic.Uint64
	leaderChanges   atomic.Uint64
	ext             appliedExtension

	recoverCh chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	shutdown  sync.Once
}

// Open starts the node: it opens its stores (rebuilding a missing, damaged
// or outdated state file from the snapshot and log), starts Raft,
// bootstraps or joins when configured to and this node has no state yet,
// and keeps its own broker record current in the replicated state.
func Open(cfg Config) (*Node, error) {
	if err := pki.ValidateName(cfg.NodeID); err != nil {
		return nil, fmt.Errorf("node id %w", err)
	}
	if cfg.RaftListener == nil && cfg.transport == nil {
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
	cfg.HeartbeatTimeout = orDefaultDur(cfg.HeartbeatTimeout, DefaultHeartbeatTimeout)
	cfg.ElectionTimeout = orDefaultDur(cfg.ElectionTimeout, DefaultElectionTimeout)
	cfg.LeaderLeaseTimeout = orDefaultDur(cfg.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	cfg.VerifyInterval = orDefaultDur(cfg.VerifyInterval, DefaultVerifyInterval)
	cfg.RaftConnMaxAge = orDefaultDur(cfg.RaftConnMaxAge, DefaultRaftConnMaxAge)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	n := &Node{cfg: cfg, log: log, stop: make(chan struct{}), recoverCh: make(chan struct{}, 1),
		lease: cfg.ElectionTimeout}
	n.fence = newFence(n.lease)
	n.commits = newGroupCommit(n)
	n.commits.beforeRound = cfg.beforeRound
	ok := false
	defer func() {
		if !ok {
			n.closeStores()
		}
	}()

	hlog, err := newRaftLogger(log, orDefault(cfg.RaftLogLevel, "warn"))
	if err != nil {
		return nil, err
	}
	raftPath := filepath.Join(cfg.DataDir, "raft.db")
	if n.bolt, err = openLogStore(raftPath); err != nil {
		return nil, fmt.Errorf("open raft log %s: %w; this broker cannot use its Raft log: take it out of the cluster "+
			"(qhinctl cluster remove %s), move %s aside, and start it again with --join to rejoin with a fresh log",
			raftPath, err, cfg.NodeID, cfg.DataDir)
	}
	n.logs = &watchedLogStore{LogStore: n.bolt, path: raftPath, log: log}
	var logs raft.LogStore = n.logs
	if cfg.wrapLogStore != nil {
		logs = cfg.wrapLogStore(logs)
	}
	// The store keeps its snapshots in DataDir/snapshots.
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	snaps := indexedSnapshots{fileSnaps}
	hasState, err := raft.HasExistingState(n.bolt, n.bolt, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	opts := cfg.fsmOptions
	opts.Logger = log
	var rebuild bool
	if n.fsm, rebuild, err = openState(filepath.Join(cfg.DataDir, "fsm.db"), opts, hasState, log); err != nil {
		return nil, err
	}
	n.fsm.OnFailure(func(error) { n.signalRecovery() })

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	rc.SnapshotThreshold = orDefaultU64(cfg.SnapshotThreshold, DefaultSnapshotThreshold)
	rc.SnapshotInterval = orDefaultDur(cfg.SnapshotInterval, DefaultSnapshotInterval)
	rc.TrailingLogs = orDefaultU64(cfg.TrailingLogs, DefaultTrailingLogs)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	// Followers learn that an entry is committed from the leader's next
	// AppendEntries; an idle leader sends one after CommitTimeout (50-100ms
	// by default). The fence needs to hear the commit index often, and
	// reads-after-writes on a follower wait for it.
	rc.CommitTimeout = commitTimeout
	// Concurrent writes share log appends and state file transactions.
	rc.BatchApplyCh = true
	// The state file survives restarts and records the index it has
	// applied, so Raft need not rebuild it from the last snapshot — unless
	// the file is new, was damaged, or is behind the newest snapshot, whose
	// entries the log may no longer hold.
	rc.NoSnapshotRestoreOnStart = true
	var snapIndex uint64
	if hasState {
		snapIndex = latestSnapshotIndex(snaps)
		if rebuild || n.fsm.AppliedIndex() < snapIndex {
			rc.NoSnapshotRestoreOnStart = false
			log.Warn("rebuilding the state from the newest snapshot and the log before serving",
				"state_applied_index", n.fsm.AppliedIndex(), "snapshot_index", snapIndex)
		}
	}

	if err := n.openTransport(hlog); err != nil {
		return nil, err
	}
	n.peers = newPeers(pki.ClientCredentials(cfg.Source, pki.AuthorizeRoles(cfg.TrustDomain, pki.RoleBroker)))

	// Recent entries stay in memory: replication and apply read them back
	// without decoding them from raft.db.
	cached, err := raft.NewLogCache(logCacheSize, logs)
	if err != nil {
		return nil, err
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, cached, n.bolt, snaps, n.trans)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if n.stream != nil {
		n.stream.watch(func() []raft.Server { return n.raft.GetConfiguration().Configuration().Servers })
	}
	if !rc.NoSnapshotRestoreOnStart && n.fsm.AppliedIndex() < snapIndex {
		// Raft restored the snapshot (NewRaft does it before it returns),
		// but one written before snapshots carried their index does not
		// say so: the state holds every entry up to the snapshot's.
		if err := n.fsm.MarkApplied(snapIndex); err != nil {
			n.raft.Shutdown()
			return nil, err
		}
	}
	obs := make(chan raft.Observation, 16)
	n.raft.RegisterObserver(raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	n.goFunc(func() { n.watchLeadership(obs) })
	if !hasState && cfg.Bootstrap {
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: rc.LocalID, Address: n.trans.LocalAddr(), Suffrage: raft.Voter,
		}}})
		if err := f.Error(); err != nil {
			n.raft.Shutdown()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		log.Info("bootstrapped a new cluster", "raft_addr", string(n.trans.LocalAddr()))
	}
	ok = true

	if !hasState && !cfg.Bootstrap && len(cfg.Join) > 0 {
		n.goFunc(n.joinLoop)
	}
	n.goFunc(n.commits.run)
	n.goFunc(n.announceLoop)
	n.goFunc(n.verifyLoop)
	n.goFunc(n.recoverLoop)
	return n, nil
}

func (n *Node) goFunc(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// openLogStore opens raft.db, refusing a damaged file (checked before bbolt
// maps it) with an error instead of a crash.
func openLogStore(path string) (store *raftboltdb.BoltStore, err error) {
	if err := fsm.CheckBoltFile(path); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			store, err = nil, fmt.Errorf("%w: %v", fsm.ErrDamaged, p)
		}
	}()
	return raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{
		Timeout: 5 * time.Second,
		// Commits write no freelist (rebuilt when the file opens) and find
		// free pages in a map: less to write and sync on every append.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	}})
}

// openState opens the state file. A damaged one is set aside (kept for
// inspection as fsm.db.damaged-UNIXTIME) and replaced by an empty one;
// rebuild then reports that Raft must restore it from the snapshot and log.
func openState(path string, opts fsm.Options, hasState bool, log *slog.Logger) (*fsm.FSM, bool, error) {
	_, statErr := os.Stat(path)
	missing := errors.Is(statErr, os.ErrNotExist)
	f, err := fsm.Open(path, opts)
	if err == nil {
		if missing && hasState {
			log.Warn("the state file is missing; rebuilding it from the Raft snapshot and log", "file", path)
		}
		return f, missing, nil
	}
	if !errors.Is(err, fsm.ErrDamaged) {
		return nil, false, err
	}
	aside := fmt.Sprintf("%s.damaged-%d", path, time.Now().Unix())
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, false, fmt.Errorf("%w (and moving it aside failed: %v; move it away by hand and start again)", err, rerr)
	}
	syncDir(filepath.Dir(path))
	log.Error("the state file is damaged: it was set aside and the state is rebuilt from the Raft snapshot and log before serving",
		"file", path, "moved_to", aside, "error", err)
	f, err = fsm.Open(path, opts)
	return f, true, err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func latestSnapshotIndex(s raft.SnapshotStore) uint64 {
	list, err := s.List()
	if err != nil || len(list) == 0 {
		return 0
	}
	return list[0].Index
}

// openTransport builds the Raft transport (mutual TLS over RaftListener, or
// the test's) and wraps it for the fence.
func (n *Node) openTransport(hlog hclog.Logger) error {
	if n.cfg.transport != nil {
		n.inner = n.cfg.transport
	} else {
		advertise := n.cfg.RaftListener.Addr()
		if n.cfg.RaftAdvertise != "" {
			a, err := net.ResolveTCPAddr("tcp", n.cfg.RaftAdvertise)
			if err != nil {
				return fmt.Errorf("raft advertise address: %w", err)
			}
			advertise = a
		}
		brokersOnly := pki.AuthorizeRoles(n.cfg.TrustDomain, pki.RoleBroker)
		n.stream = newTLSStreamLayer(n.cfg.RaftListener, advertise,
			pki.ServerTLS(n.cfg.Source, brokersOnly), pki.ClientTLS(n.cfg.Source, brokersOnly), n.cfg.RaftConnMaxAge, n.log)
		n.inner = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  n.stream,
			MaxPool: 3,
			Timeout: 10 * time.Second,
			Logger:  hlog,
		})
	}
	n.trans = newObservingTransport(n.inner, n.fence)
	n.trans.pipelineMaxAge = n.cfg.RaftConnMaxAge
	return nil
}

// watchLeadership counts leader changes and, when this node becomes leader,
// commits a barrier: until it is applied, the new leader may not hold every
// committed entry and does not serve.
func (n *Node) watchLeadership(obs <-chan raft.Observation) {
	for {
		select {
		case o := <-obs:
			n.leaderChanges.Add(1)
			if lo, ok := o.Data.(raft.LeaderObservation); ok && string(lo.LeaderID) == n.cfg.NodeID {
				n.goFunc(n.confirmLeadership)
			}
		case <-n.stop:
			return
		}
	}
}

func (n *Node) confirmLeadership() {
	term := n.raft.CurrentTerm()
	for n.IsLeader() && n.raft.CurrentTerm() == term {
		if err := n.raft.Barrier(n.cfg.ElectionTimeout * 4).Error(); err == nil {
			if n.IsLeader() && n.raft.CurrentTerm() == term {
				n.leaderReadyTerm.Store(term)
				n.log.Info("leading", "term", term)
			}
			return
		}
		select {
		case <-n.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// RaftAddr returns the address peers reach this node's Raft transport at.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// GRPCAddr returns the gRPC address this node advertises.
func (n *Node) GRPCAddr() string { return n.cfg.GRPCAddr }

// FSM returns the node's state machine, for tests and tools. Serving code
// reads through Read, which checks that the node may serve.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// IsLeader reports whether this node leads the cluster now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Lease is how long a follower keeps serving on the leader's last word.
func (n *Node) Lease() time.Duration { return n.lease }

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

// LeaderChanges counts the leader changes this node has observed.
func (n *Node) LeaderChanges() uint64 { return n.leaderChanges.Load() }

// Close stops the node: it hands leadership over when it leads, shuts Raft
// down and closes the transport and stores, in that order.
func (n *Node) Close() error {
	var err error
	n.shutdown.Do(func() {
		if n.IsLeader() {
			if terr := n.raft.LeadershipTransfer().Error(); terr != nil {
				n.log.Debug("leadership transfer before shutdown", "error", terr)
			}
		}
		close(n.stop)
		// Close the transport before Raft: peers then see their
		// connections fail at once, instead of RPCs nobody answers
		// piling up in their pipelines until each times out.
		n.trans.Close()
		err = n.raft.Shutdown().Error()
		n.wg.Wait()
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
		if n.stream != nil {
			n.stream.Close()
		}
		n.trans.Close()
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
	switch {
	case n.trans != nil:
		n.trans.Close()
	case n.cfg.RaftListener != nil:
		n.cfg.RaftListener.Close()
	}
	if n.bolt != nil {
		n.bolt.Close()
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
