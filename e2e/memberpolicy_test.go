package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/participant"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// ethTitle is the title of p2's substance-use record: it must appear in no
// answer, error or log while the record is withheld.
const ethTitle = "Opioid treatment program intake"

// putLabelled stores a document of maria at p2 labelled ETH (42 CFR Part 2).
func putLabelled(t *testing.T, n *Network) {
	t.Helper()
	_, err := n.Participants[1].Server.PutDocument(context.Background(), &qhinv1.DocumentMetadata{
		Id: "p2-doc-eth", Patient: &qhinv1.PatientLink{PatientId: "p2-000042"}, TypeCode: "11488-4", Title: ethTitle,
		Created: timestamppb.New(time.Date(2025, 5, 1, 9, 0, 0, 0, time.UTC)), ContentType: "text/plain",
		SecurityLabels: []string{"ETH"},
	}, strings.NewReader("part 2 record"))
	if err != nil {
		t.Fatal(err)
	}
}

// p2Documents has p1 find maria and list p2's documents for purposeCode.
func p2Documents(t *testing.T, gw qhinv1.GatewayClient, purposeCode string) []*qhinv1.DocumentMetadata {
	t.Helper()
	docs, err := tryP2Documents(t, gw, purposeCode)
	if err != nil {
		t.Fatal(err)
	}
	return docs
}

// tryP2Documents is p2Documents, failing with an error.
func tryP2Documents(t *testing.T, gw qhinv1.GatewayClient, purposeCode string) ([]*qhinv1.DocumentMetadata, error) {
	disc, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purposeCode, Requester: requester(), Demographics: maria})
	if err != nil {
		return nil, fmt.Errorf("discover %s: %w", purposeCode, err)
	}
	link := personLinks(disc.Persons)["p2"]
	if link == nil {
		return nil, fmt.Errorf("discover %s: maria at p2 not found", purposeCode)
	}
	docs, err := gw.QueryDocuments(callCtx(t), &qhinv1.QueryDocumentsRequest{PurposeOfUse: purposeCode, Requester: requester(), Links: []*qhinv1.PatientLink{link}})
	if err != nil {
		return nil, fmt.Errorf("documents %s: %w", purposeCode, err)
	}
	var out []*qhinv1.DocumentMetadata
	for _, d := range docs.Documents {
		if d.SourceParticipantId == "p2" {
			out = append(out, d)
		}
	}
	return out, nil
}

// findDoc returns the document with id, or nil.
func findDoc(docs []*qhinv1.DocumentMetadata, id string) *qhinv1.DocumentMetadata {
	for _, d := range docs {
		if d.Id == id {
			return d
		}
	}
	return nil
}

// restartP2 restarts p2 under a label policy (nil: the default).
func restartP2(t *testing.T, n *Network, policy participant.LabelPolicy) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.StopParticipant(ctx, 1); err != nil {
		t.Fatalf("stop p2: %v", err)
	}
	n.opts.LabelPolicy = map[string]participant.LabelPolicy{"p2": policy}
	if err := n.StartParticipant(1); err != nil {
		t.Fatalf("start p2: %v", err)
	}
}

