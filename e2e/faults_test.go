package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// faultTimeout is the brokers' per-responder timeout in the fault tests:
// short, so that a hanging member costs little, and far below the callers'
// deadlines, so that the whole call must come back.
const faultTimeout = 500 * time.Millisecond

// registerMember puts a member into the directory through the operator.
func registerMember(t *testing.T, n *Network, id, endpoint string) {
	t.Helper()
	_, err := dial(t, n, n.Operator()).Directory().RegisterParticipant(callCtx(t), &qhinv1.RegisterParticipantRequest{
		Participant: &qhinv1.Participant{Id: id, Organization: "Member " + id, Endpoint: endpoint,
			InitiatePurposes: []string{"all"}, RespondPurposes: []string{"all"}},
		RequestId: "register-" + id,
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func TestDiscover_FailingMemberShowsInStatusWhileOthersAnswer(t *testing.T) {
	const (
		ok      = qhinv1.ResponderState_RESPONDER_STATE_OK
		noMatch = qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH
		timeout = qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT
		failed  = qhinv1.ResponderState_RESPONDER_STATE_ERROR
	)
	// In every case p1 asks for maria, p2 holds her, p3 holds someone else,
	// and a fourth member misbehaves.
	for _, tc := range []struct {
		name  string
		delay map[string]time.Duration
		// fault breaks the network after it started, and returns the id of
		// the member it broke.
		fault func(t *testing.T, n *Network) string
		want  qhinv1.ResponderState
	}{
		{
			name:  "member that never answers times out",
			delay: map[string]time.Duration{"p4": time.Hour},
			fault: func(*testing.T, *Network) string { return "p4" },
			want:  timeout,
		},
		{
			name: "member that is down is an error",
			fault: func(t *testing.T, n *Network) string {
				n.KillParticipant(3)
				return "p4"
			},
			want: failed,
		},
		{
			name: "member whose endpoint presents another member's identity is an error",
			fault: func(t *testing.T, n *Network) string {
				registerMember(t, n, "p9", n.Participants[1].Addr)
				return "p9"
			},
			want: failed,
		},
		{
			name: "member whose endpoint is not a participant is an error",
			fault: func(t *testing.T, n *Network) string {
				registerMember(t, n, "p9", n.Brokers[0].GRPCAddr)
				return "p9"
			},
			want: failed,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, logs := startNetwork(t, Options{Brokers: 1, Participants: 4, Delay: tc.delay, ResponderTimeout: faultTimeout})
			ctx := context.Background()
			if err := n.Participants[1].Server.PutPatient(ctx, "p2-000042", mariaAtP2); err != nil {
				t.Fatal(err)
			}
			if err := n.Participants[2].Server.PutPatient(ctx, "p3-777", someoneElse); err != nil {
				t.Fatal(err)
			}
			broken := tc.fault(t, n)
			gw := dial(t, n, n.ParticipantSource(0)).Gateway()

			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := gw.DiscoverPatients(cctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
			if err != nil {
				t.Fatalf("a failing member failed the whole query: %v", err)
			}
			want := map[string]qhinv1.ResponderState{"p2": ok, "p3": noMatch, "p4": noMatch, broken: tc.want}
			assertStates(t, resp.Responders, want)
			for _, r := range resp.Responders {
				if r.ParticipantId == broken && r.Detail == "" {
					t.Errorf("%s is %v without a detail", broken, r.Status)
				}
			}
			if len(resp.Persons) != 1 || len(resp.Persons[0].Links) != 1 || resp.Persons[0].Links[0].PatientId != "p2-000042" {
				t.Errorf("persons = %v, want maria at p2 only", resp.Persons)
			}
			for _, phi := range []string{"Ordóñez", "Ordonex", "Maria", "1961-04-17", "413-555-0188", "Harbor", "01103"} {
				if containsValue(logs.String(), phi) {
					t.Errorf("logs contain patient data %q", phi)
				}
			}
		})
	}
}

func TestDocuments_MemberThatNeverAnswersTimesOut(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 3, ResponderTimeout: faultTimeout})
	seedMaria(t, n)
	gw := dial(t, n, n.ParticipantSource(1)).Gateway()
	atP1 := discoverLinks(t, gw, "T-TRTMNT", maria)["p1"]
	atP3 := discoverLinks(t, gw, "T-TRTMNT", someoneElse)["p3"]
	restartWithDelay(t, n, 2, time.Hour) // p3 stops answering

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := gw.QueryDocuments(ctx, &qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Links: []*qhinv1.PatientLink{
		{Link: atP1}, {Link: atP3},
	}})
	if err != nil {
		t.Fatalf("a hanging member failed the whole query: %v", err)
	}
	assertStates(t, resp.Responders, map[string]qhinv1.ResponderState{
		"p1": qhinv1.ResponderState_RESPONDER_STATE_OK,
		"p3": qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT,
	})
	if len(resp.Documents) != 2 {
		t.Errorf("got %d documents, want p1's two", len(resp.Documents))
	}
}

func TestRetrieve_MemberThatNeverSendsEndsTheStream(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2, ResponderTimeout: faultTimeout})
	if err := n.Participants[1].Server.PutPatient(context.Background(), "p2-000042", mariaAtP2); err != nil {
		t.Fatal(err)
	}
	putDoc(t, n, 1, "p2-000042", "p2-doc-1", "18842-5", time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC), "discharge summary at p2")
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	link := docLink(t, gw, maria, "p2", "p2-doc-1")
	restartWithDelay(t, n, 1, time.Hour) // p2 stops answering

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Link: &qhinv1.DocumentLink{Link: link}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Recv()
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(status.Convert(err).Message(), "p2") {
		t.Fatalf("retrieval from a silent member: %v, want DeadlineExceeded naming p2", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the broker gave up only when the caller's own deadline passed")
	}
}
