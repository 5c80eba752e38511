package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/synth"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// MatchOptions configure [Match]. Zero fields take the defaults.
type MatchOptions struct {
	// Patients is the size of the index (default 1,000,000).
	Patients int `json:"patients"`
	// Queries is how many searches a run makes (default 20,000; fewer
	// when the population has fewer shared persons).
	Queries int `json:"queries"`
	// Rounds: runs per variant, alternating (default 3).
	Rounds int `json:"rounds"`
	// Goroutines of the parallel variant (default NumCPU).
	Goroutines int `json:"goroutines"`
	// Threshold and Limit of each search (defaults match.DefaultThreshold,
	// a possible match, and 10, as a participant answers).
	Threshold float64 `json:"threshold"`
	Limit     int     `json:"limit"`
	// Seed of the synthetic population (default 1).
	Seed int64 `json:"seed"`
}

func (o *MatchOptions) defaults() {
	if o.Patients <= 0 {
		o.Patients = 1_000_000
	}
	if o.Queries <= 0 {
		o.Queries = 20_000
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Goroutines <= 0 {
		o.Goroutines = runtime.NumCPU()
	}
	if o.Threshold <= 0 {
		o.Threshold = match.DefaultThreshold
	}
	if o.Limit <= 0 {
		o.Limit = 10
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
}

// MatchResult is what [Match] measured.
type MatchResult struct {
	Scenario string       `json:"scenario"`
	Machine  Machine      `json:"machine"`
	Options  MatchOptions `json:"options"`
	Started  time.Time    `json:"started"`
	Elapsed  Duration     `json:"elapsed_ms"`
	// IndexSize is the patients indexed, Persons the synthetic persons
	// generated to get them.
	IndexSize int `json:"index_size"`
	Persons   int `json:"persons"`
	// Build is the time spent in Normalize and Index.Add; Generate the
	// whole generation and build.
	Build    Duration `json:"build_ms"`
	Generate Duration `json:"generate_ms"`
	// HeapBytes is the growth of HeapInuse (after a collection) over the
	// build: the index, and the query set, which is small beside it.
	HeapBytes      uint64   `json:"heap_bytes"`
	HeapPerPatient float64  `json:"heap_bytes_per_patient"`
	Queries        int      `json:"queries"`
	VariedQueries  int      `json:"varied_queries"`
	Single         MatchRun `json:"single"`
	Parallel       MatchRun `json:"parallel"`
	Speedup        float64  `json:"speedup"`
	// Recall is the share of queries whose true record (same person) is
	// among the results; RecallVaried the same over the queries whose two
	// records differ; Top1 the share whose best result is the true record.
	Recall       float64 `json:"recall"`
	RecallVaried float64 `json:"recall_varied"`
	// RecallMatch and RecallMatchVaried count only true records the
	// matcher declared a match (probability at the match threshold),
	// not a possible match.
	RecallMatch       float64  `json:"recall_match"`
	RecallMatchVaried float64  `json:"recall_match_varied"`
	Top1              float64  `json:"top1"`
	MeanCandidates    float64  `json:"mean_candidates"`
	Notes             []string `json:"notes"`
}

// MatchRun is one variant's searches.
type MatchRun struct {
	Goroutines int `json:"goroutines"`
	// QPS is the median over the rounds of searches per second.
	QPS      float64   `json:"qps"`
	RoundQPS []float64 `json:"round_qps"`
	Latency  Latency   `json:"latency"`
}

type matchQuery struct {
	d      *qhinv1.Demographics
	want   string // the patient id of the same person in the index
	varied bool
}

var errEnough = errors.New("enough patients")

// Match measures local matching: an index of one member's share of a
// synthetic population registered at two members, searched with the other
// member's records of the persons both hold, which carry the typos,
// nicknames and moves real registrations have. Each search normalizes its
// query, as a responder does.
func Match(ctx context.Context, o MatchOptions, progress Progress) (*MatchResult, error) {
	o.defaults()
	res := &MatchResult{Scenario: "match", Machine: CurrentMachine(), Options: o, Started: time.Now()}
	base := heapInuse()

	x := match.NewIndex()
	var (
		queries []matchQuery
		build   time.Duration
		// the current person's records at each member
		person     string
		p1ID       string
		p2         *qhinv1.Demographics
		laterVaria bool
	)
	flush := func() {
		if p1ID != "" && p2 != nil && len(queries) < o.Queries {
			p2.Identifiers = nil // demographics only: the MRN is local to p2
			queries = append(queries, matchQuery{d: p2, want: p1ID, varied: laterVaria})
		}
		p1ID, p2, laterVaria = "", nil, false
	}
	t0 := time.Now()
	// Person i is the same whatever Persons is, so generate "enough" and
	// stop once the index is full.
	err := synth.Generate(synth.Options{Seed: o.Seed, Persons: 4*o.Patients + 100, Participants: []string{"p1", "p2"}, MaxDocuments: -1},
		func(r synth.Registration) error {
			if r.PersonID != person {
				flush()
				if x.Len() >= o.Patients {
					return errEnough
				}
				person = r.PersonID
				res.Persons++
				if res.Persons%10_000 == 0 {
					progress.report("building index (patients)", x.Len(), o.Patients)
					if err := ctx.Err(); err != nil {
						return err
					}
				}
			}
			if r.Variations != 0 {
				laterVaria = true
			}
			switch r.ParticipantID {
			case "p1":
				p1ID = r.PatientID
				t := time.Now()
				x.Add(r.PatientID, match.Normalize(r.Demographics))
				build += time.Since(t)
			case "p2":
				p2 = r.Demographics
			}
			return nil
		})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, err
	}
	flush()
	progress.report("building index (patients)", x.Len(), o.Patients)
	res.Generate = Duration(time.Since(t0))
	res.Build = Duration(build)
	res.IndexSize = x.Len()
	if heap := heapInuse(); heap > base {
		res.HeapBytes = heap - base
	}
	res.HeapPerPatient = ratio(float64(res.HeapBytes), float64(res.IndexSize))
	res.Queries = len(queries)
	if len(queries) == 0 {
		return nil, errors.New("no person is registered at both members; raise Patients")
	}
	for _, q := range queries {
		if q.varied {
			res.VariedQueries++
		}
	}

	// Recall, from one pass (searches are deterministic).
	var found, foundVaried, matched, matchedVaried, top1, cands int
	for _, q := range queries {
		rs := x.Search(match.Normalize(q.d), o.Threshold, o.Limit)
		cands += len(rs)
		for i, r := range rs {
			if r.ID == q.want {
				found++
				if q.varied {
					foundVaried++
				}
				if i == 0 {
					top1++
				}
				if r.Pair.Decision == match.Match {
					matched++
					if q.varied {
						matchedVaried++
					}
				}
				break
			}
		}
	}
	res.Recall = ratio(float64(found), float64(len(queries)))
	res.RecallVaried = ratio(float64(foundVaried), float64(res.VariedQueries))
	res.RecallMatch = ratio(float64(matched), float64(len(queries)))
	res.RecallMatchVaried = ratio(float64(matchedVaried), float64(res.VariedQueries))
	res.Top1 = ratio(float64(top1), float64(len(queries)))
	res.MeanCandidates = ratio(float64(cands), float64(len(queries)))

	runs := []*MatchRun{&res.Single, &res.Parallel}
	res.Single.Goroutines, res.Parallel.Goroutines = 1, o.Goroutines
	lats := make([][]time.Duration, 2)
	order := abba(o.Rounds)
	for step, v := range order {
		progress.report("searching", step, len(order))
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lat, wall := searchAll(x, queries, runs[v].Goroutines, o.Threshold, o.Limit)
		runs[v].RoundQPS = append(runs[v].RoundQPS, float64(len(queries))/wall.Seconds())
		lats[v] = append(lats[v], lat...)
	}
	progress.report("searching", len(order), len(order))
	for v, r := range runs {
		r.QPS = median(r.RoundQPS)
		r.Latency = summarize(lats[v])
	}
	res.Speedup = ratio(res.Parallel.QPS, res.Single.QPS)
	res.Elapsed = Duration(time.Since(res.Started))
	res.Notes = []string{
		fmt.Sprintf("index: p1's share of a synthetic population registered at p1 and p2 (%d persons generated); queries: p2's records of persons both hold", res.Persons),
		"varied queries: the later of the person's two registrations carries typos, a nickname, a missing middle name, a move, a missing phone or a birth-date typo",
		fmt.Sprintf("threshold %.2f (a possible match; the match threshold is %.2f), at most %d results per search; single and parallel runs alternate A B B A, %d rounds each", o.Threshold, match.MatchThreshold, o.Limit, o.Rounds),
		"the matcher is the default model (trained on a synthetic population of another seed) with term frequencies from the index",
		"heap is process-wide HeapInuse growth after a collection",
	}
	return res, nil
}

// searchAll runs every query once over g goroutines and returns each
// search's latency and the wall time.
func searchAll(x *match.Index, queries []matchQuery, g int, threshold float64, limit int) ([]time.Duration, time.Duration) {
	lat := make([]time.Duration, len(queries))
	var wg sync.WaitGroup
	start := time.Now()
	for w := range g {
		wg.Go(func() {
			for i := w; i < len(queries); i += g {
				t := time.Now()
				x.Search(match.Normalize(queries[i].d), threshold, limit)
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	return lat, time.Since(start)
}
