package fanout

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/participant/match"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func demo(given, family, birth, gender, postal, phone string) *qhinv1.Demographics {
	return &qhinv1.Demographics{
		Given: given, Family: family, BirthDate: birth, Gender: gender,
		Address: &qhinv1.Address{PostalCode: postal}, Phone: phone,
	}
}

// Fake people. robertAlt is robert with a nickname and a typo in the family
// name, as another member would have entered him.
var (
	robert    = demo("Robert", "Smith", "1980-03-14", "male", "02139", "617-555-0100")
	robertAlt = demo("Bob", "Smtih", "1980-03-14", "male", "02139", "")
	alice     = demo("Alice", "Jones", "1991-11-02", "female", "94110", "415-555-0199")
	mark      = demo("Mark", "Brown", "1955-07-30", "male", "60614", "")
)

func cand(patientID string, d *qhinv1.Demographics, score float64) *qhinv1.Candidate {
	return &qhinv1.Candidate{PatientId: patientID, Demographics: d, Score: score}
}

// link is a PersonLink in a compact, comparable form.
type link struct {
	member, patient string
}

func links(p *qhinv1.Person) []link {
	var out []link
	for _, l := range p.GetLinks() {
		out = append(out, link{l.GetParticipantId(), l.GetPatientId()})
	}
	return out
}

func TestMergePersons_FixturesScoreAsIntended(t *testing.T) {
	// The table below relies on these scores; check them so that a change
	// of the scoring shows here rather than as a puzzling merge failure.
	if s := match.ScoreDemographics(robert, robertAlt); s < match.SamePersonThreshold {
		t.Errorf("robert vs robertAlt = %.3f, want >= %.2f", s, match.SamePersonThreshold)
	}
	for _, pair := range [][2]*qhinv1.Demographics{{robert, alice}, {robert, mark}, {alice, mark}} {
		if s := match.ScoreDemographics(pair[0], pair[1]); s >= match.SamePersonThreshold {
			t.Errorf("%s vs %s = %.3f, want < %.2f", pair[0].Given, pair[1].Given, s, match.SamePersonThreshold)
		}
	}
}

