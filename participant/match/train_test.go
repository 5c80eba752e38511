package match

import (
	"context"
	"math"
	"reflect"
	"testing"
)

// TestTrain_RecoversParametersOfKnownTruth trains on a synthetic
// population whose truth is known and checks EM's m against m counted
// over the true pairs, u against u counted over pairs of different people,
// and the prior against the true share of matching pairs.
func TestTrain_RecoversParametersOfKnownTruth(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on 4,000 synthetic persons")
	}
	recs, person := syntheticTrainingSet(t, 4242, 4000)
	m, rep, err := Train(context.Background(), recs, nil, DefaultModel(), TrainOptions{EstimatePrior: true, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.PriorEstimated {
		t.Fatalf("prior not estimated: %v", rep.Notes)
	}
	pr := prepareAll(recs)
	byPerson := map[string][]int{}
	for i, p := range person {
		byPerson[p] = append(byPerson[p], i)
	}
	var counts [NumFields][]float64
	for f := range NumFields {
		counts[f] = make([]float64, len(fieldLevels[f]))
	}
	truePairs := 0
	for _, ids := range byPerson {
		for x := range ids {
			for y := x + 1; y < len(ids); y++ {
				truePairs++
				l := levels(&pr[ids[x]], &pr[ids[y]])
				for f := range NumFields {
					if l[f] != Missing {
						counts[f][l[f]]++
					}
				}
			}
		}
	}
	params := m.Params()
	for _, f := range []Field{FieldGiven, FieldFamily, FieldBirthDate, FieldPostalCode, FieldPhone, FieldStreet} {
		n := 0.0
		for _, c := range counts[f] {
			n += c
		}
		want := counts[f][0] / n
		got := params.Fields[f].Levels[0].M
		t.Logf("%s: m(exact) trained %.3f, counted over %d true pairs %.3f", f, got, int(n), want)
		if math.Abs(got-want) > 0.05 {
			t.Errorf("%s: m(exact) = %.3f, true pairs say %.3f", f, got, want)
		}
	}
	total := float64(len(recs)) * float64(len(recs)-1) / 2
	wantPrior := float64(truePairs) / total
	t.Logf("prior: trained %.3g, true %.3g", params.Prior, wantPrior)
	if r := params.Prior / wantPrior; r < 0.8 || r > 1.25 {
		t.Errorf("prior %.3g, true share of matching pairs %.3g", params.Prior, wantPrior)
	}
}

func TestTrain_IsDeterministic(t *testing.T) {
	recs := synthRecords(3000, 5)
	a, _, err := Train(context.Background(), recs, nil, DefaultModel(), TrainOptions{RandomPairs: 50_000, EstimatePrior: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := Train(context.Background(), recs, nil, DefaultModel(), TrainOptions{RandomPairs: 50_000, EstimatePrior: true})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.Params(), b.Params()) {
		t.Error("two trainings with the same seed differ")
	}
}

func TestTrain_RefusesTooFewRecords(t *testing.T) {
	if _, _, err := Train(context.Background(), []Record{{Family: "x"}}, nil, DefaultModel(), TrainOptions{}); err == nil {
		t.Error("Train on one record: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Train(ctx, synthRecords(3000, 6), nil, DefaultModel(), TrainOptions{}); err == nil {
		t.Error("Train with a cancelled context: no error")
	}
}

func TestModel_RoundTripsThroughJSON(t *testing.T) {
	b, err := DefaultModel().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseModel(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Params(), DefaultModel().Params()) {
		t.Error("parameters differ after a round trip")
	}
	for _, bad := range []string{`{}`, `{"prior": 2}`, `[`,
		`{"prior":0.001,"match_threshold":0.5,"possible_threshold":0.9,"fields":[]}`} {
		if _, err := ParseModel([]byte(bad)); err == nil {
			t.Errorf("ParseModel(%s): no error", bad)
		}
	}
}
