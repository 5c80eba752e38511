package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/e2e/bench"
	"github.com/openqhin/openqhin/participant/match"
)

// benchFlags are the flags every bench scenario takes.
type benchFlags struct {
	jsonPath   string
	dir        string
	cpuProfile string
}

func newBenchCmd(g *globals) *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Measure a network: fanout, throughput, retrieve, raft, match, abuse, locator",
		Long: `Measure OpenQHIN on this machine. Each scenario starts its own network in this
process (brokers with production Raft timers, participants, real mutual TLS on
loopback) in a temporary directory, measures, prints a table and removes the
directory. --json FILE also writes the full result, with the machine and the
parameters, as JSON.

Where two ways of doing one thing are compared (through the broker or straight
to the members, one goroutine or many) both run in the same run, interleaved,
and the table gives medians, percentiles and their ratios: this machine may be
noisy. CPU and memory figures are process-wide, since the whole network shares
the process. bench does not measure a running network; --config is ignored.`,
		Args: cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&f.jsonPath, "json", "", "also write the result as JSON to `FILE`")
	cmd.PersistentFlags().StringVar(&f.dir, "dir", "", "parent of the network's temporary directory (default: the system's)")
	cmd.PersistentFlags().StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (network included) to `FILE`")
	cmd.AddCommand(
		newBenchFanoutCmd(g, f),
		newBenchThroughputCmd(g, f),
		newBenchRetrieveCmd(g, f),
		newBenchRaftCmd(g, f),
		newBenchMatchCmd(g, f),
		newBenchAbuseCmd(g, f),
		newBenchLocatorCmd(g, f),
		newBenchAttackerCmd(),
	)
	return cmd
}

// newBenchAttackerCmd is the attacker process of bench abuse, which starts
// it; it is not meant to be run by hand.
func newBenchAttackerCmd() *cobra.Command {
	var name, envJSON string
	cmd := &cobra.Command{
		Use:    "attacker",
		Short:  "Run one attack of bench abuse under its control (stdin and stdout)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var env bench.AttackEnv
			if err := json.Unmarshal([]byte(envJSON), &env); err != nil {
				return fmt.Errorf("--env: %w", err)
			}
			return bench.RunAttacker(cmd.Context(), name, env, os.Stdin, os.Stdout)
		},
	}
	cmd.Flags().StringVar(&name, "attack", "", "the attack")
	cmd.Flags().StringVar(&envJSON, "env", "", "the network, as JSON")
	return cmd
}

