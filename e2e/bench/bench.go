package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/openqhin/openqhin/e2e"
	"github.com/openqhin/openqhin/participant/synth"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Progress reports how far a scenario has come: phase names the step it is
// in, done of total its units (queries, entries, bytes). Scenarios call it
// often; it must be cheap. A nil Progress is not called.
type Progress func(phase string, done, total int)

func (p Progress) report(phase string, done, total int) {
	if p != nil {
		p(phase, done, total)
	}
}

// Machine describes where a scenario ran.
type Machine struct {
	NumCPU     int    `json:"num_cpu"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	GoVersion  string `json:"go_version"`
	// CPUModel is the first "model name" of /proc/cpuinfo, where there is
	// one.
	CPUModel string `json:"cpu_model,omitempty"`
}

// CurrentMachine describes this machine and Go runtime.
func CurrentMachine() Machine {
	m := Machine{
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GOOS:       runtime.GOOS,
		GOARCH:     runtime.GOARCH,
		GoVersion:  runtime.Version(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// Duration is a time.Duration that JSON encodes as fractional milliseconds.
type Duration time.Duration

// MarshalJSON encodes d in milliseconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(d)/float64(time.Millisecond), 'f', 3, 64), nil
}

// UnmarshalJSON decodes milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	ms, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("duration in milliseconds: %w", err)
	}
	*d = Duration(ms * float64(time.Millisecond))
	return nil
}

// String rounds d to a readable precision: 1.234ms, 12.3ms, 1.23s.
func (d Duration) String() string {
	t := time.Duration(d)
	switch {
	case t <= 0:
		return t.String()
	case t < 10*time.Millisecond:
		return t.Round(time.Microsecond).String()
	case t < time.Second:
		return t.Round(100 * time.Microsecond).String()
	case t < time.Minute:
		return t.Round(10 * time.Millisecond).String()
	}
	return t.Round(100 * time.Millisecond).String()
}

// Latency summarizes a set of measured durations.
type Latency struct {
	Count int      `json:"count"`
	Mean  Duration `json:"mean_ms"`
	P50   Duration `json:"p50_ms"`
	P90   Duration `json:"p90_ms"`
	P99   Duration `json:"p99_ms"`
	Max   Duration `json:"max_ms"`
}

// summarize sorts ds in place and returns their percentiles (nearest rank).
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	rank := func(p float64) Duration {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return Duration(ds[max(0, min(i, len(ds)-1))])
	}
	return Latency{
		Count: len(ds),
		Mean:  Duration(sum / time.Duration(len(ds))),
		P50:   rank(0.50),
		P90:   rank(0.90),
		P99:   rank(0.99),
		Max:   Duration(ds[len(ds)-1]),
	}
}

// ratio returns a/b, or 0 when it is not a finite number (JSON has no NaN).
func ratio(a, b float64) float64 {
	r := a / b
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return 0
	}
	return r
}

// median returns the median of xs (the mean of the middle two for an even
// count), leaving xs unchanged.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// abba returns the order two variants run in over rounds rounds, A B B A A B
// …, so that a drift of the machine's speed during the run favours neither.
func abba(rounds int) []int {
	out := make([]int, 0, 2*rounds)
	for r := range rounds {
		if r%2 == 0 {
			out = append(out, 0, 1)
		} else {
			out = append(out, 1, 0)
		}
	}
	return out
}

// purposeOfUse is the exchange purpose of every benchmark query.
const purposeOfUse = "T-TRTMNT"

func requester() *qhinv1.Requester {
	return &qhinv1.Requester{Id: "bench", Npi: "1234567893", Name: "Benchmark", Role: "physician", Organization: "OpenQHIN bench"}
}

// network is a network started for one scenario in a temporary directory.
type network struct {
	*e2e.Network
	dir string
}

// startNetwork starts a network with production Raft timers (unless
// opts.FastRaft) in a new directory under parent (the system's temporary
// directory when empty). stop stops it and removes the directory.
func startNetwork(ctx context.Context, parent string, opts e2e.Options) (*network, error) {
	dir, err := os.MkdirTemp(parent, "qhin-bench-*")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	opts.Dir = dir
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	n, err := e2e.Start(sctx, opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: start network: %w", err)
	}
	return &network{Network: n, dir: dir}, nil
}

func (n *network) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n.Stop(ctx)
	os.RemoveAll(n.dir)
}

// responders connects straight to participants' Responder services as a
// broker would: with a broker identity, each connection accepting only the
// one participant's SPIFFE ID.
type responders struct {
	conns   []*grpc.ClientConn
	clients map[string]qhinv1.ResponderClient
}

// dialResponders connects to the participants with the given indexes.
func dialResponders(n *network, js []int) (*responders, error) {
	src, err := n.Issue(pki.RoleBroker, "bench-direct")
	if err != nil {
		return nil, err
	}
	r := &responders{clients: map[string]qhinv1.ResponderClient{}}
	for _, j := range js {
		p := n.Participants[j]
		id, err := pki.NewIdentity(n.CA.TrustDomain(), pki.RoleParticipant, p.ID)
		if err != nil {
			r.close()
			return nil, err
		}
		conn, err := grpc.NewClient(p.Addr,
			grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.AuthorizeID(id.ID))),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
		if err != nil {
			r.close()
			return nil, fmt.Errorf("dial participant %s: %w", p.ID, err)
		}
		r.conns = append(r.conns, conn)
		r.clients[p.ID] = qhinv1.NewResponderClient(conn)
	}
	return r, nil
}

func (r *responders) close() {
	for _, c := range r.conns {
		c.Close()
	}
}

// discoverAll asks every member in ids in parallel, as a broker's fan-out
// does, and waits for all; it returns the first error.
func (r *responders) discoverAll(ctx context.Context, ids []string, qc *qhinv1.QueryContext, d *qhinv1.Demographics) error {
	if len(ids) == 1 {
		_, err := r.clients[ids[0]].DiscoverPatients(ctx, &qhinv1.ResponderDiscoverPatientsRequest{Context: qc, Demographics: d})
		return err
	}
	errs := make(chan error, len(ids))
	for _, id := range ids {
		go func() {
			_, err := r.clients[id].DiscoverPatients(ctx, &qhinv1.ResponderDiscoverPatientsRequest{Context: qc, Demographics: d})
			errs <- err
		}()
	}
	var first error
	for range ids {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// discoverBroker makes one discovery query through the brokers and checks
// that every member answered.
func discoverBroker(ctx context.Context, gw qhinv1.GatewayClient, d *qhinv1.Demographics) error {
	resp, err := gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purposeOfUse, Requester: requester(), Demographics: d})
	if err != nil {
		return err
	}
	for _, s := range resp.Responders {
		switch s.Status {
		case qhinv1.ResponderState_RESPONDER_STATE_OK, qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH:
		default:
			return fmt.Errorf("member %s: %v %s", s.ParticipantId, s.Status, s.Detail)
		}
	}
	return nil
}

// seedPopulation fills the participants with a synthetic population of
// persons people and returns the true demographics of up to max of them, to
// query with.
func seedPopulation(ctx context.Context, n *network, persons, max int, progress Progress) ([]*qhinv1.Demographics, error) {
	if _, err := n.SeedSynthetic(ctx, persons, 1, func(done, total int) { progress.report("seeding patients", done, total) }); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	var ids []string
	for _, p := range n.Participants {
		ids = append(ids, p.ID)
	}
	var out []*qhinv1.Demographics
	last := ""
	err := synth.Generate(synth.Options{Seed: 1, Persons: min(persons, max), Participants: ids, MaxDocuments: -1}, func(r synth.Registration) error {
		if r.PersonID != last {
			last = r.PersonID
			d := r.Demographics
			d.Identifiers = nil // demographics only: the MRN is local to one member
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// memPeak samples the process's heap and resident set every interval until
// stopped, and keeps the largest of each.
type memPeak struct {
	stop chan struct{}
	done chan struct{}
	peak memSample
}

// memSample is the process's memory: HeapInuse, and from
// /proc/self/status VmRSS and RssAnon (the resident set without file-backed
// pages such as bbolt's memory maps). The fields are bytes.
type memSample struct {
	HeapInuse uint64
	RSS       uint64
	RSSAnon   uint64
}

func sampleMemory(interval time.Duration) *memPeak {
	m := &memPeak{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		var ms runtime.MemStats
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			st := procMemory()
			m.peak.HeapInuse = max(m.peak.HeapInuse, ms.HeapInuse)
			m.peak.RSS = max(m.peak.RSS, st.VmRSS)
			m.peak.RSSAnon = max(m.peak.RSSAnon, st.RssAnon)
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// Stop ends the sampling and returns the peaks.
func (m *memPeak) Stop() memSample {
	close(m.stop)
	<-m.done
	return m.peak
}

// procStatus is the memory part of /proc/self/status, in bytes.
type procStatus struct {
	VmHWM, VmRSS, RssAnon uint64
}

// procMemory reads /proc/self/status; it returns zeros where there is none.
func procMemory() procStatus {
	var st procStatus
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return st
	}
	fields := map[string]*uint64{"VmHWM": &st.VmHWM, "VmRSS": &st.VmRSS, "RssAnon": &st.RssAnon}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		dst := fields[k]
		if !ok || dst == nil {
			continue
		}
		if f := strings.Fields(v); len(f) > 0 {
			kb, _ := strconv.ParseUint(f[0], 10, 64)
			*dst = kb << 10
		}
	}
	return st
}

// resetPeakRSS asks Linux to reset VmHWM to the current RSS, so that a
// later VmHWM is the peak of what followed. It reports whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// heapInuse returns HeapInuse after a collection.
func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// MB is a mebibyte.
const MB = 1 << 20

func seconds(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = d.Seconds()
	}
	return out
}
