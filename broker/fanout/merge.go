package fanout

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/openqhin/openqhin/participant/match"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Found is one member's candidates for a discovery query.
type Found struct {
	ParticipantID string
	Candidates    []*qhinv1.Candidate
}

// pairScore is the one place the merge compares two records: how likely
// they are the same person, in [0, 1]. It is the matcher's pairwise score;
// a new matching model replaces this call and nothing else.
func pairScore(a, b match.Record) float64 { return match.Score(a, b) }

// samePersonThreshold is the least pairScore of two records of one person.
const samePersonThreshold = match.SamePersonThreshold

// certain is the score above which the merge no longer tells homes apart:
// the model's probabilities approach 1 without reaching it, and a home this
// sure cannot be bettered enough to be worth more comparisons.
const certain = 0.9999

// maxBlock caps the persons one blocking key files. Honest answers to one
// query put a handful of persons under a key; only a flood fills one, and
// then a candidate is still compared with at most this many persons per key.
const maxBlock = 64

// checkEvery is how many candidates the merge places between looks at the
// deadline.
const checkEvery = 32

type person struct {
	links   []*qhinv1.PersonLink
	records []match.Record
	best    *qhinv1.Candidate
	members map[string]bool
	// seen is the last candidate that looked at this person, so that a
	// person found under several keys is scored once.
	seen int
}

type candidate struct {
	member string
	c      *qhinv1.Candidate
	rec    match.Record
}

// MergePersons groups candidates from different members that are the same
// person (their demographics score at least match.SamePersonThreshold against
// every record already in the person) into one Person with a link per member
// record. Candidates of one member never merge with each other: a member's
// two records are two patients as far as the network can tell. Persons come
// best score first; each carries the demographics of its best link.
//
// A candidate is compared only with the persons that share a blocking key
// with it (its exact birth date, the starts of its names, its phone, its
// postal code with a name's initial), at most maxBlock persons per key, so
// the merge is near-linear in the number of candidates. When ctx ends it
// stops comparing: the candidates not yet placed become persons of their
// own, so the caller still gets every link.
func MergePersons(ctx context.Context, found []Found) []*qhinv1.Person {
	return mergePersons(ctx, found, pairScore)
}

func mergePersons(ctx context.Context, found []Found, score func(a, b match.Record) float64) []*qhinv1.Person {
	var all []candidate
	for _, f := range found {
		for _, c := range f.Candidates {
			all = append(all, candidate{member: f.ParticipantID, c: c, rec: match.Normalize(c.GetDemographics())})
		}
	}
	// Best first, so each person is seeded by its most certain record.
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
	blocks := map[string][]int{}
	var keys []string
	stopped := false
	for i, c := range all {
		if !stopped && i%checkEvery == 0 && ctx.Err() != nil {
			stopped = true
		}
		var home *person
		if !stopped {
			keys = blockingKeys(c.rec, keys[:0])
			bestScore, bestIndex := 0.0, 0
			for _, k := range keys {
				for _, pi := range blocks[k] {
					if bestScore >= certain && pi > bestIndex {
						break // a block lists persons in order: none after can do better
					}
					p := persons[pi]
					if p.seen == i+1 || p.members[c.member] {
						continue
					}
					p.seen = i + 1
					// Complete linkage: the candidate must agree with every
					// record already in the person, so that A~B and B~C never
					// make A, B and C one person when A and C disagree. Of
					// equally good homes the earliest (best seeded) wins.
					worst := worstScore(c.rec, p.records, max(bestScore, samePersonThreshold), score)
					if worst > bestScore || worst > 0 && worst == bestScore && pi < bestIndex {
						home, bestScore, bestIndex = p, worst, pi
					}
				}
			}
		}
		if home == nil {
			home = &person{best: c.c, members: map[string]bool{}}
			persons = append(persons, home)
			for _, k := range keys {
				if !stopped && len(blocks[k]) < maxBlock {
					blocks[k] = append(blocks[k], len(persons)-1)
				}
			}
		}
		home.members[c.member] = true
		home.records = append(home.records, c.rec)
		home.links = append(home.links, &qhinv1.PersonLink{
			ParticipantId: c.member, PatientId: c.c.PatientId, Score: c.c.Score, Explanation: c.c.GetExplanation(),
		})
	}

	out := make([]*qhinv1.Person, len(persons))
	for i, p := range persons {
		out[i] = &qhinv1.Person{Links: p.links, Demographics: p.best.GetDemographics()}
	}
	return out
}

// worstScore is the lowest score of r against records, or 0 as soon as it
// falls below floor: then the person can neither take r nor beat a better
// home.
func worstScore(r match.Record, records []match.Record, floor float64, score func(a, b match.Record) float64) float64 {
	worst := 1.0
	for _, o := range records {
		if worst = min(worst, score(r, o)); worst < floor {
			return 0
		}
	}
	return worst
}

// blockingKeys appends the keys r is filed under. Two records that score
// SamePersonThreshold or more share one: with the same birth date they share
// "d"; with different birth dates a score that high needs names that agree
// exactly ("n", which also catches given and family names entered the wrong
// way round); without a birth date on one side, names with a typo still
// meet through the phone ("p") or the postal code with a name's initial
// ("z", "y").
func blockingKeys(r match.Record, keys []string) []string {
	if r.HasBirthDate() {
		keys = append(keys, fmt.Sprintf("d%04d%02d%02d", r.BirthYear, r.BirthMonth, r.BirthDay))
	}
	family, given := prefix(r.Family, 2), prefix(r.CanonicalFirstName(), 2)
	if family != "" || given != "" {
		a, b := min(family, given), max(family, given)
		keys = append(keys, "n"+a+"|"+b)
	}
	if r.Phone != "" {
		keys = append(keys, "p"+r.Phone)
	}
	if r.PostalCode != "" {
		if given != "" {
			keys = append(keys, "z"+r.PostalCode+"|"+prefix(given, 1))
		}
		if family != "" {
			keys = append(keys, "y"+r.PostalCode+"|"+prefix(family, 1))
		}
	}
	return keys
}

// prefix returns the first n runes of s.
func prefix(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

// MergeDocuments de-duplicates documents by id and SHA-256 and sorts them
// newest first (then by source member and id, for a stable order).
func MergeDocuments(lists ...[]*qhinv1.DocumentMetadata) []*qhinv1.DocumentMetadata {
	type key struct{ id, sha string }
	seen := map[key]bool{}
	var out []*qhinv1.DocumentMetadata
	for _, l := range lists {
		for _, d := range l {
			k := key{d.Id, d.Sha256}
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, d)
		}
	}
	slices.SortStableFunc(out, func(a, b *qhinv1.DocumentMetadata) int {
		if c := b.GetCreated().AsTime().Compare(a.GetCreated().AsTime()); c != 0 {
			return c
		}
		if c := cmp.Compare(a.SourceParticipantId, b.SourceParticipantId); c != 0 {
			return c
		}
		return cmp.Compare(a.Id, b.Id)
	})
	return out
}
