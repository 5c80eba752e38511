package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Errors callers branch on. Not-leader, no-leader, not-serving and shutdown
// are retryable: the service edge maps them to Unavailable, and clients try
// again (another broker, or the same one once it has a leader).
var (
	ErrNotLeader = errors.New("not the raft leader")
	ErrNoLeader  = errors.New("no raft leader")
	ErrShutdown  = errors.New("broker is shutting down")
	// ErrNotServing: this broker cannot vouch for its state now (it has not
	// applied what the leader committed a moment ago, or its state machine
	// or log failed). It answers no query until it can.
	ErrNotServing = errors.New("this broker is not serving")
	// ErrNotMember is returned by a node that belongs to no cluster yet.
	ErrNotMember = errors.New("this broker is not a member of a cluster yet")
	// ErrUnknownMember is returned when removing a node that is not a member.
	ErrUnknownMember = errors.New("not a cluster member")
	// ErrVersion: a command needs a command version a member does not
	// apply yet.
	ErrVersion = errors.New("command version not supported by every broker")
	// ErrTrustDomain: a snapshot's participants belong to another trust
	// domain.
	ErrTrustDomain = errors.New("snapshot from another trust domain")
	// ErrBadSnapshot: a snapshot that is not a whole broker state.
	ErrBadSnapshot = errors.New("bad snapshot")
	// ErrClockSkew: a proposer's clock is too far from the leader's.
	ErrClockSkew = errors.New("clock skew")
	// ErrNotConfirmed: a restricting write was applied, but the caller's
	// deadline passed before every broker could be shown to hold it or to
	// have stopped serving. Retrying with the same request id waits again.
	ErrNotConfirmed = errors.New("not yet confirmed on every serving broker")
)

// LeaderError is a not-leader or no-leader answer that says where the
// leader is, when this node knows.
type LeaderError struct {
	// Err is ErrNotLeader or ErrNoLeader.
	Err        error
	LeaderID   string
	LeaderAddr string
	Detail     string
}

func (e *LeaderError) Error() string {
	msg := e.Err.Error()
	if e.LeaderID != "" {
		msg = fmt.Sprintf("%s; the leader is %s at %s", msg, e.LeaderID, e.LeaderAddr)
	}
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

func (e *LeaderError) Unwrap() error { return e.Err }

// notLeader is this node's answer to a leader-only call it cannot run.
func (n *Node) notLeader(detail string) error {
	id, addr := n.Leader()
	if id == "" || addr == "" || id == n.cfg.NodeID {
		return &LeaderError{Err: ErrNoLeader, Detail: detail}
	}
	return &LeaderError{Err: ErrNotLeader, LeaderID: id, LeaderAddr: addr, Detail: detail}
}

// raftError maps hashicorp/raft's errors to ours: losing leadership in any
// form is not-leader (retryable; a write's outcome is then unknown, and its
// request id makes the retry safe).
func (n *Node) raftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrAbortedByRestore),
		errors.Is(err, raft.ErrEnqueueTimeout):
		return n.notLeader(err.Error())
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	}
	return err
}

// StatusOf maps an error of the cluster or the state machine to the gRPC
// status a caller sees. Statuses pass through unchanged (a forwarded call
// comes back as the leader's status); a LeaderError becomes Unavailable with
// a LeaderHint in its details.
func StatusOf(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	var le *LeaderError
	if errors.As(err, &le) {
		st := status.New(codes.Unavailable, err.Error())
		if le.LeaderID != "" {
			if d, derr := st.WithDetails(&qhinv1.LeaderHint{LeaderId: le.LeaderID, LeaderAddr: le.LeaderAddr}); derr == nil {
				st = d
			}
		}
		return st.Err()
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader), errors.Is(err, ErrShutdown),
		errors.Is(err, ErrNotMember), errors.Is(err, ErrNotServing), errors.Is(err, ErrNotConfirmed),
		errors.Is(err, fsm.ErrFailed):
		code = codes.Unavailable
	case errors.Is(err, fsm.ErrNotFound), errors.Is(err, ErrUnknownMember):
		code = codes.NotFound
	case errors.Is(err, fsm.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, fsm.ErrInvalid), errors.Is(err, ErrBadSnapshot):
		code = codes.InvalidArgument
	case errors.Is(err, fsm.ErrConflict), errors.Is(err, fsm.ErrUnknownCommand), errors.Is(err, ErrVersion),
		errors.Is(err, ErrTrustDomain), errors.Is(err, ErrClockSkew):
		code = codes.FailedPrecondition
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// LeaderHintOf returns the leader hint in a status error's details.
func LeaderHintOf(err error) (*qhinv1.LeaderHint, bool) {
	for _, d := range status.Convert(err).Details() {
		if h, ok := d.(*qhinv1.LeaderHint); ok {
			return h, true
		}
	}
	return nil, false
}
