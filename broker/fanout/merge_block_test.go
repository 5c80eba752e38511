package fanout

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/synth"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// mergeEveryPair is the merge without blocking: every candidate is
// compared with every person. MergePersons must group candidates as it does.
func mergeEveryPair(found []Found) []*qhinv1.Person {
	var all []candidate
	for _, f := range found {
		for _, c := range f.Candidates {
			all = append(all, candidate{member: f.ParticipantID, c: c, rec: match.Normalize(c.GetDemographics())})
		}
	}
	slices.SortStableFunc(all, func(a, b candidate) int {
		if a.c.Score != b.c.Score {
			return cmp.Compare(b.c.Score, a.c.Score)
		}
		if a.member != b.member {
			return cmp.Compare(a.member, b.member)
		}
		return cmp.Compare(a.c.PatientId, b.c.PatientId)
	})
	var persons []*person
	for _, c := range all {
		var home *person
		bestScore := 0.0
		for _, p := range persons {
			if p.members[c.member] {
				continue
			}
			worst := 1.0
			for _, r := range p.records {
				worst = min(worst, pairScore(c.rec, r))
			}
			if worst >= match.SamePersonThreshold && worst > bestScore {
				home, bestScore = p, worst
			}
		}
		if home == nil {
			home = &person{best: c.c, members: map[string]bool{}}
			persons = append(persons, home)
		}
		home.members[c.member] = true
		home.records = append(home.records, c.rec)
		home.links = append(home.links, &qhinv1.PersonLink{ParticipantId: c.member, PatientId: c.c.PatientId, Score: c.c.Score})
	}
	out := make([]*qhinv1.Person, len(persons))
	for i, p := range persons {
		out[i] = &qhinv1.Person{Links: p.links, Demographics: p.best.GetDemographics()}
	}
	return out
}

