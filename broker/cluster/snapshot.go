package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/raft"

	"github.com/openqhin/openqhin/broker/fsm"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// SaveSnapshot writes a snapshot of the replicated state, as of a
// linearizable read, to w.
func (n *Node) SaveSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	f, err := n.Read(ctx, ReadLinearizable)
	if err != nil {
		return 0, err
	}
	return f.WriteTo(w)
}

// RestoreSnapshot replaces the state of the whole cluster with a saved
// snapshot. Any member accepts it: the snapshot is received into a scratch
// file and checked (a whole broker state file, participants of this
// cluster's trust domain unless force) before Raft sees it — Raft cannot
// take back a restore that fails half-way — and then restored on the
// leader, forwarded once when this node does not lead.
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader, force bool) (uint64, error) {
	tmp, err := os.CreateTemp(n.cfg.DataDir, "user-snapshot-*")
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	size, err := io.Copy(tmp, r)
	if err != nil {
		return 0, fmt.Errorf("%w: receive: %v", ErrBadSnapshot, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	info, err := fsm.CheckSnapshot(tmp, n.cfg.DataDir)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if td := n.cfg.TrustDomain.Name(); !force {
		for _, other := range info.TrustDomains {
			if other != td {
				return 0, fmt.Errorf("%w: its participants belong to trust domain %s and this cluster's is %s; restore it only with --force",
					ErrTrustDomain, other, td)
			}
		}
	}
	// A Raft snapshot file carries its index; from another cluster it
	// would make entries of this one look applied.
	if err := fsm.ClearSnapshotIndex(tmp); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	rewind := func() error {
		_, err := tmp.Seek(0, io.SeekStart)
		return err
	}
	return onLeader(ctx, n,
		func(ctx context.Context) (uint64, error) {
			if err := rewind(); err != nil {
				return 0, err
			}
			meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
			if err := n.raft.Restore(meta, tmp, timeoutOf(ctx)); err != nil {
				return 0, fmt.Errorf("restore: %w", n.raftError(err))
			}
			index := n.raft.LastIndex()
			n.log.Warn("restored the cluster state from a snapshot", "bytes", size, "participants", info.Participants, "index", index)
			// The restored broker records are the backup's: put this
			// broker's own back at once (the others announce themselves).
			if err := n.announce(ctx); err != nil {
				n.log.Warn("announce after restore", "error", err)
			}
			return index, nil
		},
		func(ctx context.Context, c qhinv1.ClusterClient) (uint64, error) {
			if err := rewind(); err != nil {
				return 0, err
			}
			stream, err := c.RestoreSnapshot(ctx)
			if err != nil {
				return 0, err
			}
			if err := sendChunks(stream, tmp, force); err != nil {
				return 0, err
			}
			resp, err := stream.CloseAndRecv()
			if err != nil {
				return 0, err
			}
			return resp.Index, nil
		})
}

// SnapshotChunkSize is the most data a SnapshotChunk carries: just under
// 32 KiB, so that a message fits gRPC's pooled buffers.
const SnapshotChunkSize = 32<<10 - 64

// sendChunks streams r as SnapshotChunks, force on the first.
func sendChunks(stream qhinv1.Cluster_RestoreSnapshotClient, r io.Reader, force bool) error {
	buf := make([]byte, SnapshotChunkSize)
	first := true
	for {
		k, err := io.ReadFull(r, buf)
		if k > 0 || first {
			if serr := stream.Send(&qhinv1.SnapshotChunk{Data: buf[:k], Force: force && first}); serr != nil {
				if _, rerr := stream.CloseAndRecv(); rerr != nil {
					return rerr
				}
				return serr
			}
			first = false
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Snapshot takes a Raft snapshot now and compacts the log behind it, as the
// snapshot threshold would.
func (n *Node) Snapshot() error {
	return n.raftError(n.raft.Snapshot().Error())
}

// LastSnapshotIndex is the index of this node's latest snapshot: taken, or
// installed from the leader.
func (n *Node) LastSnapshotIndex() uint64 { return n.Stats()["last_snapshot_index"] }

// indexedSnapshots is Raft's snapshot store whose sinks tell the state
// machine the index of the snapshot they receive (fsm.IndexedSink), so that
// a broker that restores it knows it holds every entry up to that index.
type indexedSnapshots struct {
	raft.SnapshotStore
}

func (s indexedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.SnapshotStore.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	return indexedSink{SnapshotSink: sink, index: index}, nil
}

type indexedSink struct {
	raft.SnapshotSink
	index uint64
}

func (s indexedSink) Index() uint64 { return s.index }
