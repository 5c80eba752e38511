package bench

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/e2e"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// RaftOptions configure [Raft]. Zero fields take the defaults.
type RaftOptions struct {
	// Brokers in the cluster (default 3).
	Brokers int `json:"brokers"`
	// Duration is each write mode's total measured time (default 10s),
	// split into Rounds (default 5) in which the modes take turns.
	Duration time.Duration `json:"duration_ns"`
	Rounds   int           `json:"rounds"`
	// Batch is the writes per WriteParticipants call in the batched mode
	// (default 2,000), made by BatchWriters writers (default 4).
	Batch        int `json:"batch"`
	BatchWriters int `json:"batch_writers"`
	// Concurrency is the writers of the concurrent mode (default 16).
	Concurrency int `json:"concurrency"`
	// Steady is how long the concurrent load runs while leader changes
	// are counted (default 60s; negative for none).
	Steady time.Duration `json:"steady_ns"`
	// Kills is how many times the leader is killed (default 10; negative
	// for none).
	Kills int `json:"kills"`
	// CallTimeout bounds each write attempt while the cluster fails over
	// (default 250ms).
	CallTimeout time.Duration `json:"call_timeout_ns"`
	// Entries is the directory entries written before the snapshot
	// (default 1,000,000), in WriteParticipants calls of BuildBatch
	// (default 5,000).
	Entries    int           `json:"entries"`
	BuildBatch int           `json:"build_batch"`
	Dir        string        `json:"-"`
	FastRaft   bool          `json:"fast_raft,omitempty"`
	Timeout    time.Duration `json:"-"`
}