// syntheticFound registers persons people across members, with the typos,
// nicknames, moves and missing fields of real registrations, and answers
// with every registration as a candidate.
func syntheticFound(t testing.TB, seed int64, persons, members int) []Found {
	t.Helper()
	var ids []string
	for m := range members {
		ids = append(ids, fmt.Sprintf("p%d", m+1))
	}
	byMember := map[string]*Found{}
	var found []Found
	err := synth.Generate(synth.Options{Seed: seed, Persons: persons, Participants: ids, SharedFraction: 0.6, MaxDocuments: -1},
		func(r synth.Registration) error {
			f := byMember[r.ParticipantID]
			if f == nil {
				found = append(found, Found{ParticipantID: r.ParticipantID})
				f = &found[len(found)-1]
				byMember[r.ParticipantID] = f
			}
			f.Candidates = append(f.Candidates, cand(r.PatientID, r.Demographics, 0.85+float64(len(f.Candidates)%15)/100))
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	// Re-point the map's entries: appends above may have moved found.
	out := make([]Found, len(found))
	for i := range found {
		out[i] = *byMember[found[i].ParticipantID]
	}
	return out
}

func grouping(ps []*qhinv1.Person) []string {
	var out []string
	for _, p := range ps {
		var ls []string
		for _, l := range p.Links {
			ls = append(ls, l.ParticipantId+"/"+l.PatientId)
		}
		out = append(out, strings.Join(ls, " "))
	}
	return out
}

func TestMergePersons_GroupsAsComparingEveryPairDoes(t *testing.T) {
	for _, tc := range []struct {
		seed             int64
		persons, members int
	}{
		{1, 300, 3}, {2, 300, 5}, {3, 200, 8}, {4, 500, 2},
	} {
		t.Run(fmt.Sprintf("seed %d, %d persons at %d members", tc.seed, tc.persons, tc.members), func(t *testing.T) {
			found := syntheticFound(t, tc.seed, tc.persons, tc.members)
			want := grouping(mergeEveryPair(found))
			got := grouping(MergePersons(context.Background(), found))
			if !slices.Equal(got, want) {
				diff := 0
				for i := range min(len(got), len(want)) {
					if got[i] != want[i] {
						diff++
						if diff <= 5 {
							t.Errorf("person %d: %q, comparing every pair gives %q", i, got[i], want[i])
						}
					}
				}
				t.Errorf("%d persons (every pair: %d), %d differ", len(got), len(want), diff)
			}
		})
	}
}

func TestMergePersons_ComparesNearLinearly(t *testing.T) {
	countingScore := func(n *int) func(a, b match.Record) float64 {
		return func(a, b match.Record) float64 {
			*n++
			return pairScore(a, b)
		}
	}
	// Many members answering with different people; the cost per
	// candidate must not grow with the number of candidates.
	for _, persons := range []int{500, 2000} {
		found := syntheticFound(t, 7, persons, 10)
		total := 0
		for _, f := range found {
			total += len(f.Candidates)
		}
		calls := 0
		mergePersons(context.Background(), found, countingScore(&calls))
		t.Logf("%d candidates: %d comparisons", total, calls)
		if calls > 8*total {
			t.Errorf("%d candidates took %d comparisons, more than 8 per candidate", total, calls)
		}
	}
	// A flood of identical candidates from many members: every one lands
	// in the same blocks, which hold at most maxBlock persons.
	var flood []Found
	for m := range 50 {
		f := Found{ParticipantID: fmt.Sprintf("m%02d", m)}
		for c := range 100 {
			f.Candidates = append(f.Candidates, cand(fmt.Sprintf("h%d", c), robert, 1))
		}
		flood = append(flood, f)
	}
	calls := 0
	ps := mergePersons(context.Background(), flood, countingScore(&calls))
	t.Logf("flood of 5000 identical candidates: %d comparisons, %d persons", calls, len(ps))
	if limit := 5000 * 5 * maxBlock; calls > limit {
		t.Errorf("a flood of 5000 identical candidates took %d comparisons, want at most %d", calls, limit)
	}
}

func TestMergePersons_StopsComparingAtTheDeadline(t *testing.T) {
	found := syntheticFound(t, 3, 200, 4)
	total := 0
	for _, f := range found {
		total += len(f.Candidates)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls := 0
	ps := mergePersons(ctx, found, func(a, b match.Record) float64 { calls++; return pairScore(a, b) })
	if calls != 0 {
		t.Errorf("%d comparisons after the deadline", calls)
	}
	links := 0
	for _, p := range ps {
		links += len(p.Links)
	}
	if links != total {
		t.Errorf("%d links out of %d candidates: a stopped merge must still return every candidate", links, total)
	}
}

func TestMergePersons_EachBlockingKeyBringsItsPairTogether(t *testing.T) {
	// Each pair is one person as the matcher scores it, and shares exactly
	// one blocking key with itself: without that key the pair would never
	// be compared.
	for _, tc := range []struct {
		name string
		a, b *qhinv1.Demographics
		key  byte
	}{
		{"same birth date, both names misspelt at the start", demo("Katherine", "Kowalski", "1980-03-14", "female", "", ""),
			demo("Catherine", "Cowalski", "1980-03-14", "female", "", ""), 'd'},
		{"same names and street, birth dates a digit apart", withStreet(demo("Robert", "Smith", "1980-03-14", "male", "", ""), "12 Elm St"),
			withStreet(demo("Robert", "Smith", "1980-03-12", "male", "", ""), "12 Elm Street"), 'n'},
		{"same phone, one without a birth date, family name misspelt", demo("Katherine", "Kowalski", "1980-03-14", "female", "", "617-555-0100"),
			demo("Katherine", "Cowalski", "", "female", "", "617-555-0100"), 'p'},
		{"same postal code and given name, family name misspelt", demo("Katherine", "Kowalski", "1980-03-14", "female", "02139", ""),
			demo("Katherine", "Cowalski", "", "female", "02139", ""), 'z'},
		{"same postal code and family name, given name misspelt", demo("Mikhail", "Kowalski", "1980-03-14", "male", "02139", ""),
			demo("Nikhail", "Kowalski", "", "male", "02139", ""), 'y'},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ra, rb := match.Normalize(tc.a), match.Normalize(tc.b)
			if s := pairScore(ra, rb); s < match.SamePersonThreshold {
				t.Fatalf("the pair scores %.3f: not one person to begin with", s)
			}
			shared := map[byte]int{}
			kb := blockingKeys(rb, nil)
			for _, k := range blockingKeys(ra, nil) {
				if slices.Contains(kb, k) {
					shared[k[0]]++
				}
			}
			if len(shared) != 1 || shared[tc.key] != 1 {
				t.Fatalf("the pair shares keys %v, want only %q", shared, tc.key)
			}
			found := []Found{{ParticipantID: "p1", Candidates: []*qhinv1.Candidate{cand("a", tc.a, 0.95)}},
				{ParticipantID: "p2", Candidates: []*qhinv1.Candidate{cand("b", tc.b, 0.9)}}}
			if ps := MergePersons(context.Background(), found); len(ps) != 1 {
				t.Errorf("%d persons, want the pair as one", len(ps))
			}
		})
	}
}

func withStreet(d *qhinv1.Demographics, line string) *qhinv1.Demographics {
	d.Address.Lines = []string{line}
	return d
}
