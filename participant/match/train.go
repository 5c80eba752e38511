package match

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
)

// TrainOptions tune [Train]. Zero fields take the defaults.
type TrainOptions struct {
	// RandomPairs is how many record pairs drawn at random estimate u
	// (default 1,000,000; every pair when there are fewer).
	RandomPairs int
	// MaxRulePairs bounds the pairs one training blocking rule gives EM
	// (default 1,000,000; a sample when a rule gives more).
	MaxRulePairs int
	// MinMatches is the fewest matches EM must find among a rule's pairs
	// for its m estimates to count (default 50), and they must look like
	// matches (exact agreement likelier than among random pairs on every
	// field): a member's own records hold few duplicates, and m estimated
	// from a handful is noise, so such a member keeps the base model's m
	// and trains u only.
	MinMatches float64
	// MaxIterations and Tolerance stop EM (defaults 100 and 1e-6).
	MaxIterations int
	Tolerance     float64
	// EstimatePrior re-estimates the prior from the data (what share of
	// all pairs are matches); otherwise the base model's prior is kept.
	// It needs the union of the training rules' pairs, so it is skipped
	// (and reported) when they exceed MaxRulePairs.
	EstimatePrior bool
	// Seed makes the random draws reproducible (default 1).
	Seed uint64
	// Progress, when set, is called with a phase name as training goes.
	Progress func(phase string)
}

