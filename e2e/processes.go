package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// ProcessOptions describe a network whose every node is a child process:
// a qhin-broker or a qhin-participant, started with the flags an operator
// would give it.
type ProcessOptions struct {
	// Dir holds the CA, every node's SVID and data, as for [Start]; a
	// network started again on the same Dir keeps its CA and state.
	Dir          string
	TrustDomain  string
	Brokers      int
	Participants int
	// BasePort fixes every address as [Options.BasePort] does, metrics
	// included. It is required: a node started again must come back on the
	// addresses the cluster knows it by.
	BasePort int
	// BrokerBin and ParticipantBin are the qhin-broker and qhin-participant
	// executables.
	BrokerBin, ParticipantBin string
	// NodeArgs are added to every node's command line (log level, tracing).
	NodeArgs []string
	// BrokerArgs are added to every broker's command line (routing).
	BrokerArgs []string
	// LinkageKeyFile, when set, is the network's linkage key: every
	// participant publishes its tokens under it, and Start adds its id to
	// the brokers.
	LinkageKeyFile string
	// SVIDTTL is the lifetime of the SVIDs the network's Workload API hands
	// the nodes (pki.DefaultWorkloadSVIDTTL when zero).
	SVIDTTL time.Duration
	// WorkloadAPI, when set, is an outside Workload API (a SPIRE agent)
	// every node takes its SVID from, instead of the network's own; Operator
	// is then the operator's identity.
	WorkloadAPI string
	Operator    pki.Source
	// Output receives every node's standard output and error. Pass a file
	// (the nodes then write to it directly, and keep doing so if this
	// process dies) or nil to discard them.
	Output *os.File
	// Logger logs nodes starting and exiting.
	Logger *slog.Logger
	// Exited is called, from its own goroutine, when a node exits without
	// being stopped through the network, with the pid it had and how it
	// ended.
	Exited func(p *Process, pid int, err error)
}

// FHIRPortOffset places participant j's FHIR API on BasePort+FHIRPortOffset+j.
const FHIRPortOffset = 50

// Process is one node of a [ProcessNetwork].
type Process struct {
	ID   string
	Role pki.Role
	// Dir holds the node's svid/ and data/ directories and, while it runs,
	// a pid file.
	Dir         string
	GRPCAddr    string
	RaftAddr    string // brokers only
	MetricsAddr string
	// FHIRURL is a participant's FHIR API.
	FHIRURL string
	bin     string
	args    []string
	source  pki.Source

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the process has exited
	stopping bool
}

// Pid returns the process id of the running node, or 0.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the node's process has been started and has not
// exited.
func (p *Process) Running() bool { return p.Pid() != 0 }

// PidFile is where the running node's process id is written.
func (p *Process) PidFile() string { return filepath.Join(p.Dir, "pid") }

// ProcessNetwork is a network of node processes on loopback.
type ProcessNetwork struct {
	opts         ProcessOptions
	layout       *Network
	Brokers      []*Process
	Participants []*Process
	log          *slog.Logger
	spawn        chan spawnRequest
	closed       chan struct{}
	stopSpawner  func()
}

