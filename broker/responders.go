package broker

import (
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// responders keeps one connection per member's Responder endpoint. Each
// connection accepts only the SPIFFE ID the directory lists for the member,
// so a broker never sends a query to an impostor at a member's address.
type responders struct {
	src    pki.Source
	limits Limits

	mu    sync.Mutex
	conns map[string]*responderConn
}

type responderConn struct {
	endpoint string
	spiffeID string
	conn     *grpc.ClientConn
}

func newResponders(src pki.Source, limits Limits) *responders {
	return &responders{src: src, limits: limits, conns: map[string]*responderConn{}}
}

// client returns a Responder client for the member, redialing when the
// directory moved it or changed its identity.
func (r *responders) client(p *qhinv1.Participant) (qhinv1.ResponderClient, error) {
	conn, err := r.conn(p)
	if err != nil {
		return nil, err
	}
	return qhinv1.NewResponderClient(conn), nil
}

// conn returns the connection to the member's Responder, redialing when the
// directory moved it or changed its identity.
func (r *responders) conn(p *qhinv1.Participant) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		return nil, fmt.Errorf("broker is shutting down")
	}
	if c, ok := r.conns[p.Id]; ok {
		if c.endpoint == p.Endpoint && c.spiffeID == p.SpiffeId {
			return c.conn, nil
		}
		c.conn.Close()
		delete(r.conns, p.Id)
	}
	id, err := spiffeid.FromString(p.SpiffeId)
	if err != nil {
		return nil, fmt.Errorf("participant %s: spiffe id: %w", p.Id, err)
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(pki.ClientCredentials(r.src, pki.AuthorizeID(id))),
		// A member that restarts is asked again within seconds, not after
		// gRPC's default two-minute backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		// A member's answer is capped in bytes, and what it streams ahead
		// of what the broker has passed on is capped by static windows:
		// gRPC's dynamic windows would let one never-read retrieval
		// buffer megabytes.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(r.limits.MaxResponderMessageBytes)),
		grpc.WithStaticStreamWindowSize(int32(r.limits.MemberStreamWindowBytes)),
		grpc.WithStaticConnWindowSize(int32(r.limits.MemberConnWindowBytes)),
	}, telemetry.DialOptions()...)
	conn, err := grpc.NewClient(p.Endpoint, opts...)
	if err != nil {
		return nil, fmt.Errorf("participant %s: dial: %w", p.Id, err)
	}
	r.conns[p.Id] = &responderConn{endpoint: p.Endpoint, spiffeID: p.SpiffeId, conn: conn}
	return conn, nil
}

func (r *responders) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.conn.Close()
	}
	r.conns = nil
}
