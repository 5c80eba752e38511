package client

import (
	"context"
	"sync"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Writes go to the leader. A broker that is not the leader forwards a write
// once, over another mutual-TLS hop; a client that sends it to the leader
// saves that hop. Brokers name the leader in a response trailer (LeaderKey)
// of every call that only the leader can run, whether they ran it or
// forwarded it. The client remembers such methods, and from then on sends
// them to the broker the last trailer named, when it is one of the brokers
// it is connected to and that connection is ready; otherwise, and for every
// other call, it spreads calls round robin as before. Nothing depends on
// the hint being right: a broker that is no longer the leader forwards the
// call, or answers Unavailable, and the retry goes round robin.

// LeaderKey is the response trailer in which a broker names the gRPC
// address of the leader that ran a leader-only call (broker/cluster sets
// it; the value is that of cluster.LeaderKey).
const LeaderKey = "qhin-leader"

// maxLeaderMethods bounds the methods remembered as leader-only.
const maxLeaderMethods = 256

// leaderRoute is what a connection has learnt of the leader.
type leaderRoute struct {
	mu      sync.Mutex
	addr    string
	methods map[string]bool
}

// target returns the address a call of method should go to, or "".
func (r *leaderRoute) target(method string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.methods[method] {
		return ""
	}
	return r.addr
}

// learn notes what a call's answer says of the leader: its trailer, or the
// leader hint of an Unavailable error. A call that went to the leader and
// failed Unavailable without a hint forgets the leader: the next attempt
// goes round robin, to a broker that knows where the leader is now.
func (r *leaderRoute) learn(method string, trailer metadata.MD, err error, targeted bool) {
	addr, leaderOnly := "", false
	if v := trailer.Get(LeaderKey); len(v) > 0 {
		addr, leaderOnly = v[len(v)-1], true
	}
	unavailable := status.Code(err) == codes.Unavailable
	if addr == "" && unavailable {
		for _, d := range status.Convert(err).Details() {
			if h, ok := d.(*qhinv1.LeaderHint); ok {
				addr = h.LeaderAddr
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if leaderOnly && !r.methods[method] && len(r.methods) < maxLeaderMethods {
		if r.methods == nil {
			r.methods = map[string]bool{}
		}
		r.methods[method] = true
	}
	switch {
	case addr != "":
		r.addr = addr
	case targeted && unavailable:
		r.addr = ""
	}
}

// targetKey carries the address a call should be picked for.
type targetKey struct{}

func withTarget(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, targetKey{}, addr)
}

// leaderFirstName is the load balancing policy of a Conn: round robin over
// the brokers (as grpc-go's round_robin: one pick_first child per broker),
// except that a call whose context names a broker goes to that broker while
// its connection is ready.
const leaderFirstName = "qhin_leader_first"

func init() { balancer.Register(leaderFirstBuilder{}) }

type leaderFirstBuilder struct{}

func (leaderFirstBuilder) Name() string { return leaderFirstName }

func (leaderFirstBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return &leaderFirst{Balancer: endpointsharding.NewBalancer(&targetingCC{ClientConn: cc}, opts,
		balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})}
}

type leaderFirst struct {
	balancer.Balancer
}

func (b *leaderFirst) UpdateClientConnState(s balancer.ClientConnState) error {
	return b.Balancer.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

// targetingCC wraps the round robin picker of endpointsharding with one
// that can pick a named broker.
type targetingCC struct {
	balancer.ClientConn
}

func (c *targetingCC) UpdateState(s balancer.State) {
	ready := map[string]balancer.Picker{}
	for _, cs := range endpointsharding.ChildStatesFromPicker(s.Picker) {
		if cs.State.ConnectivityState != connectivity.Ready {
			continue
		}
		for _, a := range cs.Endpoint.Addresses {
			ready[a.Addr] = cs.State.Picker
		}
	}
	s.Picker = &targetingPicker{roundRobin: s.Picker, ready: ready}
	c.ClientConn.UpdateState(s)
}

type targetingPicker struct {
	roundRobin balancer.Picker
	ready      map[string]balancer.Picker
}

func (p *targetingPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if addr, ok := info.Ctx.Value(targetKey{}).(string); ok {
		if child, ok := p.ready[addr]; ok {
			return child.Pick(info)
		}
	}
	return p.roundRobin.Pick(info)
}
