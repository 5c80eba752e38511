package match

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"math"
	"os"
	"testing"

	"github.com/openqhin/openqhin/participant/synth"
)

var updateModel = flag.Bool("update-model", false, "retrain data/default_model.json from the synthetic population")

// The default model's recipe: what data/default_model.json is trained on.
const (
	defaultTrainSeed    = 20260101
	defaultTrainPersons = 30_000
	// defaultPrior is λ of the default model: one in a million, the
	// chance that a record drawn at random from an index of a million
	// patients is the person asked about. It is set, not trained: a
	// synthetic population's share of duplicates says nothing about a
	// real network's.
	defaultPrior = 1e-6
)

// syntheticTrainingSet returns the records of a synthetic population
// registered at three members (30% of persons at two or three of them, with
// typos, nicknames, moves, missing phones and birth-date slips), as the
// default model is trained on, and each record's person.
func syntheticTrainingSet(t testing.TB, seed int64, persons int) (recs []Record, person []string) {
	t.Helper()
	err := synth.Generate(synth.Options{Seed: seed, Persons: persons, Participants: []string{"p1", "p2", "p3"}, MaxDocuments: -1},
		func(r synth.Registration) error {
			recs = append(recs, Normalize(r.Demographics))
			person = append(person, r.PersonID)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return recs, person
}

// trainDefaultModel trains the default model from its recipe.
func trainDefaultModel(t testing.TB) (*Model, TrainReport) {
	t.Helper()
	recs, _ := syntheticTrainingSet(t, defaultTrainSeed, defaultTrainPersons)
	base, err := defaultModel.WithPrior(defaultPrior)
	if err != nil {
		t.Fatal(err)
	}
	m, rep, err := Train(context.Background(), recs, nil, base, TrainOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := m.Params()
	p.Trained = "EM (match.Train) on participant/synth, seed 20260101, 30000 persons at p1, p2, p3; prior set to 1e-6"
	for f := range p.Fields {
		for l := range p.Fields[f].Levels {
			lp := &p.Fields[f].Levels[l]
			lp.M, lp.U = round6(lp.M), round6(lp.U)
		}
	}
	m, err = NewModel(p)
	if err != nil {
		t.Fatal(err)
	}
	return m, rep
}

func round6(x float64) float64 {
	if x == 0 {
		return 0
	}
	scale := math.Pow(10, 5-math.Floor(math.Log10(math.Abs(x))))
	return math.Round(x*scale) / scale
}

// TestDefaultModel_IsTrainedOnSynthetic retrains the default model from its
// recipe and checks that data/default_model.json holds what training gives,
// so that the shipped parameters are reproducible. Run with -update-model
// to rewrite the file.
func TestDefaultModel_IsTrainedOnSynthetic(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("trains on 30,000 synthetic persons (run without -race and -short)")
	}
	m, rep := trainDefaultModel(t)
	for _, r := range rep.Rules {
		t.Log(r)
	}
	for _, n := range rep.Notes {
		t.Log(n)
	}
	b, err := json.MarshalIndent(m.Params(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	if *updateModel {
		if err := os.WriteFile("data/default_model.json", b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(b, defaultModelJSON) {
		t.Errorf("data/default_model.json differs from what training gives; run go test -run TestDefaultModel -update-model ./participant/match\n%s", b)
	}
}