// PrepareProcesses lays the network out in opts.Dir (CA, SVIDs, node
// directories) and checks that no node of an earlier run is still alive.
// Nothing runs until Start; in between, the participants' stores may be
// filled (SeedSynthetic, SeedFHIR). Close releases it if Start is never
// called.
func PrepareProcesses(opts ProcessOptions) (*ProcessNetwork, error) {
	if opts.BasePort <= 0 {
		return nil, errors.New("network: a network of processes needs a base port")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Every node takes its SVID from the network's Workload API, which
	// runs in this process: the nodes share this user's uid, so each names
	// the SPIFFE ID it takes (--spiffe-id).
	layout, err := prepare(Options{Dir: opts.Dir, TrustDomain: opts.TrustDomain, Brokers: opts.Brokers,
		Participants: opts.Participants, BasePort: opts.BasePort, Logger: opts.Logger,
		WorkloadAPI: opts.WorkloadAPI == "", SVIDTTL: opts.SVIDTTL})
	if err != nil {
		return nil, err
	}
	api := opts.WorkloadAPI
	if api == "" {
		api = layout.Issuer.Addr()
	} else {
		layout.operator = opts.Operator
	}
	identity := func(role pki.Role, name string) []string {
		return []string{"--workload-api", api, "--spiffe-id", pki.MustIdentity(layout.td, role, name).ID.String(),
			"--workload-api-timeout", "2m"}
	}
	n := &ProcessNetwork{opts: opts, layout: layout, log: opts.Logger}
	common := append([]string{"--log-json"}, opts.NodeArgs...)
	for i, b := range layout.Brokers {
		args := append(identity(pki.RoleBroker, b.ID),
			"--node-id", b.ID,
			"--data-dir", filepath.Join(b.Dir, "data"),
			"--listen", b.GRPCAddr,
			"--raft-listen", b.RaftAddr,
			"--metrics-listen", b.MetricsAddr,
		)
		// The first broker bootstraps a new cluster, the others join it; a
		// broker that holds state already ignores both.
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			var others []string
			for _, o := range layout.Brokers {
				if o != b {
					others = append(others, o.GRPCAddr)
				}
			}
			args = append(args, "--join", strings.Join(others, ","))
		}
		args = append(args, opts.BrokerArgs...)
		n.Brokers = append(n.Brokers, &Process{
			ID: b.ID, Role: pki.RoleBroker, Dir: b.Dir, GRPCAddr: b.GRPCAddr, RaftAddr: b.RaftAddr, MetricsAddr: b.MetricsAddr,
			bin: opts.BrokerBin, args: append(args, common...), source: b.source,
		})
	}
	for j, p := range layout.Participants {
		// Every participant serves its EHR the FHIR API on loopback, with
		// its own certificate, and makes its queries through the brokers.
		fhirAddr := "127.0.0.1:" + strconv.Itoa(opts.BasePort+FHIRPortOffset+j+1)
		args := append(identity(pki.RoleParticipant, p.ID),
			"--data-dir", filepath.Join(p.Dir, "data"),
			"--listen", p.Addr,
			"--metrics-listen", p.MetricsAddr,
			"--broker", strings.Join(layout.BrokerAddrs(), ","),
			"--fhir-listen", fhirAddr,
		)
		if opts.LinkageKeyFile != "" {
			args = append(args, "--linkage-key-file", opts.LinkageKeyFile)
		}
		n.Participants = append(n.Participants, &Process{
			ID: p.ID, Role: pki.RoleParticipant, Dir: p.Dir, GRPCAddr: p.Addr, MetricsAddr: p.MetricsAddr, FHIRURL: "https://" + fhirAddr,
			bin: opts.ParticipantBin, args: append(args, common...), source: p.source,
		})
	}
	for _, p := range n.nodes() {
		if err := checkLeftover(p); err != nil {
			layout.Close()
			return nil, err
		}
	}
	n.spawn, n.closed, n.stopSpawner = startSpawner()
	return n, nil
}

// nodes returns every node, participants first: the order to stop them in.
func (n *ProcessNetwork) nodes() []*Process {
	return append(append([]*Process(nil), n.Participants...), n.Brokers...)
}

// CA returns the network's certificate authority.
func (n *ProcessNetwork) CA() *pki.CA { return n.layout.CA }

// Operator returns the operator's SVID source.
func (n *ProcessNetwork) Operator() pki.Source { return n.layout.operator }

// BrokerAddrs returns the gRPC addresses of every broker.
func (n *ProcessNetwork) BrokerAddrs() []string {
	var out []string
	for _, b := range n.Brokers {
		out = append(out, b.GRPCAddr)
	}
	return out
}

// withStores opens every participant's record store (the participants must
// not be running) and calls fn with them, in participant order.
func (n *ProcessNetwork) withStores(fn func(ids []string, stores []*store.Store) error) error {
	var ids []string
	var stores []*store.Store
	defer func() {
		for _, s := range stores {
			s.Close()
		}
	}()
	for _, p := range n.Participants {
		if p.Running() {
			return fmt.Errorf("participant %s is running; its store is in use", p.ID)
		}
		dir := filepath.Join(p.Dir, "data")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		st, err := store.Open(filepath.Join(dir, "participant.db"))
		if err != nil {
			return err
		}
		ids = append(ids, p.ID)
		stores = append(stores, st)
	}
	return fn(ids, stores)
}

func asRecords(stores []*store.Store) []records {
	out := make([]records, len(stores))
	for i, s := range stores {
		out[i] = s
	}
	return out
}

// SeedSynthetic fills every participant store that holds no patients yet,
// as [Network.SeedSynthetic] does, before the participants start.
func (n *ProcessNetwork) SeedSynthetic(ctx context.Context, persons int, seed int64, progress func(done, total int)) (counts []SeedCounts, err error) {
	err = n.withStores(func(ids []string, stores []*store.Store) error {
		counts, err = seedSynthetic(ctx, ids, asRecords(stores), persons, seed, progress)
		return err
	})
	return counts, err
}

