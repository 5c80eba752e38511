package broker

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/broker/fsm"
)

// toStatus maps an error to the gRPC status the caller sees. Statuses pass
// through unchanged (a write forwarded to the leader comes back as the
// leader's status); sentinels map to their codes; leadership trouble is
// Unavailable, which clients retry.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	code := codes.Internal
	switch {
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrShutdown),
		errors.Is(err, cluster.ErrNotMember):
		code = codes.Unavailable
	case errors.Is(err, fsm.ErrNotFound), errors.Is(err, cluster.ErrUnknownMember):
		code = codes.NotFound
	case errors.Is(err, fsm.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, fsm.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, fsm.ErrConflict), errors.Is(err, fsm.ErrUnknownCommand):
		code = codes.FailedPrecondition
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
}

// invalid is an InvalidArgument status naming the field at fault.
func invalid(field, reason string) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, reason)
}