func (o *TrainOptions) defaults() {
	if o.RandomPairs <= 0 {
		o.RandomPairs = 1_000_000
	}
	if o.MaxRulePairs <= 0 {
		o.MaxRulePairs = 1_000_000
	}
	if o.MinMatches <= 0 {
		o.MinMatches = 50
	}
	if o.MaxIterations <= 0 {
		o.MaxIterations = 100
	}
	if o.Tolerance <= 0 {
		o.Tolerance = 1e-6
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
}

// TrainReport says what [Train] did.
type TrainReport struct {
	Records     int          `json:"records"`
	RandomPairs int          `json:"random_pairs"`
	Rules       []RuleReport `json:"rules"`
	// Prior is the prior of the trained model; PriorEstimated whether it
	// came from the data.
	Prior          float64 `json:"prior"`
	PriorEstimated bool    `json:"prior_estimated"`
	// Notes tell what was kept from the base model and why.
	Notes []string `json:"notes,omitempty"`
}

// RuleReport is one training blocking rule's EM run.
type RuleReport struct {
	Rule       string  `json:"rule"`
	Pairs      int     `json:"pairs"`
	Sampled    bool    `json:"sampled"`
	Matches    float64 `json:"matches"`
	Iterations int     `json:"iterations"`
	Used       bool    `json:"used"`
}

// ErrTooFewRecords reports a training set too small to estimate anything.
var ErrTooFewRecords = errors.New("too few records to train")

// trainingRule is a blocking rule that EM trains on: pairs of records that
// agree exactly on the rule's fields. Those fields agree in every pair it
// gives, so EM learns nothing about them from it; the other fields' m come
// from it.
type trainingRule struct {
	name   string
	fields []Field
	key    func(p *prepared) string
}

var trainingRules = []trainingRule{
	{"birth_date", []Field{FieldBirthDate}, func(p *prepared) string {
		if !p.HasBirthDate() {
			return ""
		}
		return string(p.birth[:])
	}},
	{"names", []Field{FieldGiven, FieldFamily}, func(p *prepared) string {
		if p.familyJoined == "" || len(p.Given) == 0 {
			return ""
		}
		return p.familyJoined + "|" + p.Given[0]
	}},
	// A postal code decides the city and state, so they agree in every
	// pair of this rule too: EM would take "same place" for "same person".
	{"postal_code", []Field{FieldPostalCode, FieldCity, FieldState}, func(p *prepared) string { return p.PostalCode }},
	{"phone", []Field{FieldPhone}, func(p *prepared) string { return p.Phone }},
}

// Train fits a model's m and u probabilities to records, as splink does: u
// from pairs drawn at random (nearly all of which are different people),
// then m by expectation maximisation (EM) over the pairs each training
// blocking rule gives (same birth date; same names; same postal code; same
// phone), with u held fixed, each field's m the mean over the rules that do
// not block on it. With b nil it trains to deduplicate a; otherwise to link
// a with b (pairs across the two only). Fields and levels the data says
// nothing about keep base's parameters, and so do the thresholds.
func Train(ctx context.Context, a, b []Record, base *Model, opts TrainOptions) (*Model, TrainReport, error) {
	opts.defaults()
	rep := TrainReport{Records: len(a) + len(b)}
	pa := prepareAll(a)
	pb := pa
	link := b != nil
	if link {
		pb = prepareAll(b)
	}
	total := pairCount(len(pa), len(pb), link)
	if total < 2 {
		return nil, rep, fmt.Errorf("train: %w (%d records)", ErrTooFewRecords, rep.Records)
	}
	progress := func(s string) {
		if opts.Progress != nil {
			opts.Progress(s)
		}
	}
	params := base.Params()
	rng := rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15))

	// u from random pairs.
	progress("u from random pairs")
	var counts [NumFields][]float64
	for f := range NumFields {
		counts[f] = make([]float64, len(fieldLevels[f]))
	}
	n := 0
	err := eachRandomPair(ctx, rng, len(pa), len(pb), link, opts.RandomPairs, func(i, j int) {
		l := levels(&pa[i], &pb[j])
		for f := range NumFields {
			if l[f] != Missing {
				counts[f][l[f]]++
			}
		}
		n++
	})
	if err != nil {
		return nil, rep, err
	}
	rep.RandomPairs = n
	for f := range NumFields {
		seen := 0.0
		for _, c := range counts[f] {
			seen += c
		}
		if seen < 100 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("u of %s kept from the base model: compared in %.0f random pairs", f, seen))
			continue
		}
		for l := range counts[f] {
			// Add-one smoothing: a level never seen among random
			// pairs is rare, not impossible.
			params.Fields[f].Levels[l].U = (counts[f][l] + 1) / (seen + float64(len(counts[f])))
		}
	}
	m, err := NewModel(params)
	if err != nil {
		return nil, rep, fmt.Errorf("train: %w", err)
	}

	// m by EM, one rule at a time.
	var mSum [NumFields][]float64
	var mWeight [NumFields]float64
	for f := range NumFields {
		mSum[f] = make([]float64, len(fieldLevels[f]))
	}
	var union map[uint64]struct{}
	unionOK := opts.EstimatePrior
	if unionOK {
		union = map[uint64]struct{}{}
	}
	for _, rule := range trainingRules {
		if err := ctx.Err(); err != nil {
			return nil, rep, err
		}
		progress("m by EM, rule " + rule.name)
		patterns, pairs, sampled := rulePatterns(rng, pa, pb, link, rule, opts.MaxRulePairs, union)
		if sampled || len(union) > opts.MaxRulePairs {
			unionOK = false
			union = nil
		}
		rr := RuleReport{Rule: rule.name, Pairs: pairs, Sampled: sampled}
		if pairs == 0 {
			rep.Rules = append(rep.Rules, rr)
			continue
		}
		skip := [NumFields]bool{}
		for _, f := range rule.fields {
			skip[f] = true
		}
		est, lambda, iters := em(patterns, m, skip, opts)
		rr.Matches, rr.Iterations = lambda*float64(pairs), iters
		if rr.Matches >= opts.MinMatches && plausible(est, m) {
			rr.Used = true
			for f := range NumFields {
				if skip[f] || est[f] == nil {
					continue
				}
				for l, v := range est[f] {
					mSum[f][l] += v
				}
				mWeight[f]++
			}
		}
		rep.Rules = append(rep.Rules, rr)
	}
	for f := range NumFields {
		if mWeight[f] == 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("m of %s kept from the base model: no rule found enough matches comparing it", f))
			continue
		}
		for l := range mSum[f] {
			params.Fields[f].Levels[l].M = mSum[f][l] / mWeight[f]
		}
	}
	params.Trained = fmt.Sprintf("EM on %d records (%d random pairs)", rep.Records, rep.RandomPairs)
	m, err = NewModel(params)
	if err != nil {
		return nil, rep, fmt.Errorf("train: %w", err)
	}

	// The prior: the share of matches among the union of the rules'
	// pairs, scaled to all pairs.
	rep.Prior = m.params.Prior
	if opts.EstimatePrior {
		if !unionOK || len(union) == 0 {
			rep.Notes = append(rep.Notes, "prior kept from the base model: the training pairs were sampled")
		} else {
			progress("prior")
			matches := priorEM(pa, pb, union, m, opts)
			params.Prior = min(max(matches/float64(total), minPrior), 0.5)
			if m, err = NewModel(params); err != nil {
				return nil, rep, fmt.Errorf("train: %w", err)
			}
			rep.Prior, rep.PriorEstimated = params.Prior, true
		}
	}
	return m, rep, nil
}

