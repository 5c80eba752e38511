package e2e

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// discoverLinks discovers d as purpose and returns the links of the one
// person found, by member.
func discoverLinks(t *testing.T, gw qhinv1.GatewayClient, purpose string, d *qhinv1.Demographics) map[string]string {
	t.Helper()
	resp, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purpose, Requester: requester(), Demographics: d})
	if err != nil {
		t.Fatalf("phase %q: %v", "discover", err)
	}
	if len(resp.Persons) != 1 {
		t.Fatalf("phase %q: %d persons, want 1", "discover", len(resp.Persons))
	}
	out := map[string]string{}
	for _, l := range resp.Persons[0].Links {
		if l.Link == "" {
			t.Fatalf("phase %q: the link to %s's record carries no issued link", "discover", l.ParticipantId)
		}
		out[l.ParticipantId] = l.Link
	}
	return out
}

// documentLinks lists the documents behind patient links and returns their
// issued links by document id.
func documentLinks(t *testing.T, gw qhinv1.GatewayClient, purpose string, links ...string) map[string]string {
	t.Helper()
	req := &qhinv1.QueryDocumentsRequest{PurposeOfUse: purpose, Requester: requester()}
	for _, l := range links {
		req.Links = append(req.Links, &qhinv1.PatientLink{Link: l})
	}
	resp, err := gw.QueryDocuments(callCtx(t), req)
	if err != nil {
		t.Fatalf("phase %q: %v", "query documents", err)
	}
	out := map[string]string{}
	for _, d := range resp.Documents {
		if d.Link == "" {
			t.Fatalf("phase %q: document %s carries no issued link", "query documents", d.Id)
		}
		out[d.Id] = d.Link
	}
	return out
}

// docLink finds d and returns the issued link of its document docID, as
// initiator gw for purpose T-TRTMNT.
func docLink(t *testing.T, gw qhinv1.GatewayClient, d *qhinv1.Demographics, member, docID string) string {
	t.Helper()
	pl := discoverLinks(t, gw, "T-TRTMNT", d)
	if pl[member] == "" {
		t.Fatalf("phase %q: no link to %s's record (links %v)", "discover", member, pl)
	}
	dl := documentLinks(t, gw, "T-TRTMNT", pl[member])
	if dl[docID] == "" {
		t.Fatalf("phase %q: no link to document %s", "query documents", docID)
	}
	return dl[docID]
}

func queryDocs(ctx context.Context, gw qhinv1.GatewayClient, purpose string, links ...*qhinv1.PatientLink) (*qhinv1.QueryDocumentsResponse, error) {
	return gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: purpose, Requester: requester(), Links: links})
}

func retrieveAll(ctx context.Context, gw qhinv1.GatewayClient, purpose string, link *qhinv1.DocumentLink) (int, error) {
	s, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: purpose, Requester: requester(), Link: link})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		msg, err := s.Recv()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += len(msg.GetChunk())
	}
}

// refused checks that err is a refusal with code naming field, and that the
// message holds none of the values in secret.
func refused(t *testing.T, err error, code codes.Code, field string, secret ...string) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("code %v (%v), want %v naming %s", got, err, code, field)
	}
	msg := status.Convert(err).Message()
	if !strings.Contains(msg, field) {
		t.Errorf("message %q does not name %s", msg, field)
	}
	for _, s := range secret {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("message %q repeats %q", msg, s)
		}
	}
}

