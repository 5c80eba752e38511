package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/participant/store"
	"github.com/openqhin/openqhin/participant/synth"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Attacks are the names of the attacks [Abuse] knows, in the order it runs
// them.
var Attacks = []string{"flood-200k", "flood-15k", "stalled-handshakes", "label-flood", "links-150k", "never-read", "oversized"}

// AbuseOptions configure [Abuse]. Zero fields take the defaults.
type AbuseOptions struct {
	// Brokers and Members size the network (default 3 and 3, as qhinctl
	// dev); Patients is its synthetic population (default 1,000).
	Brokers  int `json:"brokers"`
	Members  int `json:"members"`
	Patients int `json:"patients"`
	// Duration is each phase: the legitimate load alone, then under attack
	// (default 10s). After is how long the broker is watched once the
	// attack stops (default 3s).
	Duration time.Duration `json:"duration_ns"`
	After    time.Duration `json:"after_ns"`
	// Attacks to run; every one in Attacks when empty.
	Attacks []string `json:"attacks"`
	// Timeout bounds each legitimate query (default 30s).
	Timeout time.Duration `json:"timeout_ns"`
	// BinDir holds qhin-broker and qhin-participant; beside this
	// executable, then on PATH, when empty.
	BinDir string `json:"-"`
	Dir    string `json:"-"`
	// AttackerCommand runs an attack in a process of its own (qhinctl
	// bench attacker), which RunAttacker serves; when empty the attacks
	// run in this process, beside the legitimate member's client.
	AttackerCommand []string `json:"-"`
	// SeparateAttacker records whether the attacker had its own process.
	SeparateAttacker bool `json:"separate_attacker"`
}

func (o *AbuseOptions) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Brokers, 3)
	def(&o.Members, 3)
	def(&o.Patients, 1000)
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.After <= 0 {
		o.After = 3 * time.Second
	}
	if len(o.Attacks) == 0 {
		o.Attacks = Attacks
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
}

// AbuseResult is what [Abuse] measured.
type AbuseResult struct {
	Scenario string       `json:"scenario"`
	Machine  Machine      `json:"machine"`
	Options  AbuseOptions `json:"options"`
	Started  time.Time    `json:"started"`
	Elapsed  Duration     `json:"elapsed_ms"`
	// BrokerIdleRSS is broker b1's resident set before the first attack.
	BrokerIdleRSS uint64     `json:"broker_idle_rss"`
	Runs          []AbuseRun `json:"runs"`
	Notes         []string   `json:"notes"`
}

// AbuseRun is one attack: the legitimate member's queries without it and
// during it, and what the attacked broker (b1) used.
type AbuseRun struct {
	Attack      string    `json:"attack"`
	Description string    `json:"description"`
	Baseline    LegitLoad `json:"baseline"`
	UnderAttack LegitLoad `json:"under_attack"`
	// P99Ratio is the legitimate queries' p99 under attack over without.
	P99Ratio float64 `json:"p99_ratio"`
	// Broker b1's peak VmRSS and CPU seconds (user+system) in each phase,
	// and its CPU seconds in the After window once the attack stopped.
	BaselinePeakRSS uint64  `json:"baseline_peak_rss"`
	AttackPeakRSS   uint64  `json:"attack_peak_rss"`
	BaselineCPU     float64 `json:"baseline_cpu_seconds"`
	AttackCPU       float64 `json:"attack_cpu_seconds"`
	AfterCPU        float64 `json:"after_cpu_seconds"`
	// AttackCalls is what the attacker sent; Detail what it saw or
	// caused, in its own words.
	AttackCalls int64  `json:"attack_calls"`
	Detail      string `json:"detail"`
	// AttackerCPU is the attacker process's CPU seconds during the attack
	// (zero when it ran in this process).
	AttackerCPU float64 `json:"attacker_cpu_seconds"`
}

// LegitLoad is one phase of the legitimate member's closed-loop queries.
type LegitLoad struct {
	Queries    int     `json:"queries"`
	Errors     int     `json:"errors"`
	Latency    Latency `json:"latency"`
	FirstError string  `json:"first_error,omitempty"`
}

