package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/client"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func consentClient(t *testing.T, n *Network, j int) qhinv1.ConsentClient {
	return qhinv1.NewConsentClient(dial(t, n, n.ParticipantSource(j)).ClientConn)
}

// discloses reports whether a discovery answer holds a member's record.
func discloses(persons []*qhinv1.Person, member, patient string) bool {
	for _, p := range persons {
		for _, l := range p.Links {
			if l.ParticipantId == member && l.PatientId == patient {
				return true
			}
		}
	}
	return false
}

// personLinks returns the links of a discovery answer, by member.
func personLinks(persons []*qhinv1.Person) map[string]*qhinv1.PatientLink {
	out := map[string]*qhinv1.PatientLink{}
	for _, p := range persons {
		for _, l := range p.Links {
			out[l.ParticipantId] = &qhinv1.PatientLink{Link: l.Link}
		}
	}
	return out
}

// TestConsent_RevokeUnderLoad has p4 query maria through every broker, one
// reader per broker, discovery, document query and retrieval in a loop,
// while p1 revokes her consent to all exchange; one follower is cut off
// from the leader just before the revoke. No query that starts after the
// revoke returned may disclose p1's record of her: not in a discovery
// answer, not as a document of a document query, not as a retrieved
// document. The partitioned follower refuses to answer until it has the
// revoke; healed, it answers without her.
func TestConsent_RevokeUnderLoad(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 3, Participants: 4})
	seedMaria(t, n)
	leader := n.Leader()
	cut := (leader + 1) % len(n.Brokers)

	// The links p4 holds from before the revoke: a patient link to p1's
	// record and a document link to one of its documents.
	gw := dial(t, n, n.ParticipantSource(3)).Gateway()
	disc, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
	if err != nil {
		t.Fatal(err)
	}
	if !discloses(disc.Persons, "p1", "p1-mrn-001") {
		t.Fatalf("phase %q: maria at p1 not found before the revoke: %v", "setup", disc.Persons)
	}
	p1Link := personLinks(disc.Persons)["p1"]
	docs, err := gw.QueryDocuments(callCtx(t), &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: []*qhinv1.PatientLink{p1Link}})
	if err != nil || len(docs.Documents) == 0 {
		t.Fatalf("phase %q: documents at p1: %v, %v", "setup", docs, err)
	}
	docLink := docs.Documents[0].Link

	var (
		revoked atomic.Bool
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		// Per broker: disclosures before the revoke, answered queries
		// and refusals after it, and violations.
		before, after, refused = map[string]int{}, map[string]int{}, map[string]int{}
		violations             []string
	)
	note := func(m map[string]int, b string) { mu.Lock(); m[b]++; mu.Unlock() }
	violate := func(format string, args ...any) {
		mu.Lock()
		violations = append(violations, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for i, b := range n.Brokers {
		c, err := client.Dial([]string{b.GRPCAddr}, n.ParticipantSource(3), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		gw := c.Gateway()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				late := revoked.Load() // the query starts after the revoke returned
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				disclosed, err := readOnce(ctx, gw, k%3, p1Link, docLink)
				cancel()
				switch {
				case err != nil && late && status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded:
					violate("broker %s: query kind %d after the revoke: %v, want an answer, or Unavailable (the client retries it until its deadline)", b.ID, k%3, err)
				case err != nil && late:
					note(refused, b.ID)
				case err != nil:
				case late && disclosed:
					note(after, b.ID)
					violate("broker %s (index %d) disclosed p1's record of maria in query kind %d after the revoke returned", b.ID, i, k%3)
				case late:
					note(after, b.ID)
				case disclosed:
					note(before, b.ID)
				}
			}
		}()
	}

	pollUntil(t, 20*time.Second, "every broker discloses maria before the revoke", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range n.Brokers {
			if before[b.ID] == 0 {
				return fmt.Errorf("broker %s has not answered yet", b.ID)
			}
		}
		return nil
	})
	n.Partition(cut)
	start := time.Now()
	resp, err := consentClient(t, n, 0).RevokeConsent(callCtx(t), &qhinv1.RevokeConsentRequest{PatientId: "p1-mrn-001"})
	if err != nil {
		t.Fatalf("phase %q: %v", "revoke", err)
	}
	revoked.Store(true)
	t.Logf("revoke returned in %v with broker %s partitioned", time.Since(start).Round(time.Millisecond), n.Brokers[cut].ID)
	if !resp.Directive.OptOut || resp.Directive.ParticipantId != "p1" {
		t.Errorf("directive %v: want p1's opt-out", resp.Directive)
	}
	pollUntil(t, 20*time.Second, "every reachable broker answers after the revoke", func() error {
		mu.Lock()
		defer mu.Unlock()
		for i, b := range n.Brokers {
			if i != cut && after[b.ID] < 6 {
				return fmt.Errorf("broker %s answered %d queries after the revoke", b.ID, after[b.ID])
			}
		}
		if got := refused[n.Brokers[cut].ID]; got < 2 {
			return fmt.Errorf("the partitioned broker %s has refused %d queries", n.Brokers[cut].ID, got)
		}
		return nil
	})
	n.Heal(cut)
	pollUntil(t, 30*time.Second, "the healed broker answers again", func() error {
		mu.Lock()
		defer mu.Unlock()
		if got := after[n.Brokers[cut].ID]; got < 6 {
			return fmt.Errorf("broker %s answered %d queries after the revoke", n.Brokers[cut].ID, got)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	for _, v := range violations {
		t.Error(v)
	}
	t.Logf("before the revoke: %v; answered after: %v; refused after: %v", before, after, refused)

	// Maria's record at p2 is still found: the revoke is p1's record's.
	disc, err = gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
	if err != nil || discloses(disc.Persons, "p1", "p1-mrn-001") || !discloses(disc.Persons, "p2", "p2-000042") {
		t.Errorf("after the revoke: %v, %v; want p2's record and not p1's", disc.GetPersons(), err)
	}
	// p1 is reported as holding nothing: its OK would say it holds her.
	if st := statusByMember(disc.GetResponders())["p1"]; st != qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH {
		t.Errorf("p1's state %v, want NO_MATCH", st)
	}
	if strings.Contains(logs.String(), "p1-mrn-001") {
		t.Error("the patient's local id reached the log")
	}
}

// readOnce makes one query of the kind (0 discovery, 1 document query, 2
// retrieval) and reports whether its answer disclosed p1's record of maria.
func readOnce(ctx context.Context, gw qhinv1.GatewayClient, kind int, p1Link *qhinv1.PatientLink, docLink string) (bool, error) {
	switch kind {
	case 0:
		resp, err := gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
		if err != nil {
			return false, err
		}
		return discloses(resp.Persons, "p1", "p1-mrn-001"), nil
	case 1:
		resp, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: []*qhinv1.PatientLink{p1Link}})
		if err != nil {
			return false, err
		}
		return len(resp.Documents) > 0, nil
	default:
		stream, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Link: &qhinv1.DocumentLink{Link: docLink}})
		if err != nil {
			return false, err
		}
		got := false
		for {
			msg, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			if err != nil {
				if got {
					return true, nil // a header reached the initiator
				}
				if status.Code(err) == codes.PermissionDenied {
					return false, nil // refused by consent: an answer, not a failure
				}
				return false, err
			}
			got = got || msg.GetHeader() != nil || len(msg.GetChunk()) > 0
		}
	}
}

