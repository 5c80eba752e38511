package participant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/participant/match"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Relay is the member's own side of the network: its EHR sends Gateway
// queries to the sidecar on loopback, and the sidecar makes them to the
// brokers under the member's identity, failing over between brokers. The EHR
// never holds the member's private key.
type Relay struct {
	qhinv1.UnimplementedGatewayServer
	conn *client.Conn
	key  *match.LinkageKey
}

// NewRelay relays to the brokers of conn. With the network's linkage key
// (nil for none), a discovery query that carries no record-locator tokens
// gets the tokens of its demographics, so that the brokers ask only the
// members that hold the person.
func NewRelay(conn *client.Conn, key *match.LinkageKey) *Relay { return &Relay{conn: conn, key: key} }

// CheckLoopback refuses a relay listener that is reachable from other hosts:
// the relay has no authentication of its own.
func CheckLoopback(l net.Listener) error {
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok || !addr.IP.IsLoopback() {
		return fmt.Errorf("the EHR API listens on %s; it must be a loopback address", l.Addr())
	}
	return nil
}

// DiscoverPatients implements qhinv1.GatewayServer.
func (r *Relay) DiscoverPatients(ctx context.Context, req *qhinv1.DiscoverPatientsRequest) (*qhinv1.DiscoverPatientsResponse, error) {
	if r.key != nil && len(req.LocatorTokens) == 0 {
		if t := r.key.QueryTokens(req.Demographics); t != nil {
			req = proto.Clone(req).(*qhinv1.DiscoverPatientsRequest)
			req.LocatorTokens = []*qhinv1.LocatorTokens{t}
		}
	}
	return r.conn.Gateway().DiscoverPatients(ctx, req)
}

// QueryDocuments implements qhinv1.GatewayServer.
func (r *Relay) QueryDocuments(ctx context.Context, req *qhinv1.QueryDocumentsRequest) (*qhinv1.QueryDocumentsResponse, error) {
	return r.conn.Gateway().QueryDocuments(ctx, req)
}

// RetrieveDocument implements qhinv1.GatewayServer, passing chunks on as
// they arrive.
func (r *Relay) RetrieveDocument(req *qhinv1.RetrieveDocumentRequest, out grpc.ServerStreamingServer[qhinv1.RetrieveDocumentResponse]) error {
	in, err := r.conn.Gateway().RetrieveDocument(out.Context(), req)
	if err != nil {
		return err
	}
	for {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}
