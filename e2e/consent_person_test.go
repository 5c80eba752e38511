package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/client"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// rosalind is the person an operator revokes consent for, by the
// demographics a patient gives at the front desk.
var rosalind = &qhinv1.Demographics{Given: "Rosalind", Family: "Achterberg", BirthDate: "1972-09-14", Gender: "female"}

// seedRosalind puts her at p2 (with an address and a phone) and at p3
// (with a middle initial), both certain matches of her demographics, and,
// at p4, a patient with only the initial of her given name: a possible
// match only.
func seedRosalind(t *testing.T, n *Network) {
	t.Helper()
	ctx := context.Background()
	for _, s := range []struct {
		j  int
		id string
		d  *qhinv1.Demographics
	}{
		{1, "p2-000311", &qhinv1.Demographics{Given: "Rosalind", Family: "Achterberg", BirthDate: "1972-09-14", Gender: "female",
			Address: &qhinv1.Address{Lines: []string{"3 Elm St"}, City: "Albany", State: "NY", PostalCode: "12207"}, Phone: "518-555-0142"}},
		{2, "p3-5150", &qhinv1.Demographics{Given: "Rosalind M", Family: "Achterberg", BirthDate: "1972-09-14", Gender: "female"}},
		{3, "p4-0090", &qhinv1.Demographics{Given: "R", Family: "Achterberg", BirthDate: "1972-09-14", Gender: "female"}},
	} {
		if err := n.Participants[s.j].Server.PutPatient(ctx, s.id, s.d); err != nil {
			t.Fatal(err)
		}
	}
	day := time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC)
	putDoc(t, n, 1, "p2-000311", "p2-doc-r1", "34133-9", day, "summary at p2")
	putDoc(t, n, 2, "p3-5150", "p3-doc-r1", "11506-3", day, "progress note at p3")
	putDoc(t, n, 3, "p4-0090", "p4-doc-r1", "34133-9", day, "someone else's summary at p4")
}

