package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var maria = &qhinv1.Demographics{
	Given: "Maria Elena", Family: "Ordóñez", BirthDate: "1961-04-17", Gender: "female",
	Address: &qhinv1.Address{Lines: []string{"12 Harbor Rd"}, City: "Springfield", State: "MA", PostalCode: "01103"},
	Phone:   "413-555-0188",
}

// mariaAtP2 is the same person as registered at p2: a typo in the family
// name, no phone.
var mariaAtP2 = &qhinv1.Demographics{
	Given: "Maria", Family: "Ordonex", BirthDate: "1961-04-17", Gender: "female",
	Address: &qhinv1.Address{Lines: []string{"12 Harbor Road"}, City: "Springfield", State: "MA", PostalCode: "01103"},
}

var someoneElse = &qhinv1.Demographics{
	Given: "Thomas", Family: "Brennan", BirthDate: "1990-09-02", Gender: "male",
	Address: &qhinv1.Address{Lines: []string{"4 Elm St"}, City: "Albany", State: "NY", PostalCode: "12203"},
}

func putDoc(t *testing.T, n *Network, j int, patientID, docID, typeCode string, created time.Time, content string) *qhinv1.DocumentMetadata {
	t.Helper()
	m, err := n.Participants[j].Server.PutDocument(context.Background(), &qhinv1.DocumentMetadata{
		Id: docID, Patient: &qhinv1.PatientLink{PatientId: patientID}, TypeCode: typeCode, Title: "Note " + docID,
		Created: timestamppb.New(created), ContentType: "text/plain",
	}, strings.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func seedMaria(t *testing.T, n *Network) {
	t.Helper()
	ctx := context.Background()
	for _, s := range []struct {
		j  int
		id string
		d  *qhinv1.Demographics
	}{
		{0, "p1-mrn-001", maria},
		{1, "p2-000042", mariaAtP2},
		{2, "p3-777", someoneElse},
	} {
		if err := n.Participants[s.j].Server.PutPatient(ctx, s.id, s.d); err != nil {
			t.Fatal(err)
		}
	}
	day := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	putDoc(t, n, 0, "p1-mrn-001", "p1-doc-1", "34133-9", day, "summary at p1")
	putDoc(t, n, 0, "p1-mrn-001", "p1-doc-2", "11506-3", day.AddDate(0, 2, 0), "progress note at p1")
	putDoc(t, n, 1, "p2-000042", "p2-doc-1", "18842-5", day.AddDate(0, 1, 0), "discharge summary at p2")
	putDoc(t, n, 2, "p3-777", "p3-doc-1", "34133-9", day, "someone else's summary")
}

func statusByMember(rs []*qhinv1.ResponderStatus) map[string]qhinv1.ResponderState {
	m := map[string]qhinv1.ResponderState{}
	for _, r := range rs {
		m[r.ParticipantId] = r.Status
	}
	return m
}

func TestDiscover_SamePersonAtTwoMembersIsOnePerson(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 4})
	seedMaria(t, n)
	// p4 initiates; p1, p2 and p3 answer.
	conn := dial(t, n, n.ParticipantSource(3))
	gw := conn.Gateway()

	resp, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{
		PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Persons) != 1 {
		t.Fatalf("found %d persons, want 1: %v", len(resp.Persons), resp.Persons)
	}
	links := map[string]string{}
	for _, l := range resp.Persons[0].Links {
		links[l.ParticipantId] = l.PatientId
	}
	if len(links) != 2 || links["p1"] != "p1-mrn-001" || links["p2"] != "p2-000042" {
		t.Errorf("links = %v, want p1/p1-mrn-001 and p2/p2-000042", links)
	}
	st := statusByMember(resp.Responders)
	want := map[string]qhinv1.ResponderState{
		"p1": qhinv1.ResponderState_RESPONDER_STATE_OK,
		"p2": qhinv1.ResponderState_RESPONDER_STATE_OK,
		"p3": qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH,
	}
	for id, w := range want {
		if st[id] != w {
			t.Errorf("%s status = %v, want %v", id, st[id], w)
		}
	}
	if _, asked := st["p4"]; asked {
		t.Error("the initiator was asked about its own query")
	}

	// Document query over both links returns the documents of both, newest
	// first.
	var pl []*qhinv1.PatientLink
	for _, l := range resp.Persons[0].Links {
		pl = append(pl, &qhinv1.PatientLink{Link: l.Link})
	}
	docs, err := gw.QueryDocuments(callCtx(t), &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: pl})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range docs.Documents {
		ids = append(ids, d.SourceParticipantId+"/"+d.Id)
	}
	if got, want := strings.Join(ids, ","), "p1/p1-doc-2,p2/p2-doc-1,p1/p1-doc-1"; got != want {
		t.Errorf("documents = %s, want %s", got, want)
	}

	for _, phi := range []string{"Ordóñez", "Ordonex", "Maria", "1961-04-17", "413-555-0188", "Harbor", "01103"} {
		if containsValue(logs.String(), phi) {
			t.Errorf("logs contain patient data %q", phi)
		}
	}
}