// TestLabel_PartTwoRecordWithheldUnlessThePolicyAllows: p2 holds an ETH
// (42 CFR Part 2) document of maria. By default no purpose sees it; with a
// policy allowing ETH for T-TRTMNT, a treatment query lists and retrieves
// it and a payment query still does not; back under the default, a link
// obtained meanwhile is refused. Nothing about the withheld document
// reaches an answer, an error or a log.
func TestLabel_PartTwoRecordWithheldUnlessThePolicyAllows(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 3})
	seedMaria(t, n)
	putLabelled(t, n)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()

	// Default: withheld from every purpose.
	for _, p := range []string{"T-TRTMNT", "T-PYMNT"} {
		docs := p2Documents(t, gw, p)
		if findDoc(docs, "p2-doc-1") == nil {
			t.Fatalf("phase %q: %s: p2's unlabelled document is missing: %v", "default", p, docs)
		}
		if txt := prototext.Format(&qhinv1.QueryDocumentsResponse{Documents: docs}); strings.Contains(txt, "p2-doc-eth") || strings.Contains(txt, ethTitle) {
			t.Fatalf("phase %q: %s: the ETH document is listed by default", "default", p)
		}
	}

	withheldLogs := logs.String() // what the network logged while the document was withheld

	// Allowed for treatment (a retrieval then logs the document's id, as
	// every retrieval does).
	policy, err := participant.ParseLabelPolicy([]string{"ETH=T-TRTMNT"})
	if err != nil {
		t.Fatal(err)
	}
	restartP2(t, n, policy)
	var eth *qhinv1.DocumentMetadata
	waitFor(t, 20*time.Second, "allowed for treatment: p2 answers again", func() bool {
		docs, err := tryP2Documents(t, gw, "T-TRTMNT")
		eth = findDoc(docs, "p2-doc-eth")
		return err == nil && findDoc(docs, "p2-doc-1") != nil
	})
	if eth == nil {
		t.Fatalf("phase %q: the ETH document is not listed for treatment", "allowed for treatment")
	}
	if len(eth.SecurityLabels) != 1 || eth.SecurityLabels[0] != "ETH" {
		t.Errorf("listed labels %v, want [ETH]", eth.SecurityLabels)
	}
	if got, err := retrieveAll(callCtx(t), gw, "T-TRTMNT", &qhinv1.DocumentLink{Link: eth.Link}); err != nil || got != len("part 2 record") {
		t.Fatalf("phase %q: retrieve: %d bytes, %v", "allowed for treatment", got, err)
	}
	if findDoc(p2Documents(t, gw, "T-PYMNT"), "p2-doc-eth") != nil {
		t.Fatalf("phase %q: the ETH document is listed for payment", "allowed for treatment")
	}

	// Back to the default: the link p1 holds no longer retrieves it.
	mark := len(logs.String())
	restartP2(t, n, nil)
	var rerr error
	waitFor(t, 20*time.Second, "default again: p2 answers again", func() bool {
		_, rerr = retrieveAll(callCtx(t), gw, "T-TRTMNT", &qhinv1.DocumentLink{Link: eth.Link})
		return status.Code(rerr) != codes.Unavailable
	})
	if status.Code(rerr) != codes.PermissionDenied {
		t.Fatalf("phase %q: retrieve of the withheld document: %v, want PermissionDenied", "default again", rerr)
	}
	if msg := status.Convert(rerr).Message(); strings.Contains(msg, "p2-doc-eth") || strings.Contains(msg, ethTitle) {
		t.Errorf("the refusal names the document: %q", msg)
	}
	if findDoc(p2Documents(t, gw, "T-TRTMNT"), "p2-doc-eth") != nil {
		t.Fatalf("phase %q: the ETH document is listed", "default again")
	}

	// p2's ledger records the withholding (written off the answer's path:
	// poll).
	audit := participantAudit(t, n, 1)
	waitFor(t, 20*time.Second, "p2's ledger records the withheld listing and retrieval", func() bool {
		var listed, retrieved bool
		for _, e := range listAudit(t, audit, &qhinv1.ListAuditEntriesRequest{Action: participant.ActionWithheldByMember}) {
			if len(e.DocumentRefs) == 1 && e.DocumentRefs[0] == "p2-doc-eth" && e.Outcome == codes.PermissionDenied.String() {
				listed = listed || e.Method == qhinv1.Responder_QueryDocuments_FullMethodName
				retrieved = retrieved || e.Method == qhinv1.Responder_RetrieveDocument_FullMethodName
			}
		}
		return listed && retrieved
	})
	withheldLogs += logs.String()[mark:]
	for _, v := range []string{"p2-doc-eth", ethTitle} {
		if containsValue(withheldLogs, v) {
			t.Errorf("the logs written while the document was withheld name it (%q)", v)
		}
	}
	if containsValue(logs.String(), ethTitle) {
		t.Error("the logs hold the document's title")
	}
}