// TestConsent_RevokeByDemographics: p1 finds Rosalind's records at p2 and
// p3 and reads their documents; an operator then revokes her consent to
// all exchange by her demographics. When the revoke returns, no broker
// discloses her records at p2 or p3 to p1 (discovery, document query with
// the links issued before, retrieval of a document found before), and the
// possible match at p4 is untouched. A participant may not call it; bad
// demographics are refused naming the field; the accounting of her
// disclosures by demographics lists p1's reads at p2 and p3; the logs
// carry none of her demographics.
func TestConsent_RevokeByDemographics(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 3, Participants: 4})
	seedRosalind(t, n)
	ctx := callCtx(t)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	discover := func(gw qhinv1.GatewayClient) (*qhinv1.DiscoverPatientsResponse, error) {
		return gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: rosalind})
	}
	disc, err := discover(gw)
	if err != nil || !discloses(disc.Persons, "p2", "p2-000311") || !discloses(disc.Persons, "p3", "p3-5150") || !discloses(disc.Persons, "p4", "p4-0090") {
		t.Fatalf("phase %q: %v, %v; want her records at p2 and p3 and the possible match at p4", "setup discovery", disc.GetPersons(), err)
	}
	links := personLinks(disc.Persons)
	before := map[string]string{} // member: a document link issued before the revoke
	for _, m := range []string{"p2", "p3"} {
		docs, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: []*qhinv1.PatientLink{links[m]}})
		if err != nil || len(docs.Documents) != 1 {
			t.Fatalf("phase %q: documents at %s: %v, %v", "setup documents", m, docs, err)
		}
		before[m] = docs.Documents[0].Link
		if _, err := readDoc(ctx, gw, before[m], false); err != nil {
			t.Fatalf("phase %q: retrieve at %s: %v", "setup retrieve", m, err)
		}
	}

	op := qhinv1.NewConsentClient(dial(t, n, n.Operator()).ClientConn)
	person := &qhinv1.PersonLookup{Demographics: rosalind}

	// Refusals first: nothing is revoked by them.
	if _, err := consentClient(t, n, 1).RevokeConsentByDemographics(ctx, &qhinv1.RevokeConsentByDemographicsRequest{Person: person}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a participant revokes by demographics: %v, want PermissionDenied", err)
	}
	for _, tc := range []struct {
		name, field string
		d           *qhinv1.Demographics
	}{
		{"no family name", "demographics.family", &qhinv1.Demographics{Given: "Rosalind", BirthDate: "1972-09-14", Gender: "female"}},
		{"birth date not a date", "demographics.birth_date", &qhinv1.Demographics{Given: "Rosalind", Family: "Achterberg", BirthDate: "1972-13-14", Gender: "female"}},
	} {
		_, err := op.RevokeConsentByDemographics(ctx, &qhinv1.RevokeConsentByDemographicsRequest{Person: &qhinv1.PersonLookup{Demographics: tc.d}})
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, tc.field) {
			t.Errorf("%s: %v, want InvalidArgument naming %s", tc.name, err, tc.field)
		}
		if strings.Contains(msg, "1972") || strings.Contains(msg, "Rosalind") {
			t.Errorf("%s: the refusal echoes the value: %q", tc.name, msg)
		}
	}
	if _, err := op.RevokeConsentByDemographics(ctx, &qhinv1.RevokeConsentByDemographicsRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no person: %v, want InvalidArgument", err)
	}

	resp, err := op.RevokeConsentByDemographics(ctx, &qhinv1.RevokeConsentByDemographicsRequest{Person: person})
	if err != nil {
		t.Fatalf("phase %q: %v", "revoke by demographics", err)
	}
	covered := map[string]string{}
	for _, d := range resp.Directives {
		if !d.OptOut {
			t.Errorf("directive %v: want an opt-out", d)
		}
		covered[d.ParticipantId] = d.PatientId
	}
	if len(covered) != 2 || covered["p2"] != "p2-000311" || covered["p3"] != "p3-5150" {
		t.Errorf("directives for %v, want p2's and p3's records only", covered)
	}
	if len(resp.GetLookup().GetUnanswered()) != 0 {
		t.Errorf("unanswered %v, want none", resp.Lookup.Unanswered)
	}
	for _, m := range resp.GetLookup().GetMembers() {
		if m.ParticipantId == "p4" && (len(m.PatientIds) != 0 || m.Possible != 1) {
			t.Errorf("p4: %v, want its possible match counted, not covered", m)
		}
	}

	// Right after it returns, through every broker.
	for _, b := range n.Brokers {
		c, err := client.Dial([]string{b.GRPCAddr}, n.ParticipantSource(0), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		bgw := c.Gateway()
		disc, err := discover(bgw)
		if err != nil || discloses(disc.Persons, "p2", "p2-000311") || discloses(disc.Persons, "p3", "p3-5150") {
			t.Errorf("broker %s: discovery after the revoke: %v, %v; want neither p2's nor p3's record", b.ID, disc.GetPersons(), err)
		}
		if !discloses(disc.GetPersons(), "p4", "p4-0090") {
			t.Errorf("broker %s: the possible match at p4 was withheld: %v", b.ID, disc.GetPersons())
		}
		docs, err := bgw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
			Links: []*qhinv1.PatientLink{links["p2"], links["p3"]}})
		if err != nil || len(docs.Documents) != 0 {
			t.Errorf("broker %s: documents after the revoke with links issued before: %v, %v; want none", b.ID, docs.GetDocuments(), err)
		}
		for m, l := range before {
			if _, err := readDoc(ctx, bgw, l, false); status.Code(err) != codes.PermissionDenied {
				t.Errorf("broker %s: retrieval of %s's document after the revoke: %v, want PermissionDenied", b.ID, m, err)
			}
		}
	}

	// The accounting by demographics: the lookup, then every broker's
	// ledger for each record.
	if _, err := consentClient(t, n, 1).FindPatientRecords(ctx, &qhinv1.FindPatientRecordsRequest{Person: person}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a participant looks a person up: %v, want PermissionDenied", err)
	}
	found, err := op.FindPatientRecords(ctx, &qhinv1.FindPatientRecordsRequest{Person: person})
	if err != nil {
		t.Fatalf("phase %q: %v", "lookup", err)
	}
	var reqs []*qhinv1.ListDisclosuresRequest
	for _, m := range found.Lookup.Members {
		for _, id := range m.PatientIds {
			reqs = append(reqs, &qhinv1.ListDisclosuresRequest{ParticipantId: m.ParticipantId, PatientId: id})
		}
	}
	opConn := dial(t, n, n.Operator())
	all, failed, err := client.Disclosures(ctx, opConn, n.Operator(), reqs)
	if err != nil || len(failed) != 0 {
		t.Fatalf("phase %q: %v, failed %v", "accounting", err, failed)
	}
	got := map[string]int{}
	for _, d := range all {
		if d.InitiatorParticipantId != "p1" {
			t.Errorf("disclosure %v: want to p1", d)
		}
		got[d.RecordParticipantId+" "+d.Action]++
	}
	for _, want := range []string{"p2 discover", "p2 documents", "p2 retrieve", "p3 discover", "p3 documents", "p3 retrieve"} {
		if got[want] != 1 {
			t.Errorf("accounting %v: want one %q", got, want)
		}
	}
	for i := 1; i < len(all); i++ {
		if all[i].Time.AsTime().After(all[i-1].Time.AsTime()) {
			t.Errorf("accounting not newest first at %d", i)
		}
	}

	// Consent given again by demographics: an empty directive for each
	// record; a directive that names a record itself is refused.
	if _, err := op.SetConsentByDemographics(ctx, &qhinv1.SetConsentByDemographicsRequest{Person: person,
		Directive: &qhinv1.ConsentDirective{ParticipantId: "p2", PatientId: "p2-000311"}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("set by demographics naming a record: %v, want InvalidArgument", err)
	}
	set, err := op.SetConsentByDemographics(ctx, &qhinv1.SetConsentByDemographicsRequest{Person: person, Directive: &qhinv1.ConsentDirective{}})
	if err != nil || len(set.Directives) != 2 {
		t.Fatalf("phase %q: %v, %v", "set by demographics", set, err)
	}
	disc, err = discover(gw)
	if err != nil || !discloses(disc.Persons, "p2", "p2-000311") || !discloses(disc.Persons, "p3", "p3-5150") {
		t.Errorf("discovery after consent was given again: %v, %v; want p2's and p3's records", disc.GetPersons(), err)
	}

	// A member that does not answer leaves the lookup incomplete, and the
	// answer names it; the records found elsewhere are still covered.
	n.KillParticipant(2)
	part, err := op.RevokeConsentByDemographics(ctx, &qhinv1.RevokeConsentByDemographicsRequest{Person: person, Purposes: []string{"T-PYMNT"}})
	if err != nil {
		t.Fatalf("phase %q: %v", "revoke with p3 down", err)
	}
	if u := part.Lookup.Unanswered; len(u) != 1 || u[0] != "p3" {
		t.Errorf("unanswered %v with p3 down, want [p3]", u)
	}
	if len(part.Directives) != 1 || part.Directives[0].ParticipantId != "p2" || len(part.Directives[0].DeniedPurposes) != 1 {
		t.Errorf("directives with p3 down: %v, want p2's record with T-PYMNT denied", part.Directives)
	}

	logged := logs.String()
	for _, phi := range []string{"Rosalind", "Achterberg", "1972-09-14", "1972-09-15", "518-555-0142", "Elm St"} {
		if strings.Contains(logged, phi) {
			t.Errorf("the logs carry %q", phi)
		}
	}
}