// Abuse runs each attack against one broker (b1) of a network of separate
// processes, while a legitimate member (p1) keeps making discovery queries
// through the same broker, one after another. For each attack it measures
// the legitimate queries' latency without the attack and during it, and the
// broker's peak resident set and CPU time from /proc. The attacker is this
// process, holding members' identities (p2, and a hostile member p9 whose
// Responder runs here).
func Abuse(ctx context.Context, o AbuseOptions, progress Progress) (*AbuseResult, error) {
	o.defaults()
	for _, a := range o.Attacks {
		if !slices.Contains(Attacks, a) {
			return nil, fmt.Errorf("bench: unknown attack %q; known: %s", a, strings.Join(Attacks, ", "))
		}
	}
	res := &AbuseResult{Scenario: "abuse", Machine: CurrentMachine(), Options: o, Started: time.Now()}
	dir, err := os.MkdirTemp(o.Dir, "qhin-abuse-*")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)

	const bigDoc = "abuse-big"
	var bigDocPatient *qhinv1.Demographics
	n, err := startProcNetwork(ctx, dir, o.BinDir, o.Brokers, o.Members, o.Patients, func(member string, st *store.Store) error {
		if member != "p3" {
			return nil
		}
		var err error
		bigDocPatient, err = putBigDocument(ctx, st, bigDoc, 12<<20)
		return err
	}, progress)
	if err != nil {
		return nil, err
	}
	defer n.stop()
	b1 := n.brokers[0]

	// The hostile member p9 is registered once, at an address the flood
	// attacks serve; it is suspended, so that no query waits on it, except
	// while a flood attack runs.
	hostileAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	if err := n.register(ctx, "p9", hostileAddr); err != nil {
		return nil, err
	}
	if err := n.setStatus(ctx, "p9", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED); err != nil {
		return nil, err
	}
	env, err := n.attackEnv(b1.addr, hostileAddr, bigDoc, bigDocPatient)
	if err != nil {
		return nil, err
	}

	queries, err := truePersons(o.Patients, o.Members, 200)
	if err != nil {
		return nil, err
	}
	legitSrc, err := n.identity(pki.RoleParticipant, "p1")
	if err != nil {
		return nil, err
	}
	legitCC, err := n.dialBroker(b1.addr, legitSrc)
	if err != nil {
		return nil, err
	}
	defer legitCC.Close()
	legit := qhinv1.NewGatewayClient(legitCC)

	// Warm up: the members' connections, the broker's routing table.
	for i := range 20 {
		if err := discoverOnce(ctx, legit, queries[i%len(queries)], o.Timeout); err != nil {
			return nil, fmt.Errorf("bench: warm-up query: %w", err)
		}
	}
	if s, err := readProc(b1.cmd.Process.Pid); err == nil {
		res.BrokerIdleRSS = s.RSS
	}

	res.Options.SeparateAttacker = len(o.AttackerCommand) > 0
	for i, name := range o.Attacks {
		progress.report("attack "+name, i, len(o.Attacks))
		flood := strings.HasPrefix(name, "flood-")
		if flood {
			if err := n.setStatus(ctx, "p9", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE); err != nil {
				return nil, err
			}
		}
		var a attackRunner
		if len(o.AttackerCommand) > 0 {
			a, err = startAttackerProcess(ctx, o.AttackerCommand, name, env, filepath.Join(dir, "attacker-"+name+".log"))
		} else {
			a, err = startAttackInProcess(ctx, name, env)
		}
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
		run, err := runAttack(ctx, o, b1.cmd.Process.Pid, legit, queries, a)
		a.close()
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", name, err)
		}
		if name == "label-flood" {
			if text, err := scrapeMetrics(n.brokerMetrics); err == nil {
				run.Detail += fmt.Sprintf("; qhin_responder_outcomes_total series on b1 afterwards: %d", strings.Count(text, "\nqhin_responder_outcomes_total{"))
			}
		}
		if flood {
			if err := n.setStatus(ctx, "p9", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED); err != nil {
				return nil, err
			}
		}
		run.Attack = name
		res.Runs = append(res.Runs, run)
	}
	progress.report("done", len(o.Attacks), len(o.Attacks))
	res.Elapsed = Duration(time.Since(res.Started))
	res.Notes = []string{
		fmt.Sprintf("%d brokers and %d members, each its own process from qhin-broker and qhin-participant with default limits; every attack and the legitimate member's queries go to broker b1, whose memory and CPU are read from /proc", o.Brokers, o.Members),
		"legitimate load: member p1 makes discovery queries for persons of the synthetic population, one after another (closed loop); the same for " + o.Duration.String() + " without the attack, then during it",
		attackerNote(o),
		"peak RSS is b1's VmRSS sampled every 50ms; CPU is b1's user+system time in the phase, and in the " + o.After.String() + " after the attack stopped",
		"attacks run one after another on the same network; memory a broker freed may not yet be returned to the system when the next one starts",
	}
	return res, nil
}

