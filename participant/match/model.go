package match

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Model is a Fellegi–Sunter record-linkage model: for every field and
// comparison level, m, the probability of that level between two records of
// the same person, and u, its probability between two records of different
// people; and the prior, the probability that two records drawn at random
// are the same person. Comparing two records sums the match weights
// log2(m/u) of their fields' levels and the prior's log-odds into a total
// match weight, and turns it into a probability.
//
// A Model is immutable once built; share it freely. [DefaultModel] is the
// one the network uses until a member trains its own with [Train].
type Model struct {
	params  Params
	weights [NumFields][]float64 // log2(m/u) per level
	mExact  [NumFields]float64   // m of level 0, for term-frequency adjustment
	prior   float64              // log2 of the prior odds
}

// Params are a [Model]'s parameters as a JSON document holds them.
type Params struct {
	// Prior is λ, the probability that two records drawn at random are
	// the same person.
	Prior float64 `json:"prior"`
	// MatchThreshold and PossibleThreshold are the probabilities at which
	// a pair is a match and a possible match.
	MatchThreshold    float64 `json:"match_threshold"`
	PossibleThreshold float64 `json:"possible_threshold"`
	// Fields holds the m and u probabilities of every field's levels.
	Fields []FieldParams `json:"fields"`
	// Trained says where the parameters come from, for people.
	Trained string `json:"trained,omitempty"`
}

// FieldParams are the m and u probabilities of one field's levels.
type FieldParams struct {
	Field  string        `json:"field"`
	Levels []LevelParams `json:"levels"`
}

// LevelParams are the m and u probabilities of one comparison level.
type LevelParams struct {
	Level string  `json:"level"`
	M     float64 `json:"m"`
	U     float64 `json:"u"`
}

// Default thresholds on the probability that two records are the same
// person.
const (
	// MatchThreshold: a pair at least this likely is a match. The broker
	// merges two members' candidates into one person at it, and
	// `qhinctl match eval` counts the pairs found at it.
	MatchThreshold = 0.95
	// PossibleThreshold: a pair at least this likely, and under
	// MatchThreshold, is a possible match. A responder returns possible
	// matches too, labelled as such.
	PossibleThreshold = 0.5

	// DefaultThreshold is the lowest score of a candidate that a
	// responder returns for a discovery query: PossibleThreshold.
	DefaultThreshold = PossibleThreshold
	// SamePersonThreshold is the lowest score at which the broker treats
	// two candidates from different members as the same person:
	// MatchThreshold.
	SamePersonThreshold = MatchThreshold
)

// Bounds on trained and loaded probabilities. No level is impossible for
// either class: real registrations carry errors that no training set shows
// (a married name, a field replaced wholesale), so no single field can sink
// or make a match by an unbounded weight.
const (
	// minProbability bounds m and u from below, and with it a level's
	// weight to ±13.3 bits. m and u share the bound, so a level that
	// training saw in neither class weighs nothing.
	minProbability = 1e-4
	maxProbability = 1 - 1e-6
	// minDifferentM bounds m of each field's "different" level: at least
	// one registration in a hundred has any one field wrong beyond
	// recognition (a married name, a nickname missing from the table, a
	// date keyed wrong, a field left over from someone else), whether or
	// not a training set shows it. One replaced field then costs at most
	// about 6.6 bits, which the other fields' agreement can outweigh.
	minDifferentM = 0.01
	minPrior      = 1e-12
)

// ErrInvalidModel reports model parameters that cannot be used.
var ErrInvalidModel = errors.New("invalid match model")

