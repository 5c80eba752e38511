// Package client connects participants and operators to a broker cluster as
// one endpoint. Calls are spread over every broker, except that calls only
// the leader runs go straight to the leader once the brokers have named it
// (leader.go); a broker that is down is skipped, and a call that fails with
// Unavailable (broker gone, no leader yet, a broker that cannot vouch for
// its state) is retried on another broker within the call's own deadline
// (retry.go: the one retry policy). The broker list is refreshed from the
// cluster.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// RefreshInterval is how often the broker list is refreshed from the
// cluster.
const RefreshInterval = 30 * time.Second

// serviceConfig spreads calls round-robin over the brokers, leader-only
// calls to the leader once it is known (leader.go); retries are the
// interceptors' (retry.go).
const serviceConfig = `{"loadBalancingConfig": [{"` + leaderFirstName + `": {}}]}`

// Conn is a connection to every broker of a cluster.
type Conn struct {
	*grpc.ClientConn
	res   *manual.Resolver
	log   *slog.Logger
	route *leaderRoute

	mu    sync.Mutex
	addrs []string

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// Dial connects to the brokers at addrs with the identity in src. It does not
// wait for any broker to answer; calls do.
func Dial(addrs []string, src pki.Source, log *slog.Logger) (*Conn, error) {
	if len(addrs) == 0 {
		return nil, errors.New("no broker addresses")
	}
	self, err := pki.SourceIdentity(src)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	res := manual.NewBuilderWithScheme("qhin-brokers")
	res.InitialState(state(addrs))
	route := &leaderRoute{}
	opts := append([]grpc.DialOption{
		grpc.WithResolvers(res),
		grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.AuthorizeRoles(self.ID.TrustDomain(), pki.RoleBroker))),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
		grpc.WithChainUnaryInterceptor(route.unary),
		grpc.WithChainStreamInterceptor(retryStream),
	}, telemetry.DialOptions()...)
	cc, err := grpc.NewClient(res.Scheme()+":///brokers", opts...)
	if err != nil {
		return nil, fmt.Errorf("dial brokers: %w", err)
	}
	c := &Conn{ClientConn: cc, res: res, log: log, route: route, addrs: slices.Clone(addrs), stop: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.refreshLoop()
	}()
	return c, nil
}

func state(addrs []string) resolver.State {
	var st resolver.State
	for _, a := range addrs {
		st.Endpoints = append(st.Endpoints, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	return st
}

// Addrs returns the brokers the connection uses now.
func (c *Conn) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.addrs)
}

// Leader returns the gRPC address of the broker this connection sends
// leader-only calls to, or "" while it does not know it.
func (c *Conn) Leader() string {
	c.route.mu.Lock()
	defer c.route.mu.Unlock()
	return c.route.addr
}

// Refresh asks the cluster for its brokers and uses them from now on.
func (c *Conn) Refresh(ctx context.Context) error {
	resp, err := qhinv1.NewClusterClient(c.ClientConn).Brokers(ctx, &qhinv1.BrokersRequest{})
	if err != nil {
		return fmt.Errorf("refresh broker list: %w", err)
	}
	addrs := resp.GrpcAddrs
	if len(addrs) == 0 {
		return nil
	}
	slices.Sort(addrs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(addrs, c.addrs) {
		return nil
	}
	c.addrs = addrs
	c.res.UpdateState(state(addrs))
	return nil
}

func (c *Conn) refreshLoop() {
	t := time.NewTicker(RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := c.Refresh(ctx); err != nil {
			c.log.Debug("refresh broker list", "error", err)
		}
		cancel()
	}
}

// Gateway returns a client of the brokers' Gateway service.
func (c *Conn) Gateway() qhinv1.GatewayClient { return qhinv1.NewGatewayClient(c.ClientConn) }

// Directory returns a client of the brokers' Directory service.
func (c *Conn) Directory() qhinv1.DirectoryClient { return qhinv1.NewDirectoryClient(c.ClientConn) }

// Cluster returns a client of the brokers' Cluster service.
func (c *Conn) Cluster() qhinv1.ClusterClient { return qhinv1.NewClusterClient(c.ClientConn) }

// Close stops refreshing and closes every connection.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		close(c.stop)
		c.wg.Wait()
		err = c.ClientConn.Close()
	})
	return err
}