func attackerNote(o AbuseOptions) string {
	if len(o.AttackerCommand) > 0 {
		return "the attacker is a process of its own (qhinctl bench attacker), with the identities of member p2 and of a hostile member p9 whose Responder it runs; it shares the machine's cores with the network and the legitimate member's client"
	}
	return "the attacker runs in this process, beside the legitimate member's client, with the identities of member p2 and of a hostile member p9 whose Responder it runs: its own CPU and garbage collection slow the legitimate client too"
}

// attack is one way of abusing a broker. prepare sets it up (a hostile
// member's server, say); start begins it and returns a function that stops
// it and reports what it did; close releases what prepare took.
type attack struct {
	description string
	prepare     func(ctx context.Context) error
	start       func(ctx context.Context) (stop func() (calls int64, detail string))
	close       func()
}

// attackRunner is an attack set up in this process or in another.
type attackRunner interface {
	description() string
	pid() int // the attacker's process, or 0 for this one
	begin() error
	end() (calls int64, detail string, err error)
	close()
}

func runAttack(ctx context.Context, o AbuseOptions, pid int, legit qhinv1.GatewayClient, queries []*qhinv1.Demographics, a attackRunner) (AbuseRun, error) {
	run := AbuseRun{Description: a.description()}
	watch := watchProc(pid)
	run.Baseline = legitLoad(ctx, legit, queries, o.Duration, o.Timeout)
	base := watch.stop()
	run.BaselinePeakRSS, run.BaselineCPU = base.peakRSS, base.cpu.Seconds()

	if err := a.begin(); err != nil {
		return run, err
	}
	watch = watchProc(pid)
	var attacker *procWatch
	if a.pid() != 0 {
		attacker = watchProc(a.pid())
	}
	run.UnderAttack = legitLoad(ctx, legit, queries, o.Duration, o.Timeout)
	under := watch.stop()
	if attacker != nil {
		run.AttackerCPU = attacker.stop().cpu.Seconds()
	}
	calls, detail, err := a.end()
	if err != nil {
		return run, err
	}
	run.AttackCalls, run.Detail = calls, detail
	run.AttackPeakRSS, run.AttackCPU = under.peakRSS, under.cpu.Seconds()

	watch = watchProc(pid)
	select {
	case <-time.After(o.After):
	case <-ctx.Done():
		return run, ctx.Err()
	}
	run.AfterCPU = watch.stop().cpu.Seconds()
	run.P99Ratio = ratio(float64(run.UnderAttack.Latency.P99), float64(run.Baseline.Latency.P99))
	return run, nil
}

// inProcess runs an attack on goroutines of this process.
type inProcess struct {
	a      attack
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() (int64, string)
}

func startAttackInProcess(ctx context.Context, name string, env AttackEnv) (attackRunner, error) {
	a, err := newAttack(name, env)
	if err != nil {
		return nil, err
	}
	if err := a.prepare(ctx); err != nil {
		a.close()
		return nil, err
	}
	actx, cancel := context.WithCancel(ctx)
	return &inProcess{a: a, ctx: actx, cancel: cancel}, nil
}