// TestRestrict_LocallyRestrictedPatientHiddenForItsPurpose: p2's operator
// restricts maria for treatment. A treatment discovery no longer finds her
// at p2 (p3 and p1 still answer), a payment one does; a document link
// obtained before the restriction lists and retrieves nothing. Cleared,
// she is found again.
func TestRestrict_LocallyRestrictedPatientHiddenForItsPurpose(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 3})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	rc := qhinv1.NewRestrictionsClient(rawConn(t, n.Participants[1].Addr, participantCreds(t, n, n.Operator(), 1)))

	before := p2Documents(t, gw, "T-TRTMNT")
	doc := findDoc(before, "p2-doc-1")
	if doc == nil {
		t.Fatalf("phase %q: p2-doc-1 not listed: %v", "setup", before)
	}
	disc, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
	if err != nil {
		t.Fatal(err)
	}
	oldLink := personLinks(disc.Persons)["p2"]

	// Bad input, and a patient p2 does not hold.
	for _, tc := range []struct {
		req  *qhinv1.SetRestrictionRequest
		code codes.Code
		want string
	}{
		{&qhinv1.SetRestrictionRequest{}, codes.InvalidArgument, "patient_id"},
		{&qhinv1.SetRestrictionRequest{PatientId: "p2-000042", Purposes: []string{"T-NOPE"}}, codes.InvalidArgument, "purposes[0]"},
		{&qhinv1.SetRestrictionRequest{PatientId: "p2-999999"}, codes.NotFound, "patient_id"},
	} {
		_, err := rc.SetRestriction(callCtx(t), tc.req)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) || strings.Contains(err.Error(), "p2-999999") {
			t.Errorf("SetRestriction(%v) = %v, want %v naming %s", tc.req, err, tc.code, tc.want)
		}
	}

	if _, err := rc.SetRestriction(callCtx(t), &qhinv1.SetRestrictionRequest{PatientId: "p2-000042", Purposes: []string{"T-TREAT"}}); err != nil {
		t.Fatalf("SetRestriction: %v", err)
	}
	list, err := rc.ListRestrictions(callCtx(t), &qhinv1.ListRestrictionsRequest{})
	if err != nil || len(list.Restrictions) != 1 || list.Restrictions[0].PatientId != "p2-000042" || !strings.Contains(list.Restrictions[0].RecordedBy, "operator") {
		t.Fatalf("ListRestrictions = %v, %v", list, err)
	}

	found := func(purposeCode string) (bool, qhinv1.ResponderState) {
		disc, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purposeCode, Requester: requester(), Demographics: maria})
		if err != nil {
			t.Fatalf("discover %s: %v", purposeCode, err)
		}
		return discloses(disc.Persons, "p2", "p2-000042"), statusByMember(disc.Responders)["p2"]
	}
	if ok, st := found("T-TRTMNT"); ok || st == qhinv1.ResponderState_RESPONDER_STATE_OK {
		t.Errorf("treatment discovery: p2's record found %v, p2 %v; want withheld and not OK", ok, st)
	}
	if ok, _ := found("T-PYMNT"); !ok {
		t.Error("payment discovery: p2's record not found; the restriction covers treatment only")
	}
	docs, err := gw.QueryDocuments(callCtx(t), &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: []*qhinv1.PatientLink{oldLink}})
	if err != nil {
		t.Fatalf("documents through the old link: %v", err)
	}
	if findDoc(docs.Documents, "p2-doc-1") != nil {
		t.Error("documents through the old link: p2-doc-1 listed")
	}
	_, err = retrieveAll(callCtx(t), gw, "T-TRTMNT", &qhinv1.DocumentLink{Link: doc.Link})
	if status.Code(err) != codes.PermissionDenied || strings.Contains(err.Error(), "p2-doc-1") || strings.Contains(err.Error(), "p2-000042") {
		t.Errorf("retrieve through the old link: %v, want PermissionDenied naming nothing", err)
	}

	audit := participantAudit(t, n, 1)
	waitFor(t, 20*time.Second, "p2's ledger records the withheld discovery", func() bool {
		for _, e := range listAudit(t, audit, &qhinv1.ListAuditEntriesRequest{Action: participant.ActionWithheldByMember}) {
			if e.Method == qhinv1.Responder_DiscoverPatients_FullMethodName && len(e.PatientRefs) == 1 && e.PatientRefs[0] == "p2-000042" && e.PurposeOfUse == "T-TRTMNT" {
				return true
			}
		}
		return false
	})

	if resp, err := rc.ClearRestriction(callCtx(t), &qhinv1.ClearRestrictionRequest{PatientId: "p2-000042"}); err != nil || !resp.Cleared {
		t.Fatalf("ClearRestriction = %v, %v", resp, err)
	}
	if ok, _ := found("T-TRTMNT"); !ok {
		t.Error("after clearing: p2's record not found for treatment")
	}
	// A participant may not call it (the authz table; checked here on a
	// running member too).
	other := qhinv1.NewRestrictionsClient(rawConn(t, n.Participants[1].Addr, participantCreds(t, n, n.ParticipantSource(0), 1)))
	if _, err := other.ListRestrictions(callCtx(t), &qhinv1.ListRestrictionsRequest{}); err == nil {
		t.Error("a participant listed p2's restrictions")
	}
	if strings.Contains(logs.String(), "p2-000042") {
		t.Error("the logs name the restricted patient")
	}
}

