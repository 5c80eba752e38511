package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Service is the Cluster gRPC service of a broker: operators manage
// membership and backups with it, brokers forward leader-only calls and
// confirm what they applied. It is the service edge: errors become gRPC
// statuses here (StatusOf).
type Service struct {
	qhinv1.UnimplementedClusterServer
	node *Node
	log  *slog.Logger
}

// NewService returns the Cluster service of node.
func NewService(node *Node, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{node: node, log: log}
}

func invalid(field, reason string) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, reason)
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p > 0 && p <= 65535
}

func caller(ctx context.Context) string {
	if id, ok := pki.IdentityFromContext(ctx); ok {
		return id.String()
	}
	return ""
}

// Join adds a broker; operators call it, and brokers for themselves
// (--join) or to forward an operator's join to the leader.
func (s *Service) Join(ctx context.Context, req *qhinv1.JoinRequest) (*qhinv1.JoinResponse, error) {
	if err := pki.ValidateName(req.NodeId); err != nil {
		return nil, invalid("node_id", err.Error())
	}
	if !validHostPort(req.RaftAddr) {
		return nil, invalid("raft_addr", "must be host:port of the node's Raft transport")
	}
	if req.GrpcAddr != "" && !validHostPort(req.GrpcAddr) {
		return nil, invalid("grpc_addr", "must be host:port of the node's gRPC services")
	}
	leader, err := s.node.Join(ctx, req)
	if err != nil {
		return nil, StatusOf(err)
	}
	return &qhinv1.JoinResponse{LeaderId: leader}, nil
}

func (s *Service) Remove(ctx context.Context, req *qhinv1.RemoveRequest) (*qhinv1.RemoveResponse, error) {
	if err := pki.ValidateName(req.NodeId); err != nil {
		return nil, invalid("node_id", err.Error())
	}
	if err := s.node.Remove(ctx, req.NodeId); err != nil {
		return nil, StatusOf(err)
	}
	return &qhinv1.RemoveResponse{}, nil
}

func (s *Service) Status(ctx context.Context, _ *qhinv1.StatusRequest) (*qhinv1.StatusResponse, error) {
	st, err := s.node.Status(ctx)
	return st, StatusOf(err)
}

func (s *Service) NodeStatus(context.Context, *qhinv1.NodeStatusRequest) (*qhinv1.NodeStatusResponse, error) {
	return &qhinv1.NodeStatusResponse{Member: s.node.NodeStatus()}, nil
}

func (s *Service) Brokers(context.Context, *qhinv1.BrokersRequest) (*qhinv1.BrokersResponse, error) {
	addrs, err := s.node.BrokerAddrs()
	if err != nil {
		return nil, StatusOf(err)
	}
	return &qhinv1.BrokersResponse{GrpcAddrs: addrs}, nil
}

// Apply commits a command another broker forwarded. It runs on the leader
// only and never forwards again.
func (s *Service) Apply(ctx context.Context, req *qhinv1.ApplyRequest) (*qhinv1.ApplyResponse, error) {
	resp, err := s.node.ApplyForwarded(ctx, req.Command)
	return resp, StatusOf(err)
}

// ReadIndex runs on the leader only and never forwards.
func (s *Service) ReadIndex(ctx context.Context, _ *qhinv1.ReadIndexRequest) (*qhinv1.ReadIndexResponse, error) {
	idx, err := s.node.ReadIndexLocal(ctx)
	if err != nil {
		return nil, StatusOf(err)
	}
	return &qhinv1.ReadIndexResponse{Index: idx}, nil
}

func (s *Service) WaitApplied(ctx context.Context, req *qhinv1.WaitAppliedRequest) (*qhinv1.WaitAppliedResponse, error) {
	applied, err := s.node.WaitApplied(ctx, req.Index)
	if err != nil {
		return nil, StatusOf(err)
	}
	return &qhinv1.WaitAppliedResponse{AppliedIndex: applied}, nil
}

func (s *Service) Checksums(_ context.Context, req *qhinv1.ChecksumsRequest) (*qhinv1.ChecksumsResponse, error) {
	resp, err := s.node.Checksums(req.Index)
	return resp, StatusOf(err)
}

// chunkWriter turns writes into SnapshotChunk messages of at most
// SnapshotChunkSize.
type chunkWriter struct {
	out grpc.ServerStreamingServer[qhinv1.SnapshotChunk]
}

func (w chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), SnapshotChunkSize)
		if err := w.out.Send(&qhinv1.SnapshotChunk{Data: p[:k]}); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

func (s *Service) SaveSnapshot(_ *qhinv1.SaveSnapshotRequest, out grpc.ServerStreamingServer[qhinv1.SnapshotChunk]) error {
	n, err := s.node.SaveSnapshot(out.Context(), chunkWriter{out})
	if err != nil {
		return StatusOf(err)
	}
	s.log.Info("snapshot saved", "bytes", n, "caller", caller(out.Context()))
	return nil
}

// chunkReader reads the data of a stream of SnapshotChunk messages and
// notes the force flag of the first.
type chunkReader struct {
	in    grpc.ClientStreamingServer[qhinv1.SnapshotChunk, qhinv1.RestoreSnapshotResponse]
	buf   []byte
	first bool
	force bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.in.Recv()
		if err != nil {
			return 0, err
		}
		if !r.first {
			r.first, r.force = true, msg.Force
		}
		r.buf = msg.Data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// RestoreSnapshot replaces the whole cluster's state with a saved snapshot,
// on the leader (forwarded once by any other member).
func (s *Service) RestoreSnapshot(in grpc.ClientStreamingServer[qhinv1.SnapshotChunk, qhinv1.RestoreSnapshotResponse]) error {
	ctx := in.Context()
	// The first chunk says whether to force; read it before the rest.
	first, err := in.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return invalid("chunks", "an empty stream is not a snapshot")
		}
		return err
	}
	r := &chunkReader{in: in, buf: first.Data, first: true, force: first.Force}
	index, err := s.node.RestoreSnapshot(ctx, r, r.force)
	if err != nil {
		return StatusOf(fmt.Errorf("restore: %w", err))
	}
	s.log.Warn("cluster state replaced from a snapshot", "index", index, "caller", caller(ctx), "forced", r.force)
	return in.SendAndClose(&qhinv1.RestoreSnapshotResponse{Index: index})
}