func newBenchAbuseCmd(g *globals, f *benchFlags) *cobra.Command {
	o := bench.AbuseOptions{}
	inProcess := false
	cmd := &cobra.Command{
		Use:   "abuse",
		Short: "Attack one broker of a network of separate processes while a member keeps querying",
		Long: `Start a network of separate qhin-broker and qhin-participant processes (found
beside qhinctl or on PATH: make build installs them), then run each attack
against broker b1 while member p1 keeps making discovery queries through it:
a hostile member flooding candidates, stalled TLS handshakes, document
queries with forged links (label-flood), 150,000 raw record ids, retrievals of
a document found through discovery and never read, and oversized fields. For each,
print the legitimate queries' latency without and during the attack, and b1's
peak resident set and CPU time read from /proc.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Dir, o.Timeout = f.dir, g.timeout
			if !inProcess {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				o.AttackerCommand = []string{self, "bench", "attacker"}
			}
			return runBench(cmd, g, f, func(ctx context.Context, p bench.Progress) (*bench.AbuseResult, error) {
				return bench.Abuse(ctx, o, p)
			}, printAbuse)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.Brokers, "brokers", 3, "brokers in the cluster")
	fl.IntVar(&o.Members, "members", 3, "members (besides the hostile one)")
	fl.IntVar(&o.Patients, "patients", 1000, "synthetic persons spread over the members")
	fl.DurationVar(&o.Duration, "duration", 10*time.Second, "length of each phase: without, then during the attack")
	fl.DurationVar(&o.After, "after", 3*time.Second, "how long the broker's CPU is watched once an attack stops")
	fl.StringSliceVar(&o.Attacks, "attack", nil, "attacks to run (default all): "+strings.Join(bench.Attacks, ", "))
	fl.StringVar(&o.BinDir, "bin", "", "directory holding qhin-broker and qhin-participant (default: beside qhinctl, then PATH)")
	fl.BoolVar(&inProcess, "attacker-in-process", false, "attack from this process, beside the legitimate client, instead of from a process of its own")
	return cmd
}

func printAbuse(w io.Writer, r *bench.AbuseResult) {
	o := r.Options
	fmt.Fprintf(w, "abuse: %d brokers, %d members, %d persons; %v without and %v during each attack; broker b1 idle RSS %s\n",
		o.Brokers, o.Members, o.Patients, o.Duration, o.Duration, fmtBytes(r.BrokerIdleRSS))
	printMachine(w, r.Machine)
	fmt.Fprintln(w)
	t := &table{tw: newTabWriter(w)}
	t.row("ATTACK", "QUERIES", "ERRORS", "P50 WITHOUT", "P99 WITHOUT", "P50 DURING", "P99 DURING", "P99 RATIO", "B1 PEAK RSS", "B1 CPU-S WITHOUT", "B1 CPU-S DURING", "B1 CPU-S AFTER", "ATTACKER CPU-S")
	for _, run := range r.Runs {
		attacker := "-"
		if r.Options.SeparateAttacker {
			attacker = fmt.Sprintf("%.2f", run.AttackerCPU)
		}
		t.row(run.Attack, fmt.Sprintf("%d/%d", run.Baseline.Queries, run.UnderAttack.Queries), fmt.Sprintf("%d/%d", run.Baseline.Errors, run.UnderAttack.Errors),
			run.Baseline.Latency.P50, run.Baseline.Latency.P99, run.UnderAttack.Latency.P50, run.UnderAttack.Latency.P99, fmtRatio(run.P99Ratio),
			fmtBytes(run.AttackPeakRSS), fmt.Sprintf("%.2f", run.BaselineCPU), fmt.Sprintf("%.2f", run.AttackCPU), fmt.Sprintf("%.2f", run.AfterCPU), attacker)
	}
	t.tw.Flush()
	fmt.Fprintln(w)
	for _, run := range r.Runs {
		fmt.Fprintf(w, "%s: %s; attacker: %d calls (%s)\n", run.Attack, run.Description, run.AttackCalls, run.Detail)
		for _, e := range []string{run.Baseline.FirstError, run.UnderAttack.FirstError} {
			if e != "" {
				fmt.Fprintf(w, "  first legitimate error: %s\n", e)
			}
		}
	}
	fmt.Fprintln(w)
	printNotes(w, r.Notes)
}

func newBenchFanoutCmd(g *globals, f *benchFlags) *cobra.Command {
	o := bench.FanoutOptions{}
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Discovery latency through a broker to N slow members, against asking them directly",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Dir, o.Timeout = f.dir, g.timeout
			if o.Latency == 0 {
				o.Latency = -1 // none; zero would mean the default
			}
			return runBench(cmd, g, f, func(ctx context.Context, p bench.Progress) (*bench.FanoutResult, error) {
				return bench.Fanout(ctx, o, p)
			}, printFanout)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.Members, "members", 16, "members answering every query")
	fl.DurationVar(&o.Latency, "latency", 2*time.Millisecond, "latency injected into every member's answer")
	fl.IntVar(&o.Brokers, "brokers", 1, "brokers in the cluster")
	fl.Float64Var(&o.Rate, "rate", 200, "queries per second on each path (open loop)")
	fl.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send queries")
	fl.IntVar(&o.Count, "count", 0, "queries per path (overrides --duration)")
	fl.IntVar(&o.Patients, "patients", 2000, "synthetic persons spread over the network")
	return cmd
}

func newBenchThroughputCmd(g *globals, f *benchFlags) *cobra.Command {
	o := bench.ThroughputOptions{}
	cmd := &cobra.Command{
		Use:   "throughput",
		Short: "Sustained discovery queries/s through one broker to 2 members, against asking them directly",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Dir, o.Timeout = f.dir, g.timeout
			return runBench(cmd, g, f, func(ctx context.Context, p bench.Progress) (*bench.ThroughputResult, error) {
				return bench.Throughput(ctx, o, p)
			}, printThroughput)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.Concurrency, "concurrency", 2*runtime.NumCPU(), "closed-loop workers")
	fl.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per path")
	fl.IntVar(&o.Rounds, "rounds", 10, "rounds the duration is split into, alternating the paths")
	fl.IntVar(&o.Patients, "patients", 2000, "synthetic persons spread over the network")
	return cmd
}

func newBenchRetrieveCmd(g *globals, f *benchFlags) *cobra.Command {
	o := bench.RetrieveOptions{}
	size := "256MiB"
	cmd := &cobra.Command{
		Use:   "retrieve",
		Short: "Stream one large document through a broker, against reading it from the member directly",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.Size, err = parseSize(size); err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			o.Dir = f.dir
			return runBench(cmd, g, f, func(ctx context.Context, p bench.Progress) (*bench.RetrieveResult, error) {
				return bench.Retrieve(ctx, o, p)
			}, printRetrieve)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&size, "size", size, "document size: bytes, or with a unit (KiB, MiB, GiB; KB, MB, GB mean the same)")
	fl.IntVar(&o.Rounds, "rounds", 3, "retrievals per path, alternating")
	return cmd
}

func newBenchRaftCmd(g *globals, f *benchFlags) *cobra.Command {
	o := bench.RaftOptions{}
	cmd := &cobra.Command{
		Use:   "raft",
		Short: "Replicated write throughput, leader failover and snapshot install of the broker cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Dir, o.Timeout = f.dir, g.timeout
			if o.Kills == 0 {
				o.Kills = -1 // none; zero would mean the default
			}
			if o.Steady == 0 {
				o.Steady = -1
			}
			return runBench(cmd, g, f, func(ctx context.Context, p bench.Progress) (*bench.RaftResult, error) {
				return bench.Raft(ctx, o, p)
			}, printRaft)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.Brokers, "brokers", 3, "brokers in the cluster")
	fl.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per write mode")
	fl.IntVar(&o.Rounds, "rounds", 5, "rounds the duration is split into, the write modes taking turns")
	fl.IntVar(&o.Batch, "batch", 2000, "writes per WriteParticipants call (one Raft entry) in the batched mode")
	fl.IntVar(&o.BatchWriters, "batch-writers", 4, "concurrent writers in the batched mode")
	fl.IntVar(&o.Concurrency, "concurrency", 16, "writers in the concurrent mode and the steady run")
	fl.DurationVar(&o.Steady, "steady", 60*time.Second, "how long the concurrent load runs while leader changes are counted (0: skip)")
	fl.IntVar(&o.Kills, "kills", 10, "times the leader is killed")
	fl.DurationVar(&o.CallTimeout, "call-timeout", 250*time.Millisecond, "deadline of each write attempt during a failover")
	fl.IntVar(&o.Entries, "entries", 1_000_000, "directory entries in the state that is snapshotted")
	fl.IntVar(&o.BuildBatch, "build-batch", 5000, "writes per WriteParticipants call while building that state")
	return cmd
}

func newBenchMatchCmd(g *globals, f *benchFlags) *cobra.Command {
	o := bench.MatchOptions{}
	cmd := &cobra.Command{
		Use:   "match",
		Short: "Local demographic matching: index build, search rate and latency, recall",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, g, f, func(ctx context.Context, p bench.Progress) (*bench.MatchResult, error) {
				return bench.Match(ctx, o, p)
			}, printMatch)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.Patients, "patients", 1_000_000, "patients in the index")
	fl.IntVar(&o.Queries, "queries", 20_000, "searches per run")
	fl.IntVar(&o.Rounds, "rounds", 3, "runs per variant, alternating single and parallel")
	fl.IntVar(&o.Goroutines, "goroutines", runtime.NumCPU(), "goroutines of the parallel variant")
	fl.Float64Var(&o.Threshold, "threshold", match.DefaultThreshold, "lowest score a result needs")
	fl.Int64Var(&o.Seed, "seed", 1, "seed of the synthetic population")
	return cmd
}

// runBench runs a scenario with a progress bar on stderr, then prints its
// result (a table, or JSON with -o json) and writes it to --json FILE.
func runBench[R any](cmd *cobra.Command, g *globals, f *benchFlags, run func(context.Context, bench.Progress) (R, error), render func(io.Writer, R)) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if fl := cmd.Flag("config"); fl != nil && fl.Changed {
		fmt.Fprintln(stderr, "qhinctl bench: --config is ignored; bench measures a network it starts in this process")
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	bar := newPhaseBar(stderr)
	start := time.Now()
	res, err := run(cmd.Context(), bar.progress)
	bar.finish()
	if err != nil {
		return err
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	if f.jsonPath != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(f.jsonPath, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if g.output == "json" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout, string(b))
		return err
	}
	render(stdout, res)
	fmt.Fprintf(stdout, "\ntook %s", took)
	if f.jsonPath != "" {
		fmt.Fprintf(stdout, "; wrote %s", f.jsonPath)
	}
	fmt.Fprintln(stdout)
	return nil
}

// phaseBar is a progress bar whose description follows the scenario's
// phase.
type phaseBar struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	phase string
	max   int
}

func newPhaseBar(w io.Writer) *phaseBar {
	return &phaseBar{bar: progressbar.NewOptions(1, progressbar.OptionSetWriter(w), progressbar.OptionShowCount(),
		progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetPredictTime(false))}
}

func (p *phaseBar) progress(phase string, done, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if phase != p.phase {
		p.phase = phase
		p.bar.Reset()
		p.bar.Describe(phase)
	}
	if total != p.max && total > 0 {
		p.max = total
		p.bar.ChangeMax(total)
	}
	p.bar.Set(done)
}

func (p *phaseBar) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.Finish()
	p.bar.Clear()
}

func printMachine(w io.Writer, m bench.Machine) {
	fmt.Fprintf(w, "machine: %s/%s, %d CPUs (GOMAXPROCS %d), %s", m.GOOS, m.GOARCH, m.NumCPU, m.GOMAXPROCS, m.GoVersion)
	if m.CPUModel != "" {
		fmt.Fprintf(w, ", %s", m.CPUModel)
	}
	fmt.Fprintln(w)
}

func printNotes(w io.Writer, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(w, "  - %s\n", n)
	}
}

func printFanout(w io.Writer, r *bench.FanoutResult) {
	o := r.Options
	fmt.Fprintf(w, "fanout: %d members answering after %v, %d broker(s), %.0f queries/s per path, %d queries per path (%v)\n",
		o.Members, o.Latency, o.Brokers, o.Rate, o.Count, o.Duration)
	printMachine(w, r.Machine)
	fmt.Fprintln(w)
	t := &table{tw: newTabWriter(w)}
	t.row("PATH", "QUERIES", "ERRORS", "P50", "P90", "P99", "MAX", "MEAN")
	for _, p := range []struct {
		name string
		p    bench.FanoutPath
	}{{"broker", r.Broker}, {"direct", r.Direct}} {
		l := p.p.Latency
		t.row(p.name, p.p.Sent, p.p.Errors, l.P50, l.P90, l.P99, l.Max, l.Mean)
	}
	t.row("broker/direct", "", "", fmtRatio(r.RatioP50), fmtRatio(r.RatioP90), fmtRatio(r.RatioP99),
		fmtRatio(float64(r.Broker.Latency.Max)/float64(r.Direct.Latency.Max)), fmtRatio(float64(r.Broker.Latency.Mean)/float64(r.Direct.Latency.Mean)))
	t.tw.Flush()
	fmt.Fprintf(w, "\nsend lag behind schedule: p50 %v, p99 %v, max %v\n", r.SendLag.P50, r.SendLag.P99, r.SendLag.Max)
	for _, p := range []struct {
		name string
		p    bench.FanoutPath
	}{{"broker", r.Broker}, {"direct", r.Direct}} {
		if p.p.FirstError != "" {
			fmt.Fprintf(w, "first %s error: %s\n", p.name, p.p.FirstError)
		}
	}
	printNotes(w, r.Notes)
}

func printThroughput(w io.Writer, r *bench.ThroughputResult) {
	o := r.Options
	fmt.Fprintf(w, "throughput: discovery to %d members through 1 broker, %d closed-loop workers, %v per path in %d rounds\n",
		r.Members, o.Concurrency, o.Duration, o.Rounds)
	printMachine(w, r.Machine)
	fmt.Fprintln(w)
	t := &table{tw: newTabWriter(w)}
	t.row("PATH", "QUERIES", "ERRORS", "QUERIES/S", "MIN ROUND", "MAX ROUND", "CPU S/1000", "P50", "P99")
	for _, p := range []struct {
		name string
		p    bench.ThroughputPath
	}{{"broker", r.Broker}, {"direct", r.Direct}} {
		lo, hi := minMax(p.p.RoundQPS)
		t.row(p.name, p.p.Queries, p.p.Errors, fmt.Sprintf("%.0f", p.p.QPS), fmt.Sprintf("%.0f", lo), fmt.Sprintf("%.0f", hi),
			fmt.Sprintf("%.3f", p.p.CPUPer1000), p.p.Latency.P50, p.p.Latency.P99)
	}
	t.row("broker/direct", "", "", fmtRatio(r.Ratio), "", "", fmtRatio(r.CPURatio),
		fmtRatio(float64(r.Broker.Latency.P50)/float64(r.Direct.Latency.P50)), fmtRatio(float64(r.Broker.Latency.P99)/float64(r.Direct.Latency.P99)))
	t.tw.Flush()
	for _, p := range []struct {
		name string
		p    bench.ThroughputPath
	}{{"broker", r.Broker}, {"direct", r.Direct}} {
		if p.p.FirstError != "" {
			fmt.Fprintf(w, "first %s error: %s\n", p.name, p.p.FirstError)
		}
	}
	fmt.Fprintln(w)
	printNotes(w, r.Notes)
}

func printRetrieve(w io.Writer, r *bench.RetrieveResult) {
	o := r.Options
	fmt.Fprintf(w, "retrieve: one %s document, %d retrievals per path\n", fmtBytes(uint64(o.Size)), o.Rounds)
	printMachine(w, r.Machine)
	fmt.Fprintf(w, "stored in %v; sha256 %s; heap before retrieving %s\n\n", r.Store, r.SHA256, fmtBytes(r.BaselineHeap))
	t := &table{tw: newTabWriter(w)}
	t.row("PATH", "MIB/S", "ROUNDS MIB/S", "SHA-256", "CPU S/GIB", "CORES", "PEAK HEAPINUSE", "PEAK RSSANON", "PEAK VMRSS", "PEAK VMHWM")
	for _, p := range []struct {
		name string
		p    bench.RetrievePath
	}{{"broker", r.Broker}, {"direct", r.Direct}} {
		verified := "verified"
		if !p.p.Verified {
			verified = "MISMATCH"
		}
		hwm := fmtBytes(p.p.PeakHWM)
		if !p.p.PeakHWMReset {
			hwm += " (process lifetime)"
		}
		t.row(p.name, fmt.Sprintf("%.1f", p.p.MBps), fmtFloats(p.p.RoundMBps), verified,
			fmt.Sprintf("%.2f", p.p.CPUPerGiB), fmt.Sprintf("%.2f", p.p.Cores), fmtBytes(p.p.PeakHeapInuse),
			fmtBytes(p.p.PeakRSSAnon), fmtBytes(p.p.PeakRSS), hwm)
	}
	t.row("broker/direct", fmtRatio(r.Ratio), "", "", fmtRatio(r.Broker.CPUPerGiB/r.Direct.CPUPerGiB), "",
		fmtRatio(float64(r.Broker.PeakHeapInuse)/float64(r.Direct.PeakHeapInuse)),
		fmtRatio(float64(r.Broker.PeakRSSAnon)/float64(r.Direct.PeakRSSAnon)), fmtRatio(float64(r.Broker.PeakRSS)/float64(r.Direct.PeakRSS)), "")
	t.tw.Flush()
	fmt.Fprintln(w)
	printNotes(w, r.Notes)
}

func printRaft(w io.Writer, r *bench.RaftResult) {
	o := r.Options
	fmt.Fprintf(w, "raft: %d brokers; writes through the public API, %v per mode in %d rounds; %v steady load; %d leader kills; snapshot of %d bulk entries\n",
		o.Brokers, o.Duration, o.Rounds, o.Steady, o.Kills, o.Entries)
	printMachine(w, r.Machine)
	fmt.Fprintln(w)
	t := &table{tw: newTabWriter(w)}
	t.row("WRITES", "ENTRIES", "CALLS", "ERRORS", "ENTRIES/S", "MIN ROUND", "MAX ROUND", "CALL P50", "CALL P99", "CPU S/1000", "WRITES/ENTRY")
	var seq float64
	for _, m := range r.Writes {
		lo, hi := minMax(m.RoundPerSecond)
		mode := m.Mode
		switch m.Mode {
		case "sequential":
			seq = m.PerSecond
		case "batched":
			mode = fmt.Sprintf("batched (%d/call, %d writers)", o.Batch, o.BatchWriters)
		case "concurrent":
			mode = fmt.Sprintf("concurrent (%d writers)", o.Concurrency)
		case "restricting":
			mode = "restricting (suspend/resume)"
		}
		perEntry := "-"
		if m.PerEntry > 0 {
			perEntry = fmt.Sprintf("%.1f", m.PerEntry)
		}
		t.row(mode, m.Entries, m.Calls, m.Errors, fmt.Sprintf("%.0f", m.PerSecond), fmt.Sprintf("%.0f", lo), fmt.Sprintf("%.0f", hi), m.Latency.P50, m.Latency.P99,
			fmt.Sprintf("%.3f", m.CPUPer1000), perEntry)
	}
	t.tw.Flush()
	for _, m := range r.Writes {
		if m.Mode != "sequential" {
			fmt.Fprintf(w, "%s/sequential: %s\n", m.Mode, fmtRatio(m.PerSecond/seq))
		}
		if m.FirstError != "" {
			fmt.Fprintf(w, "first %s error: %s\n", m.Mode, m.FirstError)
		}
	}

	if st := r.Steady; st.Duration > 0 {
		fmt.Fprintln(w)
		t = &table{tw: newTabWriter(w)}
		t.row("STEADY", "DURATION", "WRITES", "ERRORS", "WRITES/S", "ELECTIONS", "TERM BEFORE", "TERM AFTER", "CALL P50", "CALL P99", "WRITES/ENTRY")
		t.row(fmt.Sprintf("concurrent (%d writers)", o.Concurrency), st.Duration, st.Writes, st.Errors, fmt.Sprintf("%.0f", st.PerSecond),
			st.Elections, st.TermBefore, st.TermAfter, st.Latency.P50, st.Latency.P99, fmt.Sprintf("%.1f", st.PerEntry))
		t.tw.Flush()
	}

	fmt.Fprintln(w)
	f := r.Failover
	t = &table{tw: newTabWriter(w)}
	t.row("FAILOVER", "KILLS", "MEDIAN", "MIN", "MAX", "FAILED ATTEMPTS", "ALL")
	all := make([]string, len(f.Times))
	for i, d := range f.Times {
		all[i] = d.String()
	}
	t.row("kill leader → first write", f.Kills, f.Median, f.Min, f.Max, f.Attempts, strings.Join(all, " "))
	t.tw.Flush()

	fmt.Fprintln(w)
	s := r.Snapshot
	t = &table{tw: newTabWriter(w)}
	t.row("SNAPSHOT", "VALUE")
	t.row("entries in state", s.Entries)
	t.row(fmt.Sprintf("build (WriteParticipants, %d/call)", o.BuildBatch), fmt.Sprintf("%v (%.0f entries/s)", s.Build, s.BuildRate))
	t.row("take (Node.Snapshot on leader)", s.Take)
	t.row("size (FSM WriteTo)", fmtBytes(uint64(s.Bytes)))
	t.row("size (state.bin on leader)", fmtBytes(uint64(s.FileBytes)))
	t.row("AddBroker → snapshot installed", s.Installed)
	t.row("AddBroker → participants checksum equal", s.Install)
	t.row("AddBroker → ready", s.Ready)
	t.tw.Flush()

	if len(r.Goals) > 0 {
		fmt.Fprintln(w)
		t = &table{tw: newTabWriter(w)}
		t.row("GOAL", "TARGET", "MEASURED", "MET")
		for _, g := range r.Goals {
			met := "no"
			if g.Met {
				met = "yes"
			}
			t.row(g.Name, g.Goal, g.Measured, met)
		}
		t.tw.Flush()
	}
	fmt.Fprintln(w)
	printNotes(w, r.Notes)
}

func printMatch(w io.Writer, r *bench.MatchResult) {
	o := r.Options
	fmt.Fprintf(w, "match: index of %d patients (from %d synthetic persons), %d queries (%d varied), threshold %.2f, limit %d\n",
		r.IndexSize, r.Persons, r.Queries, r.VariedQueries, o.Threshold, o.Limit)
	printMachine(w, r.Machine)
	fmt.Fprintf(w, "build: %v in Normalize+Add (%.0f patients/s), %v with generation; heap %s (%.0f bytes/patient)\n\n",
		r.Build, float64(r.IndexSize)/time.Duration(r.Build).Seconds(), r.Generate, fmtBytes(r.HeapBytes), r.HeapPerPatient)
	t := &table{tw: newTabWriter(w)}
	t.row("SEARCH", "QUERIES/S", "ROUNDS", "P50", "P90", "P99", "MAX")
	for _, m := range []bench.MatchRun{r.Single, r.Parallel} {
		t.row(fmt.Sprintf("%d goroutine(s)", m.Goroutines), fmt.Sprintf("%.0f", m.QPS), fmtFloats(m.RoundQPS), m.Latency.P50, m.Latency.P90, m.Latency.P99, m.Latency.Max)
	}
	t.row("parallel/single", fmtRatio(r.Speedup), "", "", "", "", "")
	t.tw.Flush()
	fmt.Fprintln(w)
	t = &table{tw: newTabWriter(w)}
	t.row("RECALL", "ALL", "VARIED", "TOP-1", "MEAN RESULTS")
	t.row(fmt.Sprintf("score ≥ %.2f", o.Threshold), fmt.Sprintf("%.4f", r.Recall), fmt.Sprintf("%.4f", r.RecallVaried), fmt.Sprintf("%.4f", r.Top1), fmt.Sprintf("%.2f", r.MeanCandidates))
	t.row("decided match", fmt.Sprintf("%.4f", r.RecallMatch), fmt.Sprintf("%.4f", r.RecallMatchVaried), "", "")
	t.tw.Flush()
	fmt.Fprintln(w)
	printNotes(w, r.Notes)
}

func fmtRatio(x float64) string {
	if x != x || x == 0 || x > 1e9 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", x)
}

func fmtFloats(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, " ")
}

func fmtBytes(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func minMax(xs []float64) (lo, hi float64) {
	for i, x := range xs {
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi
}

// parseSize reads a byte count: a plain number of bytes, or a number with a
// binary unit (K, M, G, optionally followed by iB or B; all powers of 1024).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	num := strings.TrimRightFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToUpper(strings.TrimSpace(s[len(num):]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	mult := map[string]int64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || mult == 0 || n <= 0 {
		return 0, fmt.Errorf("%q is not a size like 268435456, 256MiB or 1GiB", s)
	}
	return n * mult, nil
}

func newBenchLocatorCmd(g *globals, f *benchFlags) *cobra.Command {
	o := bench.LocatorOptions{}
	cmd := &cobra.Command{
		Use:   "locator",
		Short: "Record locator: tokens published through the cluster, their size and snapshot, and targeted against broadcast discovery",
		Long: `Publish every patient's record-locator tokens through a broker cluster's public
API (PublishTokens, as the members' publishers call it) and report the tokens
acknowledged per second, the locator's bytes per token in the state machine,
and the snapshot of that state: its size, the time to take it and to install
it on a new broker. Then start a network of --members members holding
--persons persons, each at two or three of them, and make discovery queries
with the persons' tokens (targeted) and without (every member is asked), the
two taking turns: members asked per query, latency and recall.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Dir, o.Timeout = f.dir, max(g.timeout, time.Minute)
			return runBench(cmd, g, f, func(ctx context.Context, p bench.Progress) (*bench.LocatorResult, error) {
				return bench.Locator(ctx, o, p)
			}, printLocator)
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&o.Brokers, "brokers", 3, "brokers in each network")
	fl.IntVar(&o.Patients, "patients", 1_000_000, "patients whose tokens are published")
	fl.IntVar(&o.TokensPerPatient, "tokens-per-patient", 4, "tokens of each patient")
	fl.IntVar(&o.Batch, "batch", 10_000, "tokens per PublishTokens call (one Raft entry)")
	fl.IntVar(&o.Writers, "writers", 4, "members publishing at once")
	fl.IntVar(&o.Members, "members", 200, "members of the discovery network")
	fl.IntVar(&o.Persons, "persons", 10_000, "persons of the discovery network, each at two or three members")
	fl.IntVar(&o.Queries, "queries", 400, "discovery queries per path")
	fl.IntVar(&o.Rounds, "rounds", 4, "rounds the paths take turns in")
	fl.IntVar(&o.Workers, "workers", 4, "closed-loop workers making the queries")
	fl.BoolVar(&o.SkipPublish, "skip-publish", false, "leave the publication and snapshot out")
	fl.BoolVar(&o.SkipDiscovery, "skip-discovery", false, "leave the discovery comparison out")
	return cmd
}

func printLocator(w io.Writer, r *bench.LocatorResult) {
	o := r.Options
	fmt.Fprintf(w, "locator: %d brokers", o.Brokers)
	if r.Publish != nil {
		fmt.Fprintf(w, "; %d patients x %d tokens published by %d members, %d tokens a call", o.Patients, o.TokensPerPatient, o.Writers, o.Batch)
	}
	if r.Discovery != nil {
		fmt.Fprintf(w, "; discovery among %d members holding %d persons", o.Members, o.Persons)
	}
	fmt.Fprintln(w)
	printMachine(w, r.Machine)
	if p := r.Publish; p != nil {
		fmt.Fprintln(w)
		t := &table{tw: newTabWriter(w)}
		t.row("PUBLISH", "VALUE")
		t.row("tokens acknowledged", fmt.Sprintf("%d in %d calls, %.1fs", p.Tokens, p.Calls, p.Seconds))
		t.row("tokens/s acknowledged", fmt.Sprintf("%.0f (first tenth %.0f, last tenth %.0f)", p.PerSecond, p.FirstTenth, p.LastTenth))
		t.row("call latency p50 / p99", fmt.Sprintf("%v / %v", p.Latency.P50, p.Latency.P99))
		t.row("locator entries (leader)", p.Entries)
		t.row("bytes per token: pages / in use", fmt.Sprintf("%.1f / %.1f (B-tree depth %d)", p.AllocPerToken, p.InUsePerToken, p.Depth))
		t.row("bytes per token: state file", fmt.Sprintf("%.1f (%s)", p.FilePerToken, fmtBytes(uint64(p.FileBytes))))
		if s := r.Snapshot; s != nil {
			t.row("snapshot size (FSM WriteTo / state.bin)", fmt.Sprintf("%s / %s", fmtBytes(uint64(s.Bytes)), fmtBytes(uint64(s.FileBytes))))
			t.row("snapshot take (Node.Snapshot on leader)", fmt.Sprintf("%v (%v per million tokens)", s.Take, s.TakePerMillion))
			t.row("AddBroker → locator checksum equal", fmt.Sprintf("%v (%v per million tokens)", s.Install, s.InstallPerMillion))
		}
		t.tw.Flush()
	}
	if d := r.Discovery; d != nil {
		fmt.Fprintf(w, "\ndiscovery: %d members, %d persons, %d registrations, %d tokens published\n", d.Members, d.Persons, d.Registrations, d.Tokens)
		t := &table{tw: newTabWriter(w)}
		t.row("PATH", "QUERIES", "ERRORS", "ASKED MEAN", "ASKED P50", "ASKED P99", "P50", "P90", "P99", "RECALL")
		for _, p := range d.Paths {
			t.row(p.Path, p.Queries, p.Errors, fmt.Sprintf("%.2f", p.AskedMean), p.AskedP50, p.AskedP99,
				p.Latency.P50, p.Latency.P90, p.Latency.P99, fmt.Sprintf("%.4f", p.Recall))
		}
		t.row("targeted/broadcast", "-", "-", fmtRatio(d.AskedRatio), "-", "-", fmtRatio(d.P50Ratio), "-", fmtRatio(d.P99Ratio), "-")
		t.tw.Flush()
		for _, p := range d.Paths {
			if p.FirstError != "" {
				fmt.Fprintf(w, "first error (%s): %s\n", p.Path, p.FirstError)
			}
		}
	}
	fmt.Fprintln(w)
	printNotes(w, r.Notes)
}
