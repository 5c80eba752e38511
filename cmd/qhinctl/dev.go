package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/e2e"
)

type devFlags struct {
	dir          string
	trustDomain  string
	brokers      int
	participants int
	patients     int
	seed         int64
	seedFHIR     string
	basePort     int
	logLevel     string
}

func newDevCmd(*globals) *cobra.Command {
	f := devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole development network in this process until Ctrl-C",
		Long: `Run a development network on loopback: its own CA, a Raft cluster of brokers
and participants filled with synthetic patients (or with FHIR bundles from
--seed-fhir DIR/<participant-id>/*.json). Writes DIR/qhinctl.yaml for the
other qhinctl commands. State stays in DIR: the next start picks it up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", filepath.Join(os.TempDir(), "openqhin-dev"), "directory for the CA, node state, logs and qhinctl.yaml")
	fl.StringVar(&f.trustDomain, "trust-domain", e2e.DefaultTrustDomain, "SPIFFE trust domain of the network")
	fl.IntVar(&f.brokers, "brokers", 3, "brokers in the Raft cluster")
	fl.IntVar(&f.participants, "participants", 3, "participants (p1, p2, …)")
	fl.IntVar(&f.patients, "patients", 1000, "synthetic persons to spread over the participants (first start only)")
	fl.Int64Var(&f.seed, "seed", 1, "seed of the synthetic population")
	fl.StringVar(&f.seedFHIR, "seed-fhir", "", "import DIR/<participant-id>/*.json FHIR bundles instead of synthetic patients")
	fl.IntVar(&f.basePort, "base-port", 7400, "brokers serve gRPC on base+1…, Raft on base+11…, participants on base+21…")
	fl.StringVar(&f.logLevel, "log-level", "info", "level of DIR/network.log: debug, info, warn or error")
	return cmd
}

func runDev(ctx context.Context, stdout, stderr io.Writer, f devFlags) error {
	if f.brokers < 1 || f.participants < 1 {
		return fmt.Errorf("--brokers and --participants must be at least 1")
	}
	if f.basePort < 1 || f.basePort+20+f.participants > 65535 {
		return fmt.Errorf("--base-port: out of range")
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logPath := filepath.Join(f.dir, "network.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()

	fmt.Fprintf(stdout, "Starting %d broker(s) and %d participant(s) in %s …\n", f.brokers, f.participants, f.dir)
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	net, err := e2e.Start(startCtx, e2e.Options{
		Dir:          f.dir,
		TrustDomain:  f.trustDomain,
		Brokers:      f.brokers,
		Participants: f.participants,
		BasePort:     f.basePort,
		Metrics:      true,
		Logger:       slog.New(telemetry.LogHandler(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: level}))),
	})
	if err != nil {
		return fmt.Errorf("start network: %w (see %s)", err, logPath)
	}
	defer func() {
		fmt.Fprintln(stdout, "\nStopping the network …")
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		net.Stop(sctx)
		fmt.Fprintf(stdout, "Stopped. State is kept in %s for the next start.\n", f.dir)
	}()

	var counts []e2e.SeedCounts
	started := time.Now()
	if f.seedFHIR != "" {
		bar := newBar(stderr, "importing FHIR bundles")
		counts, err = net.SeedFHIR(ctx, f.seedFHIR, func(done, total int) { bar.ChangeMax(total); bar.Set(done) })
		bar.Finish()
	} else {
		bar := newBar(stderr, "generating synthetic patients")
		counts, err = net.SeedSynthetic(ctx, f.patients, f.seed, func(done, total int) { bar.ChangeMax(total); bar.Set(done) })
		bar.Finish()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Records ready after %s.\n", time.Since(started).Round(100*time.Millisecond))

	cfgPath := filepath.Join(f.dir, "qhinctl.yaml")
	if err := writeDevConfig(net, f, cfgPath); err != nil {
		return err
	}
	printDev(stdout, net, counts, f, cfgPath, logPath)

	<-ctx.Done()
	return nil
}

func newBar(w io.Writer, desc string) *progressbar.ProgressBar {
	return progressbar.NewOptions(1, progressbar.OptionSetDescription(desc), progressbar.OptionSetWriter(w),
		progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
}

func writeDevConfig(net *e2e.Network, f devFlags, path string) error {
	cfg := &client.Config{
		TrustDomain:  f.trustDomain,
		Brokers:      net.BrokerAddrs(),
		CA:           filepath.Join(f.dir, "ca"),
		Operator:     &client.Identity{ID: e2e.OperatorName, SVIDDir: filepath.Join(f.dir, "operator")},
		Participants: map[string]*client.Identity{},
	}
	for i, p := range net.Participants {
		id := &client.Identity{ID: p.ID, SVIDDir: filepath.Join(p.Dir, "svid"), Endpoint: p.Addr}
		if i == 0 {
			cfg.Participant = id
		}
		cfg.Participants[p.ID] = id
	}
	return cfg.Save(path)
}

func printDev(w io.Writer, net *e2e.Network, counts []e2e.SeedCounts, f devFlags, cfgPath, logPath string) {
	fmt.Fprintf(w, "\nOpenQHIN development network is up (trust domain spiffe://%s).\n\n", f.trustDomain)
	t := &table{tw: newTabWriter(w)}
	t.row("NODE", "ROLE", "GRPC", "RAFT", "METRICS", "RECORDS", "DATA")
	leader := net.Leader()
	for i, b := range net.Brokers {
		role := "broker"
		if i == leader {
			role = "broker (leader)"
		}
		t.row(b.ID, role, b.GRPCAddr, b.RaftAddr, b.MetricsAddr, "-", b.Dir)
	}
	for i, p := range net.Participants {
		c := counts[i]
		t.row(p.ID, "participant", p.Addr, "-", p.MetricsAddr, fmt.Sprintf("%d patients, %d documents", c.Patients, c.Documents), p.Dir)
	}
	t.tw.Flush()
	for _, c := range counts {
		for _, s := range c.Skipped {
			fmt.Fprintf(w, "  %s: skipped %s: %s\n", c.Participant, filepath.Base(s.File), s.Reason)
		}
	}

	self := "qhinctl"
	if _, err := exec.LookPath("qhinctl"); err != nil {
		if exe, err := os.Executable(); err == nil {
			self = exe
		}
	}
	fmt.Fprintf(w, "\nConfig: %s\nLogs:   %s\n\nIn another terminal:\n\n", cfgPath, logPath)
	fmt.Fprintf(w, "  export QHIN_CONFIG=%s\n", cfgPath)
	fmt.Fprintf(w, "  %s directory list\n", self)
	fmt.Fprintf(w, "  %s cluster status\n", self)
	if d := net.ExamplePerson(); d != nil {
		q := fmt.Sprintf("  %s query patients --given %s --family %s --birth-date %s --gender %s --purpose T-TRTMNT",
			self, shellQuote(d.Given), shellQuote(d.Family), d.BirthDate, d.Gender)
		fmt.Fprintln(w, q)
	}
	fmt.Fprintf(w, "  %s query documents --link p1/PATIENT_ID --purpose T-TRTMNT\n", self)
	fmt.Fprintf(w, "  %s retrieve --link p1/DOCUMENT_ID --out doc.json --purpose T-TRTMNT\n", self)
	fmt.Fprintf(w, "\nCtrl-C stops the network; its state stays in %s.\n", f.dir)
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\"\\$`!*?&;|<>()") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
