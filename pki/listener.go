package pki

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Listener hands out at most a fixed number of open connections, in total
// and per source IP address. A connection over either cap is closed as soon
// as it is accepted, before any TLS: a flood of connections costs the server
// a file descriptor for an instant, not for as long as the flooder likes,
// and one address can never take every slot.
type Listener struct {
	net.Listener
	max, perSource int

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]int

	refusedTotal  atomic.Uint64
	refusedSource atomic.Uint64
}

// LimitListener caps the connections l accepts by lim's MaxConnections and
// MaxConnectionsPerSource (their defaults when zero).
func LimitListener(l net.Listener, lim ServerLimits) *Listener {
	lim = lim.WithDefaults()
	return &Listener{Listener: l, max: lim.MaxConnections, perSource: lim.MaxConnectionsPerSource, bySource: map[netip.Addr]int{}}
}

// Accept returns the next connection within the caps, closing those over
// them.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		if l.admit(src) {
			return &limitedConn{Conn: c, l: l, src: src}, nil
		}
		c.Close()
	}
}

func (l *Listener) admit(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.open >= l.max:
		l.refusedTotal.Add(1)
		return false
	case l.bySource[src] >= l.perSource:
		l.refusedSource.Add(1)
		return false
	}
	l.open++
	l.bySource[src]++
	return true
}

func (l *Listener) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

// Open returns how many accepted connections are open.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Refused returns how many connections were closed on arrival because the
// total cap, or their source's cap, was reached.
func (l *Listener) Refused() (total, perSource uint64) {
	return l.refusedTotal.Load(), l.refusedSource.Load()
}

// sourceOf is the IP address a connection comes from; the zero Addr for
// connections that have none (Unix sockets), which share one cap.
func sourceOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// limitedConn gives its slot back when closed, once.
type limitedConn struct {
	net.Conn
	l    *Listener
	src  netip.Addr
	once sync.Once
}

// NetConn returns the connection underneath, as tls.Conn.NetConn does.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}
