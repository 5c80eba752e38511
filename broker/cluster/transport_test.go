package cluster

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/openqhin/openqhin/pki"
)

// raftEnd is one end of a real Raft transport: hashicorp/raft's
// NetworkTransport over the mutual-TLS stream layer, on loopback.
type raftEnd struct {
	stream *tlsStreamLayer
	trans  *raft.NetworkTransport
	// got counts the RPCs that reached Raft (the consumer).
	got     atomic.Int64
	servers []raft.Server
	mu      sync.Mutex
}

func newRaftEnd(t *testing.T, src pki.Source, maxAge time.Duration, logs io.Writer) *raftEnd {
	return newCountingRaftEnd(t, src, maxAge, logs, nil)
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func newCountingRaftEnd(t *testing.T, src pki.Source, maxAge time.Duration, logs io.Writer, accepted *atomic.Int64) *raftEnd {
	t.Helper()
	var ln net.Listener
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if accepted != nil {
		ln = countingListener{Listener: ln, n: accepted}
	}
	brokersOnly := pki.AuthorizeRoles(testTD, pki.RoleBroker)
	e := &raftEnd{}
	e.stream = newTLSStreamLayer(ln, ln.Addr(), pki.ServerTLS(src, brokersOnly), pki.ClientTLS(src, brokersOnly), maxAge,
		slog.New(slog.NewTextHandler(logs, nil)))
	e.stream.watch(func() []raft.Server {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.servers
	})
	e.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: e.stream, MaxPool: 2, Timeout: 5 * time.Second, Logger: hclog.NewNullLogger(),
	})
	t.Cleanup(func() { e.trans.Close() })
	go func() {
		for rpc := range e.trans.Consumer() {
			e.got.Add(1)
			var resp any
			switch rpc.Command.(type) {
			case *raft.AppendEntriesRequest:
				resp = &raft.AppendEntriesResponse{Success: true}
			case *raft.RequestVoteRequest:
				resp = &raft.RequestVoteResponse{}
			case *raft.InstallSnapshotRequest:
				io.Copy(io.Discard, rpc.Reader)
				resp = &raft.InstallSnapshotResponse{Success: true}
			case *raft.TimeoutNowRequest:
				resp = &raft.TimeoutNowResponse{}
			case *raft.RequestPreVoteRequest:
				resp = &raft.RequestPreVoteResponse{}
			}
			rpc.Respond(resp, nil)
		}
	}()
	return e
}

func (e *raftEnd) addr() raft.ServerAddress { return raft.ServerAddress(e.stream.Addr().String()) }

func (e *raftEnd) setServers(s ...raft.Server) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.servers = s
}

func header(id string, addr raft.ServerAddress) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)}
}