func (p *inProcess) description() string { return p.a.description }
func (p *inProcess) pid() int            { return 0 }
func (p *inProcess) begin() error        { p.stop = p.a.start(p.ctx); return nil }
func (p *inProcess) end() (int64, string, error) {
	p.cancel()
	calls, detail := p.stop()
	return calls, detail, nil
}
func (p *inProcess) close() { p.cancel(); p.a.close() }

// legitLoad makes discovery queries one after another for d.
func legitLoad(ctx context.Context, gw qhinv1.GatewayClient, queries []*qhinv1.Demographics, d, timeout time.Duration) LegitLoad {
	var l LegitLoad
	var lat []time.Duration
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		start := time.Now()
		err := discoverOnce(ctx, gw, queries[i%len(queries)], timeout)
		lat = append(lat, time.Since(start))
		l.Queries++
		if err != nil {
			l.Errors++
			if l.FirstError == "" {
				l.FirstError = err.Error()
			}
		}
	}
	l.Latency = summarize(lat)
	return l
}

func discoverOnce(ctx context.Context, gw qhinv1.GatewayClient, d *qhinv1.Demographics, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := gw.DiscoverPatients(cctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purposeOfUse, Requester: requester(), Demographics: d})
	return err
}

// truePersons returns the true demographics of up to max persons of the
// synthetic population the network holds.
func truePersons(persons, members, max int) ([]*qhinv1.Demographics, error) {
	var ids []string
	for j := 1; j <= members; j++ {
		ids = append(ids, fmt.Sprintf("p%d", j))
	}
	var out []*qhinv1.Demographics
	last := ""
	err := synth.Generate(synth.Options{Seed: 1, Persons: min(persons, max), Participants: ids, MaxDocuments: -1}, func(r synth.Registration) error {
		if r.PersonID != last {
			last = r.PersonID
			d := r.Demographics
			d.Identifiers = nil
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// putBigDocument stores size pseudo-random bytes as document id of the
// store's first patient, and returns that patient's demographics (without
// identifiers), by which a member finds the document.
func putBigDocument(ctx context.Context, st *store.Store, id string, size int64) (*qhinv1.Demographics, error) {
	var patient store.Patient
	errFound := errors.New("found")
	if err := st.ForEachPatient(func(p store.Patient) error { patient = p; return errFound }); err != nil && !errors.Is(err, errFound) {
		return nil, err
	}
	if patient.ID == "" || patient.Demographics == nil {
		return nil, errors.New("no patient to hold the document")
	}
	_, err := st.PutDocument(ctx, &qhinv1.DocumentMetadata{Id: id, Patient: &qhinv1.PatientLink{PatientId: patient.ID}, TypeCode: "18748-4",
		Title: "Imaging study", Created: timestamppb.New(time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)), ContentType: "application/dicom"},
		io.LimitReader(rand.NewChaCha8([32]byte{'a', 'b', 'u', 's', 'e'}), size))
	if err != nil {
		return nil, err
	}
	d := proto.CloneOf(patient.Demographics)
	d.Identifiers = nil // demographics only: the MRN is local to p3
	return d, nil
}

// procWatch samples a process's RSS until stopped and measures its CPU
// time over the watch.
type procWatch struct {
	stopc chan struct{}
	done  chan procUse
}

type procUse struct {
	peakRSS uint64
	cpu     time.Duration
}

func watchProc(pid int) *procWatch {
	w := &procWatch{stopc: make(chan struct{}), done: make(chan procUse, 1)}
	first, _ := readProc(pid)
	go func() {
		use := procUse{peakRSS: first.RSS}
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			s, err := readProc(pid)
			if err == nil {
				use.peakRSS = max(use.peakRSS, s.RSS)
				use.cpu = s.CPU - first.CPU
			}
			select {
			case <-w.stopc:
				w.done <- use
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *procWatch) stop() procUse {
	close(w.stopc)
	return <-w.done
}

func codeOf(err error) string { return status.Code(err).String() }

// scrapeMetrics reads a node's Prometheus metrics.
func scrapeMetrics(addr string) (string, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
