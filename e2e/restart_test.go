package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// directoryIDs lists the directory through the operator, with a
// linearizable read.
func directoryIDs(ctx context.Context, dir qhinv1.DirectoryClient) ([]string, error) {
	resp, err := dir.ListParticipants(ctx, &qhinv1.ListParticipantsRequest{Consistent: true})
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range resp.Participants {
		ids = append(ids, p.Id)
	}
	slices.Sort(ids)
	return ids, nil
}

func TestRestart_ParticipantKeepsPatientsAndDocuments(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	if err := n.Participants[0].Server.PutPatient(context.Background(), "p1-mrn-001", maria); err != nil {
		t.Fatal(err)
	}
	putDoc(t, n, 0, "p1-mrn-001", "p1-doc-1", "34133-9", time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC), "summary at p1")

	n.KillParticipant(0)
	if err := n.StartParticipant(0); err != nil {
		t.Fatal(err)
	}
	gw := dial(t, n, n.ParticipantSource(1)).Gateway()

	// The broker reconnects to the restarted member with a backoff: ask
	// until it answers, then check what it answered.
	var persons []*qhinv1.Person
	pollUntil(t, 20*time.Second, "the restarted participant answers", func() error {
		resp, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
		if err != nil {
			return err
		}
		if st := responderStates(t, resp.Responders)["p1"]; st != qhinv1.ResponderState_RESPONDER_STATE_OK {
			return fmt.Errorf("p1 is %v", st)
		}
		persons = resp.Persons
		return nil
	})
	if len(persons) != 1 || len(persons[0].Links) != 1 || persons[0].Links[0].PatientId != "p1-mrn-001" {
		t.Fatalf("persons = %v, want p1-mrn-001 at p1", persons)
	}

	docs, err := gw.QueryDocuments(callCtx(t), &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Links: []*qhinv1.PatientLink{{Link: persons[0].Links[0].Link}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs.Documents) != 1 || docs.Documents[0].Id != "p1-doc-1" {
		t.Fatalf("documents = %v, want p1-doc-1", docs.Documents)
	}
	s, err := gw.RetrieveDocument(callCtx(t), &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Link: &qhinv1.DocumentLink{Link: docs.Documents[0].Link}})
	if err != nil {
		t.Fatal(err)
	}
	var got received
	if err := got.receive(s, 0); err != nil {
		t.Fatal(err)
	}
	if got.sha256 != sha256Hex("summary at p1") {
		t.Errorf("retrieved %d bytes that differ from what was stored", got.size)
	}
}

func TestRestart_BrokerKeepsDirectory(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	dir := dial(t, n, n.Operator()).Directory()
	// The last write before the crash must survive it.
	if _, err := dir.SetParticipantStatus(callCtx(t), &qhinv1.SetParticipantStatusRequest{
		ParticipantId: "p2", Status: qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED, Reason: "restart test",
	}); err != nil {
		t.Fatal(err)
	}

	n.KillBroker(0)
	if err := n.StartBroker(0); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitReady(callCtx(t)); err != nil {
		t.Fatalf("phase %q: %v", "the restarted broker ready", err)
	}

	// Connections made before the crash are used again.
	var ids []string
	pollUntil(t, 20*time.Second, "the operator reads the directory", func() (err error) {
		ids, err = directoryIDs(callCtx(t), dir)
		return err
	})
	if want := []string{"p1", "p2"}; !slices.Equal(ids, want) {
		t.Fatalf("directory after restart = %v, want %v", ids, want)
	}
	p2, err := dir.GetParticipant(callCtx(t), &qhinv1.GetParticipantRequest{ParticipantId: "p2", Consistent: true})
	if err != nil {
		t.Fatal(err)
	}
	if p2.Participant.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED {
		t.Errorf("p2 after restart is %v, want suspended", p2.Participant.Status)
	}

	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	resp, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
	if err != nil {
		t.Fatalf("query after restart: %v", err)
	}
	assertStates(t, resp.Responders, map[string]qhinv1.ResponderState{"p2": qhinv1.ResponderState_RESPONDER_STATE_SKIPPED})
}

func TestRestart_ClusterKeepsDirectoryWhenLeaderDiesAndOldLeaderCatchesUp(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3})
	dir := dial(t, n, n.Operator()).Directory()
	register := func(id string) {
		t.Helper()
		if _, err := dir.RegisterParticipant(callCtx(t), &qhinv1.RegisterParticipantRequest{
			Participant: &qhinv1.Participant{Id: id, Organization: "Member " + id, Endpoint: "127.0.0.1:9"}, RequestId: "register-" + id,
		}); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	register("p-before")

	old := n.Leader()
	if old < 0 {
		t.Fatal("no leader after start")
	}
	n.KillBroker(old)
	pollUntil(t, 20*time.Second, "the remaining brokers elect a leader", func() error {
		if l := n.Leader(); l < 0 || l == old {
			return fmt.Errorf("leader is %d", l)
		}
		return nil
	})
	if err := n.WaitReady(callCtx(t)); err != nil {
		t.Fatalf("phase %q: %v", "the remaining brokers ready", err)
	}
	ids, err := directoryIDs(callCtx(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ids, "p-before") {
		t.Fatalf("directory after the leader died = %v, want p-before", ids)
	}
	// A write the old leader misses while it is down.
	register("p-during")

	if err := n.StartBroker(old); err != nil {
		t.Fatal(err)
	}
	f := n.Brokers[old].Server.Node().FSM()
	pollUntil(t, 20*time.Second, "the old leader catches up", func() error {
		for _, id := range []string{"p-before", "p-during"} {
			if _, err := f.Participant(id); err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
		}
		return nil
	})
	if err := n.WaitReady(callCtx(t)); err != nil {
		t.Fatalf("phase %q: %v", "every broker ready with the old leader back", err)
	}
}