// TestConsent_OnlyTheHomeMemberRecords: a member records consent for its own
// patients only; naming another member's is refused and names the field;
// an operator records for anyone.
func TestConsent_OnlyTheHomeMemberRecords(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	p1 := consentClient(t, n, 0)
	ctx := callCtx(t)
	for name, call := range map[string]func() error{
		"revoke": func() error {
			_, err := p1.RevokeConsent(ctx, &qhinv1.RevokeConsentRequest{ParticipantId: "p2", PatientId: "p2-000042"})
			return err
		},
		"set": func() error {
			_, err := p1.SetConsent(ctx, &qhinv1.SetConsentRequest{Directive: &qhinv1.ConsentDirective{ParticipantId: "p2", PatientId: "p2-000042", OptOut: true}})
			return err
		},
		"show": func() error {
			_, err := p1.GetConsent(ctx, &qhinv1.GetConsentRequest{ParticipantId: "p2", PatientId: "p2-000042"})
			return err
		},
	} {
		err := call()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "participant_id") {
			t.Errorf("p1 %s for p2's patient: %v, want PermissionDenied naming participant_id", name, err)
		}
		if strings.Contains(status.Convert(err).Message(), "p2-000042") {
			t.Errorf("p1 %s: the refusal echoes the patient id", name)
		}
	}
	op := qhinv1.NewConsentClient(dial(t, n, n.Operator()).ClientConn)
	for _, tc := range []struct {
		name string
		req  *qhinv1.RevokeConsentRequest
		want codes.Code
	}{
		{"operator for p2's patient", &qhinv1.RevokeConsentRequest{ParticipantId: "p2", PatientId: "p2-000042", Purposes: []string{"T-PYMNT"}}, codes.OK},
		{"operator without a member", &qhinv1.RevokeConsentRequest{PatientId: "p2-000042"}, codes.InvalidArgument},
		{"operator for a member that does not exist", &qhinv1.RevokeConsentRequest{ParticipantId: "p9", PatientId: "x"}, codes.NotFound},
		{"unknown purpose", &qhinv1.RevokeConsentRequest{ParticipantId: "p2", PatientId: "x", Purposes: []string{"T-NOPE"}}, codes.InvalidArgument},
		{"no patient", &qhinv1.RevokeConsentRequest{ParticipantId: "p2"}, codes.InvalidArgument},
	} {
		_, err := op.RevokeConsent(ctx, tc.req)
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	got, err := consentClient(t, n, 1).GetConsent(ctx, &qhinv1.GetConsentRequest{PatientId: "p2-000042"})
	if err != nil || got.Directive == nil || len(got.Directive.DeniedPurposes) != 1 || !strings.HasSuffix(got.Directive.RecordedBy.GetActor(), "/operator/"+OperatorName) {
		t.Errorf("p2 reads its patient's directive: %v, %v; want T-PYMNT denied, recorded by the operator", got, err)
	}
}

