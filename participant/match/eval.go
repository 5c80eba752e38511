package match

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// EvalOptions configure [Evaluate].
type EvalOptions struct {
	// Model scores the pairs, and is the base of training; DefaultModel
	// when nil.
	Model *Model
	// Train fits m, u and the prior to the input first ([Train]).
	Train bool
	// TrainOptions tune training; EstimatePrior is always set.
	TrainOptions TrainOptions
	// Threshold is the probability a pair needs to count as found; the
	// model's match threshold when zero.
	Threshold float64
}

// EvalResult is what [Evaluate] measured. Pairs are unordered pairs of
// records: within the file when deduplicating one, across the files when
// linking two.
type EvalResult struct {
	Records int `json:"records"`
	// PairsCompared is how many pairs blocking let through to a
	// comparison, PairsTrue how many are the same person by the truth
	// column, PairsFound how many the matcher declared the same person,
	// PairsCorrect how many of those are.
	PairsCompared int     `json:"pairs_compared"`
	PairsTrue     int     `json:"pairs_true"`
	PairsFound    int     `json:"pairs_found"`
	PairsCorrect  int     `json:"pairs_correct"`
	Precision     float64 `json:"precision"`
	Recall        float64 `json:"recall"`
	F1            float64 `json:"f1"`
	Threshold     float64 `json:"threshold"`
	// Seconds is the wall time of training, blocking and comparing.
	Seconds float64 `json:"seconds"`
	// Trained reports the training, when there was one.
	Trained *TrainReport `json:"trained,omitempty"`
	// Model is the model the pairs were scored with.
	Model *Model `json:"-"`
}

// Evaluate measures the matcher against the truth: with b nil it
// deduplicates a (every pair within a), otherwise it links a with b (pairs
// across them). Candidate pairs come from the blocking keys an [Index]
// uses, term frequencies from all the records, and a pair is found when its
// [Pair.Score] reaches the threshold.
func Evaluate(ctx context.Context, a, b []LabeledRecord, opts EvalOptions) (EvalResult, error) {
	start := time.Now()
	link := b != nil
	res := EvalResult{Records: len(a) + len(b)}
	model := opts.Model
	if model == nil {
		model = DefaultModel()
	}
	ra, rb := records(a), records(b)
	if opts.Train {
		to := opts.TrainOptions
		to.EstimatePrior = true
		var tb []Record
		if link {
			tb = rb
		}
		m, rep, err := Train(ctx, ra, tb, model, to)
		if err != nil {
			return res, fmt.Errorf("evaluate: %w", err)
		}
		model, res.Trained = m, &rep
	}
	res.Model = model
	res.Threshold = opts.Threshold
	if res.Threshold <= 0 {
		res.Threshold, _ = model.Thresholds()
	}

	pa := prepareAll(ra)
	pb := pa
	if link {
		pb = prepareAll(rb)
	}
	var tf TermFrequencies
	for i := range pa {
		tf.add(&pa[i], 1)
	}
	if link {
		for i := range pb {
			tf.add(&pb[i], 1)
		}
	}

	// Block the right-hand side, then look each left-hand record up.
	blocks := map[uint64][]int32{}
	var kbuf [numKeys]uint64
	for j := range pb {
		for _, k := range blockKeys(&pb[j], kbuf[:0]) {
			blocks[k] = append(blocks[k], int32(j))
		}
	}
	var cands []int32
	for i := range pa {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return res, err
			}
		}
		cands = cands[:0]
		var found [numKeys][]int32
		n := 0
		for _, k := range blockKeys(&pa[i], kbuf[:0]) {
			if blk := blocks[k]; len(blk) > 0 && len(blk) <= maxBlock {
				found[n] = blk
				n++
			}
		}
		// As Index.Search does: smallest blocks first, within a budget.
		slices.SortStableFunc(found[:n], func(a, b []int32) int { return len(a) - len(b) })
		for _, blk := range found[:n] {
			if len(cands)+len(blk) <= maxCandidates {
				cands = append(cands, blk...)
			}
		}
		slices.Sort(cands)
		cands = slices.Compact(cands)
		for _, j := range cands {
			if !link && int(j) <= i {
				continue
			}
			res.PairsCompared++
			if model.compare(&pa[i], &pb[j], &tf).Score() < res.Threshold {
				continue
			}
			res.PairsFound++
			other := a
			if link {
				other = b
			}
			if a[i].Truth == other[j].Truth {
				res.PairsCorrect++
			}
		}
	}
	res.PairsTrue = truePairs(a, b)
	if res.PairsFound > 0 {
		res.Precision = float64(res.PairsCorrect) / float64(res.PairsFound)
	}
	if res.PairsTrue > 0 {
		res.Recall = float64(res.PairsCorrect) / float64(res.PairsTrue)
	}
	if res.Precision+res.Recall > 0 {
		res.F1 = 2 * res.Precision * res.Recall / (res.Precision + res.Recall)
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func records(ls []LabeledRecord) []Record {
	if ls == nil {
		return nil
	}
	out := make([]Record, len(ls))
	for i, l := range ls {
		out[i] = l.Record
	}
	return out
}

// truePairs counts the pairs of records with the same truth: within a, or
// across a and b.
func truePairs(a, b []LabeledRecord) int {
	ca := map[string]int{}
	for _, r := range a {
		ca[r.Truth]++
	}
	n := 0
	if b == nil {
		for _, c := range ca {
			n += c * (c - 1) / 2
		}
		return n
	}
	for _, r := range b {
		n += ca[r.Truth]
	}
	return n
}
