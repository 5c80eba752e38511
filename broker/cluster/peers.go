package cluster

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/openqhin/openqhin/broker/telemetry"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// peers keeps one gRPC connection per other broker, for forwarding writes,
// read indexes, joins and status requests.
type peers struct {
	creds credentials.TransportCredentials

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeers(creds credentials.TransportCredentials) *peers {
	return &peers{creds: creds, conns: map[string]*grpc.ClientConn{}}
}

func (p *peers) client(addr string) (qhinv1.ClusterClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, fmt.Errorf("broker %s: %w", addr, ErrShutdown)
	}
	if c, ok := p.conns[addr]; ok {
		return qhinv1.NewClusterClient(c), nil
	}
	c, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(p.creds)}, telemetry.DialOptions()...)...)
	if err != nil {
		return nil, fmt.Errorf("dial broker %s: %w", addr, err)
	}
	p.conns[addr] = c
	return qhinv1.NewClusterClient(c), nil
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
