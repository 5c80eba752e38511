package match

import (
	"math/rand/v2"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var (
	sinkRecord  Record
	sinkPair    Pair
	sinkResults []Result
)

func BenchmarkNormalize(b *testing.B) {
	for _, bc := range []struct {
		name string
		d    *qhinv1.Demographics
	}{
		{"ASCII", demo("Robert James", "O'Connell", "1980-04-12", "male", "02139-4307", "+1 (617) 555-0123")},
		{"Accented", demo("José María", "Ordóñez García", "1980-04-12", "female", "02139-4307", "+1 (617) 555-0123")},
		{"InternationalPhone", demo("Robert James", "O'Connell", "1980-04-12", "male", "SW1A 1AA", "+44 (0)20 7946 0958")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkRecord = Normalize(bc.d)
			}
		})
	}
}

func BenchmarkCompare(b *testing.B) {
	q := prepare(Normalize(robert()))
	for _, bc := range []struct {
		name string
		r    *qhinv1.Demographics
	}{
		{"Identical", robert()},
		{"Typos", demo("Bob", "OConnel", "1980-04-21", "male", "94110", "")},
		{"Different", demo("Mary", "Smith", "1955-11-03", "female", "73301", "512-555-0456")},
	} {
		r := prepare(Normalize(bc.r))
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkPair = DefaultModel().compare(&q, &r, nil)
			}
		})
	}
}

// BenchmarkIndexSearch searches an index of 100,000 synthetic patients for
// perturbed copies of indexed patients (one field changed each), and
// reports the patients compared per search.
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
		case 3: // exact copy
		}
		queries[i] = q
	}
	compared := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		q := queries[i%len(queries)]
		sinkResults = x.Search(q, DefaultThreshold, 10)
		p := prepare(q)
		var bbuf [numKeys][]uint32
		x.mu.RLock()
		for _, blk := range x.blocksOf(blockKeys(&p, nil), bbuf[:0]) {
			compared += len(blk)
		}
		x.mu.RUnlock()
		i++
	}
	b.ReportMetric(float64(compared)/float64(i), "blocked/op")
}
