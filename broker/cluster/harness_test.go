package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The harness runs real Raft nodes on hashicorp/raft's in-memory transport,
// which can partition them, while the Cluster service (forwarding, joins,
// WaitApplied, snapshots) runs on real gRPC with mutual TLS on loopback.

var testTD = spiffeid.RequireTrustDomainFromString("qhin.test")

// Raft timers of the tests: short, but long enough for a loaded machine.
const (
	testHeartbeat = 300 * time.Millisecond
	testLease     = 150 * time.Millisecond
)

// faultyLogs is a log store whose writes can be made to fail, as a full
// disk would make them.
type faultyLogs struct {
	raft.LogStore
	fail atomic.Bool
}

var errDiskFull = errors.New("write raft.db: no space left on device")

func (f *faultyLogs) StoreLog(l *raft.Log) error {
	if f.fail.Load() {
		return errDiskFull
	}
	return f.LogStore.StoreLog(l)
}

func (f *faultyLogs) StoreLogs(l []*raft.Log) error {
	if f.fail.Load() {
		return errDiskFull
	}
	return f.LogStore.StoreLogs(l)
}

type testNode struct {
	id       string
	dir      string
	addr     raft.ServerAddress
	src      pki.Source
	grpcAddr string

	trans *raft.InmemTransport
	logs  *faultyLogs
	fsm   fsm.Options
	// heartbeat and lease: testHeartbeat and testLease unless set.
	heartbeat, lease time.Duration
	// noGroupCommit and beforeRound: the Config test hooks.
	noGroupCommit bool
	beforeRound   func([]*qhinv1.Command)
	node          *Node
	srv           *grpc.Server
	done          chan struct{}
}

type testCluster struct {
	t     testing.TB
	ca    *pki.CA
	nodes []*testNode
	logs  *syncBuffer
	log   *slog.Logger
	// cut[i][j]: i does not reach j.
	mu  sync.Mutex
	cut map[[2]int]bool
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newCluster starts size nodes: the first bootstraps, the others join
// through it over the Cluster service. opts, when given, sets node i's
// state machine options.
func newCluster(t testing.TB, size int, opts ...func(i int, tn *testNode)) *testCluster {
	t.Helper()
	ca, err := pki.NewCA(testTD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, ca: ca, logs: &syncBuffer{}, cut: map[[2]int]bool{}}
	c.log = slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster log:\n%s", c.logs.String())
		}
		for i := range c.nodes {
			c.kill(i)
		}
	})
	for i := range size {
		id := fmt.Sprintf("b%d", i+1)
		svid, err := ca.IssueIdentity(pki.RoleBroker, id, time.Hour, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		tn := &testNode{id: id, dir: t.TempDir(), addr: raft.ServerAddress(id + ".raft:7411"), src: pki.StaticSource{SVID: svid, Bundle: ca.Bundle()},
			grpcAddr: "127.0.0.1:0", heartbeat: testHeartbeat, lease: testLease}
		for _, o := range opts {
			o(i, tn)
		}
		c.nodes = append(c.nodes, tn)
	}
	for i := range c.nodes {
		c.start(i)
		if i == 0 {
			c.waitLeader(-1)
		}
	}
	c.waitServing()
	return c
}

// start opens node i from its data directory, at its Raft address and gRPC
// port, and connects its transport to every node not cut off from it.
func (c *testCluster) start(i int) {
	c.t.Helper()
	tn := c.nodes[i]
	_, tn.trans = raft.NewInmemTransportWithTimeout(tn.addr, 2*time.Second)
	c.wire()
	ln, err := net.Listen("tcp", tn.grpcAddr)
	if err != nil {
		c.t.Fatalf("node %s: listen: %v", tn.id, err)
	}
	tn.grpcAddr = ln.Addr().String()
	var join []string
	if i > 0 {
		join = []string{c.nodes[0].grpcAddr}
	}
	tn.logs = &faultyLogs{}
	node, err := Open(Config{
		NodeID: tn.id, GRPCAddr: tn.grpcAddr, DataDir: tn.dir, Bootstrap: i == 0, Join: join,
		Source: tn.src, TrustDomain: testTD,
		HeartbeatTimeout: tn.heartbeat, ElectionTimeout: tn.heartbeat, LeaderLeaseTimeout: tn.lease,
		Logger: c.log, RaftLogLevel: "info",
		transport: tn.trans, fsmOptions: tn.fsm, noGroupCommit: tn.noGroupCommit, beforeRound: tn.beforeRound,
		wrapLogStore: func(l raft.LogStore) raft.LogStore { tn.logs.LogStore = l; return tn.logs },
	})
	if err != nil {
		ln.Close()
		c.t.Fatalf("node %s: open: %v", tn.id, err)
	}
	tn.node = node
	opts, err := pki.ServerConfig{Source: tn.src, Policy: pki.DefaultPolicy, Logger: c.log}.ServerOptions()
	if err != nil {
		c.t.Fatal(err)
	}
	tn.srv = grpc.NewServer(opts...)
	qhinv1.RegisterClusterServer(tn.srv, NewService(node, c.log))
	tn.done = make(chan struct{})
	go func() {
		defer close(tn.done)
		tn.srv.Serve(ln)
	}()
}

