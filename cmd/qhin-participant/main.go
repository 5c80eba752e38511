// Command qhin-participant runs a member's sidecar: it answers the brokers'
// queries from the member's records and relays the member's own queries.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/cmd/internal/cli"
	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/match"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "qhin-participant:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg participant.Config
	listen := flag.String("listen", "127.0.0.1:7421", "Responder listen address (brokers call it)")
	flag.StringVar(&cfg.DataDir, "data-dir", "qhin-participant-data", "directory of the record store")
	var ident cli.Identity
	ident.AddFlags(flag.CommandLine)
	brokers := flag.StringSlice("broker", nil, "broker gRPC address(es) for the member's own queries and its record-locator tokens")
	keyFile := flag.String("linkage-key-file", "", "the network's linkage key (qhinctl locator keygen): publish the patients' record-locator tokens and add them to the EHR's queries (needs --broker)")
	apiListen := flag.String("api-listen", "", "the member's local API for its EHR (queries, its audit ledger, its restrictions of its patients): unix:PATH, a socket guarded by its file mode, or HOST:PORT with mutual TLS (the member's own SVID); off when empty")
	apiSocketMode := flag.Uint32("api-socket-mode", 0o600, "file mode of the --api-listen unix socket (owner, or owner and group)")
	insecureAPI := flag.Bool("insecure-local-api", false, "serve a --api-listen HOST:PORT (loopback only) in plaintext, without authentication")
	answers := flag.StringSlice("answers", nil, "exchange purposes this member answers by its own policy, e.g. T-TRTMNT,T-IAS or all (default all)")
	allowLabels := flag.StringArray("allow-label", nil, "LABEL=PURPOSE[,PURPOSE...]: purposes that may see documents carrying a security label (repeatable); documents labelled other than U, L, M, N are withheld from every purpose not allowed here, e.g. --allow-label ETH=T-TRTMNT")
	flag.DurationVar(&cfg.Delay, "inject-latency", 0, "hold every answer back this long (benchmarks only)")
	flag.BoolVar(&cfg.TrainMatcher, "match-train", false, "fit the matcher to this member's records (EM) at start")
	cli.AddServerLimitFlags(flag.CommandLine, &cfg.Limits)
	cli.AddFieldLimitFlags(flag.CommandLine, &cfg.Fields)
	metricsListen := flag.String("metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (off when empty)")
	var fhir fhirFlags
	fhir.add(flag.CommandLine)
	var tracing cli.Tracing
	tracing.AddFlags(flag.CommandLine)
	logLevel := flag.String("log-level", "info", "log level: debug, info, warn, error")
	logJSON := flag.Bool("log-json", false, "log JSON lines instead of text")
	version := flag.Bool("version", false, "print the version and build information, then exit")
	flag.Parse()
	if *version {
		fmt.Print(cli.Version("qhin-participant"))
		return nil
	}

	log, err := cli.NewLogger(os.Stderr, *logLevel, *logJSON)
	if err != nil {
		return err
	}
	src, closeSource, err := ident.Open(context.Background(), "")
	if err != nil {
		return err
	}
	defer closeSource.Close()
	cfg.Source, cfg.Logger, cfg.AnswerPurposes = src, log, *answers
	if cfg.LabelPolicy, err = participant.ParseLabelPolicy(*allowLabels); err != nil {
		return fmt.Errorf("--allow-label: %w", err)
	}
	if *keyFile != "" {
		if len(*brokers) == 0 {
			return fmt.Errorf("--linkage-key-file needs --broker: the member publishes its tokens to the brokers")
		}
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("--linkage-key-file: %w", err)
		}
		if cfg.LinkageKey, err = match.ParseLinkageKey(b); err != nil {
			return fmt.Errorf("--linkage-key-file %s: %w", *keyFile, err)
		}
	}
	var conn *client.Conn
	if len(*brokers) > 0 {
		if conn, err = client.Dial(*brokers, src, log); err != nil {
			return err
		}
		defer conn.Close()
		cfg.Brokers = conn
	}
	if cfg.Listener, err = net.Listen("tcp", *listen); err != nil {
		return err
	}
	ctx, metrics, stop, err := tracing.StartNode("qhin-participant", *metricsListen)
	if err != nil {
		return err
	}
	defer stop()
	cfg.MetricsListener = metrics
	if cfg.Upstream, err = fhir.records(cfg.DataDir); err != nil {
		return err
	}

	s, err := participant.New(cfg)
	if err != nil {
		return err
	}
	served := make(chan error, 3)
	go func() { served <- s.Serve() }()
	np, nd, _ := s.Counts()
	log.Info("participant running", "responder", s.Addr(), "patients", np, "documents", nd)

	if fhir.listen != "" {
		var gw qhinv1.GatewayClient
		if conn != nil {
			gw = participant.GatewayWithTokens(conn.Gateway(), cfg.LinkageKey)
		}
		url, stopFHIR, err := fhir.serve(ctx, s, gw, src, log, served)
		if err != nil {
			return err
		}
		defer stopFHIR()
		log.Info("FHIR API running", "url", url, "network", gw != nil, "upstream", fhir.upstream != "")
	}
	if *apiListen != "" {
		if conn == nil {
			return fmt.Errorf("--api-listen needs --broker")
		}
		api, err := participant.NewRelayServer(participant.RelayConfig{
			Listen: *apiListen, SocketMode: os.FileMode(*apiSocketMode), Insecure: *insecureAPI,
			Source: src, Conn: conn, Ledger: s.Ledger(), LinkageKey: cfg.LinkageKey, Restrictions: s.Restrictions(), Limits: cfg.Limits, Logger: log,
		})
		if err != nil {
			return fmt.Errorf("--api-listen: %w", err)
		}
		go func() { served <- api.Serve() }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			api.Stop(sctx)
		}()
		log.Info("EHR API running", "addr", api.Addr(), "brokers", *brokers)
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		log.Error("server stopped", "error", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return s.Stop(sctx)
}