// TestTransport_PeerMustBeTheServerItClaims sends every kind of Raft RPC
// over real mutual TLS from broker b2's certificate to a broker whose
// configuration holds b2 and b3, claiming each identity in turn. Only the
// RPCs whose server id and addresses are b2's reach Raft.
func TestTransport_PeerMustBeTheServerItClaims(t *testing.T) {
	ca, err := pki.NewCA(testTD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	source := func(role pki.Role, name string) pki.Source {
		svid, err := ca.IssueIdentity(role, name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return pki.StaticSource{SVID: svid, Bundle: ca.Bundle()}
	}
	logs := &syncBuffer{}
	server := newRaftEnd(t, source(pki.RoleBroker, "b1"), time.Hour, logs)
	b2 := newRaftEnd(t, source(pki.RoleBroker, "b2"), time.Hour, io.Discard)
	b2Addr := b2.addr()
	const b3Addr = raft.ServerAddress("127.0.0.1:1")
	server.setServers(
		raft.Server{ID: "b1", Address: server.addr()},
		raft.Server{ID: "b2", Address: b2Addr},
		raft.Server{ID: "b3", Address: b3Addr},
	)

	send := func(kind string, h raft.RPCHeader, legacy raft.ServerAddress) error {
		switch kind {
		case "AppendEntries":
			return b2.trans.AppendEntries("b1", server.addr(), &raft.AppendEntriesRequest{RPCHeader: h, Term: 99, Leader: []byte(legacy)}, &raft.AppendEntriesResponse{})
		case "RequestVote":
			return b2.trans.RequestVote("b1", server.addr(), &raft.RequestVoteRequest{RPCHeader: h, Term: 99, Candidate: []byte(legacy)}, &raft.RequestVoteResponse{})
		case "RequestPreVote":
			return b2.trans.RequestPreVote("b1", server.addr(), &raft.RequestPreVoteRequest{RPCHeader: h, Term: 99}, &raft.RequestPreVoteResponse{})
		case "TimeoutNow":
			return b2.trans.TimeoutNow("b1", server.addr(), &raft.TimeoutNowRequest{RPCHeader: h}, &raft.TimeoutNowResponse{})
		case "InstallSnapshot":
			data := strings.Repeat("snapshot", 1000)
			return b2.trans.InstallSnapshot("b1", server.addr(), &raft.InstallSnapshotRequest{RPCHeader: h, Term: 99, Leader: []byte(legacy), Size: int64(len(data))},
				&raft.InstallSnapshotResponse{}, strings.NewReader(data))
		}
		panic(kind)
	}
	for _, kind := range []string{"AppendEntries", "RequestVote", "RequestPreVote", "TimeoutNow", "InstallSnapshot"} {
		for _, tc := range []struct {
			name   string
			h      raft.RPCHeader
			legacy raft.ServerAddress
			ok     bool
			logged string
		}{
			{name: "as itself", h: header("b2", b2Addr), legacy: b2Addr, ok: true},
			{name: "as b3", h: header("b3", b3Addr), legacy: b3Addr, logged: `as server \"b3\"`},
			{name: "as b3 from its own address", h: header("b3", b2Addr), legacy: b2Addr, logged: `as server \"b3\"`},
			{name: "as itself from b3's address", h: header("b2", b3Addr), legacy: b3Addr, logged: "the address of server b3"},
			{name: "as itself from an address it does not have", h: header("b2", "10.9.9.9:7411"), legacy: "10.9.9.9:7411", logged: "the Raft configuration has it at"},
			{name: "with no server id", h: header("", b2Addr), legacy: b2Addr, logged: `as server \"\"`},
		} {
			if kind == "RequestPreVote" || kind == "TimeoutNow" {
				tc.legacy = "" // these carry no legacy address field
			}
			t.Run(kind+"/"+tc.name, func(t *testing.T) {
				before, logged := server.got.Load(), len(logs.String())
				err := send(kind, tc.h, tc.legacy)
				reached := server.got.Load() - before
				if tc.ok {
					if err != nil || reached != 1 {
						t.Fatalf("err %v, %d RPCs reached Raft; want it delivered", err, reached)
					}
					return
				}
				if err == nil || reached != 0 {
					t.Fatalf("err %v, %d RPCs reached Raft; want it refused before Raft", err, reached)
				}
				if !strings.Contains(logs.String()[logged:], tc.logged) {
					t.Errorf("the refusal log does not say %q:\n%s", tc.logged, logs.String())
				}
			})
		}
	}
	// The connection a refusal closed is not reused: b2 still reaches b1.
	if err := send("AppendEntries", header("b2", b2Addr), b2Addr); err != nil {
		t.Fatalf("after the refusals: %v", err)
	}
}

// TestTransport_RefusesCertificatesThatAreNotBrokers: the TLS handshake
// of the Raft port takes broker SVIDs of the trust domain only.
func TestTransport_RefusesCertificatesThatAreNotBrokers(t *testing.T) {
	ca, _ := pki.NewCA(testTD, time.Hour)
	logs := &syncBuffer{}
	b1svid, _ := ca.IssueIdentity(pki.RoleBroker, "b1", time.Hour)
	server := newRaftEnd(t, pki.StaticSource{SVID: b1svid, Bundle: ca.Bundle()}, time.Hour, logs)
	for _, role := range []pki.Role{pki.RoleParticipant, pki.RoleOperator} {
		svid, _ := ca.IssueIdentity(role, "x1", time.Hour)
		// The caller's own check is left open, so only the server refuses.
		client := newRaftEnd(t, pki.StaticSource{SVID: svid, Bundle: ca.Bundle()}, time.Hour, io.Discard)
		client.stream.client = pki.ClientTLS(pki.StaticSource{SVID: svid, Bundle: ca.Bundle()}, pki.AuthorizeRoles(testTD, pki.Roles...))
		err := client.trans.AppendEntries("b1", server.addr(), &raft.AppendEntriesRequest{RPCHeader: header("b1", "")}, &raft.AppendEntriesResponse{})
		if err == nil || server.got.Load() != 0 {
			t.Fatalf("%s certificate: err %v, %d RPCs reached Raft", role, err, server.got.Load())
		}
	}
	if !strings.Contains(logs.String(), "role participant may not connect here") {
		t.Errorf("the refusal does not name the role:\n%s", logs.String())
	}
}

// TestTransport_DialChecksTheServerAtAnAddress: a broker answering at an
// address the configuration gives to another server is refused by the
// dialler.
func TestTransport_DialChecksTheServerAtAnAddress(t *testing.T) {
	ca, _ := pki.NewCA(testTD, time.Hour)
	src := func(name string) pki.Source {
		svid, _ := ca.IssueIdentity(pki.RoleBroker, name, time.Hour)
		return pki.StaticSource{SVID: svid, Bundle: ca.Bundle()}
	}
	impostor := newRaftEnd(t, src("b2"), time.Hour, io.Discard)
	leader := newRaftEnd(t, src("b1"), time.Hour, io.Discard)
	leader.setServers(raft.Server{ID: "b1", Address: leader.addr()}, raft.Server{ID: "b3", Address: impostor.addr()})
	err := leader.trans.AppendEntries("b3", impostor.addr(), &raft.AppendEntriesRequest{RPCHeader: header("b1", leader.addr())}, &raft.AppendEntriesResponse{})
	if !errors.Is(err, ErrImpersonation) || !strings.Contains(err.Error(), "broker b2 answered") {
		t.Fatalf("err = %v", err)
	}
	if impostor.got.Load() != 0 {
		t.Fatal("the impostor received the RPC")
	}
}

// TestTransport_ConnectionsAreReplacedAfterTheirMaxAge: past its age, the
// next RPC goes over a new TLS connection, and none fails.
func TestTransport_ConnectionsAreReplacedAfterTheirMaxAge(t *testing.T) {
	ca, _ := pki.NewCA(testTD, time.Hour)
	src := func(name string) pki.Source {
		svid, _ := ca.IssueIdentity(pki.RoleBroker, name, time.Hour)
		return pki.StaticSource{SVID: svid, Bundle: ca.Bundle()}
	}
	var accepted atomic.Int64
	server := newCountingRaftEnd(t, src("b1"), time.Hour, io.Discard, &accepted)
	const maxAge = 300 * time.Millisecond
	client := newRaftEnd(t, src("b2"), maxAge, io.Discard)
	call := func() {
		t.Helper()
		if err := client.trans.AppendEntries("b1", server.addr(), &raft.AppendEntriesRequest{RPCHeader: header("b2", client.addr())}, &raft.AppendEntriesResponse{}); err != nil {
			t.Fatalf("RPC failed: %v", err)
		}
	}
	call()
	call()
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d connections for two RPCs in a row, want one reused", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for accepted.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("phase %q: timed out: %d connections", "reconnect after max age", accepted.Load())
		}
		call()
		time.Sleep(20 * time.Millisecond)
	}
}
