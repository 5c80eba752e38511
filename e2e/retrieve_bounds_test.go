package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// slowGateway is a Gateway client that takes little ahead of what it reads:
// a static 64 KiB window, so that a reader that pauses soon makes the
// broker wait to send.
func slowGateway(t *testing.T, n *Network, j int) qhinv1.GatewayClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+n.Brokers[0].GRPCAddr,
		grpc.WithTransportCredentials(brokerCreds(n, n.ParticipantSource(j))),
		grpc.WithStaticStreamWindowSize(64<<10), grpc.WithStaticConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return qhinv1.NewGatewayClient(cc)
}

func TestRetrieve_PausingReaderIsNotBlamedOnTheHolder(t *testing.T) {
	const timeout = 500 * time.Millisecond
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2, ResponderTimeout: timeout, Limits: broker.Limits{SendTimeout: time.Minute}})
	if err := n.Participants[0].Server.PutPatient(context.Background(), "p1-mrn-001", maria); err != nil {
		t.Fatal(err)
	}
	sum := putRandomDoc(t, n, 0, "p1-mrn-001", "p1-doc", 4<<20, 3)
	gw := slowGateway(t, n, 1)
	link := docLink(t, gw, maria, "p1", "p1-doc")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Link: &qhinv1.DocumentLink{Link: link}})
	if err != nil {
		t.Fatal(err)
	}
	var got received
	if err := got.receive(s, 1); err != errStopped {
		t.Fatalf("first chunk: %v", err)
	}
	// The reader looks away for four times the responder timeout: the
	// broker waits to send, and the holder, which sent all it could, is
	// not at fault.
	time.Sleep(4 * timeout)
	if err := got.receive(s, 0); err != nil {
		t.Fatalf("after the pause: %v (after %d bytes)", err, got.size)
	}
	if got.size != 4<<20 || got.sha256 != sum {
		t.Errorf("received %d bytes with sha256 %s, want %d with %s", got.size, got.sha256, 4<<20, sum)
	}
}

func TestRetrieve_DocumentReplacedMidStreamIsAborted(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 2})
	if err := n.Participants[0].Server.PutPatient(context.Background(), "p1-mrn-001", maria); err != nil {
		t.Fatal(err)
	}
	putRandomDoc(t, n, 0, "p1-mrn-001", "p1-doc", 12<<20, 4)
	gw := slowGateway(t, n, 1)
	link := docLink(t, gw, maria, "p1", "p1-doc")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
		Link: &qhinv1.DocumentLink{Link: link}})
	if err != nil {
		t.Fatal(err)
	}
	var got received
	if err := got.receive(s, 1); err != errStopped {
		t.Fatalf("first chunk: %v", err)
	}
	// The document is replaced while the stream is a few hundred KiB in:
	// the write does not wait for the stream, and the stream does not go
	// on with the old version.
	putRandomDoc(t, n, 0, "p1-mrn-001", "p1-doc", 12<<20, 5)
	err = got.receive(s, 0)
	if status.Code(err) != codes.Aborted {
		t.Fatalf("the stream after the document changed: %v after %d bytes, want Aborted", err, got.size)
	}
	if got.size >= 12<<20 {
		t.Errorf("the whole old document arrived (%d bytes)", got.size)
	}
}
