package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// foreignParticipant mints an SVID for spiffe://<td>/participant/<name> from
// a CA of its own: a certificate the network has never trusted. The source
// trusts the network's bundle, so the caller accepts the broker and only the
// broker can refuse the call.
func foreignParticipant(t *testing.T, n *Network, td, name string) pki.Source {
	t.Helper()
	ca, err := pki.NewCA(spiffeid.RequireTrustDomainFromString(td), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.IssueIdentity(pki.RoleParticipant, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return pki.StaticSource{SVID: svid, Bundle: n.CA.Bundle()}
}

func issue(t *testing.T, n *Network, role pki.Role, name string) pki.Source {
	t.Helper()
	src, err := n.Issue(role, name)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func discoverMaria(ctx context.Context, cc *grpc.ClientConn) error {
	_, err := qhinv1.NewGatewayClient(cc).DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{
		PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria,
	})
	return err
}

func listParticipants(ctx context.Context, cc *grpc.ClientConn) error {
	_, err := qhinv1.NewDirectoryClient(cc).ListParticipants(ctx, &qhinv1.ListParticipantsRequest{})
	return err
}

// retrieveDoc returns a call that reads a whole retrieval stream of the
// document link, so that a refusal, which arrives with the first Recv, is
// returned.
func retrieveDoc(link string) func(ctx context.Context, cc *grpc.ClientConn) error {
	return func(ctx context.Context, cc *grpc.ClientConn) error { return retrieveLink(ctx, cc, link) }
}

func retrieveLink(ctx context.Context, cc *grpc.ClientConn, link string) error {
	s, err := qhinv1.NewGatewayClient(cc).RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{
		PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Link: &qhinv1.DocumentLink{Link: link},
	})
	if err != nil {
		return err
	}
	for {
		if _, err := s.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

func responderDiscover(ctx context.Context, cc *grpc.ClientConn) error {
	_, err := qhinv1.NewResponderClient(cc).DiscoverPatients(ctx, &qhinv1.ResponderDiscoverPatientsRequest{
		Context:      &qhinv1.QueryContext{QueryId: "authz-test", InitiatorParticipantId: "p1", PurposeOfUse: "T-TRTMNT", Requester: requester()},
		Demographics: maria,
	})
	return err
}

func TestAuthz_CallersAreRefusedOutsideTheirRole(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	ctx := context.Background()
	if err := n.Participants[0].Server.PutPatient(ctx, "p1-mrn-001", maria); err != nil {
		t.Fatal(err)
	}
	putDoc(t, n, 0, "p1-mrn-001", "p1-doc-1", "34133-9", time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), "summary at p1")

	broker := n.Brokers[0].GRPCAddr
	p2Responder := n.Participants[1].Addr
	p1, p2 := n.ParticipantSource(0), n.ParticipantSource(1)
	// p2's link to p1's document, as a document query under discovery
	// issues it.
	link := docLink(t, dial(t, n, p2).Gateway(), maria, "p1", "p1-doc-1")
	retrieveDoc := retrieveDoc(link)
	// A client that presents no certificate. It does not check the server
	// either, so that a failure can only be the server's refusal.
	noCert := credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}) //nolint:gosec // see above

	for _, tc := range []struct {
		name  string
		addr  string
		creds credentials.TransportCredentials
		call  func(context.Context, *grpc.ClientConn) error
		code  codes.Code
		// msg is a substring of the status message, when set.
		msg string
	}{
		// Controls: the same dialing, with a caller in its role, works, so
		// that every refusal below is a refusal and not a broken dial.
		{"participant queries the gateway", broker, brokerCreds(n, p2), discoverMaria, codes.OK, ""},
		{"participant retrieves through the gateway", broker, brokerCreds(n, p2), retrieveDoc, codes.OK, ""},
		{"operator lists the directory", broker, brokerCreds(n, n.Operator()), listParticipants, codes.OK, ""},
		{"broker asks a responder", p2Responder, participantCreds(t, n, n.Brokers[0].source, 1), responderDiscover, codes.OK, ""},

		{"no client certificate", broker, noCert, discoverMaria, codes.Unavailable, ""},
		{"certificate of another trust domain", broker, brokerCreds(n, foreignParticipant(t, n, "other.test", "p1")), discoverMaria, codes.Unavailable, ""},
		{"certificate of an impostor CA for the network's trust domain", broker, brokerCreds(n, foreignParticipant(t, n, DefaultTrustDomain, "p1")), discoverMaria, codes.Unavailable, ""},
		{"participant lists the directory", broker, brokerCreds(n, p1), listParticipants, codes.PermissionDenied, "may not call"},
		{"operator queries the gateway", broker, brokerCreds(n, n.Operator()), discoverMaria, codes.PermissionDenied, "may not call"},
		{"operator retrieves through the gateway", broker, brokerCreds(n, n.Operator()), retrieveDoc, codes.PermissionDenied, "may not call"},
		{"participant not in the directory queries", broker, brokerCreds(n, issue(t, n, pki.RoleParticipant, "p9")), discoverMaria, codes.PermissionDenied, "not in the directory"},
		{"participant not in the directory retrieves", broker, brokerCreds(n, issue(t, n, pki.RoleParticipant, "p9")), retrieveDoc, codes.PermissionDenied, "not in the directory"},
		{"broker queries the gateway", broker, brokerCreds(n, n.Brokers[0].source), discoverMaria, codes.PermissionDenied, "may not call"},
		{"participant calls another participant's responder", p2Responder, participantCreds(t, n, p1, 1), responderDiscover, codes.Unavailable, ""},
		{"operator calls a responder", p2Responder, participantCreds(t, n, n.Operator(), 1), responderDiscover, codes.PermissionDenied, "may not call"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := rawConn(t, tc.addr, tc.creds)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tc.call(ctx, cc)
			t.Logf("outcome: %v", err)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q, want it to contain %q", msg, tc.msg)
			}
		})
	}
}

