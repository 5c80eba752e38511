package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

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
		Short: "Show every broker: role, term, commit and applied index, last contact",
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
					t.row("NODE", "STATE", "LEADER", "VOTER", "TERM", "COMMIT", "APPLIED", "LAST CONTACT", "GRPC", "RAFT", "DETAIL")
					for _, m := range resp.Members {
						lc := "-"
						if m.LastContact != nil {
							lc = m.LastContact.AsDuration().Round(time.Millisecond).String()
						}
						leader := ""
						if m.Leader {
							leader = "*"
						}
						t.row(m.NodeId, strings.ToLower(strings.TrimPrefix(m.State.String(), "NODE_STATE_")), leader,
							m.Voter, m.Term, m.CommitIndex, m.AppliedIndex, lc, m.GrpcAddr, m.RaftAddr, m.Detail)
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
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's replicated state with a saved snapshot (disaster recovery)",
		Long: `Replace the whole cluster's replicated state (directory and every other table)
with a snapshot saved by 'qhinctl cluster snapshot save'. Meant for restoring a
backup into a new cluster: start one broker with --bootstrap, restore, then let
the other brokers join.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			cfg, src, err := g.operator()
			if err != nil {
				return err
			}
			conn, err := client.Dial(cfg.Brokers, src, nil)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			st, err := conn.Cluster().Status(ctx, &qhinv1.StatusRequest{})
			if err != nil {
				return err
			}
			leaderAddr := ""
			for _, m := range st.Members {
				if m.Leader {
					leaderAddr = m.GrpcAddr
				}
			}
			if leaderAddr == "" {
				return errors.New("the cluster has no leader; try again once it has one")
			}
			// Restore runs on the leader: talk to it alone.
			lconn, err := client.Dial([]string{leaderAddr}, src, nil)
			if err != nil {
				return err
			}
			defer lconn.Close()
			stream, err := lconn.Cluster().RestoreSnapshot(ctx)
			if err != nil {
				return err
			}
			buf := make([]byte, 64<<10)
			for {
				n, err := f.Read(buf)
				if n > 0 {
					if err := stream.Send(&qhinv1.SnapshotChunk{Data: buf[:n]}); err != nil {
						if _, rerr := stream.CloseAndRecv(); rerr != nil {
							return rerr
						}
						return err
					}
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
			}
			resp, err := stream.CloseAndRecv()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %s into the cluster at index %d\n", args[0], resp.Index)
			return nil
		},
	}
}