// TestLabel_LiveFeedReadsSecurityLabels: p2's EHR writes a note labelled
// ETH in DocumentReference.meta.security through the FHIR facade's live
// feed, next to an unlabelled one. p2's own EHR sees the label on its
// record; p1's EHR, querying the network, lists only the unlabelled note.
func TestLabel_LiveFeedReadsSecurityLabels(t *testing.T) {
	n, _ := startNetwork(t, Options{Participants: 3, FHIR: true})
	ehr1, ehr2 := newFHIREHR(t, n, 0), newFHIREHR(t, n, 1)
	labelled := map[string]any{"resource": map[string]any{
		"resourceType": "DocumentReference", "id": "feed-0001-eth", "status": "current",
		"meta":    map[string]any{"security": []any{map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}}},
		"subject": map[string]any{"reference": "Patient/feed-0001"}, "description": ethTitle,
		"content": []any{map[string]any{"attachment": map[string]any{"contentType": "text/plain", "data": "cGFydCAy"}}},
	}, "request": map[string]any{"method": "POST", "url": "DocumentReference"}}
	ehr2.do("POST", "/", feedBundle(t, "a note", labelled)).want(t, "transaction", 200, "")

	own := ehr2.do("GET", "/local/DocumentReference/feed-0001-eth", nil).want(t, "p2's own record", 200, "")
	if path(own.json, "securityLabel", 0, "coding", 0, "code") != "ETH" {
		t.Fatalf("p2's own record has no ETH label: %s", own.body)
	}
	found := ehr1.do("GET", "/Patient?"+newcomerQuery.Encode(), nil).want(t, "discovery", 200, "")
	m := matchEntries(found.json)
	if len(m) != 1 {
		t.Fatalf("discovery: %s", found.body)
	}
	docs := ehr1.do("GET", "/DocumentReference?patient="+str(path(m[0], "resource", "id")), nil).want(t, "documents", 200, "")
	if dm := matchEntries(docs.json); len(dm) != 1 || strings.Contains(string(docs.body), ethTitle) {
		t.Fatalf("p1 lists %d document(s), want only the unlabelled note: %s", len(dm), docs.body)
	}
}

// TestRestrict_ThroughTheMembersLocalAPI: the member's own EHR restricts a
// patient through the member's local API (a unix socket), with no
// operator: the network no longer finds her at p2 for any purpose, and the
// member's ledger names the EHR's uid as who did it.
func TestRestrict_ThroughTheMembersLocalAPI(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 3})
	seedMaria(t, n)
	p2 := n.Participants[1]
	sock := filepath.Join(t.TempDir(), "ehr.sock")
	api, err := participant.NewRelayServer(participant.RelayConfig{
		Listen: "unix:" + sock, Source: n.ParticipantSource(1), Conn: dial(t, n, n.ParticipantSource(1)),
		Ledger: p2.Server.Ledger(), Restrictions: p2.Server.Restrictions(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go api.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		api.Stop(ctx)
	})
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	if _, err := qhinv1.NewRestrictionsClient(cc).SetRestriction(callCtx(t), &qhinv1.SetRestrictionRequest{PatientId: "p2-000042"}); err != nil {
		t.Fatalf("SetRestriction through the local API: %v", err)
	}

	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	for _, p := range []string{"T-TRTMNT", "T-PYMNT"} {
		disc, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: p, Requester: requester(), Demographics: maria})
		if err != nil {
			t.Fatal(err)
		}
		if discloses(disc.Persons, "p2", "p2-000042") {
			t.Errorf("%s: p2's record found; it is restricted for all exchange", p)
		}
	}
	var by string
	for _, e := range listAudit(t, participantAudit(t, n, 1), &qhinv1.ListAuditEntriesRequest{Action: "restrict"}) {
		by = e.Actor
	}
	if !strings.HasPrefix(by, "unix:") {
		t.Errorf("the ledger's restrict entry names %q, want the EHR's unix uid", by)
	}
}
