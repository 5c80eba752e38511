package broker

import (
	"context"
	"errors"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

type clusterService struct {
	qhinv1.UnimplementedClusterServer
	s *Server
}

func (c *clusterService) Join(ctx context.Context, req *qhinv1.JoinRequest) (*qhinv1.JoinResponse, error) {
	if err := pki.ValidateName(req.NodeId); err != nil {
		return nil, invalid("node_id", err.Error())
	}
	if _, _, err := net.SplitHostPort(req.RaftAddr); err != nil || req.RaftAddr == "" {
		return nil, invalid("raft_addr", "must be host:port of the node's Raft transport")
	}
	if req.GrpcAddr != "" {
		if err := validateEndpoint(req.GrpcAddr); err != nil {
			return nil, invalid("grpc_addr", err.Error())
		}
	}
	// Brokers call Join for themselves (--join) and forward operators'
	// joins to the leader; like every broker-to-broker call it is trusted
	// infrastructure, as Apply is.
	leader, err := c.s.node.Join(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &qhinv1.JoinResponse{LeaderId: leader}, nil
}

func (c *clusterService) Remove(ctx context.Context, req *qhinv1.RemoveRequest) (*qhinv1.RemoveResponse, error) {
	if req.NodeId == "" {
		return nil, invalid("node_id", "required")
	}
	if err := c.s.node.Remove(ctx, req.NodeId); err != nil {
		return nil, toStatus(err)
	}
	return &qhinv1.RemoveResponse{}, nil
}

func (c *clusterService) Status(ctx context.Context, _ *qhinv1.StatusRequest) (*qhinv1.StatusResponse, error) {
	st, err := c.s.node.Status(ctx)
	return st, toStatus(err)
}

func (c *clusterService) NodeStatus(context.Context, *qhinv1.NodeStatusRequest) (*qhinv1.NodeStatusResponse, error) {
	return &qhinv1.NodeStatusResponse{Member: c.s.node.NodeStatus()}, nil
}

func (c *clusterService) Brokers(context.Context, *qhinv1.BrokersRequest) (*qhinv1.BrokersResponse, error) {
	addrs, err := c.s.node.BrokerAddrs()
	if err != nil {
		return nil, toStatus(err)
	}
	return &qhinv1.BrokersResponse{GrpcAddrs: addrs}, nil
}

// Apply commits a command forwarded by another broker. It runs on the leader
// only and never forwards again: a follower answers Unavailable and the
// sender retries once a leader is known.
func (c *clusterService) Apply(ctx context.Context, req *qhinv1.ApplyRequest) (*qhinv1.ApplyResponse, error) {
	v, index, err := c.s.node.ApplyLocal(ctx, req.Command)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &qhinv1.ApplyResponse{Index: index}
	if v != nil {
		if resp.Result, err = proto.Marshal(v); err != nil {
			return nil, toStatus(err)
		}
	}
	return resp, nil
}

func (c *clusterService) ReadIndex(ctx context.Context, _ *qhinv1.ReadIndexRequest) (*qhinv1.ReadIndexResponse, error) {
	idx, err := c.s.node.ReadIndexLocal(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &qhinv1.ReadIndexResponse{Index: idx}, nil
}

// chunkWriter turns writes into SnapshotChunk messages of at most MaxChunk.
type chunkWriter struct {
	out grpc.ServerStreamingServer[qhinv1.SnapshotChunk]
}

func (w chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), MaxChunk)
		if err := w.out.Send(&qhinv1.SnapshotChunk{Data: p[:k]}); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

func (c *clusterService) SaveSnapshot(_ *qhinv1.SaveSnapshotRequest, out grpc.ServerStreamingServer[qhinv1.SnapshotChunk]) error {
	n, err := c.s.node.SaveSnapshot(out.Context(), chunkWriter{out})
	if err != nil {
		return toStatus(err)
	}
	c.s.log.Info("snapshot saved", "bytes", n, "operator", caller(out.Context()))
	return nil
}

// chunkReader reads the data of a stream of SnapshotChunk messages.
type chunkReader struct {
	in  grpc.ClientStreamingServer[qhinv1.SnapshotChunk, qhinv1.RestoreSnapshotResponse]
	buf []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.in.Recv()
		if err != nil {
			return 0, err
		}
		r.buf = msg.Data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (c *clusterService) RestoreSnapshot(in grpc.ClientStreamingServer[qhinv1.SnapshotChunk, qhinv1.RestoreSnapshotResponse]) error {
	ctx := in.Context()
	if !c.s.node.IsLeader() {
		id, addr := c.s.node.Leader()
		return status.Errorf(codes.FailedPrecondition, "restore runs on the leader: send it to %s at %s", id, addr)
	}
	index, err := c.s.node.RestoreSnapshot(ctx, &chunkReader{in: in})
	if err != nil {
		if errors.Is(err, cluster.ErrNotLeader) {
			return toStatus(err)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return status.Errorf(codes.InvalidArgument, "%v", err)
	}
	c.s.log.Warn("cluster state replaced from a snapshot", "index", index, "operator", caller(ctx))
	return in.SendAndClose(&qhinv1.RestoreSnapshotResponse{Index: index})
}
