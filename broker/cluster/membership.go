package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// stopContext returns a context cancelled when the node stops.
func (n *Node) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// sleepJitter waits a growing, jittered delay: 25ms doubling to 1s, each
// ±50%. The node's own background loops use it between attempts.
func sleepJitter(ctx context.Context, attempt int) error {
	d := min(25*time.Millisecond<<min(attempt, 6), time.Second)
	d = d/2 + time.Duration(rand.Int64N(int64(d)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// joinLoop asks the configured members to add this node until one does.
func (n *Node) joinLoop() {
	ctx, cancel := n.stopContext()
	defer cancel()
	deadline := time.Now().Add(joinTimeout)
	req := &qhinv1.JoinRequest{NodeId: n.cfg.NodeID, RaftAddr: n.RaftAddr(), GrpcAddr: n.cfg.GRPCAddr}
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		for _, addr := range n.cfg.Join {
			c, err := n.peers.client(addr)
			if err != nil {
				n.log.Warn("join", "via", addr, "error", err)
				continue
			}
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := c.Join(cctx, req)
			ccancel()
			if err == nil {
				n.log.Info("joined the cluster", "via", addr, "leader", resp.LeaderId)
				return
			}
			n.log.Debug("join", "via", addr, "error", err)
		}
		if sleepJitter(ctx, attempt+3) != nil {
			return
		}
	}
	n.log.Error("could not join the cluster; start the node again or add it with qhinctl cluster join", "join", n.cfg.Join)
}

// announceLoop keeps this node's broker record (its addresses and the
// command version it applies) current in the replicated state, and on the
// leader drops records of nodes that are no longer members.
func (n *Node) announceLoop() {
	ctx, cancel := n.stopContext()
	defer cancel()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			if err := n.announce(ctx); err != nil {
				n.log.Debug("announce broker record", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (n *Node) announce(ctx context.Context) error {
	brokers, err := n.fsm.Brokers()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	self := &qhinv1.BrokerRecord{NodeId: n.cfg.NodeID, RaftAddr: n.RaftAddr(), GrpcAddr: n.cfg.GRPCAddr,
		MaxCommandVersion: n.maxCommandVersion()}
	if !slices.ContainsFunc(brokers, func(b *qhinv1.BrokerRecord) bool { return proto.Equal(b, self) }) {
		if member, err := n.inConfiguration(n.cfg.NodeID); err != nil || !member {
			return err // not a member (yet): nothing to announce
		}
		cmd, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_PUT_BROKER, "", time.Now(), self)
		if err != nil {
			return err
		}
		if _, _, err := n.Apply(ctx, cmd); err != nil {
			return err
		}
	}
	if !n.IsLeader() {
		return nil
	}
	for _, b := range brokers {
		if member, err := n.inConfiguration(b.NodeId); err == nil && !member {
			cmd, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_REMOVE_BROKER, "", time.Now(), &qhinv1.RemoveBroker{NodeId: b.NodeId})
			if err != nil {
				return err
			}
			if _, _, err := n.Apply(ctx, cmd); err != nil {
				return err
			}
		}
	}
	return nil
}

// inConfiguration reports whether a node is in the latest Raft
// configuration.
func (n *Node) inConfiguration(id string) (bool, error) {
	members, err := n.membership()
	if err != nil {
		return false, err
	}
	_, ok := members[id]
	return ok, nil
}

func (n *Node) hasConfiguration() bool {
	members, err := n.membership()
	return err == nil && len(members) > 0
}

func (n *Node) membership() (map[string]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, n.raftError(err)
	}
	out := map[string]raft.Server{}
	for _, s := range f.Configuration().Servers {
		out[string(s.ID)] = s
	}
	return out, nil
}

// Join adds a node to the cluster, on the leader (forwarded once when this
// node does not lead). Joining again with the same address is a no-op; with
// a new address the node is re-added there. It returns the leader's id.
func (n *Node) Join(ctx context.Context, req *qhinv1.JoinRequest) (string, error) {
	return onLeader(ctx, n,
		func(ctx context.Context) (string, error) { return n.cfg.NodeID, n.joinLocal(ctx, req) },
		func(ctx context.Context, c qhinv1.ClusterClient) (string, error) {
			resp, err := c.Join(ctx, req)
			if err != nil {
				return "", err
			}
			return resp.LeaderId, nil
		})
}

func (n *Node) joinLocal(ctx context.Context, req *qhinv1.JoinRequest) error {
	timeout := timeoutOf(ctx)
	members, err := n.membership()
	if err != nil {
		return err
	}
	id, addr := raft.ServerID(req.NodeId), raft.ServerAddress(req.RaftAddr)
	for _, s := range members {
		if s.ID == id && s.Address == addr && (s.Suffrage == raft.Voter) == !req.NonVoter {
			return n.putBroker(ctx, req)
		}
		if s.ID == id || s.Address == addr {
			if err := n.raft.RemoveServer(s.ID, 0, timeout).Error(); err != nil {
				return n.raftError(err)
			}
		}
	}
	var f raft.IndexFuture
	if req.NonVoter {
		f = n.raft.AddNonvoter(id, addr, 0, timeout)
	} else {
		f = n.raft.AddVoter(id, addr, 0, timeout)
	}
	if err := f.Error(); err != nil {
		return n.raftError(err)
	}
	n.log.Info("added broker", "member", req.NodeId, "raft_addr", req.RaftAddr, "voter", !req.NonVoter)
	return n.putBroker(ctx, req)
}

func (n *Node) putBroker(ctx context.Context, req *qhinv1.JoinRequest) error {
	if req.GrpcAddr == "" {
		return nil // the node announces its address itself once it runs
	}
	rec := &qhinv1.BrokerRecord{NodeId: req.NodeId, RaftAddr: req.RaftAddr, GrpcAddr: req.GrpcAddr}
	if brokers, err := n.fsm.Brokers(); err == nil {
		for _, b := range brokers {
			if b.NodeId == req.NodeId && b.RaftAddr == req.RaftAddr && b.GrpcAddr == req.GrpcAddr {
				return nil // known as it is, with the version it published
			}
		}
	}
	cmd, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_PUT_BROKER, "", time.Now(), rec)
	if err != nil {
		return err
	}
	_, _, err = n.Apply(ctx, cmd)
	return err
}

// Remove takes a node out of the cluster, on the leader (forwarded once when
// this node does not lead).
func (n *Node) Remove(ctx context.Context, id string) error {
	_, err := onLeader(ctx, n,
		func(ctx context.Context) (struct{}, error) { return struct{}{}, n.removeLocal(ctx, id) },
		func(ctx context.Context, c qhinv1.ClusterClient) (struct{}, error) {
			_, err := c.Remove(ctx, &qhinv1.RemoveRequest{NodeId: id})
			return struct{}{}, err
		})
	return err
}

func (n *Node) removeLocal(ctx context.Context, id string) error {
	member, err := n.inConfiguration(id)
	if err != nil {
		return err
	}
	if !member {
		return fmt.Errorf("%s: %w", id, ErrUnknownMember)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx)).Error(); err != nil {
		return n.raftError(err)
	}
	n.log.Info("removed broker", "member", id)
	if id == n.cfg.NodeID {
		return nil // a removed leader steps down; the next one drops the record
	}
	cmd, err := fsm.NewCommand(qhinv1.CommandType_COMMAND_TYPE_REMOVE_BROKER, "", time.Now(), &qhinv1.RemoveBroker{NodeId: id})
	if err != nil {
		return err
	}
	_, _, err = n.Apply(ctx, cmd)
	return err
}