// NewModel checks p and builds a Model from it: every field and level
// present once, in the order of [Levels]; probabilities in (0, 1];
// thresholds in (0, 1) with PossibleThreshold <= MatchThreshold. m and u
// are clamped to [1e-4, 1-1e-6].
func NewModel(p Params) (*Model, error) {
	if !(p.Prior > 0 && p.Prior < 1) {
		return nil, fmt.Errorf("%w: prior must be in (0, 1)", ErrInvalidModel)
	}
	if !(p.PossibleThreshold > 0 && p.PossibleThreshold <= p.MatchThreshold && p.MatchThreshold < 1) {
		return nil, fmt.Errorf("%w: thresholds must satisfy 0 < possible <= match < 1", ErrInvalidModel)
	}
	if len(p.Fields) != int(NumFields) {
		return nil, fmt.Errorf("%w: want %d fields, got %d", ErrInvalidModel, NumFields, len(p.Fields))
	}
	m := &Model{params: p}
	m.params.Fields = make([]FieldParams, NumFields)
	for f := range NumFields {
		fp := p.Fields[f]
		names := fieldLevels[f]
		if fp.Field != f.String() || len(fp.Levels) != len(names) {
			return nil, fmt.Errorf("%w: field %d must be %s with %d levels", ErrInvalidModel, f, f, len(names))
		}
		levels := make([]LevelParams, len(names))
		m.weights[f] = make([]float64, len(names))
		for i, lp := range fp.Levels {
			if lp.Level != names[i] {
				return nil, fmt.Errorf("%w: field %s level %d must be %s", ErrInvalidModel, f, i, names[i])
			}
			if !(lp.M > 0 && lp.M <= 1 && lp.U > 0 && lp.U <= 1) {
				return nil, fmt.Errorf("%w: field %s level %s: m and u must be in (0, 1]", ErrInvalidModel, f, names[i])
			}
			lp.M, lp.U = clampProb(lp.M), clampProb(lp.U)
			if i == len(names)-1 {
				lp.M = max(lp.M, minDifferentM)
			}
			levels[i] = lp
			m.weights[f][i] = math.Log2(lp.M / lp.U)
		}
		m.params.Fields[f] = FieldParams{Field: fp.Field, Levels: levels}
		m.mExact[f] = levels[0].M
	}
	m.params.Prior = max(p.Prior, minPrior)
	m.prior = math.Log2(m.params.Prior / (1 - m.params.Prior))
	return m, nil
}

func clampProb(p float64) float64 { return min(max(p, minProbability), maxProbability) }

// Params returns a copy of the model's parameters.
func (m *Model) Params() Params {
	p := m.params
	p.Fields = make([]FieldParams, len(m.params.Fields))
	for i, f := range m.params.Fields {
		p.Fields[i] = FieldParams{Field: f.Field, Levels: append([]LevelParams(nil), f.Levels...)}
	}
	return p
}

// WithPrior returns a copy of m with another prior.
func (m *Model) WithPrior(prior float64) (*Model, error) {
	p := m.Params()
	p.Prior = prior
	return NewModel(p)
}

// WithThresholds returns a copy of m with other thresholds.
func (m *Model) WithThresholds(match, possible float64) (*Model, error) {
	p := m.Params()
	p.MatchThreshold, p.PossibleThreshold = match, possible
	return NewModel(p)
}

// Weight returns the match weight in bits, log2(m/u), of a field's level;
// 0 for Missing.
func (m *Model) Weight(f Field, l Level) float64 {
	if l == Missing || f >= NumFields || int(l) >= len(m.weights[f]) {
		return 0
	}
	return m.weights[f][l]
}

// Decision is what a comparison of two records concludes.
type Decision uint8

// Decisions, weakest first.
const (
	NonMatch Decision = iota
	Possible
	Match
)

// String returns "non_match", "possible" or "match".
func (d Decision) String() string {
	switch d {
	case Match:
		return "match"
	case Possible:
		return "possible"
	}
	return "non_match"
}

// Pair is the outcome of comparing two records.
type Pair struct {
	// Levels holds each field's comparison level (Missing when a side
	// lacks the field) and Weights its match weight in bits.
	Levels  [NumFields]Level
	Weights [NumFields]float64
	// Weight is the total match weight in bits: the prior's log-odds plus
	// every field's weight.
	Weight float64
	// Probability is the probability that the two records are the same
	// person, 1/(1+2^-Weight).
	Probability float64
	// Identified reports whether both records have a given or family name
	// to compare and a field beyond the names (birth date, phone, address
	// or postal code) agreed at a level of positive weight. Names alone,
	// however rare, never link two records, and neither does a household
	// without a name.
	Identified bool
	// Decision is Match or Possible when Identified and Probability
	// reaches the model's threshold, else NonMatch.
	Decision Decision
}

// Score is the probability that counts for decisions: Probability when
// Identified, else 0.
func (p Pair) Score() float64 {
	if !p.Identified {
		return 0
	}
	return p.Probability
}

// A pair links only when both records have a name to compare and a field
// beyond the names agrees: names are common to strangers ("John Murray"),
// and a birth date and an address without a name are a household, not a
// person. Gender, city and state are shared by too many people to identify
// anyone.
var identifyingFields = [...]Field{FieldBirthDate, FieldPhone, FieldStreet, FieldPostalCode}

// agrees reports whether one of fields agrees at a level of positive weight.
func agrees(p *Pair, fields []Field) bool {
	for _, f := range fields {
		if p.Levels[f] != Missing && p.Weights[f] > 0 {
			return true
		}
	}
	return false
}