// TestLinks_OnlyLinksTheNetworkIssuedReachRecords is the attack of the
// issue that made links capabilities: a member enumerating another member's
// sequential patient ids, with no discovery first, and retrieving what it
// finds. Before links were issued, one QueryDocuments call with p2/p2-000001
// … returned every document p2 held, and a retrieval of a guessed document
// id returned it.
func TestLinks_OnlyLinksTheNetworkIssuedReachRecords(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 4})
	seedMaria(t, n)
	ctx := context.Background()
	for i := 1; i <= 40; i++ {
		id := fmt.Sprintf("p2-%06d", i)
		d := &qhinv1.Demographics{Given: "Person", Family: fmt.Sprintf("Number%d", i), BirthDate: "1970-01-01", Gender: "female"}
		if err := n.Participants[1].Server.PutPatient(ctx, id, d); err != nil {
			t.Fatal(err)
		}
		putDoc(t, n, 1, id, id+"-doc-1", "34133-9", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), "note of "+id)
	}
	p4 := dial(t, n, n.ParticipantSource(3)).Gateway() // finds Maria, legitimately
	p3 := dial(t, n, n.ParticipantSource(2)).Gateway() // the attacker

	pl := discoverLinks(t, p4, "T-TRTMNT", maria)
	dl := documentLinks(t, p4, "T-TRTMNT", pl["p1"], pl["p2"])
	if len(dl) != 3 {
		t.Fatalf("the legitimate document query found %d documents, want Maria's 3", len(dl))
	}
	if _, err := retrieveAll(callCtx(t), p4, "T-TRTMNT", &qhinv1.DocumentLink{Link: dl["p2-doc-1"]}); err != nil {
		t.Fatalf("the legitimate retrieval: %v", err)
	}

	t.Run("guessed patient ids", func(t *testing.T) {
		var guessed []*qhinv1.PatientLink
		for i := 1; i <= 60; i++ {
			guessed = append(guessed, &qhinv1.PatientLink{ParticipantId: "p2", PatientId: fmt.Sprintf("p2-%06d", i)})
		}
		resp, err := queryDocs(callCtx(t), p3, "T-TRTMNT", guessed...)
		if err == nil {
			t.Fatalf("enumerated patient ids returned %d documents", len(resp.Documents))
		}
		refused(t, err, codes.InvalidArgument, "links[0].link", "p2-000001")
	})
	t.Run("guessed document id", func(t *testing.T) {
		got, err := retrieveAll(callCtx(t), p3, "T-TRTMNT", &qhinv1.DocumentLink{ParticipantId: "p2", DocumentId: "p2-000001-doc-1"})
		if err == nil {
			t.Fatalf("a guessed document id was retrieved (%d bytes)", got)
		}
		refused(t, err, codes.InvalidArgument, "link.link", "p2-000001")
	})
	t.Run("forged link", func(t *testing.T) {
		real := pl["p2"]
		for _, forged := range []string{
			"q1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
			"nothing like it",
			real[:len(real)-2] + flip(real[len(real)-2:]),
		} {
			_, err := queryDocs(callCtx(t), p4, "T-TRTMNT", &qhinv1.PatientLink{Link: forged})
			refused(t, err, codes.InvalidArgument, "links[0].link", forged)
		}
		_, err := retrieveAll(callCtx(t), p4, "T-TRTMNT", &qhinv1.DocumentLink{Link: dl["p2-doc-1"][:20]})
		refused(t, err, codes.InvalidArgument, "link.link")
	})
	t.Run("link of another initiator", func(t *testing.T) {
		resp, err := queryDocs(callCtx(t), p3, "T-TRTMNT", &qhinv1.PatientLink{Link: pl["p2"]})
		if err == nil {
			t.Fatalf("p3 listed %d documents with a link issued to p4", len(resp.Documents))
		}
		refused(t, err, codes.PermissionDenied, "links[0].link")
		_, err = retrieveAll(callCtx(t), p3, "T-TRTMNT", &qhinv1.DocumentLink{Link: dl["p2-doc-1"]})
		refused(t, err, codes.PermissionDenied, "link.link")
	})
	t.Run("link of another purpose", func(t *testing.T) {
		_, err := queryDocs(callCtx(t), p4, "T-TREAT", &qhinv1.PatientLink{Link: pl["p2"]})
		refused(t, err, codes.PermissionDenied, "links[0].link")
		_, err = retrieveAll(callCtx(t), p4, "T-TREAT", &qhinv1.DocumentLink{Link: dl["p2-doc-1"]})
		refused(t, err, codes.PermissionDenied, "link.link")
	})
	t.Run("patient link where a document link goes", func(t *testing.T) {
		_, err := retrieveAll(callCtx(t), p4, "T-TRTMNT", &qhinv1.DocumentLink{Link: pl["p2"]})
		refused(t, err, codes.InvalidArgument, "link.link")
		_, err = queryDocs(callCtx(t), p4, "T-TRTMNT", &qhinv1.PatientLink{Link: dl["p2-doc-1"]})
		refused(t, err, codes.InvalidArgument, "links[0].link")
	})

	for _, phi := range []string{"Ordóñez", "Ordonex", "1961-04-17", "413-555-0188"} {
		if containsValue(logs.String(), phi) {
			t.Errorf("logs contain patient data %q", phi)
		}
	}
}