func TestMergePersons(t *testing.T) {
	tests := []struct {
		name  string
		found []Found
		// want lists each person's links, persons in output order.
		want [][]link
		// wantDemo is each person's demographics.
		wantDemo []*qhinv1.Demographics
	}{
		{
			name:     "no members",
			found:    nil,
			want:     nil,
			wantDemo: nil,
		},
		{
			name:     "members without candidates",
			found:    []Found{{ParticipantID: "m1"}, {ParticipantID: "m2"}},
			want:     nil,
			wantDemo: nil,
		},
		{
			name: "same person at two members merges into one person",
			found: []Found{
				{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("p1", robert, 0.97)}},
				{ParticipantID: "m2", Candidates: []*qhinv1.Candidate{cand("x9", robertAlt, 0.91)}},
			},
			want:     [][]link{{{"m1", "p1"}, {"m2", "x9"}}},
			wantDemo: []*qhinv1.Demographics{robert},
		},
		{
			name: "best scoring link represents the person whatever the input order",
			found: []Found{
				{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("p1", robertAlt, 0.88)}},
				{ParticipantID: "m2", Candidates: []*qhinv1.Candidate{cand("x9", robert, 0.99)}},
			},
			want:     [][]link{{{"m2", "x9"}, {"m1", "p1"}}},
			wantDemo: []*qhinv1.Demographics{robert},
		},
		{
			name: "different people stay apart",
			found: []Found{
				{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("p1", robert, 0.95)}},
				{ParticipantID: "m2", Candidates: []*qhinv1.Candidate{cand("x1", alice, 0.93)}},
			},
			want:     [][]link{{{"m1", "p1"}}, {{"m2", "x1"}}},
			wantDemo: []*qhinv1.Demographics{robert, alice},
		},
		{
			name: "persons come best score first",
			found: []Found{
				{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("p1", mark, 0.86), cand("p2", alice, 0.99)}},
				{ParticipantID: "m2", Candidates: []*qhinv1.Candidate{cand("x1", robert, 0.92)}},
			},
			want:     [][]link{{{"m1", "p2"}}, {{"m2", "x1"}}, {{"m1", "p1"}}},
			wantDemo: []*qhinv1.Demographics{alice, robert, mark},
		},
		{
			name: "alike candidates of one member are never merged",
			found: []Found{
				{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("p1", robert, 0.97), cand("p2", robertAlt, 0.90)}},
			},
			want:     [][]link{{{"m1", "p1"}}, {{"m1", "p2"}}},
			wantDemo: []*qhinv1.Demographics{robert, robertAlt},
		},
		{
			name: "identical candidates of one member are never merged",
			found: []Found{
				{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("p1", robert, 0.97), cand("p2", robert, 0.97)}},
			},
			want:     [][]link{{{"m1", "p1"}}, {{"m1", "p2"}}},
			wantDemo: []*qhinv1.Demographics{robert, robert},
		},
		{
			name: "another member's record joins one of a member's look-alikes",
			found: []Found{
				{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("p1", robert, 0.97), cand("p2", robert, 0.90)}},
				{ParticipantID: "m2", Candidates: []*qhinv1.Candidate{cand("x1", robertAlt, 0.95)}},
			},
			want:     [][]link{{{"m1", "p1"}, {"m2", "x1"}}, {{"m1", "p2"}}},
			wantDemo: []*qhinv1.Demographics{robert, robert},
		},
		{
			name: "three members, two people",
			found: []Found{
				{ParticipantID: "m3", Candidates: []*qhinv1.Candidate{cand("c1", alice, 0.90)}},
				{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("a1", robert, 0.96), cand("a2", alice, 0.94)}},
				{ParticipantID: "m2", Candidates: []*qhinv1.Candidate{cand("b1", robertAlt, 0.89)}},
			},
			want:     [][]link{{{"m1", "a1"}, {"m2", "b1"}}, {{"m1", "a2"}, {"m3", "c1"}}},
			wantDemo: []*qhinv1.Demographics{robert, alice},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MergePersons(context.Background(), tt.found)
			var gotLinks [][]link
			for _, p := range got {
				gotLinks = append(gotLinks, links(p))
			}
			if !slices.EqualFunc(gotLinks, tt.want, slices.Equal) {
				t.Fatalf("links = %v, want %v", gotLinks, tt.want)
			}
			for i, p := range got {
				if !proto.Equal(p.GetDemographics(), tt.wantDemo[i]) {
					t.Errorf("person %d demographics = %v, want %v", i, p.GetDemographics(), tt.wantDemo[i])
				}
				seen := map[string]bool{}
				for _, l := range p.GetLinks() {
					if seen[l.GetParticipantId()] {
						t.Errorf("person %d has two links to member %s", i, l.GetParticipantId())
					}
					seen[l.GetParticipantId()] = true
				}
				if i > 0 && got[i-1].GetLinks()[0].GetScore() < p.GetLinks()[0].GetScore() {
					t.Errorf("person %d (best %.2f) comes after a worse one (%.2f)", i,
						p.GetLinks()[0].GetScore(), got[i-1].GetLinks()[0].GetScore())
				}
			}
		})
	}
}

func TestMergePersons_LinksCarryMemberScores(t *testing.T) {
	got := MergePersons(context.Background(), []Found{
		{ParticipantID: "m1", Candidates: []*qhinv1.Candidate{cand("p1", robert, 0.97)}},
		{ParticipantID: "m2", Candidates: []*qhinv1.Candidate{cand("x9", robertAlt, 0.91)}},
	})
	if len(got) != 1 {
		t.Fatalf("got %d persons, want 1", len(got))
	}
	var scores []float64
	for _, l := range got[0].GetLinks() {
		scores = append(scores, l.GetScore())
	}
	if !slices.Equal(scores, []float64{0.97, 0.91}) {
		t.Errorf("link scores = %v, want [0.97 0.91]", scores)
	}
}

