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
	"google.golang.org/grpc"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/cmd/internal/cli"
	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/pki"
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
	svidDir := flag.String("svid-dir", "", "directory with svid.pem, svid.key and bundle.pem (required)")
	brokers := flag.StringSlice("broker", nil, "broker gRPC address(es) for the member's own queries")
	apiListen := flag.String("api-listen", "", "loopback address where the member's EHR sends Gateway queries (off when empty)")
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
	if *svidDir == "" {
		return fmt.Errorf("--svid-dir is required")
	}
	src, err := pki.LoadDir(*svidDir)
	if err != nil {
		return err
	}
	cfg.Source, cfg.Logger = src, log
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

	var conn *client.Conn
	if len(*brokers) > 0 {
		if conn, err = client.Dial(*brokers, src, log); err != nil {
			return err
		}
		defer conn.Close()
	}
	if fhir.listen != "" {
		var gw qhinv1.GatewayClient
		if conn != nil {
			gw = conn.Gateway()
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
		l, err := net.Listen("tcp", *apiListen)
		if err != nil {
			return err
		}
		if err := participant.CheckLoopback(l); err != nil {
			return err
		}
		// The EHR API has no TLS (it is loopback only) but the same limits.
		l = pki.LimitListener(l, cfg.Limits)
		api := grpc.NewServer(cfg.Limits.GRPCOptions()...)
		qhinv1.RegisterGatewayServer(api, participant.NewRelay(conn))
		go func() { served <- api.Serve(l) }()
		defer api.GracefulStop()
		log.Info("EHR API running", "addr", l.Addr().String(), "brokers", *brokers)
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