// NodeStatus reports this node's own Raft state.
func (n *Node) NodeStatus() *qhinv1.Member {
	m := &qhinv1.Member{
		NodeId:            n.cfg.NodeID,
		RaftAddr:          n.RaftAddr(),
		GrpcAddr:          n.cfg.GRPCAddr,
		State:             nodeState(n.raft.State()),
		Term:              n.raft.CurrentTerm(),
		CommitIndex:       max(n.raft.CommitIndex(), n.fence.highWater()),
		AppliedIndex:      n.applied(),
		MaxCommandVersion: n.maxCommandVersion(),
	}
	if err := n.Serving(); err != nil {
		m.NotServingReason = err.Error()
	} else {
		m.Serving = true
	}
	m.Leader = m.State == qhinv1.NodeState_NODE_STATE_LEADER
	if !m.Leader {
		if lc := n.raft.LastContact(); !lc.IsZero() {
			m.LastContact = durationpb.New(time.Since(lc))
		}
	}
	if member, err := n.membership(); err == nil {
		if s, ok := member[n.cfg.NodeID]; ok {
			m.Voter = s.Suffrage == raft.Voter
		}
	}
	return m
}

// Status reports every member of the latest configuration, asking each one
// for its own Raft state; a member that does not answer within a second is
// reported unreachable.
func (n *Node) Status(ctx context.Context) (*qhinv1.StatusResponse, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, n.raftError(err)
	}
	leaderID, _ := n.Leader()
	servers := f.Configuration().Servers
	out := &qhinv1.StatusResponse{LeaderId: leaderID, Members: make([]*qhinv1.Member, len(servers))}
	done := make(chan struct{}, len(servers))
	for i, s := range servers {
		go func() {
			defer func() { done <- struct{}{} }()
			out.Members[i] = n.memberStatus(ctx, s, leaderID)
		}()
	}
	for range servers {
		<-done
	}
	slices.SortFunc(out.Members, func(a, b *qhinv1.Member) int {
		switch {
		case a.NodeId < b.NodeId:
			return -1
		case a.NodeId > b.NodeId:
			return 1
		}
		return 0
	})
	return out, nil
}