func prepareAll(rs []Record) []prepared {
	out := make([]prepared, len(rs))
	for i, r := range rs {
		out[i] = prepare(r)
	}
	return out
}

// pairCount returns the number of pairs to compare: within one set of n, or
// across sets of n and k.
func pairCount(n, k int, link bool) float64 {
	if link {
		return float64(n) * float64(k)
	}
	return float64(n) * float64(n-1) / 2
}

// eachRandomPair calls fn with up to want distinct-record pairs drawn at
// random (with replacement), or with every pair when there are no more
// than want.
func eachRandomPair(ctx context.Context, rng *rand.Rand, n, k int, link bool, want int, fn func(i, j int)) error {
	total := pairCount(n, k, link)
	if total <= float64(want) {
		for i := range n {
			start := 0
			if !link {
				start = i + 1
			}
			for j := start; j < k; j++ {
				fn(i, j)
			}
			if i%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for d := 0; d < want; d++ {
		i, j := rng.IntN(n), rng.IntN(k)
		if !link && i == j {
			d--
			continue
		}
		fn(i, j)
		if d%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// pattern is a comparison vector packed 4 bits per field (15 = Missing).
type pattern uint64

func packLevels(l [NumFields]Level) pattern {
	var p pattern
	for f := range NumFields {
		v := pattern(15)
		if l[f] != Missing {
			v = pattern(l[f])
		}
		p |= v << (4 * f)
	}
	return p
}

func (p pattern) level(f Field) Level {
	v := (p >> (4 * f)) & 15
	if v == 15 {
		return Missing
	}
	return Level(v)
}

// rulePatterns counts the comparison vectors of the pairs a rule gives:
// every pair of records with the same key, or a uniform sample of maxPairs
// of them when there are more. When union is not nil, each pair is added
// to it (as i<<32|j).
func rulePatterns(rng *rand.Rand, pa, pb []prepared, link bool, rule trainingRule, maxPairs int, union map[uint64]struct{}) (counts map[pattern]float64, pairs int, sampled bool) {
	groupsA := map[string][]int32{}
	for i := range pa {
		if k := rule.key(&pa[i]); k != "" {
			groupsA[k] = append(groupsA[k], int32(i))
		}
	}
	groupsB := groupsA
	if link {
		groupsB = map[string][]int32{}
		for j := range pb {
			if k := rule.key(&pb[j]); k != "" {
				groupsB[k] = append(groupsB[k], int32(j))
			}
		}
	}
	total := 0.0
	for k, ga := range groupsA {
		total += pairCount(len(ga), len(groupsB[k]), link)
	}
	keep := 1.0
	if total > float64(maxPairs) {
		keep, sampled = float64(maxPairs)/total, true
	}
	counts = map[pattern]float64{}
	add := func(i, j int32) {
		if sampled && rng.Float64() >= keep {
			return
		}
		counts[packLevels(levels(&pa[i], &pb[j]))]++
		pairs++
		if union != nil {
			union[uint64(i)<<32|uint64(uint32(j))] = struct{}{}
		}
	}
	// Iterate groups in a fixed order so that sampling is reproducible.
	keys := make([]string, 0, len(groupsA))
	for k := range groupsA {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		ga, gb := groupsA[k], groupsB[k]
		if link {
			for _, i := range ga {
				for _, j := range gb {
					add(i, j)
				}
			}
			continue
		}
		for x := range ga {
			for y := x + 1; y < len(ga); y++ {
				add(ga[x], ga[y])
			}
		}
	}
	return counts, pairs, sampled
}

// em runs expectation maximisation over comparison vectors with u fixed at
// m's u: it returns the m of every field not skipped (nil for a field never
// compared), the share of matches, and the iterations run. Skipped fields
// (the rule's own) take no part.
func em(patterns map[pattern]float64, m *Model, skip [NumFields]bool, opts TrainOptions) (est [NumFields][]float64, lambda float64, iters int) {
	type row struct {
		p pattern
		n float64
	}
	rows := make([]row, 0, len(patterns))
	var total float64
	for p, n := range patterns {
		rows = append(rows, row{p, n})
		total += n
	}
	sortRows := func(a, b row) int {
		switch {
		case a.p < b.p:
			return -1
		case a.p > b.p:
			return 1
		}
		return 0
	}
	slices.SortFunc(rows, sortRows)
	var mm, uu [NumFields][]float64
	for f := range NumFields {
		lv := m.params.Fields[f].Levels
		mm[f], uu[f] = make([]float64, len(lv)), make([]float64, len(lv))
		for l, p := range lv {
			mm[f][l], uu[f][l] = p.M, p.U
		}
	}
	lambda = 0.1
	var num [NumFields][]float64
	var den [NumFields]float64
	for f := range NumFields {
		num[f] = make([]float64, len(mm[f]))
	}
	for iters = 1; iters <= opts.MaxIterations; iters++ {
		for f := range NumFields {
			clear(num[f])
			den[f] = 0
		}
		var sumP float64
		for _, r := range rows {
			lm, lu := math.Log(lambda), math.Log(1-lambda)
			for f := range NumFields {
				if skip[f] {
					continue
				}
				if l := r.p.level(f); l != Missing {
					lm += math.Log(mm[f][l])
					lu += math.Log(uu[f][l])
				}
			}
			post := 1 / (1 + math.Exp(lu-lm))
			w := post * r.n
			sumP += w
			for f := range NumFields {
				if skip[f] {
					continue
				}
				if l := r.p.level(f); l != Missing {
					num[f][l] += w
					den[f] += w
				}
			}
		}
		change := 0.0
		newLambda := min(max(sumP/total, 1e-9), 1-1e-9)
		change = math.Abs(newLambda - lambda)
		lambda = newLambda
		for f := range NumFields {
			if skip[f] || den[f] == 0 {
				continue
			}
			for l := range mm[f] {
				v := clampProb(num[f][l] / den[f])
				change = max(change, math.Abs(v-mm[f][l]))
				mm[f][l] = v
			}
		}
		if change < opts.Tolerance {
			break
		}
	}
	iters = min(iters, opts.MaxIterations)
	for f := range NumFields {
		if skip[f] {
			continue
		}
		compared := false
		for _, r := range rows {
			if r.p.level(f) != Missing {
				compared = true
				break
			}
		}
		if compared {
			est[f] = mm[f]
		}
	}
	return est, lambda, iters
}

// plausible reports whether EM's matches look like matches: for every field
// it estimated, exact agreement is likelier among them than among random
// pairs. Among records without duplicates EM still splits pairs in two
// (people who share a name, say), and such a split says nothing about m.
func plausible(est [NumFields][]float64, m *Model) bool {
	for f := range NumFields {
		if est[f] != nil && est[f][0] <= m.params.Fields[f].Levels[0].U {
			return false
		}
	}
	return true
}

// priorEM estimates how many of the union's pairs are matches under m, by
// EM on the share of matches with m and u fixed.
func priorEM(pa, pb []prepared, union map[uint64]struct{}, m *Model, opts TrainOptions) float64 {
	keys := make([]uint64, 0, len(union))
	for k := range union {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a fixed order of summing
	ws := make([]float64, 0, len(keys))
	for _, k := range keys {
		i, j := int(k>>32), int(uint32(k))
		w := m.compare(&pa[i], &pb[j], nil).Weight - m.prior
		ws = append(ws, w*math.Ln2)
	}
	lambda := 0.1
	for range opts.MaxIterations {
		logOdds := math.Log(lambda / (1 - lambda))
		sum := 0.0
		for _, w := range ws {
			sum += 1 / (1 + math.Exp(-(w + logOdds)))
		}
		next := min(max(sum/float64(len(ws)), 1e-12), 1-1e-9)
		if math.Abs(next-lambda) < opts.Tolerance*lambda {
			lambda = next
			break
		}
		lambda = next
	}
	return lambda * float64(len(ws))
}

// String gives a rule report as one line.
func (r RuleReport) String() string {
	used := "used"
	if !r.Used {
		used = "not used"
	}
	s := r.Rule + ": " + strconv.Itoa(r.Pairs) + " pairs"
	if r.Sampled {
		s += " (sampled)"
	}
	return s + fmt.Sprintf(", %.0f matches, %d iterations, %s", r.Matches, r.Iterations, used)
}
