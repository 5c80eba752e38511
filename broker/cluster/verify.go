package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// errNotComparable: the leader no longer remembers its digests at this
// node's applied index (or there is no leader); try again later.
var errNotComparable = errors.New("the leader's digests at this index are not available")

// verifyLoop checks the state soon after start and then every
// VerifyInterval: the whole file read back against its digests, and (on a
// follower) the digests compared with the leader's at the same index.
func (n *Node) verifyLoop() {
	ctx, cancel := n.stopContext()
	defer cancel()
	// Open has just read the whole file back; the first round only
	// compares with the leader.
	next, scanned := 2*time.Second, true
	for {
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		err := n.verify(ctx, !scanned)
		if err == nil || !errors.Is(err, errNotComparable) {
			scanned = false
		}
		switch {
		case err == nil:
			next = n.cfg.VerifyInterval
		case errors.Is(err, errNotComparable), retryable(err), errors.Is(err, ErrNotServing):
			next = 5 * time.Second
		default:
			n.log.Warn("verify the state", "error", err)
			next = 5 * time.Second
		}
	}
}

// Verify reads the whole state file back and compares it with the digests
// recorded with it; then, on a follower that serves, compares its digests
// with the leader's at the same applied index. A mismatch stops the state
// machine, and the node reinstalls the leader's state.
func (n *Node) Verify(ctx context.Context) error { return n.verify(ctx, true) }

func (n *Node) verify(ctx context.Context, scan bool) error {
	if err := n.fsm.Failed(); err != nil {
		return err
	}
	if scan {
		if _, err := n.fsm.Verify(); err != nil {
			return err
		}
	}
	if n.IsLeader() {
		return nil
	}
	if err := n.Serving(); err != nil {
		return err
	}
	mine := n.fsm.Digests()
	id, addr := n.Leader()
	if id == "" || addr == "" || id == n.cfg.NodeID {
		return n.notLeader("")
	}
	c, err := n.peers.client(addr)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.Checksums(n.markForwarded(cctx), &qhinv1.ChecksumsRequest{Index: mine.Index})
	if status.Code(err) == codes.NotFound {
		return errNotComparable
	}
	if err != nil {
		return forwardError(id, addr, err)
	}
	var diff []string
	for i, name := range dataTableNames() {
		var lt *qhinv1.TableChecksum
		for _, t := range resp.Tables {
			if t.Table == name {
				lt = t
			}
		}
		d := mine.Tables[i]
		if lt == nil || lt.Entries != d.Count || !bytes.Equal(lt.Sha256, d.Sum[:]) {
			diff = append(diff, name)
		}
	}
	if len(diff) > 0 {
		err := fmt.Errorf("at index %d the table(s) %s differ from the leader %s's", mine.Index, strings.Join(diff, ", "), id)
		n.fsm.MarkDamaged(err)
		return err
	}
	return nil
}

func dataTableNames() []string { return fsm.TableNames() }

// Checksums returns this node's digests as of index; the leader answers
// followers that compare theirs.
func (n *Node) Checksums(index uint64) (*qhinv1.ChecksumsResponse, error) {
	if !n.IsLeader() {
		return nil, n.notLeader("")
	}
	d, ok := n.fsm.DigestsAt(index)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "digests at index %d are not remembered", index)
	}
	out := &qhinv1.ChecksumsResponse{Index: d.Index}
	for i, name := range fsm.TableNames() {
		t := d.Tables[i]
		out.Tables = append(out.Tables, &qhinv1.TableChecksum{Table: name, Entries: t.Count, Sha256: t.Sum[:]})
	}
	return out, nil
}

// leaderFromPeers finds the leader's gRPC address when this node's own
// state cannot say (it stopped before the leader's record reached it): it
// asks the other brokers it knows of, and those it was told to join.
func (n *Node) leaderFromPeers(ctx context.Context) (string, string) {
	id, addr := n.Leader()
	if id == "" || addr != "" {
		return id, addr
	}
	asked := map[string]bool{}
	others := n.otherBrokers()
	for _, a := range n.cfg.Join {
		others["join:"+a] = a
	}
	for _, a := range others {
		if a == "" || asked[a] {
			continue
		}
		asked[a] = true
		c, err := n.peers.client(a)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(cctx, &qhinv1.StatusRequest{})
		cancel()
		if err != nil || st.LeaderId != id {
			continue
		}
		for _, m := range st.Members {
			if m.NodeId == id && m.GrpcAddr != "" {
				return id, m.GrpcAddr
			}
		}
	}
	return id, ""
}

func (n *Node) signalRecovery() {
	select {
	case n.recoverCh <- struct{}{}:
	default:
	}
}

// recoverLoop brings a failed state machine back: it reinstalls the
// leader's state (handing leadership over first when this node leads),
// retrying with a growing delay until it succeeds or the node stops.
func (n *Node) recoverLoop() {
	ctx, cancel := n.stopContext()
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.recoverCh:
		}
		for attempt := 0; n.fsm.Failed() != nil; attempt++ {
			err := n.reinstall(ctx)
			if err == nil {
				break
			}
			n.log.Warn("reinstall the leader's state", "attempt", attempt+1, "error", err)
			d := min(time.Second<<min(attempt, 5), 30*time.Second)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
	}
}

// reinstall replaces this node's state with the leader's, streamed from the
// leader as of a linearizable read.
func (n *Node) reinstall(ctx context.Context) error {
	if n.IsLeader() {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("hand leadership over before reinstalling: %w", err)
		}
	}
	id, addr := n.leaderFromPeers(ctx)
	if id == "" || addr == "" || id == n.cfg.NodeID {
		return ErrNoLeader
	}
	c, err := n.peers.client(addr)
	if err != nil {
		return err
	}
	idx, err := n.fsm.Replace(func(w io.Writer) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		stream, err := c.SaveSnapshot(n.markForwarded(cctx), &qhinv1.SaveSnapshotRequest{})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if _, err := w.Write(chunk.Data); err != nil {
				return err
			}
		}
	})
	if err != nil {
		return err
	}
	n.log.Warn("reinstalled the leader's state; serving again once caught up", "leader", id, "index", idx)
	return nil
}
