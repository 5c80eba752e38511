package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// MaxClockSkew is how far a command's time may be from the leader's clock.
// Apply uses the proposer's time for timestamps and to forget old request
// ids; a broker whose clock is off would otherwise write its error into the
// replicated state.
const MaxClockSkew = time.Minute

// appliedCommand is what a command yielded on the leader.
type appliedCommand struct {
	value     proto.Message
	index     uint64
	restricts bool
}

// Apply commits cmd and returns its result value and log index once the
// leader has applied it, forwarding it to the leader once when this node
// does not lead. A refused command returns the fsm error that refused it (or,
// when forwarded, the gRPC status the leader mapped it to).
//
// A command that withdraws access (a suspension, a retirement, fewer
// purposes) returns only once every broker has shown it holds the entry, or
// — for brokers that cannot be reached or are behind — once the fence's
// lease has run out since the entry was committed, after which none of them
// serves without it. A command that grants or changes nothing about access
// returns once applied on the leader; a read that must see it asks for a
// linearizable read (ReadLinearizable). When ctx is a gRPC call's, its
// trailer names the leader (LeaderKey).
func (n *Node) Apply(ctx context.Context, cmd *qhinv1.Command) (proto.Message, uint64, error) {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, 0, err
	}
	res, err := onLeader(ctx, n,
		func(ctx context.Context) (appliedCommand, error) { return n.applyLocal(ctx, cmd, data) },
		func(ctx context.Context, c qhinv1.ClusterClient) (appliedCommand, error) {
			resp, err := c.Apply(ctx, &qhinv1.ApplyRequest{Command: data})
			if err != nil {
				return appliedCommand{}, err
			}
			out := appliedCommand{index: resp.Index, restricts: resp.Restricts}
			if v := fsm.ResultType(cmd.Type); v != nil {
				if err := proto.Unmarshal(resp.Result, v); err != nil {
					return out, fmt.Errorf("decode result from leader: %w", err)
				}
				out.value = v
			}
			return out, nil
		})
	n.tellLeader(ctx)
	if err != nil {
		return nil, 0, err
	}
	if res.restricts {
		return res.value, res.index, n.confirmRestriction(ctx, res.index)
	}
	return res.value, res.index, nil
}