// TestConsent_BreakTheGlass: p1's patient opted out but allows an emergency
// override; p2's opted out without one. A treatment query declared as an
// emergency, with a reason, reaches p1's record and not p2's; without the
// declaration it reaches neither. A declaration without a reason, or on a
// purpose other than treatment, is refused naming the field. The emergency
// access is marked in the brokers' ledgers and shows in p1's accounting of
// disclosures; the refused one does not.
func TestConsent_BreakTheGlass(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 2, Participants: 4})
	seedMaria(t, n)
	ctx := callCtx(t)
	if _, err := consentClient(t, n, 0).SetConsent(ctx, &qhinv1.SetConsentRequest{Directive: &qhinv1.ConsentDirective{
		PatientId: "p1-mrn-001", OptOut: true, EmergencyOverride: true,
		RecordedBy: &qhinv1.ConsentRecorder{ProxyName: "Ana Ordóñez", ProxyRelationship: "daughter"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := consentClient(t, n, 1).RevokeConsent(ctx, &qhinv1.RevokeConsentRequest{PatientId: "p2-000042"}); err != nil {
		t.Fatal(err)
	}
	gw := dial(t, n, n.ParticipantSource(3)).Gateway()
	const reason = "unresponsive in the emergency department"
	discover := func(purpose string, emergency bool, why string) (*qhinv1.DiscoverPatientsResponse, error) {
		return gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purpose, Requester: requester(), Demographics: maria,
			Emergency: emergency, EmergencyReason: why})
	}

	plain, err := discover("T-TRTMNT", false, "")
	if err != nil || discloses(plain.Persons, "p1", "p1-mrn-001") || discloses(plain.Persons, "p2", "p2-000042") {
		t.Fatalf("phase %q: %v, %v; want neither record", "no emergency", plain.GetPersons(), err)
	}
	glass, err := discover("T-TRTMNT", true, reason)
	if err != nil || !discloses(glass.Persons, "p1", "p1-mrn-001") || discloses(glass.Persons, "p2", "p2-000042") {
		t.Fatalf("phase %q: %v, %v; want p1's record only", "emergency", glass.GetPersons(), err)
	}
	// The emergency reaches the documents and their content too.
	docs, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Links: []*qhinv1.PatientLink{personLinks(glass.Persons)["p1"]}, Emergency: true, EmergencyReason: reason})
	if err != nil || len(docs.Documents) != 2 {
		t.Fatalf("phase %q: %v, %v; want p1's 2 documents", "emergency documents", docs, err)
	}
	if _, err := readDoc(ctx, gw, docs.Documents[0].Link, false); status.Code(err) != codes.PermissionDenied {
		t.Errorf("retrieval without the emergency: %v, want PermissionDenied", err)
	}
	if _, err := readDoc(ctx, gw, docs.Documents[0].Link, true); err != nil {
		t.Errorf("emergency retrieval: %v", err)
	}

	for _, tc := range []struct {
		name, purpose, reason, field string
		emergency                    bool
	}{
		{"no reason", "T-TRTMNT", "", "emergency_reason", true},
		{"payment", "T-PYMNT", reason, "emergency", true},
		{"reason without the flag", "T-TRTMNT", reason, "emergency_reason", false},
	} {
		_, err := discover(tc.purpose, tc.emergency, tc.reason)
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
			t.Errorf("%s: %v, want InvalidArgument naming %s", tc.name, err, tc.field)
		}
	}

	// The accounting, from every broker's ledger.
	var all []*qhinv1.Disclosure
	for _, b := range n.Brokers {
		c, err := client.Dial([]string{b.GRPCAddr}, n.ParticipantSource(0), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := qhinv1.NewConsentClient(c.ClientConn).ListDisclosures(ctx, &qhinv1.ListDisclosuresRequest{PatientId: "p1-mrn-001"})
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, resp.Disclosures...)
	}
	actions := map[string]int{}
	for _, d := range all {
		if d.InitiatorParticipantId != "p4" || d.PurposeOfUse != "T-TRTMNT" || d.EndUser.GetId() == "" {
			t.Errorf("disclosure %v: want p4's T-TRTMNT with its end user", d)
		}
		if d.Emergency && d.EmergencyReason == reason {
			actions[d.Action]++
		} else {
			actions["not emergency: "+d.Action]++
		}
	}
	want := map[string]int{"discover": 1, "documents": 1, "retrieve": 1}
	if fmt.Sprint(actions) != fmt.Sprint(want) {
		t.Errorf("p1's accounting: %v, want the emergency discovery, document query and retrieval only", actions)
	}
	// p1's own ledger marks its answers to the emergency queries too.
	entries, _, err := n.Participants[0].Server.Ledger().List(audit.Filter{Patient: "p1-mrn-001"})
	if err != nil {
		t.Fatal(err)
	}
	marked := 0
	for _, e := range entries {
		if e.Emergency && e.EmergencyReason == reason {
			marked++
		}
	}
	if marked < 2 {
		t.Errorf("p1's ledger marks %d of its %d entries about the patient as the emergency access, want its discovery and document answers", marked, len(entries))
	}
	// p2's patient was not disclosed: its accounting is empty.
	resp, err := consentClient(t, n, 1).ListDisclosures(ctx, &qhinv1.ListDisclosuresRequest{PatientId: "p2-000042"})
	if err != nil || len(resp.Disclosures) != 0 {
		t.Errorf("p2's accounting: %v, %v; want none", resp.GetDisclosures(), err)
	}
	// A member reads only its own patients' accounting.
	if _, err := consentClient(t, n, 1).ListDisclosures(ctx, &qhinv1.ListDisclosuresRequest{ParticipantId: "p1", PatientId: "p1-mrn-001"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("p2 reads p1's accounting: %v, want PermissionDenied", err)
	}
}

// readDoc retrieves a document, as an emergency access or not.
func readDoc(ctx context.Context, gw qhinv1.GatewayClient, link string, emergency bool) (int, error) {
	req := &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Link: &qhinv1.DocumentLink{Link: link}}
	if emergency {
		req.Emergency, req.EmergencyReason = true, "unresponsive in the emergency department"
	}
	stream, err := gw.RetrieveDocument(ctx, req)
	if err != nil {
		return 0, err
	}
	size := 0
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return size, nil
		}
		if err != nil {
			return size, err
		}
		size += len(msg.GetChunk())
	}
}
