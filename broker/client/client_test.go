package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// testTimeout bounds every call and poll in these tests.
const testTimeout = 10 * time.Second

var testTD = spiffeid.RequireTrustDomainFromString("qhin.test")

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(testTD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func sourceFor(t *testing.T, ca *pki.CA, role pki.Role, name string) pki.StaticSource {
	t.Helper()
	svid, err := ca.IssueIdentity(role, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return pki.StaticSource{SVID: svid, Bundle: ca.Bundle()}
}

// fakeBroker is a broker as far as a client can tell: Gateway.DiscoverPatients
// answers with its own name as the query id (or fails with fail), and
// Cluster.Brokers returns brokers.
type fakeBroker struct {
	qhinv1.UnimplementedGatewayServer
	qhinv1.UnimplementedClusterServer
	qhinv1.UnimplementedDirectoryServer

	name    string
	fail    codes.Code // codes.OK: answer
	brokers atomic.Pointer[[]string]
	calls   atomic.Int64

	srv  *grpc.Server
	addr string

	// leader is the address a write's trailer names (none when nil), as
	// a broker names the leader that ran it; writes counts the writes
	// this broker received.
	leader atomic.Pointer[string]
	writes atomic.Int64
}

// RegisterParticipant is a leader-only write: it answers as a broker does
// when it ran or forwarded the write, naming the leader in the trailer.
func (b *fakeBroker) RegisterParticipant(ctx context.Context, req *qhinv1.RegisterParticipantRequest) (*qhinv1.RegisterParticipantResponse, error) {
	b.writes.Add(1)
	if l := b.leader.Load(); l != nil {
		grpc.SetTrailer(ctx, metadata.Pairs(LeaderKey, *l))
	}
	return &qhinv1.RegisterParticipantResponse{Participant: req.Participant}, nil
}

func (b *fakeBroker) DiscoverPatients(context.Context, *qhinv1.DiscoverPatientsRequest) (*qhinv1.DiscoverPatientsResponse, error) {
	b.calls.Add(1)
	if b.fail != codes.OK {
		return nil, status.Error(b.fail, b.name+" refuses")
	}
	return &qhinv1.DiscoverPatientsResponse{QueryId: b.name}, nil
}

func (b *fakeBroker) Brokers(context.Context, *qhinv1.BrokersRequest) (*qhinv1.BrokersResponse, error) {
	b.calls.Add(1)
	if b.fail != codes.OK {
		return nil, status.Error(b.fail, b.name+" refuses")
	}
	var addrs []string
	if p := b.brokers.Load(); p != nil {
		addrs = slices.Clone(*p)
	}
	return &qhinv1.BrokersResponse{GrpcAddrs: addrs}, nil
}

// startBroker serves a fakeBroker on 127.0.0.1:0 over mTLS with the source's
// SVID and the network's authorization policy. It stops when the test ends.
func startBroker(t *testing.T, name string, src pki.Source, fail codes.Code) *fakeBroker {
	t.Helper()
	b := &fakeBroker{name: name, fail: fail}
	b.srv = grpc.NewServer(
		grpc.Creds(pki.ServerCredentials(src, pki.AuthorizeRoles(testTD, pki.Roles...))),
		grpc.ChainUnaryInterceptor(pki.DefaultPolicy.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(pki.DefaultPolicy.StreamInterceptor()),
	)
	qhinv1.RegisterGatewayServer(b.srv, b)
	qhinv1.RegisterClusterServer(b.srv, b)
	qhinv1.RegisterDirectoryServer(b.srv, b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- b.srv.Serve(ln) }()
	t.Cleanup(func() {
		b.srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("%s: Serve: %v", name, err)
		}
	})
	return b
}

// dialAs connects to addrs as participant "clinic-a".
func dialAs(t *testing.T, ca *pki.CA, addrs ...string) *Conn {
	t.Helper()
	c, err := Dial(addrs, sourceFor(t, ca, pki.RoleParticipant, "clinic-a"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// discover makes one call under its own deadline and returns which broker
// answered.
func discover(t *testing.T, c *Conn) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := c.Gateway().DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{})
	return resp.GetQueryId(), err
}

// until polls cond (which may fail the test) until it holds, failing the
// test with the phase it was waiting for when testTimeout passes first.
func until(t *testing.T, phase string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("phase %q: timed out after %v", phase, testTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDial_RejectsNoAddresses(t *testing.T) {
	ca := newCA(t)
	if _, err := Dial(nil, sourceFor(t, ca, pki.RoleParticipant, "clinic-a"), nil); err == nil {
		t.Error("Dial with no addresses succeeded")
	}
}

func TestConn_SpreadsCallsOverBrokers(t *testing.T) {
	ca := newCA(t)
	a := startBroker(t, "a", sourceFor(t, ca, pki.RoleBroker, "a"), codes.OK)
	b := startBroker(t, "b", sourceFor(t, ca, pki.RoleBroker, "b"), codes.OK)
	c := dialAs(t, ca, a.addr, b.addr)
	seen := map[string]bool{}
	until(t, "both brokers answered", func() bool {
		who, err := discover(t, c)
		if err != nil {
			t.Fatalf("call failed with both brokers up: %v", err)
		}
		seen[who] = true
		return seen["a"] && seen["b"]
	})
}

func TestConn_FailsOverWhenABrokerStops(t *testing.T) {
	tests := []struct {
		name string
		stop func(*grpc.Server)
	}{
		{"Stop", (*grpc.Server).Stop},
		{"GracefulStop", (*grpc.Server).GracefulStop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newCA(t)
			a := startBroker(t, "a", sourceFor(t, ca, pki.RoleBroker, "a"), codes.OK)
			b := startBroker(t, "b", sourceFor(t, ca, pki.RoleBroker, "b"), codes.OK)
			z := startBroker(t, "z", sourceFor(t, ca, pki.RoleBroker, "z"), codes.OK)
			c := dialAs(t, ca, a.addr, b.addr, z.addr)

			// Connected to all three.
			seen := map[string]bool{}
			until(t, "every broker answered", func() bool {
				who, err := discover(t, c)
				if err != nil {
					t.Fatalf("call failed with every broker up: %v", err)
				}
				seen[who] = true
				return len(seen) == 3
			})

			tt.stop(a.srv)
			before := a.calls.Load()

			// Every call after the stop succeeds within its deadline,
			// through the brokers still up.
			const calls = 30
			failures := 0
			answered := map[string]int{}
			for range calls {
				who, err := discover(t, c)
				if err != nil {
					failures++
					t.Logf("call failed: %v", err)
					continue
				}
				answered[who]++
			}
			if failures != 0 {
				t.Errorf("%d of %d calls failed after a broker stopped, want none", failures, calls)
			}
			if answered["a"] != 0 || a.calls.Load() != before {
				t.Errorf("stopped broker answered %d calls", answered["a"])
			}
			if answered["b"] == 0 || answered["z"] == 0 {
				t.Errorf("calls after the stop went to %v, want both remaining brokers", answered)
			}
		})
	}
}

func TestConn_RetriesUnavailableOnAnotherBroker(t *testing.T) {
	ca := newCA(t)
	down := startBroker(t, "down", sourceFor(t, ca, pki.RoleBroker, "down"), codes.Unavailable)
	up := startBroker(t, "up", sourceFor(t, ca, pki.RoleBroker, "up"), codes.OK)
	c := dialAs(t, ca, down.addr, up.addr)

	// Call until the failing broker has been asked several times, so that
	// the retry is proven rather than the failing broker never picked.
	calls := 0
	until(t, "the Unavailable broker was tried", func() bool {
		who, err := discover(t, c)
		calls++
		if err != nil {
			t.Fatalf("call %d failed: %v (Unavailable must be retried on another broker)", calls, err)
		}
		if who != "up" {
			t.Fatalf("call %d answered by %q", calls, who)
		}
		return down.calls.Load() >= 3
	})
}

func TestConn_DoesNotRetryOtherErrors(t *testing.T) {
	ca := newCA(t)
	denies := startBroker(t, "denies", sourceFor(t, ca, pki.RoleBroker, "denies"), codes.PermissionDenied)
	c := dialAs(t, ca, denies.addr)
	_, err := discover(t, c)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("call = %v, want PermissionDenied", err)
	}
	if n := denies.calls.Load(); n != 1 {
		t.Errorf("a PermissionDenied call reached the broker %d times, want 1", n)
	}
}

func TestConn_RefreshUsesTheClusterList(t *testing.T) {
	ca := newCA(t)
	a := startBroker(t, "a", sourceFor(t, ca, pki.RoleBroker, "a"), codes.OK)
	b := startBroker(t, "b", sourceFor(t, ca, pki.RoleBroker, "b"), codes.OK)
	newList := []string{b.addr, a.addr}
	a.brokers.Store(&newList)
	b.brokers.Store(&newList)

	c := dialAs(t, ca, a.addr)
	if got := c.Addrs(); !slices.Equal(got, []string{a.addr}) {
		t.Fatalf("Addrs before refresh = %v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := c.Refresh(ctx); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	want := slices.Sorted(slices.Values(newList))
	if got := c.Addrs(); !slices.Equal(got, want) {
		t.Errorf("Addrs after refresh = %v, want %v", got, want)
	}
	// Addrs hands out a copy.
	c.Addrs()[0] = "mangled"
	if got := c.Addrs(); !slices.Equal(got, want) {
		t.Errorf("Addrs shares its slice: %v", got)
	}
	// The new broker is used.
	until(t, "the refreshed-in broker answered", func() bool {
		who, err := discover(t, c)
		if err != nil {
			t.Fatalf("call after refresh: %v", err)
		}
		return who == "b"
	})
}

func TestConn_RefreshKeepsListWhenClusterGivesNone(t *testing.T) {
	tests := []struct {
		name    string
		fail    codes.Code
		list    []string
		wantErr bool
	}{
		{name: "empty list", fail: codes.OK, list: nil},
		{name: "Brokers fails", fail: codes.Internal, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newCA(t)
			a := startBroker(t, "a", sourceFor(t, ca, pki.RoleBroker, "a"), tt.fail)
			a.brokers.Store(&tt.list)
			c := dialAs(t, ca, a.addr)
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := c.Refresh(ctx); (err != nil) != tt.wantErr {
				t.Errorf("Refresh = %v, want error %v", err, tt.wantErr)
			}
			if got := c.Addrs(); !slices.Equal(got, []string{a.addr}) {
				t.Errorf("Addrs = %v, want the dialled list kept", got)
			}
		})
	}
}

func TestConn_TalksOnlyToBrokers(t *testing.T) {
	tests := []struct {
		name   string
		server func(*testing.T, *pki.CA) pki.Source
		wantOK bool
	}{
		{
			name:   "broker SVID",
			server: func(t *testing.T, ca *pki.CA) pki.Source { return sourceFor(t, ca, pki.RoleBroker, "b0") },
			wantOK: true,
		},
		{
			name:   "participant SVID",
			server: func(t *testing.T, ca *pki.CA) pki.Source { return sourceFor(t, ca, pki.RoleParticipant, "clinic-x") },
		},
		{
			name:   "operator SVID",
			server: func(t *testing.T, ca *pki.CA) pki.Source { return sourceFor(t, ca, pki.RoleOperator, "ops") },
		},
		{
			name: "broker SVID of another network",
			server: func(t *testing.T, _ *pki.CA) pki.Source {
				other, err := pki.NewCA(spiffeid.RequireTrustDomainFromString("other.test"), time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				return sourceFor(t, other, pki.RoleBroker, "b0")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newCA(t)
			srv := startBroker(t, "s", tt.server(t, ca), codes.OK)
			c := dialAs(t, ca, srv.addr)
			_, err := discover(t, c)
			if tt.wantOK {
				if err != nil {
					t.Fatalf("call to a broker failed: %v", err)
				}
				return
			}
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("call to a server that is not a broker = %v, want a failed handshake (Unavailable)", err)
			}
			if n := srv.calls.Load(); n != 0 {
				t.Errorf("a server that is not a broker was called %d times", n)
			}
		})
	}
}

func TestConn_CloseIsIdempotent(t *testing.T) {
	ca := newCA(t)
	c, err := Dial([]string{"127.0.0.1:1"}, sourceFor(t, ca, pki.RoleParticipant, "clinic-a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// dialOperator connects to addrs as operator "ops".
func dialOperator(t *testing.T, ca *pki.CA, addrs ...string) *Conn {
	t.Helper()
	c, err := Dial(addrs, sourceFor(t, ca, pki.RoleOperator, "ops"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func register(t *testing.T, c *Conn, id string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	_, err := c.Directory().RegisterParticipant(ctx, &qhinv1.RegisterParticipantRequest{Participant: &qhinv1.Participant{Id: id}})
	return err
}

// TestConn_SendsWritesToTheLeaderTheBrokersName: once a broker has named the
// leader in a write's trailer, the client sends that method's calls to the
// leader alone, saving the forwarding hop; other calls stay spread over
// every broker.
func TestConn_SendsWritesToTheLeaderTheBrokersName(t *testing.T) {
	ca := newCA(t)
	var bs []*fakeBroker
	for _, name := range []string{"a", "b", "c"} {
		bs = append(bs, startBroker(t, name, sourceFor(t, ca, pki.RoleBroker, name), codes.OK))
	}
	leader := bs[1]
	for _, b := range bs {
		b.leader.Store(&leader.addr)
	}
	c := dialOperator(t, ca, bs[0].addr, bs[1].addr, bs[2].addr)
	until(t, "every broker is connected", func() bool {
		for _, b := range bs {
			b.calls.Store(0)
		}
		for range 6 {
			if _, err := c.Cluster().Brokers(context.Background(), &qhinv1.BrokersRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		return bs[0].calls.Load() > 0 && bs[1].calls.Load() > 0 && bs[2].calls.Load() > 0
	})
	if err := register(t, c, "first"); err != nil {
		t.Fatal(err)
	}
	if got := c.Leader(); got != leader.addr {
		t.Fatalf("the client learnt leader %q, want %q", got, leader.addr)
	}
	before := [3]int64{bs[0].writes.Load(), bs[1].writes.Load(), bs[2].writes.Load()}
	const n = 30
	for i := range n {
		if err := register(t, c, fmt.Sprintf("p%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range bs {
		want := before[i]
		if b == leader {
			want += n
		}
		if got := b.writes.Load(); got != want {
			t.Errorf("broker %s received %d writes, want %d", b.name, got, want)
		}
	}
	// Reads are not leader-only: still round robin.
	for _, b := range bs {
		b.calls.Store(0)
	}
	for range 6 {
		if _, err := c.Cluster().Brokers(context.Background(), &qhinv1.BrokersRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if bs[0].calls.Load() == 0 || bs[2].calls.Load() == 0 {
		t.Errorf("reads went to the leader only: %d %d %d", bs[0].calls.Load(), bs[1].calls.Load(), bs[2].calls.Load())
	}
}

// TestConn_WritesFollowTheLeaderWhenItGoes: the leader stops; writes go on
// through the other brokers (round robin), and move to the leader they name
// next.
func TestConn_WritesFollowTheLeaderWhenItGoes(t *testing.T) {
	ca := newCA(t)
	var bs []*fakeBroker
	for _, name := range []string{"a", "b", "c"} {
		bs = append(bs, startBroker(t, name, sourceFor(t, ca, pki.RoleBroker, name), codes.OK))
	}
	for _, b := range bs {
		b.leader.Store(&bs[0].addr)
	}
	c := dialOperator(t, ca, bs[0].addr, bs[1].addr, bs[2].addr)
	if err := register(t, c, "first"); err != nil {
		t.Fatal(err)
	}
	bs[0].srv.Stop()
	for _, b := range bs[1:] {
		b.leader.Store(&bs[2].addr)
	}
	// Named is not yet reached: the new leader's connection may still be
	// coming up (a write then goes round robin); wait for a write to land
	// there.
	until(t, "writes reach the new leader", func() bool {
		landed := bs[2].writes.Load()
		if err := register(t, c, "next"); err != nil {
			t.Fatalf("write after the leader stopped: %v", err)
		}
		return c.Leader() == bs[2].addr && bs[2].writes.Load() > landed
	})
	before := bs[1].writes.Load()
	for i := range 10 {
		if err := register(t, c, fmt.Sprintf("q%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := bs[1].writes.Load(); got != before {
		t.Errorf("a broker that is not the leader received %d writes after the leader was named", got-before)
	}
}