func doc(id, sha, source string, created time.Time) *qhinv1.DocumentMetadata {
	return &qhinv1.DocumentMetadata{Id: id, Sha256: sha, SourceParticipantId: source, Created: timestamppb.New(created)}
}

func TestMergeDocuments(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		name  string
		lists [][]*qhinv1.DocumentMetadata
		want  []string // "id/sha/source" in output order
	}{
		{name: "nothing", lists: nil, want: nil},
		{
			name: "same id and sha at two members is kept once",
			lists: [][]*qhinv1.DocumentMetadata{
				{doc("d1", "aa", "m1", t0)},
				{doc("d1", "aa", "m2", t0)},
			},
			want: []string{"d1/aa/m1"},
		},
		{
			name: "duplicate within one list is kept once",
			lists: [][]*qhinv1.DocumentMetadata{
				{doc("d1", "aa", "m1", t0), doc("d1", "aa", "m1", t0)},
			},
			want: []string{"d1/aa/m1"},
		},
		{
			name: "same id with different content is kept twice",
			lists: [][]*qhinv1.DocumentMetadata{
				{doc("d1", "aa", "m1", t0)},
				{doc("d1", "bb", "m2", t0)},
			},
			want: []string{"d1/aa/m1", "d1/bb/m2"},
		},
		{
			name: "newest first",
			lists: [][]*qhinv1.DocumentMetadata{
				{doc("old", "01", "m1", t0.Add(-day)), doc("new", "02", "m1", t0.Add(day))},
				{doc("mid", "03", "m2", t0)},
			},
			want: []string{"new/02/m1", "mid/03/m2", "old/01/m1"},
		},
		{
			name: "same time sorts by source member then id",
			lists: [][]*qhinv1.DocumentMetadata{
				{doc("b", "01", "m2", t0), doc("a", "02", "m2", t0)},
				{doc("z", "03", "m1", t0)},
			},
			want: []string{"z/03/m1", "a/02/m2", "b/01/m2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, d := range MergeDocuments(tt.lists...) {
				got = append(got, d.GetId()+"/"+d.GetSha256()+"/"+d.GetSourceParticipantId())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("MergeDocuments = %v, want %v", got, tt.want)
			}
		})
	}
}

// benchFound is members × perMember candidates: every member holds a few
// records of the searched person (with small variations) and some others.
func benchFound(members, perMember int) []Found {
	given := []string{"Robert", "Bob", "Rob", "Alice", "Mark", "Maria", "José"}
	family := []string{"Smith", "Smyth", "Jones", "Brown", "García López"}
	found := make([]Found, members)
	for m := range members {
		f := Found{ParticipantID: fmt.Sprintf("member-%02d", m)}
		for c := range perMember {
			d := demo(given[(m+c)%len(given)], family[(m*c)%len(family)],
				fmt.Sprintf("19%02d-0%d-1%d", 50+(m+c)%40, 1+c%9, c%10), "male",
				fmt.Sprintf("021%02d", c), "")
			f.Candidates = append(f.Candidates, cand(fmt.Sprintf("p%d", c), d, 0.85+float64((m+c)%15)/100))
		}
		found[m] = f
	}
	return found
}

func BenchmarkMergePersons(b *testing.B) {
	found := benchFound(16, 5)
	b.ReportAllocs()
	for b.Loop() {
		MergePersons(context.Background(), found)
	}
}

func BenchmarkMergeDocuments(b *testing.B) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	lists := make([][]*qhinv1.DocumentMetadata, 16)
	for m := range lists {
		for d := range 50 {
			// Every third document is also held by the previous member.
			id := fmt.Sprintf("doc-%d-%d", m, d)
			if d%3 == 0 && m > 0 {
				id = fmt.Sprintf("doc-%d-%d", m-1, d)
			}
			lists[m] = append(lists[m], doc(id, strings.Repeat("ab", 32), fmt.Sprintf("m%02d", m), t0.Add(time.Duration(d)*time.Hour)))
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		MergeDocuments(lists...)
	}
}
