package cluster

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/raft"

	"github.com/openqhin/openqhin/broker/fsm"
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
// snapshot. It runs on the leader only. The snapshot is received into a
// scratch file and checked before Raft sees it: Raft cannot take back a
// restore that fails half-way.
func (n *Node) RestoreSnapshot(ctx context.Context, r io.Reader) (uint64, error) {
	if !n.IsLeader() {
		return 0, ErrNotLeader
	}
	tmp, err := os.CreateTemp(n.cfg.DataDir, "user-snapshot-*")
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	size, err := io.Copy(tmp, r)
	if err != nil {
		return 0, fmt.Errorf("restore: receive: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := fsm.CheckSnapshot(tmp, n.cfg.DataDir); err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	if err := n.raft.Restore(meta, tmp, timeoutOf(ctx)); err != nil {
		return 0, fmt.Errorf("restore: %w", raftError(err))
	}
	n.log.Info("restored the cluster state from a snapshot", "bytes", size, "index", n.raft.LastIndex())
	return n.raft.LastIndex(), nil
}

// Snapshot takes a Raft snapshot now and compacts the log behind it, as the
// snapshot threshold would.
func (n *Node) Snapshot() error {
	return raftError(n.raft.Snapshot().Error())
}

// LastSnapshotIndex is the index of this node's latest snapshot: taken, or
// installed from the leader.
func (n *Node) LastSnapshotIndex() uint64 { return n.Stats()["last_snapshot_index"] }
