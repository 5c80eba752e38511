package cluster

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// ForwardedKey is the gRPC metadata key that marks a call one broker
// forwarded to another; its value is the forwarding broker's id. A broker
// that receives a marked call runs it as leader or answers Unavailable with
// a leader hint: never a second hop.
const ForwardedKey = "qhin-forwarded"

// Forwarded reports whether an incoming call was forwarded by another
// broker.
func Forwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(ForwardedKey)) > 0
}

// LeaderKey is the response trailer in which a broker names the gRPC
// address of the leader that ran a write (Apply), whether the broker ran it
// as the leader or forwarded it: clients send later writes straight to the
// leader (broker/client), saving the forwarding hop.
const LeaderKey = "qhin-leader"

// tellLeader names the leader, when known, in the trailer of the gRPC call
// ctx belongs to (nothing when ctx is not a gRPC call's).
func (n *Node) tellLeader(ctx context.Context) {
	if _, addr := n.Leader(); addr != "" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderKey, addr))
	}
}

func (n *Node) markForwarded(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, ForwardedKey, n.cfg.NodeID)
}

// onLeader is the one path of every leader-only operation (apply, join,
// remove, the read barrier, restore): it runs local when this node leads;
// otherwise it forwards the call once, marked, to the leader with remote.
// A call that was itself forwarded is never forwarded again, and there is no
// retry here: not-leader and no-leader come back at once as a LeaderError
// (Unavailable at the edge), and the client retries within its deadline.
func onLeader[T any](ctx context.Context, n *Node, local func(context.Context) (T, error),
	remote func(context.Context, qhinv1.ClusterClient) (T, error)) (T, error) {
	var zero T
	select {
	case <-n.stop:
		return zero, ErrShutdown
	default:
	}
	if n.IsLeader() {
		v, err := local(ctx)
		return v, n.raftError(err)
	}
	if Forwarded(ctx) {
		return zero, n.notLeader("a forwarded call is not forwarded again")
	}
	id, addr := n.Leader()
	if id == "" || addr == "" || id == n.cfg.NodeID {
		if !n.hasConfiguration() {
			return zero, ErrNotMember
		}
		return zero, n.notLeader("")
	}
	c, err := n.peers.client(addr)
	if err != nil {
		return zero, err
	}
	v, err := remote(n.markForwarded(ctx), c)
	if err != nil {
		return zero, forwardError(id, addr, err)
	}
	return v, nil
}

// forwardError turns the leader's Unavailable into a LeaderError, keeping
// the hint the leader gave (it may have lost leadership to another), so
// callers branch on it; other statuses pass through.
func forwardError(id, addr string, err error) error {
	if status.Code(err) != codes.Unavailable {
		return err
	}
	le := &LeaderError{Err: ErrNotLeader, LeaderID: id, LeaderAddr: addr, Detail: "forwarded: " + status.Convert(err).Message()}
	if h, ok := LeaderHintOf(err); ok {
		le.LeaderID, le.LeaderAddr = h.LeaderId, h.LeaderAddr
	} else {
		le.LeaderID, le.LeaderAddr = "", ""
		le.Err = ErrNoLeader
	}
	return le
}

// retryable reports a not-leader or no-leader error.
func retryable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)
}
