package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/client"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Manage the broker cluster (operators)"}
	snap := &cobra.Command{Use: "snapshot", Short: "Back up and restore the replicated state"}
	snap.AddCommand(newSnapshotSaveCmd(g), newSnapshotRestoreCmd(g))
	cmd.AddCommand(newClusterStatusCmd(g), newClusterJoinCmd(g), newClusterRemoveCmd(g), snap)
	return cmd
}

func newClusterStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every broker: role, whether it serves, term, commit and applied index, last contact",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := conn.Cluster().Status(ctx, &qhinv1.StatusRequest{})
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp, func(t *table) {
					t.row("NODE", "STATE", "LEADER", "VOTER", "SERVING", "TERM", "COMMIT", "APPLIED", "LAST CONTACT", "GRPC", "RAFT", "DETAIL")
					for _, m := range resp.Members {
						lc := "-"
						if m.LastContact != nil {
							lc = m.LastContact.AsDuration().Round(time.Millisecond).String()
						}
						leader := ""
						if m.Leader {
							leader = "*"
						}
						detail := m.Detail
						if detail == "" && !m.Serving {
							detail = m.NotServingReason
						}
						t.row(m.NodeId, strings.ToLower(strings.TrimPrefix(m.State.String(), "NODE_STATE_")), leader,
							m.Voter, m.Serving, m.Term, m.CommitIndex, m.AppliedIndex, lc, m.GrpcAddr, m.RaftAddr, detail)
					}
				})
			})
		},
	}
}

func newClusterJoinCmd(g *globals) *cobra.Command {
	req := &qhinv1.JoinRequest{}
	cmd := &cobra.Command{
		Use:     "join",
		Short:   "Add a broker to the cluster",
		Example: `  qhinctl cluster join --node-id b4 --raft-addr 10.0.0.4:7411 --grpc-addr 10.0.0.4:7401`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := conn.Cluster().Join(ctx, req)
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp, func(t *table) {
					t.line("%s joined; leader is %s", req.NodeId, resp.LeaderId)
				})
			})
		},
	}
	cmd.Flags().StringVar(&req.NodeId, "node-id", "", "the broker's node id (required)")
	cmd.Flags().StringVar(&req.RaftAddr, "raft-addr", "", "host:port of its Raft transport (required)")
	cmd.Flags().StringVar(&req.GrpcAddr, "grpc-addr", "", "host:port of its gRPC services (the node announces it itself when omitted)")
	cmd.Flags().BoolVar(&req.NonVoter, "non-voter", false, "join without a vote")
	cmd.MarkFlagRequired("node-id")
	cmd.MarkFlagRequired("raft-addr")
	return cmd
}

func newClusterRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE_ID",
		Short: "Take a broker out of the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := conn.Cluster().Remove(ctx, &qhinv1.RemoveRequest{NodeId: args[0]})
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp, func(t *table) { t.line("%s removed", args[0]) })
			})
		},
	}
}

func newSnapshotSaveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent snapshot of the replicated state to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				stream, err := conn.Cluster().SaveSnapshot(ctx, &qhinv1.SaveSnapshotRequest{})
				if err != nil {
					return err
				}
				out := args[0]
				tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
				if err != nil {
					return err
				}
				defer os.Remove(tmp.Name())
				defer tmp.Close()
				var n int64
				for {
					c, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return err
					}
					w, err := tmp.Write(c.Data)
					if err != nil {
						return err
					}
					n += int64(w)
				}
				if err := tmp.Sync(); err != nil {
					return err
				}
				if err := tmp.Close(); err != nil {
					return err
				}
				if err := os.Rename(tmp.Name(), out); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "saved %d bytes to %s\n", n, out)
				return nil
			})
		},
	}
}

func newSnapshotRestoreCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's replicated state with a saved snapshot (disaster recovery)",
		Long: `Replace the whole cluster's replicated state (directory and every other table)
with a snapshot saved by 'qhinctl cluster snapshot save'. Meant for restoring a
backup into a new cluster: start one broker with --bootstrap, restore, then let
the other brokers join.

Any broker takes the snapshot and hands it to the leader. While the cluster has
no leader yet (a broker just started), the command tries again until --timeout.
A snapshot whose participants belong to another trust domain than the
cluster's is refused unless --force: restored, every query would be refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := restoreSnapshot(ctx, conn.Cluster(), f, force)
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp, func(t *table) {
					t.line("restored %s into the cluster at index %d", args[0], resp.Index)
				})
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "restore a snapshot whose participants belong to another trust domain")
	return cmd
}

// restoreSnapshot streams the file to a broker, again from the start while
// the cluster answers Unavailable (no leader yet), until ctx ends.
func restoreSnapshot(ctx context.Context, c qhinv1.ClusterClient, f *os.File, force bool) (*qhinv1.RestoreSnapshotResponse, error) {
	for attempt := 0; ; attempt++ {
		resp, err := restoreOnce(ctx, c, f, force)
		if err == nil || status.Code(err) != codes.Unavailable {
			if status.Code(err) == codes.FailedPrecondition && !force {
				return nil, fmt.Errorf("%w (pass --force to restore it anyway)", err)
			}
			return resp, err
		}
		wait := min(250*time.Millisecond<<min(attempt, 2), time.Second)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no leader took the snapshot within --timeout: %w", err)
		case <-time.After(wait):
		}
	}
}

func restoreOnce(ctx context.Context, c qhinv1.ClusterClient, f *os.File, force bool) (*qhinv1.RestoreSnapshotResponse, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	stream, err := c.RestoreSnapshot(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 32<<10)
	first := true
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if err := stream.Send(&qhinv1.SnapshotChunk{Data: buf[:n], Force: force && first}); err != nil {
				// The broker's answer says why it stopped reading.
				if _, cerr := stream.CloseAndRecv(); cerr != nil {
					return nil, cerr
				}
				return nil, err
			}
			first = false
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	return stream.CloseAndRecv()
}