// SeedFHIR imports every DIR/<participant-id>/*.json FHIR bundle into that
// participant's store, before the participants start.
func (n *ProcessNetwork) SeedFHIR(ctx context.Context, dir string, progress func(done, total int)) (counts []SeedCounts, err error) {
	err = n.withStores(func(ids []string, stores []*store.Store) error {
		counts, err = seedFHIR(ctx, dir, ids, asRecords(stores), progress)
		return err
	})
	return counts, err
}

// ExamplePerson returns the demographics of a person whom a query by the
// first participant finds at two other members (a patient of the second
// participant whom the third holds too), or failing that any patient of the
// second participant (the first, in a network of one); nil when there is
// nobody. Call it before Start: it reads the stores.
func (n *ProcessNetwork) ExamplePerson() (d *qhinv1.Demographics, err error) {
	err = n.withStores(func(_ []string, stores []*store.Store) error {
		switch len(stores) {
		case 0:
		case 1:
			d, err = examplePerson(stores[0], nil)
		case 2:
			d, err = examplePerson(stores[1], nil)
		default:
			d, err = examplePerson(stores[1], stores[2])
		}
		return err
	})
	return d, err
}

// Start starts every broker and waits until each is ready, then every
// participant, and puts the participants in the directory (or updates
// their endpoints). On failure it stops what it started.
func (n *ProcessNetwork) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			n.Stop(sctx)
		}
	}()
	for _, b := range n.Brokers {
		if err := n.start(b); err != nil {
			return err
		}
	}
	for _, b := range n.Brokers {
		if err := n.WaitServing(ctx, b); err != nil {
			return err
		}
	}
	for _, p := range n.Participants {
		if err := n.start(p); err != nil {
			return err
		}
	}
	for _, p := range n.Participants {
		if err := n.WaitServing(ctx, p); err != nil {
			return err
		}
	}
	conn, err := client.Dial(n.BrokerAddrs(), n.Operator(), n.log)
	if err != nil {
		return err
	}
	defer conn.Close()
	var ids []string
	addrs := map[string]string{}
	for _, p := range n.Participants {
		ids = append(ids, p.ID)
		addrs[p.ID] = p.GRPCAddr
	}
	if err := registerParticipants(ctx, conn.Directory(), ids, addrs); err != nil {
		return err
	}
	if n.opts.LinkageKeyFile == "" {
		return nil
	}
	b, err := os.ReadFile(n.opts.LinkageKeyFile)
	if err != nil {
		return err
	}
	key, err := match.ParseLinkageKey(b)
	if err != nil {
		return fmt.Errorf("%s: %w", n.opts.LinkageKeyFile, err)
	}
	return setLinkageKey(ctx, conn, key.ID())
}

// Restart starts a node that has exited again, with the same command line.
func (n *ProcessNetwork) Restart(p *Process) error {
	if p.Running() {
		return fmt.Errorf("%s is running (pid %d)", p.ID, p.Pid())
	}
	return n.start(p)
}

