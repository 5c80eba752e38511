package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/openqhin/openqhin/e2e"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// FanoutOptions configure [Fanout]. Zero fields take the defaults.
type FanoutOptions struct {
	// Members answer every query, each after an injected Latency
	// (default 16 members, 2ms; negative for none).
	Members int           `json:"members"`
	Latency time.Duration `json:"latency_ns"`
	// Brokers in the cluster (default 1).
	Brokers int `json:"brokers"`
	// Rate is the queries per second sent on each path (default 200).
	Rate float64 `json:"rate"`
	// Duration of the measured load (default 10s), unless Count, the
	// queries per path, is set.
	Duration time.Duration `json:"duration_ns"`
	Count    int           `json:"count"`
	// Patients is the synthetic population spread over the network
	// (default 2,000 persons); queries ask for some of them.
	Patients int `json:"patients"`
	// Timeout bounds each query (default 10s).
	Timeout time.Duration `json:"timeout_ns"`
	// Dir is where the network's temporary directory goes; the system's
	// temporary directory when empty.
	Dir string `json:"-"`
	// FastRaft shortens Raft's timers; for tests only.
	FastRaft bool `json:"fast_raft,omitempty"`
}

func (o *FanoutOptions) defaults() {
	if o.Members <= 0 {
		o.Members = 16
	}
	if o.Latency < 0 {
		o.Latency = 0
	} else if o.Latency == 0 {
		o.Latency = 2 * time.Millisecond
	}
	if o.Brokers <= 0 {
		o.Brokers = 1
	}
	if o.Rate <= 0 {
		o.Rate = 200
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	if o.Count <= 0 {
		o.Count = max(1, int(math.Round(o.Rate*o.Duration.Seconds())))
	}
	o.Duration = time.Duration(float64(o.Count) / o.Rate * float64(time.Second))
	if o.Patients <= 0 {
		o.Patients = 2000
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
}

// FanoutResult is what [Fanout] measured.
type FanoutResult struct {
	Scenario string        `json:"scenario"`
	Machine  Machine       `json:"machine"`
	Options  FanoutOptions `json:"options"`
	Started  time.Time     `json:"started"`
	Elapsed  Duration      `json:"elapsed_ms"`
	// Broker is the initiator asking a broker's Gateway, which fans out to
	// every member; Direct is the initiator asking every member's Responder
	// itself, in parallel, and waiting for all.
	Broker FanoutPath `json:"broker"`
	Direct FanoutPath `json:"direct"`
	// Ratios of the broker path's latency to the direct path's.
	RatioP50 float64 `json:"ratio_p50"`
	RatioP90 float64 `json:"ratio_p90"`
	RatioP99 float64 `json:"ratio_p99"`
	// SendLag is how late the load generator sent queries against their
	// schedule; a large lag means the generator, not the network, was the
	// bottleneck (latencies include it either way).
	SendLag Latency  `json:"send_lag"`
	Notes   []string `json:"notes"`
}

// FanoutPath is one path's queries.
type FanoutPath struct {
	Sent   int `json:"sent"`
	Errors int `json:"errors"`
	// Latency of the successful queries, from each one's scheduled send
	// time to its answer.
	Latency Latency `json:"latency"`
	// FirstError is the first error seen, for diagnosis.
	FirstError string `json:"first_error,omitempty"`
}

// Fanout measures discovery latency through a broker against asking the
// same members directly. A network of Members participants, each answering
// after an injected latency, plus one initiator, receives an open-loop load:
// queries are sent on a fixed schedule whatever the answers do, alternating
// between the two paths, and each latency counts from the query's scheduled
// send time (so a slow answer cannot hide the queries it delayed).
func Fanout(ctx context.Context, o FanoutOptions, progress Progress) (*FanoutResult, error) {
	o.defaults()
	res := &FanoutResult{Scenario: "fanout", Machine: CurrentMachine(), Options: o, Started: time.Now()}
	delay := map[string]time.Duration{}
	for j := 1; j <= o.Members; j++ {
		delay["p"+strconv.Itoa(j)] = o.Latency
	}
	progress.report("starting network", 0, 1)
	n, err := startNetwork(ctx, o.Dir, e2e.Options{
		Brokers: o.Brokers, Participants: o.Members + 1, Delay: delay, FastRaft: o.FastRaft,
	})
	if err != nil {
		return nil, err
	}
	defer n.stop()
	queries, err := seedPopulation(ctx, n, o.Patients, 512, progress)
	if err != nil {
		return nil, err
	}

	initiator := n.Participants[o.Members].ID
	conn, err := n.Dial(n.ParticipantSource(o.Members))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	gw := conn.Gateway()
	var members []string
	var idx []int
	for j := range o.Members {
		members = append(members, n.Participants[j].ID)
		idx = append(idx, j)
	}
	direct, err := dialResponders(n, idx)
	if err != nil {
		return nil, err
	}
	defer direct.close()

	paths := [2]func(ctx context.Context, d *qhinv1.Demographics) error{
		func(ctx context.Context, d *qhinv1.Demographics) error { return discoverBroker(ctx, gw, d) },
		func(ctx context.Context, d *qhinv1.Demographics) error {
			return direct.discoverAll(ctx, members, queryContext(initiator), d)
		},
	}

	// Warm up: connections, TLS sessions, the broker's member connections.
	const warmup = 20
	for i := range 2 * warmup {
		progress.report("warming up", i, 2*warmup)
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		err := paths[i%2](cctx, queries[i%len(queries)])
		cancel()
		if err != nil {
			return nil, fmt.Errorf("warm-up query (%s): %w", pathName(i%2), err)
		}
	}

	// The schedule: slot i at start + i×period, even slots through the
	// broker, odd ones direct, so each path runs at Rate.
	slots := 2 * o.Count
	period := time.Duration(float64(time.Second) / (2 * o.Rate))
	lat := [2][]time.Duration{make([]time.Duration, o.Count), make([]time.Duration, o.Count)}
	failed := [2][]bool{make([]bool, o.Count), make([]bool, o.Count)}
	lags := make([]time.Duration, slots)
	var (
		firstErr [2]atomic.Pointer[string]
		done     atomic.Int64
		wg       sync.WaitGroup
	)
	stopTicker := tick(progress, "querying", slots, func() int { return int(done.Load()) })
	start := time.Now().Add(20 * time.Millisecond)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for i := range slots {
		at := start.Add(time.Duration(i) * period)
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				wg.Wait()
				stopTicker()
				return nil, ctx.Err()
			}
		}
		lags[i] = time.Since(at)
		v, k := i%2, i/2
		wg.Go(func() {
			defer done.Add(1)
			cctx, cancel := context.WithTimeout(ctx, o.Timeout)
			err := paths[v](cctx, queries[k%len(queries)])
			cancel()
			lat[v][k] = time.Since(at)
			if err != nil {
				failed[v][k] = true
				msg := err.Error()
				firstErr[v].CompareAndSwap(nil, &msg)
			}
		})
	}
	wg.Wait()
	stopTicker()

	for v, p := range []*FanoutPath{&res.Broker, &res.Direct} {
		var ok []time.Duration
		for k, d := range lat[v] {
			if failed[v][k] {
				p.Errors++
			} else {
				ok = append(ok, d)
			}
		}
		p.Sent = o.Count
		p.Latency = summarize(ok)
		if e := firstErr[v].Load(); e != nil {
			p.FirstError = *e
		}
	}
	res.SendLag = summarize(lags)
	res.RatioP50 = ratio(float64(res.Broker.Latency.P50), float64(res.Direct.Latency.P50))
	res.RatioP90 = ratio(float64(res.Broker.Latency.P90), float64(res.Direct.Latency.P90))
	res.RatioP99 = ratio(float64(res.Broker.Latency.P99), float64(res.Direct.Latency.P99))
	res.Elapsed = Duration(time.Since(res.Started))
	res.Notes = []string{
		fmt.Sprintf("open loop: each path sent %.0f queries/s on a fixed schedule, the two paths alternating query by query, so every member saw %.0f queries/s", o.Rate, 2*o.Rate),
		"latency counts from each query's scheduled send time, not from when it was actually sent",
		fmt.Sprintf("direct: the initiator, holding a broker identity, asks all %d members' Responders in parallel over mutual TLS and waits for every answer", o.Members),
		"errors: a failed call, or (through the broker) any member that did not answer OK or no-match",
	}
	return res, nil
}

func pathName(v int) string {
	if v == 0 {
		return "broker"
	}
	return "direct"
}

// queryContext is the context a broker would give a query of the initiator.
func queryContext(initiator string) *qhinv1.QueryContext {
	var b [12]byte
	rand.Read(b[:])
	return &qhinv1.QueryContext{
		QueryId: hex.EncodeToString(b[:]), InitiatorParticipantId: initiator,
		PurposeOfUse: purposeOfUse, Requester: requester(),
	}
}

// tick reports progress every 100ms from one goroutine until stopped, so
// that workers need not call Progress themselves.
func tick(progress Progress, phase string, total int, done func() int) (stop func()) {
	if progress == nil {
		return func() {}
	}
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			progress(phase, min(done(), total), total)
			select {
			case <-quit:
				progress(phase, min(done(), total), total)
				return
			case <-t.C:
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(quit)
		<-finished
	})
}