func (n *Node) memberStatus(ctx context.Context, s raft.Server, leaderID string) *qhinv1.Member {
	base := &qhinv1.Member{
		NodeId:   string(s.ID),
		RaftAddr: string(s.Address),
		GrpcAddr: n.brokerAddr(string(s.ID)),
		Voter:    s.Suffrage == raft.Voter,
		Leader:   string(s.ID) == leaderID,
		State:    qhinv1.NodeState_NODE_STATE_UNREACHABLE,
	}
	if string(s.ID) == n.cfg.NodeID {
		m := n.NodeStatus()
		m.Voter = base.Voter
		return m
	}
	if base.GrpcAddr == "" {
		base.Detail = "gRPC address not yet announced"
		return base
	}
	c, err := n.peers.client(base.GrpcAddr)
	if err != nil {
		base.Detail = err.Error()
		return base
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := c.NodeStatus(cctx, &qhinv1.NodeStatusRequest{})
	if err != nil {
		base.Detail = err.Error()
		return base
	}
	m := resp.Member
	m.Voter = base.Voter
	m.Leader = base.Leader
	return m
}

// BrokerAddrs returns the gRPC addresses of the current members that have
// announced one, in node id order.
func (n *Node) BrokerAddrs() ([]string, error) {
	brokers, err := n.fsm.Brokers()
	if err != nil {
		return nil, err
	}
	members, err := n.membership()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range brokers {
		if _, ok := members[b.NodeId]; ok && b.GrpcAddr != "" {
			out = append(out, b.GrpcAddr)
		}
	}
	return out, nil
}

func nodeState(s raft.RaftState) qhinv1.NodeState {
	switch s {
	case raft.Follower:
		return qhinv1.NodeState_NODE_STATE_FOLLOWER
	case raft.Candidate:
		return qhinv1.NodeState_NODE_STATE_CANDIDATE
	case raft.Leader:
		return qhinv1.NodeState_NODE_STATE_LEADER
	case raft.Shutdown:
		return qhinv1.NodeState_NODE_STATE_SHUTDOWN
	}
	return qhinv1.NodeState_NODE_STATE_UNSPECIFIED
}

// Stats returns hashicorp/raft's own statistics, for metrics.
func (n *Node) Stats() map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range n.raft.Stats() {
		if u, err := strconv.ParseUint(v, 10, 64); err == nil {
			out[k] = u
		}
	}
	return out
}