func (o *RaftOptions) defaults() {
	if o.Brokers <= 0 {
		o.Brokers = 3
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 5
	}
	if o.Batch <= 0 {
		o.Batch = 2000
	}
	if o.BatchWriters <= 0 {
		o.BatchWriters = 4
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Steady < 0 {
		o.Steady = 0
	} else if o.Steady == 0 {
		o.Steady = 60 * time.Second
	}
	if o.Kills < 0 {
		o.Kills = 0
	} else if o.Kills == 0 {
		o.Kills = 10
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 250 * time.Millisecond
	}
	if o.Entries <= 0 {
		o.Entries = 1_000_000
	}
	if o.BuildBatch <= 0 {
		o.BuildBatch = 5000
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
}

// RaftResult is what [Raft] measured.
type RaftResult struct {
	Scenario string      `json:"scenario"`
	Machine  Machine     `json:"machine"`
	Options  RaftOptions `json:"options"`
	Started  time.Time   `json:"started"`
	Elapsed  Duration    `json:"elapsed_ms"`
	// Writes has one line per write mode: sequential, batched,
	// concurrent, restricting.
	Writes   []RaftWrites `json:"writes"`
	Steady   RaftSteady   `json:"steady"`
	Failover RaftFailover `json:"failover"`
	Snapshot RaftSnapshot `json:"snapshot"`
	// Goals compares the figures of this run with the goals set for the
	// replicated write path.
	Goals []RaftGoal `json:"goals"`
	Notes []string   `json:"notes"`
}

// RaftGoal is one goal of the write path and what this run measured.
type RaftGoal struct {
	Name     string `json:"name"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// RaftWrites is one write mode's throughput.
type RaftWrites struct {
	Mode string `json:"mode"`
	// Entries acknowledged, in Calls calls (a batch is one call).
	Entries int `json:"entries"`
	Calls   int `json:"calls"`
	Errors  int `json:"errors"`
	// PerSecond is the median over the rounds of entries per second;
	// RoundPerSecond every round's.
	PerSecond      float64   `json:"entries_per_s"`
	RoundPerSecond []float64 `json:"round_entries_per_s"`
	// Latency of each acknowledged call.
	Latency    Latency `json:"latency"`
	FirstError string  `json:"first_error,omitempty"`
	// CPUPer1000 is the process's CPU seconds (every broker, the client
	// and the load generator) per 1,000 acknowledged entries.
	CPUPer1000 float64 `json:"cpu_s_per_1000"`
	// PerEntry is the single writes per Raft entry the leader proposed
	// (group commit); zero for calls that are batches already.
	PerEntry float64 `json:"writes_per_entry,omitempty"`
}

// RaftSteady is the concurrent write load held for a while, with the leader
// changes it saw.
type RaftSteady struct {
	Duration Duration `json:"duration_ms"`
	Writes   int      `json:"writes"`
	Errors   int      `json:"errors"`
	// PerSecond is the acknowledged writes per second over the whole run.
	PerSecond float64 `json:"writes_per_s"`
	// Elections is the leader's term after the run less its term before:
	// every leader change takes at least one. Observations counts the
	// leader changes the brokers observed (each broker sees each one, and
	// the moment without a leader in between).
	Elections    uint64  `json:"elections"`
	Observations uint64  `json:"leader_observations"`
	TermBefore   uint64  `json:"term_before"`
	TermAfter    uint64  `json:"term_after"`
	Latency      Latency `json:"latency"`
	// PerEntry is the writes per Raft entry (group commit).
	PerEntry float64 `json:"writes_per_entry"`
}

// RaftFailover is the time from killing the leader to the first write
// acknowledged after it.
type RaftFailover struct {
	Kills  int        `json:"kills"`
	Times  []Duration `json:"times_ms"`
	Median Duration   `json:"median_ms"`
	Min    Duration   `json:"min_ms"`
	Max    Duration   `json:"max_ms"`
	// Attempts is the total failed write attempts while failing over.
	Attempts int `json:"failed_attempts"`
}

// RaftSnapshot is the snapshot of a large state and its install on a new
// broker.
type RaftSnapshot struct {
	// Entries is the directory entries in the state (the bulk ones and
	// those written before).
	Entries int `json:"entries"`
	// Build is the time to write the bulk entries, and BuildRate its
	// entries per second.
	Build     Duration `json:"build_ms"`
	BuildRate float64  `json:"build_entries_per_s"`
	// Take is the time Node.Snapshot took on the leader.
	Take Duration `json:"take_ms"`
	// Bytes is the snapshot as the FSM writes it; FileBytes the snapshot
	// file Raft kept on the leader's disk.
	Bytes     int64 `json:"bytes"`
	FileBytes int64 `json:"file_bytes"`
	// From AddBroker to: the new broker's last snapshot index reaching the
	// leader's (Installed), its participants table's digest equalling the
	// leader's (Install, the figure to quote), and its readiness (Ready).
	Installed Duration `json:"installed_ms"`
	Install   Duration `json:"install_ms"`
	Ready     Duration `json:"ready_ms"`
}

// Raft measures the broker cluster's replicated writes through the public
// API (the operator's client, over mutual TLS, to any broker): throughput
// one at a time, in WriteParticipants batches, from concurrent writers, and
// of restricting writes (acknowledged once every serving broker holds
// them); leader changes under a steady concurrent load; the time to fail
// over when the leader is killed; and the size, taking and installing of a
// snapshot of a large state. The network runs with the brokers' production
// Raft timers unless FastRaft.
func Raft(ctx context.Context, o RaftOptions, progress Progress) (*RaftResult, error) {
	o.defaults()
	res := &RaftResult{Scenario: "raft", Machine: CurrentMachine(), Options: o, Started: time.Now()}
	progress.report("starting network", 0, 1)
	n, err := startNetwork(ctx, o.Dir, e2e.Options{
		Brokers: o.Brokers, Participants: 1, FastRaft: o.FastRaft,
		// Keep little log behind a snapshot, so that a new broker can only
		// catch up by installing one.
		TrailingLogs: 64,
	})
	if err != nil {
		return nil, err
	}
	defer n.stop()
	op, err := n.Dial(n.Operator())
	if err != nil {
		return nil, err
	}
	defer op.Close()
	w := &writer{n: n, op: op, timeout: o.Timeout}

	if err := w.writes(ctx, o, res, progress); err != nil {
		return nil, err
	}
	if o.Steady > 0 {
		if err := w.steady(ctx, o, &res.Steady, progress); err != nil {
			return nil, err
		}
	}
	if err := w.failover(ctx, o, &res.Failover, progress); err != nil {
		return nil, err
	}
	if err := w.snapshot(ctx, o, &res.Snapshot, progress); err != nil {
		return nil, err
	}
	res.Elapsed = Duration(time.Since(res.Started))
	res.Goals = raftGoals(res)
	res.Notes = []string{
		"every write goes through the public API: the operator's client calls RegisterParticipant, SetParticipantStatus or WriteParticipants over mutual TLS; it sends them to the leader once a broker has named it (any broker before that, which forwards the call to the leader once); a call returns once the entry is committed and applied on the leader",
		"group commit: single writes that reach the leader while a Raft round is in flight are proposed together in the next round, as one entry with one result per write (writes/entry)",
		"CPU s/1000 is the whole process's CPU time (all brokers, the client, the load generator) per 1,000 acknowledged entries",
		"restricting: SetParticipantStatus suspend and resume in turn; a suspension returns only once every other broker confirmed it holds it",
		fmt.Sprintf("batched: %d writers, each sending WriteParticipants calls of %d registrations (one Raft entry per call)", o.BatchWriters, o.Batch),
		fmt.Sprintf("the write modes take turns in %d rounds of %v each", o.Rounds, o.Duration/time.Duration(o.Rounds)),
		fmt.Sprintf("steady: %d writers for %v right after the write modes; elections is the leader's term after less before", o.Concurrency, o.Steady),
		fmt.Sprintf("failover: from KillBroker on the leader to the first write acknowledged through a client of every broker, writes retried back to back with a %v deadline each", o.CallTimeout),
		"every broker runs in this process and all write to the same disk",
	}
	if !o.FastRaft {
		res.Notes = append(res.Notes, fmt.Sprintf("Raft timers are the brokers' defaults: heartbeat and election timeout %v, leader lease %v",
			cluster.DefaultHeartbeatTimeout, cluster.DefaultLeaderLeaseTimeout))
	}
	return res, nil
}

type writer struct {
	n       *network
	op      *client.Conn
	timeout time.Duration
	seq     atomic.Int64
}

func (w *writer) nextID(prefix string) string {
	return prefix + strconv.FormatInt(w.seq.Add(1), 10)
}

func (w *writer) register(ctx context.Context, prefix string) error {
	id := w.nextID(prefix)
	_, err := w.op.Directory().RegisterParticipant(ctx, &qhinv1.RegisterParticipantRequest{
		Participant: &qhinv1.Participant{Id: id, Organization: "Bench " + id, Endpoint: "127.0.0.1:9"},
		RequestId:   "bench-" + id,
	})
	return err
}

// batch registers count new retired directory entries with one
// WriteParticipants call.
func (w *writer) batch(ctx context.Context, prefix string, count int) error {
	writes := make([]*qhinv1.ParticipantWrite, count)
	for i := range writes {
		id := w.nextID(prefix)
		writes[i] = &qhinv1.ParticipantWrite{Write: &qhinv1.ParticipantWrite_Register{Register: &qhinv1.Participant{
			Id: id, Endpoint: "127.0.0.1:9", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED,
		}}}
	}
	resp, err := w.op.Directory().WriteParticipants(ctx, &qhinv1.WriteParticipantsRequest{Writes: writes, RequestId: w.nextID("batch-")})
	if err != nil {
		return err
	}
	for _, r := range resp.Results {
		if r.Code != 0 {
			return fmt.Errorf("write refused: %s", r.Message)
		}
	}
	return nil
}

// restrictor suspends and resumes one participant in turn.
type restrictor struct {
	w   *writer
	id  string
	mu  sync.Mutex
	off bool
}

func (r *restrictor) call(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED
	if r.off {
		st = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE
	}
	_, err := r.w.op.Directory().SetParticipantStatus(ctx, &qhinv1.SetParticipantStatusRequest{
		ParticipantId: r.id, Status: st, RequestId: r.w.nextID("status-"),
	})
	if err == nil {
		r.off = !r.off
	}
	return err
}

// leaderNode waits for a leader and returns its node.
func (w *writer) leaderNode(ctx context.Context) (*cluster.Node, int, error) {
	for {
		if i := w.n.Leader(); i >= 0 {
			return w.n.Brokers[i].Server.Node(), i, nil
		}
		select {
		case <-ctx.Done():
			return nil, -1, fmt.Errorf("no leader: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (w *writer) writes(ctx context.Context, o RaftOptions, res *RaftResult, progress Progress) error {
	cctx, cancel := context.WithTimeout(ctx, w.timeout)
	err := w.register(cctx, "target")
	cancel()
	if err != nil {
		return fmt.Errorf("register the participant to suspend: %w", err)
	}
	restrict := &restrictor{w: w, id: "target" + strconv.FormatInt(w.seq.Load(), 10)}
	type mode struct {
		name    string
		workers int
		perCall int
		call    func(ctx context.Context) error
	}
	modes := []mode{
		{"sequential", 1, 1, func(ctx context.Context) error { return w.register(ctx, "s") }},
		{"batched", o.BatchWriters, o.Batch, func(ctx context.Context) error { return w.batch(ctx, "b", o.Batch) }},
		{"concurrent", o.Concurrency, 1, func(ctx context.Context) error { return w.register(ctx, "c") }},
		{"restricting", 1, 1, restrict.call},
	}
	res.Writes = make([]RaftWrites, len(modes))
	lats := make([][]time.Duration, len(modes))
	entries := make([][2]uint64, len(modes)) // group commit rounds, writes
	cpu := make([]time.Duration, len(modes))
	round := o.Duration / time.Duration(o.Rounds)
	for r := range o.Rounds {
		for k := range modes {
			m := (k + r) % len(modes) // each round starts with the next mode
			progress.report(fmt.Sprintf("writes round %d/%d (%s)", r+1, o.Rounds, modes[m].name), r*len(modes)+k, o.Rounds*len(modes))
			if err := ctx.Err(); err != nil {
				return err
			}
			rounds0, cmds0 := w.groupCommits()
			lr := closedLoop(ctx, modes[m].workers, round, w.timeout, modes[m].call)
			rounds1, cmds1 := w.groupCommits()
			wr := &res.Writes[m]
			entries[m][0] += rounds1 - rounds0
			entries[m][1] += cmds1 - cmds0
			cpu[m] += lr.cpu
			wr.Calls += len(lr.lat)
			wr.Entries += len(lr.lat) * modes[m].perCall
			wr.Errors += lr.errors
			if wr.FirstError == "" {
				wr.FirstError = lr.firstErr
			}
			wr.RoundPerSecond = append(wr.RoundPerSecond, float64(len(lr.lat)*modes[m].perCall)/lr.wall.Seconds())
			lats[m] = append(lats[m], lr.lat...)
		}
	}
	for m := range modes {
		wr := &res.Writes[m]
		wr.Mode = modes[m].name
		wr.PerSecond = median(wr.RoundPerSecond)
		wr.Latency = summarize(lats[m])
		if wr.Entries > 0 {
			wr.CPUPer1000 = cpu[m].Seconds() * 1000 / float64(wr.Entries)
		}
		if modes[m].perCall == 1 && entries[m][0] > 0 {
			wr.PerEntry = float64(entries[m][1]) / float64(entries[m][0])
		}
	}
	return nil
}

// groupCommits sums, over the running brokers, the group commit rounds
// proposed and the single writes they held.
func (w *writer) groupCommits() (rounds, writes uint64) {
	for _, b := range w.n.Brokers {
		if b.Server != nil {
			r, c := b.Server.Node().GroupCommits()
			rounds, writes = rounds+r, writes+c
		}
	}
	return rounds, writes
}

// raftGoals compares a run with the goals of the replicated write path.
func raftGoals(r *RaftResult) []RaftGoal {
	var out []RaftGoal
	for _, m := range r.Writes {
		switch m.Mode {
		case "batched":
			out = append(out, RaftGoal{Name: "batched writes (WriteParticipants)", Goal: ">= 50000 entries/s",
				Measured: fmt.Sprintf("%.0f entries/s", m.PerSecond), Met: m.PerSecond >= 50000})
		case "concurrent":
			out = append(out, RaftGoal{Name: fmt.Sprintf("%d concurrent writers", r.Options.Concurrency), Goal: ">= 5000 writes/s",
				Measured: fmt.Sprintf("%.0f writes/s", m.PerSecond), Met: m.PerSecond >= 5000})
		}
	}
	if f := r.Failover; f.Kills > 0 {
		out = append(out, RaftGoal{Name: fmt.Sprintf("failover, median of %d kills", f.Kills), Goal: "< 1.5s",
			Measured: f.Median.String(), Met: time.Duration(f.Median) < 1500*time.Millisecond})
	}
	if st := r.Steady; st.Duration > 0 {
		out = append(out, RaftGoal{Name: fmt.Sprintf("elections in %v of steady load", st.Duration), Goal: "0",
			Measured: strconv.FormatUint(st.Elections, 10), Met: st.Elections == 0})
	}
	return out
}

// leaderChanges sums the leader changes every running broker observed.
func (w *writer) leaderChanges() uint64 {
	var sum uint64
	for _, b := range w.n.Brokers {
		if b.Server != nil {
			sum += b.Server.Node().LeaderChanges()
		}
	}
	return sum
}

func (w *writer) steady(ctx context.Context, o RaftOptions, res *RaftSteady, progress Progress) error {
	progress.report(fmt.Sprintf("steady concurrent load (%v)", o.Steady), 0, 1)
	leader, _, err := w.leaderNode(ctx)
	if err != nil {
		return err
	}
	res.TermBefore = leader.NodeStatus().Term
	before := w.leaderChanges()
	rounds0, cmds0 := w.groupCommits()
	lr := closedLoop(ctx, o.Concurrency, o.Steady, w.timeout, func(ctx context.Context) error { return w.register(ctx, "y") })
	res.Observations = w.leaderChanges() - before
	if rounds1, cmds1 := w.groupCommits(); rounds1 > rounds0 {
		res.PerEntry = float64(cmds1-cmds0) / float64(rounds1-rounds0)
	}
	if leader, _, err = w.leaderNode(ctx); err != nil {
		return err
	}
	res.TermAfter = leader.NodeStatus().Term
	res.Elections = res.TermAfter - res.TermBefore
	res.Duration = Duration(lr.wall)
	res.Writes, res.Errors = len(lr.lat), lr.errors
	res.PerSecond = float64(len(lr.lat)) / lr.wall.Seconds()
	res.Latency = summarize(lr.lat)
	progress.report(fmt.Sprintf("steady concurrent load (%v)", o.Steady), 1, 1)
	return nil
}

func (w *writer) failover(ctx context.Context, o RaftOptions, res *RaftFailover, progress Progress) error {
	var times []time.Duration
	for k := range o.Kills {
		progress.report("failover", k, o.Kills)
		_, old, err := w.leaderNode(ctx)
		if err != nil {
			return err
		}
		t0 := time.Now()
		w.n.KillBroker(old)
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(ctx, o.CallTimeout)
			err := w.register(cctx, "f")
			cancel()
			if err == nil {
				break
			}
			res.Attempts++
		}
		times = append(times, time.Since(t0))
		if err := w.n.StartBroker(old); err != nil {
			return fmt.Errorf("restart broker %s: %w", w.n.Brokers[old].ID, err)
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err = w.n.WaitReady(rctx)
		if err == nil {
			_, _, err = w.leaderNode(rctx)
		}
		cancel()
		if err != nil {
			return err
		}
	}
	progress.report("failover", o.Kills, o.Kills)
	res.Kills = len(times)
	for _, t := range times {
		res.Times = append(res.Times, Duration(t))
	}
	if len(times) > 0 {
		l := summarize(times) // sorts times
		res.Median, res.Min, res.Max = Duration(time.Duration(median(seconds(times))*float64(time.Second))), Duration(times[0]), l.Max
	}
	return nil
}

func (w *writer) snapshot(ctx context.Context, o RaftOptions, res *RaftSnapshot, progress Progress) error {
	start := time.Now()
	for done := 0; done < o.Entries; {
		progress.report("building state (entries)", done, o.Entries)
		size := min(o.BuildBatch, o.Entries-done)
		bctx, cancel := context.WithTimeout(ctx, w.timeout)
		err := w.batch(bctx, "e", size)
		cancel()
		if err != nil {
			return fmt.Errorf("build state: %w", err)
		}
		done += size
	}
	progress.report("building state (entries)", o.Entries, o.Entries)
	res.Build = Duration(time.Since(start))
	res.BuildRate = float64(o.Entries) / time.Since(start).Seconds()

	progress.report("snapshot", 0, 1)
	leader, li, err := w.leaderNode(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := leader.Snapshot(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	res.Take = Duration(time.Since(t0))
	snapIndex := leader.LastSnapshotIndex()
	cw := &countingWriter{}
	if _, err := leader.FSM().WriteTo(cw); err != nil {
		return err
	}
	res.Bytes = cw.n
	res.FileBytes = latestSnapshotFile(filepath.Join(w.n.Brokers[li].Dir, "data", "snapshots"))
	sums, err := leader.FSM().Checksums()
	if err != nil {
		return err
	}
	want := sums["participants"]
	count, _, _ := strings.Cut(want, ":") // "<entries>:<sha256>"
	res.Entries, _ = strconv.Atoi(count)

	progress.report("installing snapshot on a new broker", 0, 1)
	t0 = time.Now()
	nb, err := w.n.AddBroker(false)
	if err != nil {
		return fmt.Errorf("add broker: %w", err)
	}
	node := w.n.Brokers[nb].Server.Node()
	deadline := time.Now().Add(10 * time.Minute)
	for res.Install == 0 || res.Ready == 0 {
		if time.Now().After(deadline) {
			return errors.New("the new broker did not catch up within 10 minutes")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if res.Ready == 0 && w.n.Brokers[nb].Server.Ready() {
			res.Ready = Duration(time.Since(t0))
		}
		if res.Installed == 0 && node.LastSnapshotIndex() >= snapIndex {
			res.Installed = Duration(time.Since(t0))
		}
		if res.Installed != 0 && res.Install == 0 {
			got, err := node.FSM().Checksums()
			if err == nil && got["participants"] == want {
				res.Install = Duration(time.Since(t0))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	progress.report("installing snapshot on a new broker", 1, 1)
	return nil
}

// latestSnapshotFile returns the size of the newest state.bin under dir
// (hashicorp/raft keeps its snapshots in dir/snapshots/<id>/), or 0.
func latestSnapshotFile(dir string) int64 {
	var size int64
	var newest time.Time
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "state.bin" {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.ModTime().After(newest) {
			newest, size = fi.ModTime(), fi.Size()
		}
		return nil
	})
	return size
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
