package broker

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/cluster"
)

// toStatus maps an error to the gRPC status the caller sees: statuses pass
// through unchanged (a write forwarded to the leader comes back as the
// leader's status); sentinels of the cluster and the state machine map to
// their codes; leadership trouble and a broker that cannot vouch for its
// state are Unavailable, which clients retry elsewhere.
func toStatus(err error) error {
	return cluster.StatusOf(err)
}

// invalid is an InvalidArgument status naming the field at fault.
func invalid(field, reason string) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, reason)
}
