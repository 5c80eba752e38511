package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/broker"
	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/cmd/internal/cli"
	"github.com/openqhin/openqhin/e2e"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
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
	routing      string
	svidTTL      time.Duration
}

func newDevCmd(g *globals) *cobra.Command {
	f := devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a development network, one process per node, until Ctrl-C",
		Long: `Run a development network on loopback: its own CA and SPIFFE Workload API
(DIR/issuer.sock, from which every node takes its SVID, renewed at half of
--svid-ttl), a Raft cluster of brokers and participants filled with synthetic patients (or with FHIR bundles from
--seed-fhir DIR/<participant-id>/*.json). Writes DIR/qhinctl.yaml for the
other qhinctl commands. State stays in DIR: the next start picks it up.

Every node runs as its own qhin-broker or qhin-participant process, found
next to this qhinctl or on PATH (make build installs all three). Each node's
pid is printed and kept in its directory (DIR/brokers/b2/pid); kill one to
watch the network route around it, and press Enter here to start the nodes
that stopped again. Every node logs to DIR/network.log. Ctrl-C
stops every node; if qhinctl itself is killed, Linux stops the nodes too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), f, g.tracing.Args())
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
	fl.IntVar(&f.basePort, "base-port", 7400, "brokers serve gRPC on base+1…, Raft on base+11…, participants on base+21…, metrics on base+31… and base+41…, the participants' FHIR APIs on base+51…")
	fl.StringVar(&f.logLevel, "log-level", "info", "level of DIR/network.log: debug, info, warn or error")
	fl.StringVar(&f.routing, "routing", string(broker.DefaultRouting), "the brokers' discovery routing: targeted-then-broadcast, targeted-only or broadcast")
	fl.DurationVar(&f.svidTTL, "svid-ttl", pki.DefaultWorkloadSVIDTTL, "lifetime of the SVIDs the network's Workload API hands the nodes (renewed at half of it)")
	return cmd
}

func runDev(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, f devFlags, tracingArgs []string) error {
	if f.brokers < 1 || f.participants < 1 {
		return fmt.Errorf("--brokers and --participants must be at least 1")
	}
	if f.basePort < 1 || f.basePort+e2e.FHIRPortOffset+f.participants > 65535 {
		return fmt.Errorf("--base-port: out of range")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if _, err := broker.ParseRouting(f.routing); err != nil {
		return fmt.Errorf("--routing: %w", err)
	}
	brokerBin, participantBin, err := nodeBinaries(stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(f.dir, "network.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: level})).With("component", "qhinctl-dev")
	// A closed terminal stops the network as Ctrl-C does.
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGHUP)
	defer stopSignals()

	// The network's linkage key: every participant gets it, the brokers
	// only its id.
	keyPath := filepath.Join(f.dir, "linkage.key")
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		if _, err := writeLinkageKey(keyPath); err != nil {
			return err
		}
	}

	out := &lockedWriter{w: stdout}
	var up atomic.Bool
	net, err := e2e.PrepareProcesses(e2e.ProcessOptions{
		Dir: f.dir, TrustDomain: f.trustDomain, Brokers: f.brokers, Participants: f.participants, BasePort: f.basePort,
		BrokerBin: brokerBin, ParticipantBin: participantBin, SVIDTTL: f.svidTTL,
		NodeArgs:       append([]string{"--log-level", f.logLevel}, tracingArgs...),
		BrokerArgs:     []string{"--routing", f.routing},
		LinkageKeyFile: keyPath,
		Output:         logFile,
		Logger:         log,
		Exited: func(p *e2e.Process, pid int, err error) {
			if up.Load() {
				fmt.Fprintf(out, "\n%s (pid %d) stopped: %s. Press Enter to start it again.\n", p.ID, pid, describeExit(err))
			}
		},
	})
	if err != nil {
		return err
	}
	defer net.Close()

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
	example, err := net.ExamplePerson()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Records ready after %s.\n", time.Since(started).Round(100*time.Millisecond))

	fmt.Fprintf(out, "Starting %d broker(s) and %d participant(s) in %s …\n", f.brokers, f.participants, f.dir)
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := net.Start(startCtx); err != nil {
		return fmt.Errorf("start network: %w (see %s)", err, logPath)
	}
	defer func() {
		up.Store(false)
		fmt.Fprintln(out, "\nStopping the network …")
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		net.Stop(sctx)
		fmt.Fprintf(out, "Stopped. State is kept in %s for the next start.\n", f.dir)
	}()

	cfgPath := filepath.Join(f.dir, "qhinctl.yaml")
	if err := writeDevConfig(net, f, cfgPath); err != nil {
		return err
	}
	// Until a member has published its patients' tokens, targeted queries
	// do not ask it: wait for every member with records, so that the
	// tour's first query finds everyone.
	if err := waitPublished(ctx, net, counts, log, time.Minute); err != nil {
		fmt.Fprintf(out, "Record locator: %v; queries may skip the members still publishing.\n", err)
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	leader, _ := net.Leader(lctx)
	cancel()
	printDev(out, net, counts, example, leader, f, cfgPath, logPath)
	up.Store(true)

	lines := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case lines <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lines:
			restartStopped(ctx, net, out)
		}
	}
}

// restartStopped starts every node that is not running again and reports
// when each serves.
func restartStopped(ctx context.Context, net *e2e.ProcessNetwork, out io.Writer) {
	stopped := false
	for _, p := range append(append([]*e2e.Process(nil), net.Brokers...), net.Participants...) {
		if p.Running() {
			continue
		}
		stopped = true
		if err := net.Restart(p); err != nil {
			fmt.Fprintf(out, "%s: %v\n", p.ID, err)
			continue
		}
		fmt.Fprintf(out, "%s started again (pid %d).\n", p.ID, p.Pid())
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if err := net.WaitServing(wctx, p); err != nil {
				fmt.Fprintf(out, "%s: %v\n", p.ID, err)
				return
			}
			fmt.Fprintf(out, "%s is serving again.\n", p.ID)
		}()
	}
	if !stopped {
		fmt.Fprintln(out, "Every node is running.")
	}
}

// describeExit says how a node's process ended.
func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return ee.Error()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// nodeBinaries finds qhin-broker and qhin-participant: next to this qhinctl
// (make build installs the three together), else on PATH. It warns when
// they were built from another version than qhinctl.
func nodeBinaries(stderr io.Writer) (broker, participant string, err error) {
	var dir string
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			dir = filepath.Dir(exe)
		}
	}
	find := func(name string) (string, error) {
		if dir != "" {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p, nil
			}
		}
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		return "", fmt.Errorf("qhinctl dev runs every node as its own process, but %s is neither next to qhinctl (%s) nor on PATH; install the three commands with make build (or go install ./cmd/...)", name, dir)
	}
	if broker, err = find("qhin-broker"); err != nil {
		return "", "", err
	}
	if participant, err = find("qhin-participant"); err != nil {
		return "", "", err
	}
	mine := versionBody(cli.Version("qhinctl"))
	for _, bin := range []string{broker, participant} {
		got, err := exec.Command(bin, "--version").Output()
		if err != nil {
			return "", "", fmt.Errorf("%s --version: %w", bin, err)
		}
		if versionBody(string(got)) != mine {
			fmt.Fprintf(stderr, "warning: %s was built from another version than this qhinctl; run make build to install matching commands\n", bin)
		}
	}
	return broker, participant, nil
}

// versionBody is a --version text without the command's name.
func versionBody(v string) string {
	_, rest, _ := strings.Cut(v, " ")
	return rest
}

func newBar(w io.Writer, desc string) *progressbar.ProgressBar {
	return progressbar.NewOptions(1, progressbar.OptionSetDescription(desc), progressbar.OptionSetWriter(w),
		progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
}

func writeDevConfig(net *e2e.ProcessNetwork, f devFlags, path string) error {
	cfg := &client.Config{
		TrustDomain:    f.trustDomain,
		Brokers:        net.BrokerAddrs(),
		CA:             filepath.Join(f.dir, "ca"),
		LinkageKeyFile: filepath.Join(f.dir, "linkage.key"),
		Operator:       &client.Identity{ID: e2e.OperatorName, SVIDDir: filepath.Join(f.dir, "operator")},
		Participants:   map[string]*client.Identity{},
	}
	for i, p := range net.Participants {
		id := &client.Identity{ID: p.ID, SVIDDir: filepath.Join(p.Dir, "svid"), Endpoint: p.GRPCAddr, FHIR: p.FHIRURL,
			DataDir: filepath.Join(p.Dir, "data")}
		if i == 0 {
			cfg.Participant = id
		}
		cfg.Participants[p.ID] = id
	}
	return cfg.Save(path)
}

func printDev(w io.Writer, net *e2e.ProcessNetwork, counts []e2e.SeedCounts, example *qhinv1.Demographics, leader string, f devFlags, cfgPath, logPath string) {
	fmt.Fprintf(w, "\nOpenQHIN development network is up (trust domain spiffe://%s).\n\n", f.trustDomain)
	t := &table{tw: newTabWriter(w)}
	t.row("NODE", "ROLE", "PID", "GRPC", "RAFT", "METRICS", "FHIR", "RECORDS", "DATA")
	for _, b := range net.Brokers {
		role := "broker"
		if b.ID == leader {
			role = "broker (leader)"
		}
		t.row(b.ID, role, b.Pid(), b.GRPCAddr, b.RaftAddr, b.MetricsAddr, "-", "-", b.Dir)
	}
	for i, p := range net.Participants {
		c := counts[i]
		t.row(p.ID, "participant", p.Pid(), p.GRPCAddr, "-", p.MetricsAddr, p.FHIRURL, fmt.Sprintf("%d patients, %d documents", c.Patients, c.Documents), p.Dir)
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
	fmt.Fprintf(w, "\nConfig: %s\nLogs:   %s (every node)\n", cfgPath, logPath)
	fmt.Fprintf(w, "SVIDs:  from the Workload API at %s, living %v; rotate the CA with: qhinctl pki rotate-ca --overlap 1m\n",
		net.Issuer().Addr(), f.svidTTL)
	if k, err := readLinkageKey(filepath.Join(f.dir, "linkage.key")); err == nil {
		fmt.Fprintf(w, "Record locator: the members publish their patients' tokens under linkage key %s (%s, members only);\n"+
			"the brokers route discovery %s.\n", k.ID(), filepath.Join(f.dir, "linkage.key"), f.routing)
	}
	fmt.Fprint(w, "\nIn another terminal:\n\n")
	fmt.Fprintf(w, "  export QHIN_CONFIG=%s\n", cfgPath)
	fmt.Fprintf(w, "  %s directory list\n", self)
	fmt.Fprintf(w, "  %s cluster status\n", self)
	if d := example; d != nil {
		fmt.Fprintf(w, "  %s query patients --given %s --family %s --birth-date %s --gender %s --purpose T-TRTMNT --requester-npi %s\n",
			self, shellQuote(d.Given), shellQuote(d.Family), d.BirthDate, d.Gender, exampleNPI)
	}
	fmt.Fprintf(w, "  %s query documents --link LINK --purpose T-TRTMNT --requester-npi %s   # a LINK query patients printed\n", self, exampleNPI)
	fmt.Fprintf(w, "  %s retrieve --link LINK --out doc.json --purpose T-TRTMNT --requester-npi %s   # a LINK query documents printed\n", self, exampleNPI)
	if len(net.Participants) > 0 {
		p := net.Participants[0]
		fmt.Fprintf(w, "\nFHIR R4 for the EHR (every participant serves one; the README has more):\n\n")
		fmt.Fprintf(w, "  curl --cacert %s %s/metadata\n", filepath.Join(f.dir, "ca", "ca.pem"), p.FHIRURL)
		if d := example; d != nil {
			fmt.Fprintf(w, "  curl --cacert %s -H 'X-Purpose-Of-Use: T-TREAT' -H 'X-Requester-Id: 1234567893' \\\n    '%s/Patient?family=%s&given=%s&birthdate=%s&gender=%s'\n",
				filepath.Join(f.dir, "ca", "ca.pem"), p.FHIRURL, url.QueryEscape(d.Family), url.QueryEscape(d.Given), d.BirthDate, d.Gender)
		}
	}
	if len(net.Brokers) > 1 {
		b := net.Brokers[1]
		fmt.Fprintf(w, "\nKill a broker and keep querying: kill %d (%s; its pid is also in %s).\n", b.Pid(), b.ID, b.PidFile())
		fmt.Fprintln(w, "Press Enter here to start the nodes that stopped again.")
	}
	fmt.Fprintf(w, "\nCtrl-C stops the network; its state stays in %s.\n", f.dir)
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\"\\$`!*?&;|<>()") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lockedWriter serializes writes from the goroutines that report nodes
// stopping and starting.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// exampleNPI is a National Provider Identifier with a valid check digit (the
// example of CMS's check-digit description), for the printed example
// queries: treatment queries name the requesting clinician's NPI.
const exampleNPI = "1234567893"

// waitPublished waits until the brokers' locator lists every member that
// holds patients, or timeout.
func waitPublished(ctx context.Context, net *e2e.ProcessNetwork, counts []e2e.SeedCounts, log *slog.Logger, timeout time.Duration) error {
	conn, err := client.Dial(net.BrokerAddrs(), net.Operator(), log)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	loc := qhinv1.NewLocatorClient(conn)
	for {
		missing := []string{}
		resp, err := loc.LocatorStatus(ctx, &qhinv1.LocatorStatusRequest{})
		if err == nil {
			listed := map[string]bool{}
			for _, m := range resp.Members {
				listed[m.ParticipantId] = m.Tokens > 0
			}
			for _, c := range counts {
				if c.Patients > 0 && !listed[c.Participant] {
					missing = append(missing, c.Participant)
				}
			}
			if len(missing) == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = fmt.Errorf("%s not published after %v", strings.Join(missing, ", "), timeout)
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
