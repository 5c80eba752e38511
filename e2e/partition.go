package e2e

import (
	"net"
	"sync"
)

// gate is a broker's Raft listener that can be cut: while cut, it closes
// every Raft connection it accepted and every new one, so the broker hears
// nothing from the leader (no entries, no heartbeats) while its gRPC
// service keeps answering. It is the fault of a follower cut off from the
// leader, or lagging behind it.
type gate struct {
	net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
}

func (g *gate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		g.mu.Lock()
		if g.cut {
			g.mu.Unlock()
			c.Close()
			continue
		}
		if g.conns == nil {
			g.conns = map[net.Conn]struct{}{}
		}
		g.conns[c] = struct{}{}
		g.mu.Unlock()
		return &gatedConn{Conn: c, g: g}, nil
	}
}

func (g *gate) set(cut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cut = cut
	if cut {
		for c := range g.conns {
			c.Close()
		}
		g.conns = nil
	}
}

type gatedConn struct {
	net.Conn
	g *gate
}

func (c *gatedConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.conns, c.Conn)
	c.g.mu.Unlock()
	return c.Conn.Close()
}

// gateRaft wraps broker b's Raft listener in its gate.
func (b *BrokerNode) gateRaft(l net.Listener) net.Listener {
	b.raftGate = &gate{Listener: l}
	return b.raftGate
}

// Partition cuts broker i off from the leader's Raft traffic: it applies
// nothing more, and stops serving once its lease runs out, while its gRPC
// service stays up (it answers, or refuses, queries).
func (n *Network) Partition(i int) {
	if g := n.Brokers[i].raftGate; g != nil {
		g.set(true)
	}
}

// Heal reconnects a partitioned broker.
func (n *Network) Heal(i int) {
	if g := n.Brokers[i].raftGate; g != nil {
		g.set(false)
	}
}
