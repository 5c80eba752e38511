package fanout

import (
	"cmp"
	"slices"

	"github.com/openqhin/openqhin/participant/match"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Found is one member's candidates for a discovery query.
type Found struct {
	ParticipantID string
	Candidates    []*qhinv1.Candidate
}

type person struct {
	links   []*qhinv1.PersonLink
	records []match.Record
	best    *qhinv1.Candidate
	members map[string]bool
}

// MergePersons groups candidates from different members that are the same
// person (their demographics score at least match.SamePersonThreshold against
// every record already in the person) into one Person with a link per member
// record. Candidates of one member never merge with each other: a member's
// two records are two patients as far as the network can tell. Persons come
// best score first; each carries the demographics of its best link.
func MergePersons(found []Found) []*qhinv1.Person {
	type cand struct {
		member string
		c      *qhinv1.Candidate
		rec    match.Record
	}
	var all []cand
	for _, f := range found {
		for _, c := range f.Candidates {
			all = append(all, cand{member: f.ParticipantID, c: c, rec: match.Normalize(c.GetDemographics())})
		}
	}
	// Best first, so each person is seeded by its most certain record.
	slices.SortStableFunc(all, func(a, b cand) int {
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
			// Complete linkage: the candidate must agree with every record
			// already in the person, so that A~B and B~C never make A, B
			// and C one person when A and C disagree.
			worst := 1.0
			for _, r := range p.records {
				worst = min(worst, match.Score(c.rec, r))
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