// flip changes the first character of s to another one of the link
// alphabet.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestLinks_ExpiredLinkIsRefused(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 4, LinkTTL: 3 * time.Second})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(3)).Gateway()
	pl := discoverLinks(t, gw, "T-TRTMNT", maria)
	dl := documentLinks(t, gw, "T-TRTMNT", pl["p1"])
	if len(dl) == 0 {
		t.Fatal("no document listed while the links were fresh")
	}
	var err error
	pollUntil(t, 15*time.Second, "the link expires", func() error {
		if _, err = queryDocs(callCtx(t), gw, "T-TRTMNT", &qhinv1.PatientLink{Link: pl["p1"]}); err == nil {
			return fmt.Errorf("still accepted")
		}
		return nil
	})
	refused(t, err, codes.InvalidArgument, "links[0].link")
	if !strings.Contains(status.Convert(err).Message(), "expired") {
		t.Errorf("message %q does not say the link expired", status.Convert(err).Message())
	}
	for _, l := range dl {
		_, err := retrieveAll(callCtx(t), gw, "T-TRTMNT", &qhinv1.DocumentLink{Link: l})
		refused(t, err, codes.InvalidArgument, "link.link")
	}
}

// restartWithDelay restarts participant j (same address, same data) so
// that it holds every answer back by d: a member that stops answering
// after the network found its records.
func restartWithDelay(t *testing.T, n *Network, j int, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := n.Participants[j]
	if err := p.Server.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	<-p.served
	p.Server = nil
	if n.opts.Delay == nil {
		n.opts.Delay = map[string]time.Duration{}
	}
	n.opts.Delay[p.ID] = d
	if err := n.StartParticipant(j); err != nil {
		t.Fatal(err)
	}
}

// TestLinks_DocumentsOfPatientsNotAskedAboutAreDropped: a member asked for
// the documents of one patient lists, besides, a document of a patient it
// was not asked about. The broker drops it (and says so in the member's
// status): a link to it would carry no patient, and no consent directive
// could be checked when it is retrieved.
func TestLinks_DocumentsOfPatientsNotAskedAboutAreDropped(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 1})
	hostile := &floodResponder{}
	hostile.candidates.Store(&qhinv1.ResponderDiscoverPatientsResponse{Candidates: []*qhinv1.Candidate{
		{PatientId: "p9-asked", Score: 1, Demographics: maria}}})
	doc := func(id, patient string) *qhinv1.DocumentMetadata {
		return &qhinv1.DocumentMetadata{Id: id, Patient: &qhinv1.PatientLink{PatientId: patient}, TypeCode: "34133-9",
			Title: "Summary", Size: 10, Sha256: strings.Repeat("0", 64), ContentType: "text/plain"}
	}
	hostile.documents.Store(&qhinv1.ResponderQueryDocumentsResponse{Documents: []*qhinv1.DocumentMetadata{
		doc("p9-doc-asked", "p9-asked"), doc("p9-doc-other", "p9-other")}})
	startFakeResponder(t, n, "p9", hostile)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()

	pl := discoverLinks(t, gw, "T-TRTMNT", maria)
	if pl["p9"] == "" {
		t.Fatalf("phase %q: no link to p9's record: %v", "discover", pl)
	}
	resp, err := queryDocs(callCtx(t), gw, "T-TRTMNT", &qhinv1.PatientLink{Link: pl["p9"]})
	if err != nil {
		t.Fatalf("phase %q: %v", "query documents", err)
	}
	var ids []string
	for _, d := range resp.Documents {
		ids = append(ids, d.Id)
	}
	if len(ids) != 1 || ids[0] != "p9-doc-asked" {
		t.Errorf("documents listed %v, want only p9-doc-asked", ids)
	}
	if len(resp.Responders) != 1 || !strings.Contains(resp.Responders[0].Detail, "dropped") {
		t.Errorf("p9's status does not say a document was dropped: %v", resp.Responders)
	}
}