// Compare compares two records under the model, without term-frequency
// adjustment.
func (m *Model) Compare(a, b Record) Pair {
	pa, pb := prepare(a), prepare(b)
	return m.compare(&pa, &pb, nil)
}

// compare compares two prepared records, adjusting the weights of exact
// agreements on names, postal codes and cities by how common the value is
// when tf is not nil.
func (m *Model) compare(a, b *prepared, tf *TermFrequencies) Pair {
	var p Pair
	p.Levels = levels(a, b)
	p.Weight = m.prior
	for f := range NumFields {
		l := p.Levels[f]
		if l == Missing {
			continue
		}
		w := m.weights[f][l]
		switch {
		case f == FieldGender && l == 0:
			// Agreeing on gender is no evidence: half of everyone
			// shares it. Disagreeing counts against.
			w = 0
		case f == FieldCity && l == 0 && p.Levels[FieldPostalCode] == 0,
			f == FieldState && l == 0 && (p.Levels[FieldPostalCode] == 0 || p.Levels[FieldCity] == 0):
			// A postal code implies its city and state, a city its
			// state: agreeing on them again is no new evidence.
			w = 0
		case l == 0 && tf != nil:
			if u, ok := tf.u(f, a, b, m); ok {
				w = math.Log2(m.mExact[f] / u)
			}
		}
		p.Weights[f] = w
		p.Weight += w
	}
	p.Identified = (p.Levels[FieldGiven] != Missing || p.Levels[FieldFamily] != Missing) && agrees(&p, identifyingFields[:])
	p.Probability = probability(p.Weight)
	if p.Identified {
		switch {
		case p.Probability >= m.params.MatchThreshold:
			p.Decision = Match
		case p.Probability >= m.params.PossibleThreshold:
			p.Decision = Possible
		}
	}
	return p
}

// probability turns a match weight in bits into a probability.
func probability(weight float64) float64 {
	return 1 / (1 + math.Exp2(-weight))
}

// Thresholds returns the model's match and possible-match thresholds.
func (m *Model) Thresholds() (match, possible float64) {
	return m.params.MatchThreshold, m.params.PossibleThreshold
}

// MarshalJSON writes the model's parameters.
func (m *Model) MarshalJSON() ([]byte, error) { return json.Marshal(m.params) }

// ParseModel reads model parameters written by [Model.MarshalJSON] and
// checks them with [NewModel].
func ParseModel(b []byte) (*Model, error) {
	var p Params
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidModel, err)
	}
	return NewModel(p)
}

//go:embed data/default_model.json
var defaultModelJSON []byte

var defaultModel = func() *Model {
	m, err := ParseModel(defaultModelJSON)
	if err != nil {
		panic("match: data/default_model.json: " + err.Error())
	}
	return m
}()

// DefaultModel returns the model the network uses when a member has trained
// none: m and u trained by [Train] on a synthetic population
// (participant/synth; see data/default_model.json and DESIGN.md), with the
// prior of a network of about ten million people.
func DefaultModel() *Model { return defaultModel }

// Score returns the probability that a and b are the same person under the
// default model, without term-frequency adjustment, or 0 when nothing but
// their names agrees (see [Pair.Score]). It is symmetric.
func Score(a, b Record) float64 { return defaultModel.Compare(a, b).Score() }

// SamePerson reports whether a and b are the same person under the default
// model: their comparison is a [Match]. The broker merges candidates of
// different members with it.
func SamePerson(a, b Record) bool { return defaultModel.Compare(a, b).Decision == Match }

// Explanation returns the pair's comparison for a discovery answer: the
// decision, the total match weight, and each field both records hold with
// its level and weight. It names fields and levels only, never a value.
func (p Pair) Explanation() *qhinv1.MatchExplanation {
	e := &qhinv1.MatchExplanation{MatchWeight: p.Weight}
	switch p.Decision {
	case Match:
		e.Decision = qhinv1.MatchDecision_MATCH_DECISION_MATCH
	case Possible:
		e.Decision = qhinv1.MatchDecision_MATCH_DECISION_POSSIBLE
	}
	for f := range NumFields {
		if l := p.Levels[f]; l != Missing {
			e.Fields = append(e.Fields, &qhinv1.FieldComparison{Field: f.String(), Level: fieldLevels[f][l], Weight: p.Weights[f]})
		}
	}
	return e
}

// ScoreDemographics normalizes a and b and scores them with [Score].
func ScoreDemographics(a, b *qhinv1.Demographics) float64 { return Score(Normalize(a), Normalize(b)) }