// ApplyForwarded applies an encoded command another broker forwarded. It
// runs on the leader only and never forwards again.
func (n *Node) ApplyForwarded(ctx context.Context, data []byte) (*qhinv1.ApplyResponse, error) {
	if !n.IsLeader() {
		return nil, n.notLeader("a forwarded call is not forwarded again")
	}
	var cmd qhinv1.Command
	if err := proto.Unmarshal(data, &cmd); err != nil {
		return nil, fmt.Errorf("%w: not a command", fsm.ErrInvalid)
	}
	res, err := n.applyLocal(ctx, &cmd, data)
	if err != nil {
		return nil, n.raftError(err)
	}
	out := &qhinv1.ApplyResponse{Index: res.index, Restricts: res.restricts}
	if res.value != nil {
		if out.Result, err = proto.Marshal(res.value); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// applyLocal proposes a command on this node, the leader, after the checks
// only a leader can make, and waits until it is applied here. A single
// command goes through the group commit queue (commit.go).
func (n *Node) applyLocal(ctx context.Context, cmd *qhinv1.Command, data []byte) (appliedCommand, error) {
	if err := n.checkProposal(cmd); err != nil {
		return appliedCommand{}, err
	}
	if cmd.Type == qhinv1.CommandType_COMMAND_TYPE_BATCH || n.cfg.noGroupCommit {
		// A caller's own batch is an entry already (batches do not nest).
		return n.propose(data, timeoutOf(ctx))
	}
	return n.commits.apply(ctx, cmd, data)
}

// checkProposal refuses a command the leader must not propose: one whose
// time is missing or far from the leader's clock, or one of a command
// version some member does not apply yet.
func (n *Node) checkProposal(cmd *qhinv1.Command) error {
	if cmd.GetTime() == nil || cmd.Time.CheckValid() != nil {
		return fmt.Errorf("%w: command has no valid time", fsm.ErrInvalid)
	}
	if skew := time.Since(cmd.Time.AsTime()); skew > MaxClockSkew || skew < -MaxClockSkew {
		return fmt.Errorf("%w: the proposing broker's clock is %v from the leader's (at most %v); synchronize the brokers' clocks",
			ErrClockSkew, skew.Round(time.Second), MaxClockSkew)
	}
	v := fsm.Version(cmd)
	if v <= 1 {
		return nil // every broker applies version 1
	}
	if mine := n.maxCommandVersion(); mine < v {
		return fmt.Errorf("%w: this broker (%s) applies commands up to version %d; the command needs %d", ErrVersion, n.cfg.NodeID, mine, v)
	}
	members, err := n.membership()
	if err != nil {
		return err
	}
	brokers, err := n.fsm.Brokers()
	if err != nil {
		return err
	}
	published := map[string]uint32{}
	for _, b := range brokers {
		published[b.NodeId] = b.MaxCommandVersion
	}
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if got := published[id]; got < v {
			return fmt.Errorf("%w: broker %s applies commands up to version %d and this command needs %d; upgrade %s first",
				ErrVersion, id, got, v, id)
		}
	}
	return nil
}

func (n *Node) maxCommandVersion() uint32 {
	if v := n.cfg.fsmOptions.MaxCommandVersion; v != 0 {
		return v
	}
	return fsm.CommandVersion
}

// confirmRestriction returns once every broker holds the entry at index, or
// can no longer serve without it. Each other broker is asked to answer once
// it has applied the entry; a broker that does not answer in time (down, cut
// off, behind, its disk full) is fenced: it heard every commit index below
// index before the entry was committed, so its last word from the leader
// that could let it serve without the entry is older than the lease once
// the lease (plus a margin for messages in flight) has passed since now.
func (n *Node) confirmRestriction(ctx context.Context, index uint64) error {
	deadline := time.Now().Add(n.lease + n.lease/2)
	targets := n.otherBrokers()
	var (
		mu          sync.Mutex
		unconfirmed []string
		wg          sync.WaitGroup
	)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for id, addr := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !n.askApplied(dctx, addr, index) {
				mu.Lock()
				unconfirmed = append(unconfirmed, id)
				mu.Unlock()
			}
		}()
	}
	if err := n.waitApplied(dctx, index); err != nil {
		mu.Lock()
		unconfirmed = append(unconfirmed, n.cfg.NodeID)
		mu.Unlock()
	}
	wg.Wait()
	if len(unconfirmed) == 0 {
		return nil
	}
	slices.Sort(unconfirmed)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return fmt.Errorf("%w: entry %d is applied, but brokers %v have not shown they hold it yet: %v", ErrNotConfirmed, index, unconfirmed, ctx.Err())
	case <-n.stop:
		return ErrShutdown
	}
	n.log.Warn("restriction acknowledged after the fence's lease: these brokers did not confirm it and serve nothing until they apply it",
		"index", index, "brokers", unconfirmed)
	return nil
}

// otherBrokers maps every other broker this node knows — members of the
// configuration and brokers with a record, a removed one included until
// its record goes — to its gRPC address (empty when unknown).
func (n *Node) otherBrokers() map[string]string {
	out := map[string]string{}
	if members, err := n.membership(); err == nil {
		for id := range members {
			out[id] = ""
		}
	}
	if brokers, err := n.fsm.Brokers(); err == nil {
		for _, b := range brokers {
			out[b.NodeId] = b.GrpcAddr
		}
	}
	delete(out, n.cfg.NodeID)
	return out
}

// askApplied asks the broker at addr to answer once it has applied index.
func (n *Node) askApplied(ctx context.Context, addr string, index uint64) bool {
	if addr == "" {
		return false
	}
	c, err := n.peers.client(addr)
	if err != nil {
		return false
	}
	_, err = c.WaitApplied(ctx, &qhinv1.WaitAppliedRequest{Index: index})
	return err == nil
}

// WaitApplied answers once this node's state holds the entry at index.
func (n *Node) WaitApplied(ctx context.Context, index uint64) (uint64, error) {
	if err := n.waitApplied(ctx, index); err != nil {
		return n.applied(), err
	}
	return n.applied(), nil
}

func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	return onLeader(ctx, n, n.ReadIndexLocal, func(ctx context.Context, c qhinv1.ClusterClient) (uint64, error) {
		resp, err := c.ReadIndex(ctx, &qhinv1.ReadIndexRequest{})
		if err != nil {
			return 0, err
		}
		return resp.Index, nil
	})
}

// ReadIndexLocal confirms this node still leads, by committing a barrier
// through the log, and returns the index every acknowledged write is at or
// below. It never forwards.
func (n *Node) ReadIndexLocal(ctx context.Context) (uint64, error) {
	if !n.IsLeader() {
		return 0, n.notLeader("")
	}
	if err := n.raft.Barrier(timeoutOf(ctx)).Error(); err != nil {
		return 0, n.raftError(err)
	}
	return n.raft.AppliedIndex(), nil
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return defaultApplyTimeout
}