func TestAuthz_SuspendedParticipantIsRefusedUntilResumed(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	dir := dial(t, n, n.Operator()).Directory()
	p1 := dial(t, n, n.ParticipantSource(0)).Gateway()
	p2 := dial(t, n, n.ParticipantSource(1)).Gateway()
	discover := func(gw qhinv1.GatewayClient) (*qhinv1.DiscoverPatientsResponse, error) {
		return gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
	}
	setStatus := func(st qhinv1.ParticipantStatus) {
		t.Helper()
		resp, err := dir.SetParticipantStatus(callCtx(t), &qhinv1.SetParticipantStatusRequest{ParticipantId: "p2", Status: st, Reason: "authz test"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Participant.Status != st {
			t.Fatalf("p2 is %v after setting %v", resp.Participant.Status, st)
		}
	}

	setStatus(qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED)
	_, err := discover(p2)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "suspended") {
		t.Fatalf("suspended p2 queries: %v, want PermissionDenied saying suspended", err)
	}
	resp, err := discover(p1)
	if err != nil {
		t.Fatalf("p1 queries while p2 is suspended: %v", err)
	}
	assertStates(t, resp.Responders, map[string]qhinv1.ResponderState{"p2": qhinv1.ResponderState_RESPONDER_STATE_SKIPPED})

	setStatus(qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE)
	resp, err = discover(p2)
	if err != nil {
		t.Fatalf("resumed p2 queries: %v", err)
	}
	assertStates(t, resp.Responders, map[string]qhinv1.ResponderState{"p1": qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH})
	resp, err = discover(p1)
	if err != nil {
		t.Fatalf("p1 queries after p2 resumed: %v", err)
	}
	assertStates(t, resp.Responders, map[string]qhinv1.ResponderState{"p2": qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH})
}

// TestAuthz_RefusedCallerLearnsNothingAboutItsInput checks standing before
// input: a participant outside the directory that sends garbage is told it
// may not query, not what is wrong with the garbage.
func TestAuthz_RefusedCallerLearnsNothingAboutItsInput(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 1})
	outsider := dial(t, n, mustIssue(t, n, pki.RoleParticipant, "p9"))
	_, err := outsider.Gateway().DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-NOPE"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("outsider with bad input: %v, want PermissionDenied", err)
	}
}
