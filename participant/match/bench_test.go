package match

import (
	"math/rand/v2"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var (
	sinkRecord  Record
	sinkScore   float64
	sinkResults []Result
)

func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct {
		name string
		d    *qhinv1.Demographics
	}{
		{"ASCII", demo("Robert James", "O'Connell", "1980-04-12", "male", "02139-4307", "+1 (617) 555-0123")},
		{"Accented", demo("José María", "Ordóñez García", "1980-04-12", "female", "02139-4307", "+1 (617) 555-0123")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkRecord = Normalize(bc.d)
			}
		})
	}
}

func BenchmarkScore(b *testing.B) {
	q := Normalize(robert())
	for _, bc := range []struct {
		name string
		r    Record
	}{
		{"Identical", Normalize(robert())},
		{"Typos", Normalize(demo("Bob", "OConnel", "1980-04-21", "male", "94110", ""))},
		{"Different", Normalize(demo("Mary", "Smith", "1955-11-03", "female", "73301", "512-555-0456"))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkScore = Score(q, bc.r)
			}
		})
	}
}

// BenchmarkJaroWinkler measures the string similarity Score spends most of
// its time in.
func BenchmarkJaroWinkler(b *testing.B) {
	pairs := [][2]string{{"oconnell", "oconel"}, {"robert", "rupert"}, {"katherine", "catherine"}, {"smith", "garcia"}}
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range pairs {
			sinkScore = jaroWinkler(p[0], p[1])
		}
	}
}

// BenchmarkIndexSearch searches an index of 100,000 synthetic patients for
// perturbed copies of indexed patients (one field changed each).
func BenchmarkIndexSearch(b *testing.B) {
	recs := synthRecords(100_000, 42)
	x := fillIndex(recs)
	rng := rand.New(rand.NewPCG(7, 7))
	queries := make([]Record, 1024)
	for i := range queries {
		q := recs[rng.IntN(len(recs))]
		q.Given = append([]string(nil), q.Given...)
		switch i % 4 {
		case 0: // typo in the family name
			f := []byte(q.Family)
			f[rng.IntN(len(f))] = 'a' + byte(rng.IntN(26))
			q.Family = string(f)
		case 1: // birth day off by one digit
			q.BirthDay = q.BirthDay%28 + 1
		case 2: // moved
			q.PostalCode, q.Phone = "99999", ""
		case 3: // nickname-free exact copy
		}
		queries[i] = q
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sinkResults = x.Search(queries[i%len(queries)], DefaultThreshold, 10)
		i++
	}
}
