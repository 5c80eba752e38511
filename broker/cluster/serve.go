package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/openqhin/openqhin/broker/fsm"
)

// Serving says whether this node may answer queries from its state now:
// nil when it may, else an error wrapping ErrNotServing that says why.
//
// A leader serves once it has applied a barrier of its own term, while it
// leads (hashicorp/raft steps a leader down when it loses its quorum for
// LeaderLeaseTimeout). A follower serves while the fence holds: the leader
// told it, less than a lease ago, a commit index it has applied. Neither
// serves while its state machine or its log cannot be written.
func (n *Node) Serving() error {
	select {
	case <-n.stop:
		return fmt.Errorf("%w: %w", ErrNotServing, ErrShutdown)
	default:
	}
	if err := n.fsm.Failed(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotServing, err)
	}
	if n.logs.failing.Load() {
		return fmt.Errorf("%w: it cannot write its Raft log", ErrNotServing)
	}
	switch st := n.raft.State(); st {
	case raft.Leader:
		if n.leaderReadyTerm.Load() != n.raft.CurrentTerm() {
			return fmt.Errorf("%w: it has just become leader and has not applied an entry of its term yet", ErrNotServing)
		}
		return nil
	case raft.Follower:
		if ok, why := n.fence.fresh(n.raft.CurrentTerm(), n.applied(), time.Now()); !ok {
			return fmt.Errorf("%w: %s", ErrNotServing, why)
		}
		return nil
	default:
		return fmt.Errorf("%w: it is a %s", ErrNotServing, st)
	}
}

// Ready reports whether the node serves and its own broker record (its
// gRPC address and the command version it applies) has reached its state:
// it has joined and caught up that far, and the leader knows which
// commands it may be sent.
func (n *Node) Ready() bool {
	if n.Serving() != nil {
		return false
	}
	brokers, err := n.fsm.Brokers()
	if err != nil {
		return false
	}
	for _, b := range brokers {
		if b.NodeId == n.cfg.NodeID {
			return b.GrpcAddr == n.cfg.GRPCAddr && b.MaxCommandVersion == n.maxCommandVersion()
		}
	}
	return false
}

// AwaitServing waits, at most a lease (less when ctx ends first), until the
// node serves. A follower that has just lost its leader serves again as
// soon as the next leader vouches for its state; a query waits for that
// rather than fail at once.
func (n *Node) AwaitServing(ctx context.Context) error {
	err := n.Serving()
	if err == nil {
		return nil
	}
	t := time.NewTimer(n.lease)
	defer t.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return err
		case <-t.C:
			return err
		case <-n.fsm.Changed():
		case <-tick.C:
		}
		if err = n.Serving(); err == nil {
			return nil
		}
	}
}

// appliedExtension caches how far this node's applied index extends over
// entries the state machine never sees (a new leader's no-op, barriers).
type appliedExtension struct {
	mu       sync.Mutex
	from, to uint64
}

// maxExtension bounds the log entries applied reads at once.
const maxExtension = 64

// applied is the index up to which this node's state holds every entry: the
// state machine's applied index, extended over the entries that follow it
// and that Raft has processed without passing them to the state machine.
func (n *Node) applied() uint64 {
	a := n.fsm.AppliedIndex()
	top := n.raft.AppliedIndex()
	n.ext.mu.Lock()
	defer n.ext.mu.Unlock()
	if n.ext.from != a || n.ext.to < a {
		n.ext.from, n.ext.to = a, a
	}
	for steps := 0; n.ext.to < top && steps < maxExtension; steps++ {
		var l raft.Log
		if err := n.bolt.GetLog(n.ext.to+1, &l); err != nil {
			break
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			break
		}
		n.ext.to++
	}
	return n.ext.to
}

// waitApplied waits until this node's state holds the entry at index.
func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	var tick *time.Ticker
	for {
		if n.applied() >= index {
			return nil
		}
		if err := n.fsm.Failed(); err != nil {
			return fmt.Errorf("%w: %w", ErrNotServing, err)
		}
		if tick == nil {
			// Entries the state machine never sees move nothing it
			// signals; look again now and then.
			tick = time.NewTicker(2 * time.Millisecond)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, n.applied(), ctx.Err())
		case <-n.stop:
			return ErrShutdown
		case <-n.fsm.Changed():
		case <-tick.C:
		}
	}
}

// ReadLevel is how consistent a read must be.
type ReadLevel int

const (
	// ReadLocal reads this node's state while the node serves (the fence
	// holds): at most a lease behind what the leader has committed.
	// Routing reads use it.
	ReadLocal ReadLevel = iota
	// ReadLinearizable confirms the leader's commit index through the log
	// and waits until this node has applied it, so the read reflects every
	// write acknowledged before it started.
	ReadLinearizable
)

// Read returns the state machine once it is consistent to the given level.
func (n *Node) Read(ctx context.Context, level ReadLevel) (*fsm.FSM, error) {
	if level == ReadLocal {
		if err := n.AwaitServing(ctx); err != nil {
			return nil, err
		}
		return n.fsm, nil
	}
	idx, err := n.readIndex(ctx)
	if err != nil {
		return nil, err
	}
	if err := n.waitApplied(ctx, idx); err != nil {
		return nil, err
	}
	if err := n.fsm.Failed(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotServing, err)
	}
	return n.fsm, nil
}