// wire connects every pair of running transports that are not cut.
func (c *testCluster) wire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, a := range c.nodes {
		for j, b := range c.nodes {
			if i == j || a.trans == nil || b.trans == nil {
				continue
			}
			if c.cut[[2]int{i, j}] {
				a.trans.Disconnect(b.addr)
			} else {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
}

// kill stops node i as a crash would.
func (c *testCluster) kill(i int) {
	tn := c.nodes[i]
	if tn.node == nil {
		return
	}
	tn.srv.Stop()
	<-tn.done
	tn.node.Kill()
	tn.node = nil
	for _, other := range c.nodes {
		if other.trans != nil && other != tn {
			other.trans.Disconnect(tn.addr)
		}
	}
	tn.trans = nil
}

// partition cuts node i's Raft traffic from and to every other node; its
// gRPC service stays up.
func (c *testCluster) partition(i int) {
	c.mu.Lock()
	for j := range c.nodes {
		if j != i {
			c.cut[[2]int{i, j}], c.cut[[2]int{j, i}] = true, true
		}
	}
	c.mu.Unlock()
	c.wire()
}

func (c *testCluster) heal() {
	c.mu.Lock()
	c.cut = map[[2]int]bool{}
	c.mu.Unlock()
	c.wire()
}

// poll waits for cond, failing the test with the phase's name and cond's
// last error when it does not hold in time.
func (c *testCluster) poll(phase string, d time.Duration, cond func() error) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("phase %q: timed out after %v: %v", phase, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLeader waits for a leader other than not and returns its index.
func (c *testCluster) waitLeader(not int) int {
	c.t.Helper()
	leader := -1
	c.poll("a leader", 20*time.Second, func() error {
		for i, tn := range c.nodes {
			if i != not && tn.node != nil && tn.node.IsLeader() && tn.node.Serving() == nil {
				leader = i
				return nil
			}
		}
		return errors.New("no serving leader")
	})
	return leader
}

// waitServing waits until every running node serves and has its record.
func (c *testCluster) waitServing() {
	c.t.Helper()
	c.poll("every node ready", 30*time.Second, func() error {
		for _, tn := range c.nodes {
			if tn.node != nil && !tn.node.Ready() {
				return fmt.Errorf("%s: %v", tn.id, tn.node.Serving())
			}
		}
		return nil
	})
}

func (c *testCluster) follower() int {
	leader := c.waitLeader(-1)
	for i, tn := range c.nodes {
		if i != leader && tn.node != nil {
			return i
		}
	}
	c.t.Fatal("no follower")
	return -1
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func registerCmd(t testing.TB, id, reqID string) *qhinv1.Command {
	t.Helper()
	c, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, reqID, time.Now(), &qhinv1.Participant{
		Id: id, SpiffeId: "spiffe://qhin.test/participant/" + id, Endpoint: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func statusCmd(t testing.TB, id string, st qhinv1.ParticipantStatus) *qhinv1.Command {
	t.Helper()
	c, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_SET_PARTICIPANT_STATUS, "", time.Now(),
		&qhinv1.SetParticipantStatus{ParticipantId: id, Status: st})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// register writes count participants through node i, one entry each.
func (c *testCluster) register(i int, prefix string, count int) {
	c.t.Helper()
	for k := range count {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err := c.nodes[i].node.Apply(ctx, registerCmd(c.t, fmt.Sprintf("%s%d", prefix, k), ""))
		cancel()
		if err != nil {
			c.t.Fatalf("register %s%d through %s: %v", prefix, k, c.nodes[i].id, err)
		}
	}
}

// status returns participant id's status on node i (0 when absent).
func (c *testCluster) status(i int, id string) qhinv1.ParticipantStatus {
	p, err := c.nodes[i].node.FSM().Participant(id)
	if err != nil {
		return 0
	}
	return p.Status
}

// sameState waits until node i's digests equal the leader's at the same
// index.
func (c *testCluster) sameState(phase string, i int) {
	c.t.Helper()
	c.poll(phase, 30*time.Second, func() error {
		leader := c.waitLeader(-1)
		a, b := c.nodes[leader].node.FSM().Digests(), c.nodes[i].node.FSM().Digests()
		if a.Index != b.Index {
			return fmt.Errorf("leader at %d, %s at %d", a.Index, c.nodes[i].id, b.Index)
		}
		if diff := a.Diff(b); len(diff) > 0 {
			return fmt.Errorf("tables %v differ", diff)
		}
		return nil
	})
}

func protoMarshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }

func newInmem(addr raft.ServerAddress) raft.Transport {
	_, t := raft.NewInmemTransport(addr)
	return t
}

// fsmApplier builds a state machine outside any cluster, for snapshots.
type fsmApplier struct {
	t *testing.T
}

// snapshotWith returns a saved snapshot of a state holding one participant
// with the given SPIFFE ID.
func (a *fsmApplier) snapshotWith(spiffeID string) []byte {
	a.t.Helper()
	f, err := fsm.Open(filepath.Join(a.t.TempDir(), "fsm.db"), fsm.Options{})
	if err != nil {
		a.t.Fatal(err)
	}
	defer f.Close()
	id := spiffeID[strings.LastIndex(spiffeID, "/")+1:]
	cmd, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, "", time.Now(), &qhinv1.Participant{
		Id: id, SpiffeId: spiffeID, Endpoint: "127.0.0.1:9"})
	if err != nil {
		a.t.Fatal(err)
	}
	data, _ := fsm.Encode(cmd)
	if r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}).(*fsm.Result); r.Err != nil {
		a.t.Fatal(r.Err)
	}
	var buf bytes.Buffer
	if _, err := f.WriteTo(&buf); err != nil {
		a.t.Fatal(err)
	}
	return buf.Bytes()
}
