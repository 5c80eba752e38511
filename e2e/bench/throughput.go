package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openqhin/openqhin/e2e"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// ThroughputOptions configure [Throughput]. Zero fields take the defaults.
type ThroughputOptions struct {
	// Concurrency is the number of closed-loop workers (default
	// 2×NumCPU).
	Concurrency int `json:"concurrency"`
	// Duration is each path's total measured time (default 10s), split
	// into Rounds (default 10) that alternate between the paths.
	Duration time.Duration `json:"duration_ns"`
	Rounds   int           `json:"rounds"`
	// Patients is the synthetic population spread over the network
	// (default 2,000 persons).
	Patients int `json:"patients"`
	// Timeout bounds each query (default 10s).
	Timeout  time.Duration `json:"timeout_ns"`
	Dir      string        `json:"-"`
	FastRaft bool          `json:"fast_raft,omitempty"`
}

func (o *ThroughputOptions) defaults() {
	if o.Concurrency <= 0 {
		o.Concurrency = 2 * runtime.NumCPU()
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Rounds <= 0 {
		o.Rounds = 10
	}
	if o.Patients <= 0 {
		o.Patients = 2000
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
}

// ThroughputResult is what [Throughput] measured.
type ThroughputResult struct {
	Scenario string            `json:"scenario"`
	Machine  Machine           `json:"machine"`
	Options  ThroughputOptions `json:"options"`
	Started  time.Time         `json:"started"`
	Elapsed  Duration          `json:"elapsed_ms"`
	// Members is how many members each query reaches.
	Members int            `json:"members"`
	Broker  ThroughputPath `json:"broker"`
	Direct  ThroughputPath `json:"direct"`
	// Ratio is the broker's queries/s over the direct path's (medians of
	// the rounds); CPURatio the broker path's CPU per query over the
	// direct path's.
	Ratio    float64  `json:"ratio"`
	CPURatio float64  `json:"cpu_ratio"`
	Notes    []string `json:"notes"`
}

// ThroughputPath is one path's closed-loop run.
type ThroughputPath struct {
	Queries int `json:"queries"`
	Errors  int `json:"errors"`
	// QPS is the median over the rounds of successful queries per second;
	// RoundQPS lists every round's.
	QPS      float64   `json:"qps"`
	RoundQPS []float64 `json:"round_qps"`
	// CPUPer1000 is process CPU seconds (user+system) per 1,000 queries.
	// The whole network runs in this process, so it is the network's CPU,
	// load generator included.
	CPUPer1000 float64 `json:"cpu_seconds_per_1000"`
	Latency    Latency `json:"latency"`
	FirstError string  `json:"first_error,omitempty"`
}

// Throughput measures the highest sustained discovery rate through one
// broker against asking the same members directly, with closed-loop
// workers: each sends its next query as soon as its last one is answered.
//
// The broker fans a discovery query out to every active member, so to
// measure a query that reaches one or two members the network has just two
// members (and the initiator), with no injected latency.
func Throughput(ctx context.Context, o ThroughputOptions, progress Progress) (*ThroughputResult, error) {
	o.defaults()
	res := &ThroughputResult{Scenario: "throughput", Machine: CurrentMachine(), Options: o, Started: time.Now(), Members: 2}
	progress.report("starting network", 0, 1)
	n, err := startNetwork(ctx, o.Dir, e2e.Options{Brokers: 1, Participants: 3, FastRaft: o.FastRaft})
	if err != nil {
		return nil, err
	}
	defer n.stop()
	queries, err := seedPopulation(ctx, n, o.Patients, 512, progress)
	if err != nil {
		return nil, err
	}
	initiator := n.Participants[2].ID
	conn, err := n.Dial(n.ParticipantSource(2))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	gw := conn.Gateway()
	direct, err := dialResponders(n, []int{0, 1})
	if err != nil {
		return nil, err
	}
	defer direct.close()
	members := []string{n.Participants[0].ID, n.Participants[1].ID}
	paths := [2]func(ctx context.Context, d *qhinv1.Demographics) error{
		func(ctx context.Context, d *qhinv1.Demographics) error { return discoverBroker(ctx, gw, d) },
		func(ctx context.Context, d *qhinv1.Demographics) error {
			return direct.discoverAll(ctx, members, queryContext(initiator), d)
		},
	}
	for i := range 40 {
		progress.report("warming up", i, 40)
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		err := paths[i%2](cctx, queries[i%len(queries)])
		cancel()
		if err != nil {
			return nil, fmt.Errorf("warm-up query (%s): %w", pathName(i%2), err)
		}
	}

	round := o.Duration / time.Duration(o.Rounds)
	var (
		lats     [2][]time.Duration
		cpu      [2]time.Duration
		ok, errs [2]int
		firstErr [2]string
		next     atomic.Int64
	)
	order := abba(o.Rounds)
	for step, v := range order {
		progress.report("querying ("+pathName(v)+")", step, len(order))
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r := closedLoop(ctx, o.Concurrency, round, o.Timeout, func(ctx context.Context) error {
			return paths[v](ctx, queries[int(next.Add(1))%len(queries)])
		})
		lats[v] = append(lats[v], r.lat...)
		cpu[v] += r.cpu
		ok[v] += len(r.lat)
		errs[v] += r.errors
		if firstErr[v] == "" {
			firstErr[v] = r.firstErr
		}
		p := []*ThroughputPath{&res.Broker, &res.Direct}[v]
		p.RoundQPS = append(p.RoundQPS, float64(len(r.lat))/r.wall.Seconds())
	}
	progress.report("querying", len(order), len(order))
	for v, p := range []*ThroughputPath{&res.Broker, &res.Direct} {
		p.Queries = ok[v] + errs[v]
		p.Errors = errs[v]
		p.FirstError = firstErr[v]
		p.QPS = median(p.RoundQPS)
		p.CPUPer1000 = ratio(cpu[v].Seconds()*1000, float64(p.Queries))
		p.Latency = summarize(lats[v])
	}
	res.Ratio = ratio(res.Broker.QPS, res.Direct.QPS)
	res.CPURatio = ratio(res.Broker.CPUPer1000, res.Direct.CPUPer1000)
	res.Elapsed = Duration(time.Since(res.Started))
	res.Notes = []string{
		"the broker sends a discovery query to every active member; to measure queries that reach 1-2 members honestly, the network has only 2 members plus the initiator, with no injected latency",
		fmt.Sprintf("closed loop: %d workers, %d rounds of %v per path, the paths alternating A B B A", o.Concurrency, o.Rounds, round),
		"CPU is process-wide: the broker, both members, the initiator's client and the load generator all run in this one process",
		"direct: the initiator, holding a broker identity, asks both members' Responders in parallel over mutual TLS and waits for both",
	}
	return res, nil
}

type loopResult struct {
	lat      []time.Duration
	errors   int
	firstErr string
	wall     time.Duration
	cpu      time.Duration
}

// closedLoop runs workers that each call fn back to back for d, and returns
// the successful calls' latencies, the failures, and the wall and process
// CPU time the run took.
func closedLoop(ctx context.Context, workers int, d, timeout time.Duration, fn func(context.Context) error) loopResult {
	var (
		mu  sync.Mutex
		out loopResult
		wg  sync.WaitGroup
	)
	cpu0 := processCPU()
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Go(func() {
			var lat []time.Duration
			errs, first := 0, ""
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				cctx, cancel := context.WithTimeout(ctx, timeout)
				err := fn(cctx)
				cancel()
				if err != nil {
					errs++
					if first == "" {
						first = err.Error()
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			out.lat = append(out.lat, lat...)
			out.errors += errs
			if out.firstErr == "" {
				out.firstErr = first
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	out.wall = time.Since(start)
	out.cpu = processCPU() - cpu0
	return out
}
