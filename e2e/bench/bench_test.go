package bench

import (
	"context"
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The scenarios run here at tiny sizes, only to check that each works end
// to end and reports sane figures. No test asserts a timing.

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// checkJSON fails when a result does not encode as JSON (a NaN or infinite
// ratio does not), and returns the encoding.
func checkJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("result does not encode as JSON: %v", err)
	}
	for _, key := range []string{`"machine"`, `"num_cpu"`, `"go_version"`, `"options"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("result JSON lacks %s", key)
		}
	}
	return string(b)
}

func finitePositive(t *testing.T, name string, x float64) {
	t.Helper()
	if math.IsNaN(x) || math.IsInf(x, 0) || x <= 0 {
		t.Errorf("%s = %v, want a finite positive number", name, x)
	}
}

// progressSeen records a scenario's progress reports: how many, and the
// phase it last entered, so that a failure can say where it happened.
type progressSeen struct {
	mu    sync.Mutex
	calls int
	phase string
}

func (p *progressSeen) fn(phase string, _, _ int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.phase = phase
}

// failed fails the test with the phase the scenario was in.
func (p *progressSeen) failed(t *testing.T, err error) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	phase := p.phase
	if phase == "" {
		phase = "before the first progress report"
	}
	t.Fatalf("phase %q: %v", phase, err)
}

func TestFanout_SmallNetworkMeasuresBothPaths(t *testing.T) {
	t.Parallel()
	var seen progressSeen
	o := FanoutOptions{Members: 3, Rate: 50, Duration: time.Second, Patients: 200, Dir: t.TempDir()}
	if testing.Short() {
		o.Duration = 400 * time.Millisecond
	}
	res, err := Fanout(testCtx(t), o, seen.fn)
	if err != nil {
		seen.failed(t, err)
	}
	checkJSON(t, res)
	for name, p := range map[string]FanoutPath{"broker": res.Broker, "direct": res.Direct} {
		if p.Errors > 0 {
			t.Errorf("%s: %d of %d queries failed; first: %s", name, p.Errors, p.Sent, p.FirstError)
		}
		if p.Latency.Count == 0 || p.Latency.P50 <= 0 || p.Latency.P99 < p.Latency.P50 || p.Latency.Max < p.Latency.P99 {
			t.Errorf("%s latency not sane: %+v", name, p.Latency)
		}
		// Every member holds each answer back by the injected latency.
		if p.Latency.P50 < Duration(res.Options.Latency) {
			t.Errorf("%s p50 %v below the injected member latency %v", name, p.Latency.P50, res.Options.Latency)
		}
	}
	finitePositive(t, "ratio p50", res.RatioP50)
	finitePositive(t, "ratio p99", res.RatioP99)
	if seen.calls == 0 {
		t.Error("no progress reported")
	}
}

func TestThroughput_SmallRunCountsQueriesAndCPU(t *testing.T) {
	t.Parallel()
	o := ThroughputOptions{Concurrency: 2, Duration: 600 * time.Millisecond, Rounds: 2, Patients: 200, Dir: t.TempDir()}
	var seen progressSeen
	res, err := Throughput(testCtx(t), o, seen.fn)
	if err != nil {
		seen.failed(t, err)
	}
	checkJSON(t, res)
	for name, p := range map[string]ThroughputPath{"broker": res.Broker, "direct": res.Direct} {
		if p.Errors > 0 {
			t.Errorf("%s: %d of %d queries failed; first: %s", name, p.Errors, p.Queries, p.FirstError)
		}
		if p.Queries == 0 || len(p.RoundQPS) != o.Rounds {
			t.Errorf("%s: %d queries in %d rounds", name, p.Queries, len(p.RoundQPS))
		}
		finitePositive(t, name+" qps", p.QPS)
		finitePositive(t, name+" cpu per 1000", p.CPUPer1000)
	}
	finitePositive(t, "ratio", res.Ratio)
	finitePositive(t, "cpu ratio", res.CPURatio)
}

func TestRetrieve_SmallDocumentVerifiedBothWays(t *testing.T) {
	t.Parallel()
	o := RetrieveOptions{Size: 4 * MB, Rounds: 2, Dir: t.TempDir()}
	if testing.Short() {
		o.Size = 1 * MB
	}
	var seen progressSeen
	res, err := Retrieve(testCtx(t), o, seen.fn)
	if err != nil {
		seen.failed(t, err)
	}
	checkJSON(t, res)
	if len(res.SHA256) != 64 {
		t.Errorf("sha256 %q", res.SHA256)
	}
	for name, p := range map[string]RetrievePath{"broker": res.Broker, "direct": res.Direct} {
		if !p.Verified {
			t.Errorf("%s: a retrieval did not match the stored document", name)
		}
		if len(p.RoundMBps) != o.Rounds {
			t.Errorf("%s: %d rounds, want %d", name, len(p.RoundMBps), o.Rounds)
		}
		finitePositive(t, name+" MiB/s", p.MBps)
		if p.PeakHeapInuse == 0 {
			t.Errorf("%s: no heap sampled", name)
		}
	}
	finitePositive(t, "ratio", res.Ratio)
}

func TestRaft_SmallClusterWritesFailsOverAndInstallsSnapshot(t *testing.T) {
	t.Parallel()
	// The state is built in 100 Raft entries, more than the 64 the
	// scenario keeps behind a snapshot, so that the new broker can only
	// catch up by installing the snapshot. With fewer (5 batches of 1,000
	// did), a loaded machine writes so little in the timed rounds that the
	// whole log is kept, the new broker catches up from it, and the
	// scenario waits for an install that never comes.
	o := RaftOptions{Duration: 1200 * time.Millisecond, Rounds: 3, Batch: 200, BatchWriters: 2, Concurrency: 4, Steady: 500 * time.Millisecond,
		Kills: 2, Entries: 5000, BuildBatch: 50, Dir: t.TempDir()}
	if testing.Short() {
		o.Kills, o.FastRaft = 1, true
	}
	var seen progressSeen
	res, err := Raft(testCtx(t), o, seen.fn)
	if err != nil {
		seen.failed(t, err)
	}
	checkJSON(t, res)
	if len(res.Writes) != 4 {
		t.Fatalf("%d write modes, want 4", len(res.Writes))
	}
	if res.Steady.Writes == 0 || res.Steady.TermAfter < res.Steady.TermBefore {
		t.Errorf("steady run not sane: %+v", res.Steady)
	}
	for _, w := range res.Writes {
		if w.Entries == 0 {
			t.Errorf("%s: no entries acknowledged (errors %d, first: %s)", w.Mode, w.Errors, w.FirstError)
		}
		finitePositive(t, w.Mode+" entries/s", w.PerSecond)
	}
	if res.Writes[1].Entries%res.Options.Batch != 0 {
		t.Errorf("batched entries %d not a multiple of the batch %d", res.Writes[1].Entries, res.Options.Batch)
	}
	f := res.Failover
	if f.Kills != o.Kills || len(f.Times) != o.Kills || f.Min <= 0 || f.Min > f.Median || f.Median > f.Max {
		t.Errorf("failover not sane: %+v", f)
	}
	s := res.Snapshot
	if s.Entries < o.Entries {
		t.Errorf("snapshot state holds %d entries, want at least %d", s.Entries, o.Entries)
	}
	if s.Bytes <= 0 || s.FileBytes <= 0 {
		t.Errorf("snapshot sizes %d (FSM) and %d (file)", s.Bytes, s.FileBytes)
	}
	if s.Installed <= 0 || s.Install < s.Installed || s.Ready <= 0 {
		t.Errorf("snapshot install not sane: %+v", s)
	}
}

func TestMatch_SmallIndexFindsVariedRecords(t *testing.T) {
	// Not parallel: the index's heap is measured process-wide, and other
	// tests' networks freeing memory meanwhile made it come out as none.
	o := MatchOptions{Patients: 5000, Queries: 1000, Rounds: 2, Goroutines: 2}
	var seen progressSeen
	res, err := Match(testCtx(t), o, seen.fn)
	if err != nil {
		seen.failed(t, err)
	}
	checkJSON(t, res)
	if res.IndexSize != o.Patients {
		t.Errorf("index holds %d patients, want %d", res.IndexSize, o.Patients)
	}
	if res.Queries != o.Queries || res.VariedQueries == 0 {
		t.Errorf("%d queries (%d varied), want %d with some varied", res.Queries, res.VariedQueries, o.Queries)
	}
	if res.Recall <= 0.5 || res.Recall > 1 {
		t.Errorf("recall %.3f, want above 0.5", res.Recall)
	}
	if res.Top1 > res.Recall {
		t.Errorf("top-1 %.3f above recall %.3f", res.Top1, res.Recall)
	}
	for _, r := range []MatchRun{res.Single, res.Parallel} {
		finitePositive(t, "qps", r.QPS)
		if r.Latency.Count != o.Rounds*res.Queries {
			t.Errorf("%d goroutines: %d latencies, want %d", r.Goroutines, r.Latency.Count, o.Rounds*res.Queries)
		}
	}
	finitePositive(t, "speedup", res.Speedup)
	if res.Build <= 0 || res.HeapBytes == 0 {
		t.Errorf("build %v, heap %d", res.Build, res.HeapBytes)
	}
}

func TestSummarize_Percentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := summarize(ds)
	want := Latency{Count: 100, Mean: Duration(50500 * time.Microsecond), P50: Duration(50 * time.Millisecond),
		P90: Duration(90 * time.Millisecond), P99: Duration(99 * time.Millisecond), Max: Duration(100 * time.Millisecond)}
	if l != want {
		t.Errorf("summarize = %+v, want %+v", l, want)
	}
	if (summarize(nil) != Latency{}) {
		t.Error("summarize(nil) not zero")
	}
}

func TestRatioAndMedian_Edges(t *testing.T) {
	if r := ratio(1, 0); r != 0 {
		t.Errorf("ratio(1, 0) = %v, want 0", r)
	}
	if r := ratio(0, 0); r != 0 {
		t.Errorf("ratio(0, 0) = %v, want 0", r)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
	if got := abba(3); len(got) != 6 || got[0] != 0 || got[1] != 1 || got[2] != 1 || got[3] != 0 {
		t.Errorf("abba(3) = %v", got)
	}
}

func TestDuration_JSONInMilliseconds(t *testing.T) {
	b, err := json.Marshal(Duration(1500 * time.Microsecond))
	if err != nil || string(b) != "1.500" {
		t.Fatalf("marshal = %s, %v", b, err)
	}
	var d Duration
	if err := json.Unmarshal(b, &d); err != nil || d != Duration(1500*time.Microsecond) {
		t.Fatalf("unmarshal = %v, %v", d, err)
	}
}

func TestAbuse_SmallRunAttacksFromItsOwnProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the commands and starts a network of processes")
	}
	t.Parallel()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/qhinctl", "./cmd/qhin-broker", "./cmd/qhin-participant")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var seen progressSeen
	o := AbuseOptions{Brokers: 1, Members: 3, Patients: 100, Duration: time.Second, After: 200 * time.Millisecond,
		Attacks: []string{"flood-15k", "label-flood", "never-read"}, BinDir: bin, Dir: t.TempDir(),
		AttackerCommand: []string{filepath.Join(bin, "qhinctl"), "bench", "attacker"}}
	res, err := Abuse(testCtx(t), o, seen.fn)
	if err != nil {
		t.Fatal(err)
	}
	checkJSON(t, res)
	if len(res.Runs) != len(o.Attacks) || !res.Options.SeparateAttacker {
		t.Fatalf("%d runs (separate attacker %v), want %d from an attacker process", len(res.Runs), res.Options.SeparateAttacker, len(o.Attacks))
	}
	for _, r := range res.Runs {
		if r.Baseline.Errors+r.UnderAttack.Errors > 0 {
			t.Errorf("%s: legitimate queries failed: %s %s", r.Attack, r.Baseline.FirstError, r.UnderAttack.FirstError)
		}
		if r.Baseline.Queries == 0 || r.UnderAttack.Queries == 0 || r.AttackCalls == 0 {
			t.Errorf("%s: %d and %d legitimate queries, %d attack calls", r.Attack, r.Baseline.Queries, r.UnderAttack.Queries, r.AttackCalls)
		}
		if r.AttackPeakRSS == 0 || r.AttackCPU <= 0 {
			t.Errorf("%s: broker peak RSS %d, CPU %.2fs: /proc not read", r.Attack, r.AttackPeakRSS, r.AttackCPU)
		}
		finitePositive(t, r.Attack+" p99 ratio", r.P99Ratio)
		switch r.Attack {
		case "label-flood":
			// Every query holds forged links: the sealed-link check
			// refuses each, and none reaches a member.
			if !strings.HasPrefix(r.Detail, "InvalidArgument ") || strings.Contains(r.Detail, "OK ") {
				t.Errorf("label-flood: outcomes %q, want every query refused with InvalidArgument", r.Detail)
			}
		case "never-read":
			// The attacker found the document's link honestly: the
			// broker took some retrievals (up to its per-member cap).
			m := regexp.MustCompile(`(\d+) accepted`).FindStringSubmatch(r.Detail)
			if m == nil || m[1] == "0" {
				t.Errorf("never-read: %q, want some retrievals accepted", r.Detail)
			}
		}
	}
	if seen.calls == 0 {
		t.Error("no progress reported")
	}
}

func TestLocator_SmallRunPublishesAndCompares(t *testing.T) {
	t.Parallel()
	o := LocatorOptions{Brokers: 2, Patients: 6000, Batch: 2000, Writers: 2, Members: 6, Persons: 120, Queries: 12, Rounds: 2, Workers: 2,
		FastRaft: true, Dir: t.TempDir()}
	var seen progressSeen
	res, err := Locator(testCtx(t), o, seen.fn)
	if err != nil {
		seen.failed(t, err)
	}
	checkJSON(t, res)
	p := res.Publish
	if p.Tokens != 24000 || p.Entries != 24000 || p.Calls != 12 {
		t.Errorf("published %d tokens in %d calls, %d entries; want 24000 in 12, 24000", p.Tokens, p.Calls, p.Entries)
	}
	finitePositive(t, "tokens/s", p.PerSecond)
	// An entry holds a 2-byte key number, a 16-byte token and the member's
	// id: at least 20 bytes in use.
	if p.InUsePerToken < 20 || p.AllocPerToken < p.InUsePerToken || p.FilePerToken < p.AllocPerToken {
		t.Errorf("bytes per token not sane: %+v", p)
	}
	if s := res.Snapshot; s.Bytes < p.FileBytes || s.Take <= 0 || s.Install <= 0 {
		t.Errorf("snapshot not sane: %+v", s)
	}
	d := res.Discovery
	targeted, broadcast := d.Paths[0], d.Paths[1]
	for _, path := range d.Paths {
		if path.Errors > 0 || path.Queries != o.Queries {
			t.Errorf("%s: %d of %d queries failed; first: %s", path.Path, path.Errors, path.Queries, path.FirstError)
		}
	}
	// Broadcast asks every member but the initiator; targeted asks fewer,
	// and finds most registrations (each person is at 2 or 3 members).
	if broadcast.AskedMean != float64(o.Members-1) || targeted.AskedMean >= broadcast.AskedMean || targeted.AskedMean < 1 {
		t.Errorf("asked per query: targeted %.2f, broadcast %.2f of %d others", targeted.AskedMean, broadcast.AskedMean, o.Members-1)
	}
	if targeted.Recall < 0.8 || broadcast.Recall < 0.8 {
		t.Errorf("recall targeted %.3f, broadcast %.3f", targeted.Recall, broadcast.Recall)
	}
}
