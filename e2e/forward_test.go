package e2e

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestForward_MarkedCallIsNeverForwardedAgain sends each leader-only call to
// a follower as another broker's forwarded call. The follower must answer
// Unavailable, naming the leader, and never pass it on: one hop at most.
func TestForward_MarkedCallIsNeverForwardedAgain(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 1})
	f := follower(t, n)
	leader := waitLeader(t, n, -1)
	cc := rawConn(t, n.Brokers[f].GRPCAddr, brokerCreds(n, mustIssue(t, n, pki.RoleBroker, "b9")))
	c := qhinv1.NewClusterClient(cc)
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "qhin-forwarded", "b9")
	calls := map[string]func() error{
		"Join": func() error {
			_, err := c.Join(ctx, &qhinv1.JoinRequest{NodeId: "b8", RaftAddr: "127.0.0.1:1"})
			return err
		},
		"Remove": func() error {
			_, err := c.Remove(ctx, &qhinv1.RemoveRequest{NodeId: "b8"})
			return err
		},
		"ReadIndex": func() error {
			_, err := c.ReadIndex(ctx, &qhinv1.ReadIndexRequest{})
			return err
		},
	}
	for name, call := range calls {
		err := call()
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s forwarded to a follower: %v, want Unavailable", name, err)
			continue
		}
		if msg := status.Convert(err).Message(); !containsValue(msg, n.Brokers[leader].ID) {
			t.Errorf("%s: %q does not name the leader %s", name, msg, n.Brokers[leader].ID)
		}
	}
}