// start starts p's process and a goroutine that waits for it to exit.
func (n *ProcessNetwork) start(p *Process) error {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = n.opts.Dir
	if n.opts.Output != nil {
		cmd.Stdout, cmd.Stderr = n.opts.Output, n.opts.Output
	}
	cmd.SysProcAttr = childAttr()
	if err := n.startCmd(cmd); err != nil {
		return fmt.Errorf("start %s: %w", p.ID, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.stopping = cmd, done, false
	p.mu.Unlock()
	pid := cmd.Process.Pid
	if err := os.WriteFile(p.PidFile(), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		n.log.Warn("write pid file", "node", p.ID, "error", err)
	}
	n.log.Info("node started", "node", p.ID, "pid", pid)
	go func() {
		err := cmd.Wait()
		os.Remove(p.PidFile())
		p.mu.Lock()
		stopping := p.stopping
		p.cmd = nil
		p.mu.Unlock()
		close(done)
		if stopping {
			n.log.Info("node stopped", "node", p.ID, "pid", pid, "exit", exitText(err))
			return
		}
		n.log.Warn("node exited", "node", p.ID, "pid", pid, "exit", exitText(err))
		if n.opts.Exited != nil {
			n.opts.Exited(p, pid, err)
		}
	}()
	return nil
}

// exitText says how a process ended.
func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// WaitServing waits until p's gRPC health service reports SERVING (for a
// broker: it has joined the cluster and caught up), or p exits, or ctx ends.
func (n *ProcessNetwork) WaitServing(ctx context.Context, p *Process) error {
	id, err := pki.NewIdentity(n.layout.td, p.Role, p.ID)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient("passthrough:///"+p.GRPCAddr,
		grpc.WithTransportCredentials(pki.ClientCredentials(n.Operator(), pki.AuthorizeID(id.ID))))
	if err != nil {
		return err
	}
	defer cc.Close()
	health := healthpb.NewHealthClient(cc)
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	last := errors.New("no answer yet")
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := health.Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		switch {
		case err != nil:
			last = err
		case resp.Status == healthpb.HealthCheckResponse_SERVING:
			return nil
		default:
			last = fmt.Errorf("health %v", resp.Status)
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting", p.ID)
		case <-ctx.Done():
			return fmt.Errorf("%s not serving: %w (last: %v)", p.ID, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Leader returns the id of the broker that leads, as the brokers report it.
func (n *ProcessNetwork) Leader(ctx context.Context) (string, error) {
	conn, err := client.Dial(n.BrokerAddrs(), n.Operator(), n.log)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	resp, err := conn.Cluster().Status(ctx, &qhinv1.StatusRequest{})
	if err != nil {
		return "", err
	}
	return resp.LeaderId, nil
}

// Stop stops every node with SIGTERM (participants, then brokers) and waits
// for each to exit; whatever still runs when ctx ends is killed.
func (n *ProcessNetwork) Stop(ctx context.Context) {
	stop := func(group []*Process) {
		for _, p := range group {
			p.signal(syscall.SIGTERM)
		}
		for _, p := range group {
			p.wait(ctx)
		}
	}
	stop(n.Participants)
	stop(n.Brokers)
	n.Close()
}

// Close releases what PrepareProcesses holds, the Workload API included;
// it stops no node.
func (n *ProcessNetwork) Close() {
	if n.stopSpawner != nil {
		n.stopSpawner()
	}
	n.layout.Close()
}

// Issuer returns the network's Workload API.
func (n *ProcessNetwork) Issuer() *pki.Issuer { return n.layout.Issuer }

// signal sends sig to p's process, if it runs, marking it as stopped on
// purpose.
func (p *Process) signal(sig os.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.stopping = true
	if err := p.cmd.Process.Signal(sig); err != nil && runtime.GOOS == "windows" {
		p.cmd.Process.Kill()
	}
}

// wait waits for p to exit; when ctx ends first it kills p and waits again.
func (p *Process) wait(ctx context.Context) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
	}
}

// spawnRequest asks the spawner to start a command.
type spawnRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

// startSpawner starts the goroutine that starts every child process. It
// stays on one OS thread for its whole life: on Linux a child's parent-death
// signal fires when the thread that forked it exits, not the process, so
// the forking thread must outlive the children.
func startSpawner() (reqs chan spawnRequest, quit chan struct{}, stop func()) {
	reqs = make(chan spawnRequest)
	quit = make(chan struct{})
	go func() {
		// Never unlocked: when the goroutine returns, after Stop, the
		// thread ends with it, and no child is left for it to signal.
		runtime.LockOSThread()
		for {
			select {
			case r := <-reqs:
				r.errc <- r.cmd.Start()
			case <-quit:
				return
			}
		}
	}()
	return reqs, quit, sync.OnceFunc(func() { close(quit) })
}

func (n *ProcessNetwork) startCmd(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	select {
	case n.spawn <- spawnRequest{cmd: cmd, errc: errc}:
		return <-errc
	case <-n.closed:
		return errors.New("network: closed")
	}
}

// checkLeftover fails when p's pid file names a process that still runs
// p's command (a node of an earlier run whose parent died), after giving it
// a while to finish stopping. A stale pid file is removed.
func checkLeftover(p *Process) error {
	b, err := os.ReadFile(p.PidFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		os.Remove(p.PidFile())
		return nil
	}
	marker := filepath.Join(p.Dir, "data")
	deadline := time.Now().Add(20 * time.Second)
	for processRuns(pid, marker) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s of an earlier run still runs as pid %d: stop it (kill %d) and start again", p.ID, pid, pid)
		}
		time.Sleep(200 * time.Millisecond)
	}
	os.Remove(p.PidFile())
	return nil
}
