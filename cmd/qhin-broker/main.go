// Command qhin-broker runs one broker node of an OpenQHIN network.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/openqhin/openqhin/broker"
	"github.com/openqhin/openqhin/cmd/internal/cli"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "qhin-broker:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg broker.Config
	listen := flag.String("listen", "127.0.0.1:7401", "gRPC listen address (Gateway, Directory, Cluster)")
	flag.StringVar(&cfg.GRPCAdvertise, "advertise", "", "gRPC address others reach this broker at (default: --listen)")
	raftListen := flag.String("raft-listen", "127.0.0.1:7411", "Raft listen address (mutual TLS, brokers only)")
	flag.StringVar(&cfg.RaftAdvertise, "raft-advertise", "", "Raft address peers reach this broker at (default: --raft-listen)")
	flag.StringVar(&cfg.NodeID, "node-id", "", "node id (default: the name in the SVID)")
	flag.StringVar(&cfg.DataDir, "data-dir", "qhin-broker-data", "directory for the Raft log, snapshots and state")
	var ident cli.Identity
	ident.AddFlags(flag.CommandLine)
	flag.BoolVar(&cfg.Bootstrap, "bootstrap", false, "start a new cluster with this node as its first member")
	flag.StringSliceVar(&cfg.Join, "join", nil, "gRPC address(es) of cluster members to join through")
	flag.DurationVar(&cfg.ResponderTimeout, "responder-timeout", broker.DefaultResponderTimeout, "deadline of each member's answer")
	flag.DurationVar(&cfg.MaxQueryTimeout, "max-query-timeout", broker.DefaultMaxQueryTimeout, "cap on a query's overall deadline")
	cli.AddServerLimitFlags(flag.CommandLine, &cfg.Limits.Server)
	cli.AddFieldLimitFlags(flag.CommandLine, &cfg.Limits.Fields)
	flag.IntVar(&cfg.Limits.MaxQueriesPerInitiator, "max-queries-per-initiator", broker.DefaultMaxQueriesPerInitiator, "discovery and document queries one member may have in flight at this broker")
	flag.IntVar(&cfg.Limits.MaxRetrievesPerInitiator, "max-retrieves-per-initiator", broker.DefaultMaxRetrievesPerInitiator, "document retrievals one member may have in flight at this broker")
	flag.IntVar(&cfg.Limits.MaxMembersPerQuery, "max-members-per-query", broker.DefaultMaxMembersPerQuery, "distinct members the links of one document query may name")
	flag.IntVar(&cfg.Limits.MaxCandidatesPerResponder, "max-candidates-per-responder", broker.DefaultMaxCandidatesPerResponder, "candidates kept from one member's discovery answer")
	flag.IntVar(&cfg.Limits.MaxDocumentsPerResponder, "max-documents-per-responder", broker.DefaultMaxDocumentsPerResponder, "documents kept from one member's document answer")
	flag.IntVar(&cfg.Limits.MaxResponderMessageBytes, "max-responder-message-bytes", broker.DefaultMaxResponderMessageBytes, "largest message accepted from a member")
	flag.DurationVar(&cfg.Limits.SendTimeout, "send-timeout", broker.DefaultSendTimeout, "time an initiator has to take each chunk of a retrieved document")
	flag.IntVar(&cfg.Limits.MemberStreamWindowBytes, "member-stream-window-bytes", broker.DefaultMemberStreamWindowBytes, "flow-control window of a stream from a member: what it may send ahead of what this broker has passed on")
	flag.IntVar(&cfg.Limits.MemberConnWindowBytes, "member-conn-window-bytes", broker.DefaultMemberConnWindowBytes, "flow-control window of a connection to a member")
	routing := flag.String("routing", string(broker.DefaultRouting), "how a discovery query chooses its members: targeted-then-broadcast (the members the record locator lists for its tokens, else every member), targeted-only, or broadcast")
	flag.IntVar(&cfg.Limits.MaxLocatorTokensPerMember, "max-locator-tokens-per-member", broker.DefaultMaxLocatorTokensPerMember, "record-locator tokens one member may hold")
	flag.DurationVar(&cfg.LinkTTL, "link-ttl", broker.DefaultLinkTTL, "how long the links a discovery or document query issues stay valid (at most --link-key-rotation)")
	flag.DurationVar(&cfg.LinkKeyRotation, "link-key-rotation", broker.DefaultLinkKeyRotation, "how often the leader replaces the key links are sealed with")
	flag.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", 8192, "Raft entries between snapshots")
	flag.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", 2*time.Minute, "how often to check the snapshot threshold")
	flag.Uint64Var(&cfg.TrailingLogs, "trailing-logs", 10240, "Raft entries kept after a snapshot")
	flag.StringVar(&cfg.RaftLogLevel, "raft-log-level", "warn", "level of hashicorp/raft's own log lines in the broker's log: trace, debug, info, warn, error, off")
	metricsListen := flag.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (off when empty)")
	var tracing cli.Tracing
	tracing.AddFlags(flag.CommandLine)
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn, error")
	logJSON := flag.Bool("log-json", false, "log JSON lines instead of text")
	version := flag.Bool("version", false, "print the version and build information, then exit")
	flag.Parse()
	if *version {
		fmt.Print(cli.Version("qhin-broker"))
		return nil
	}

	log, err := cli.NewLogger(os.Stderr, *logLevel, *logJSON)
	if err != nil {
		return err
	}
	if cfg.Routing, err = broker.ParseRouting(*routing); err != nil {
		return fmt.Errorf("--routing: %w", err)
	}
	var path string
	if cfg.NodeID != "" {
		path = "/broker/" + cfg.NodeID
	}
	src, closeSource, err := ident.Open(context.Background(), path)
	if err != nil {
		return err
	}
	defer closeSource.Close()
	cfg.Source = src
	if cfg.GRPCListener, err = net.Listen("tcp", *listen); err != nil {
		return err
	}
	if cfg.RaftListener, err = net.Listen("tcp", *raftListen); err != nil {
		return err
	}
	cfg.Logger = log
	ctx, metrics, stop, err := tracing.StartNode("qhin-broker", *metricsListen)
	if err != nil {
		return err
	}
	defer stop()
	cfg.MetricsListener = metrics

	s, err := broker.New(cfg)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	log.Info("broker running", "grpc", s.Addr(), "raft", s.Node().RaftAddr(), "data", cfg.DataDir)

	select {
	case <-ctx.Done():
	case err := <-served:
		log.Error("gRPC server stopped", "error", err)
	}
	// Stop order: finish running calls, hand leadership over, close the
	// Raft transport and stores.
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return s.Stop(sctx)
}
