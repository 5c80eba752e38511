package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/openqhin/openqhin/pki"
)

// handshakeTimeout bounds a Raft connection's TLS handshake.
const handshakeTimeout = 10 * time.Second

// DefaultRaftConnMaxAge bounds how long an outgoing Raft connection is
// reused: after it, the next RPC dials (and so authenticates) again, so
// rotated certificates and a rotated CA reach Raft as they reach gRPC. A
// pipeline is replaced at its next send after this age, and a peer that
// keeps a connection three times as long is cut off between two RPCs.
const DefaultRaftConnMaxAge = 10 * time.Minute

// ErrImpersonation is returned when a Raft peer claims a server id or
// address that its certificate does not prove.
var ErrImpersonation = errors.New("raft peer claims an identity its certificate does not prove")

// errConnAged stops an AppendEntries pipeline whose connection has reached
// its maximum age; Raft falls back to single RPCs on a new connection and
// pipelines again.
var errConnAged = errors.New("raft connection reached its maximum age; reconnecting")

// tlsStreamLayer is Raft's network over mutual TLS: both ends present broker
// SVIDs and accept only broker SVIDs, so no participant or operator
// certificate can open a Raft connection. On top of the certificate check:
//
//   - every RPC received is read before hashicorp/raft sees it, and passed on
//     only when the server id it claims (RPCHeader.ID) is the broker named
//     by the certificate that opened the connection, and the addresses it
//     claims (RPCHeader.Addr, and the older Leader and Candidate fields) are
//     that broker's in the Raft configuration, not another's;
//   - a connection dialled to an address of the configuration must be
//     answered by the broker the configuration places there;
//   - outgoing connections are re-established after maxAge.
type tlsStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	log       *slog.Logger
	maxAge    time.Duration
	// servers returns the Raft configuration's servers (nil before Raft
	// runs).
	servers atomic.Pointer[func() []raft.Server]

	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

func newTLSStreamLayer(ln net.Listener, advertise net.Addr, server, client *tls.Config, maxAge time.Duration, log *slog.Logger) *tlsStreamLayer {
	s := &tlsStreamLayer{
		ln: ln, advertise: advertise, server: server, client: client, log: log, maxAge: maxAge,
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

// watch gives the layer the Raft configuration to check claims against.
func (s *tlsStreamLayer) watch(servers func() []raft.Server) { s.servers.Store(&servers) }

func (s *tlsStreamLayer) configuration() []raft.Server {
	if f := s.servers.Load(); f != nil {
		return (*f)()
	}
	return nil
}

// acceptLoop accepts TCP connections and completes each TLS handshake in its
// own goroutine, so that a slow or hostile peer cannot hold up the others.
func (s *tlsStreamLayer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("raft listener stopped", "error", err)
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			tc := tls.Server(c, s.server)
			ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
			defer cancel()
			if err := tc.HandshakeContext(ctx); err != nil {
				s.log.Warn("refused raft connection", "remote", c.RemoteAddr().String(), "error", err)
				c.Close()
				return
			}
			peer, err := brokerName(tc)
			if err != nil {
				s.log.Warn("refused raft connection", "remote", c.RemoteAddr().String(), "error", err)
				tc.Close()
				return
			}
			cc := newClaimConn(tc, peer, s.checkClaim, s.log)
			if s.maxAge > 0 {
				cc.cutoff = time.Now().Add(3 * s.maxAge)
			}
			select {
			case s.conns <- cc:
			case <-s.closed:
				tc.Close()
			}
		}()
	}
}

// brokerName is the node id in the broker SVID a TLS peer presented (the
// handshake already checked that it is a broker of the trust domain).
func brokerName(tc *tls.Conn) (string, error) {
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", errors.New("no peer certificate")
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return "", err
	}
	ident, err := pki.ParseIdentity(id)
	if err != nil {
		return "", err
	}
	if ident.Role != pki.RoleBroker {
		return "", fmt.Errorf("%s is not a broker", id)
	}
	return ident.Name, nil
}

// checkClaim decides whether an RPC received from the broker peer may go
// to Raft.
func (s *tlsStreamLayer) checkClaim(peer string, c rpcClaim) error {
	if string(c.ID) != peer {
		return fmt.Errorf("%w: the certificate of broker %s sent %s as server %q", ErrImpersonation, peer, c.rpc, printable(c.ID))
	}
	servers := s.configuration()
	for _, a := range [][]byte{c.Addr, c.Leader, c.Candidate} {
		if len(a) == 0 {
			continue
		}
		for _, srv := range servers {
			if srv.Address == raft.ServerAddress(a) && string(srv.ID) != peer {
				return fmt.Errorf("%w: broker %s sent %s claiming the address of server %s", ErrImpersonation, peer, c.rpc, srv.ID)
			}
		}
		for _, srv := range servers {
			if string(srv.ID) == peer && srv.Address != raft.ServerAddress(a) {
				return fmt.Errorf("%w: broker %s sent %s claiming address %q; the Raft configuration has it at %s", ErrImpersonation, peer, c.rpc, printable(a), srv.Address)
			}
		}
	}
	return nil
}

// printable caps and sanitizes a claimed id or address for a message.
func printable(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// Accept implements net.Listener; it returns only authenticated connections.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (s *tlsStreamLayer) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		err = s.ln.Close()
	})
	s.wg.Wait()
	return err
}

// Addr implements net.Listener: the address peers reach this node at.
func (s *tlsStreamLayer) Addr() net.Addr { return s.advertise }

// Dial implements raft.StreamLayer. The connection it returns dials again
// once it is older than maxAge, at the start of the next RPC.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.dial(address, timeout)
	if err != nil || s.maxAge <= 0 {
		return c, err
	}
	return &agedConn{conn: c, born: time.Now(), maxAge: s.maxAge, redial: func() (net.Conn, error) { return s.dial(address, timeout) }}, nil
}

func (s *tlsStreamLayer) dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, err
	}
	// The broker at an address of the configuration must be the server
	// the configuration places there.
	peer, err := brokerName(c.(*tls.Conn))
	if err != nil {
		c.Close()
		return nil, err
	}
	for _, srv := range s.configuration() {
		if srv.Address == address && string(srv.ID) != peer {
			c.Close()
			return nil, fmt.Errorf("%w: broker %s answered at %s, the address of server %s", ErrImpersonation, peer, address, srv.ID)
		}
	}
	return c, nil
}

// agedConn is an outgoing Raft connection that is replaced by a new one
// once it is older than maxAge. hashicorp/raft sets a deadline at the start
// of every RPC it sends on a pooled connection, the one moment the
// connection is known to carry nothing: that is when it is replaced. A
// failed dial keeps the old connection for this RPC and tries again at the
// next.
type agedConn struct {
	mu     sync.Mutex
	conn   net.Conn
	born   time.Time
	maxAge time.Duration
	redial func() (net.Conn, error)
}

func (c *agedConn) current() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

func (c *agedConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	if time.Since(c.born) >= c.maxAge {
		if nc, err := c.redial(); err == nil {
			c.conn.Close()
			c.conn, c.born = nc, time.Now()
		}
	}
	conn := c.conn
	c.mu.Unlock()
	return conn.SetDeadline(t)
}

func (c *agedConn) Read(p []byte) (int, error)         { return c.current().Read(p) }
func (c *agedConn) Write(p []byte) (int, error)        { return c.current().Write(p) }
func (c *agedConn) Close() error                       { return c.current().Close() }
func (c *agedConn) LocalAddr() net.Addr                { return c.current().LocalAddr() }
func (c *agedConn) RemoteAddr() net.Addr               { return c.current().RemoteAddr() }
func (c *agedConn) SetReadDeadline(t time.Time) error  { return c.current().SetReadDeadline(t) }
func (c *agedConn) SetWriteDeadline(t time.Time) error { return c.current().SetWriteDeadline(t) }

// hashicorp/raft's RPC types (net_transport.go), the first byte of each
// request on the wire.
const (
	rpcAppendEntries uint8 = iota
	rpcRequestVote
	rpcInstallSnapshot
	rpcTimeoutNow
	rpcRequestPreVote
)

var rpcNames = [...]string{"AppendEntries", "RequestVote", "InstallSnapshot", "TimeoutNow", "RequestPreVote"}

// rpcClaim is what a Raft request says about its sender. The requests are
// msgpack maps whose embedded RPCHeader is flattened; decoding into this
// struct reads those fields and skips the rest (log entries included).
type rpcClaim struct {
	ID        []byte
	Addr      []byte
	Leader    []byte
	Candidate []byte
	Size      int64

	rpc string
}

// claimConn is the receiving end of a Raft connection. Each request is
// decoded once here, checked, and its exact bytes handed to
// hashicorp/raft's own decoder; a request whose check fails ends the
// connection before Raft reads any of it. An InstallSnapshot's data, which
// follows its request, passes through unread.
type claimConn struct {
	net.Conn
	r      *bufio.Reader
	rec    recorder
	peer   string
	check  func(peer string, c rpcClaim) error
	log    *slog.Logger
	cutoff time.Time // zero: none

	pending []byte
	raw     int64
	err     error
}

func newClaimConn(c net.Conn, peer string, check func(string, rpcClaim) error, log *slog.Logger) *claimConn {
	cc := &claimConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10), peer: peer, check: check, log: log}
	cc.rec.r = cc.r
	return cc
}

func (c *claimConn) Read(p []byte) (int, error) {
	for {
		switch {
		case len(p) == 0:
			return 0, nil
		case len(c.pending) > 0:
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			return n, nil
		case c.raw > 0:
			if int64(len(p)) > c.raw {
				p = p[:c.raw]
			}
			n, err := c.r.Read(p)
			c.raw -= int64(n)
			return n, err
		case c.err != nil:
			return 0, c.err
		}
		c.err = c.next()
	}
}

// next reads, checks and queues the next request.
func (c *claimConn) next() error {
	if !c.cutoff.IsZero() && time.Now().After(c.cutoff) {
		// Between two requests, as a clean end of stream: the peer
		// dials again.
		c.log.Debug("closing a raft connection older than its bound", "peer", c.peer)
		return io.EOF
	}
	if cap(c.rec.buf) > 1<<20 {
		c.rec.buf = nil // a large request's buffer is not kept for the next
	}
	c.rec.buf = c.rec.buf[:0]
	t, err := c.rec.ReadByte()
	if err != nil {
		return err
	}
	if int(t) >= len(rpcNames) {
		return c.refuse(fmt.Errorf("unknown raft rpc type %d", t))
	}
	claim := rpcClaim{rpc: rpcNames[t]}
	if err := codec.NewDecoder(&c.rec, &codec.MsgpackHandle{}).Decode(&claim); err != nil {
		return c.refuse(fmt.Errorf("decode %s: %w", claim.rpc, err))
	}
	if err := c.check(c.peer, claim); err != nil {
		return c.refuse(err)
	}
	if t == rpcInstallSnapshot {
		if claim.Size < 0 {
			return c.refuse(errors.New("InstallSnapshot with a negative size"))
		}
		c.raw = claim.Size
	}
	c.pending = c.rec.buf
	return nil
}

func (c *claimConn) refuse(err error) error {
	c.log.Warn("refused raft rpc; closing the connection", "peer", c.peer, "remote", c.RemoteAddr().String(), "error", err)
	c.Conn.Close()
	return err
}

// recorder is an io.ByteScanner over the connection's reader that keeps
// every byte read, so that a request decoded here can be replayed to Raft.
type recorder struct {
	r   *bufio.Reader
	buf []byte
}

func (x *recorder) Read(p []byte) (int, error) {
	n, err := x.r.Read(p)
	x.buf = append(x.buf, p[:n]...)
	return n, err
}

func (x *recorder) ReadByte() (byte, error) {
	b, err := x.r.ReadByte()
	if err == nil {
		x.buf = append(x.buf, b)
	}
	return b, err
}

func (x *recorder) UnreadByte() error {
	if err := x.r.UnreadByte(); err != nil {
		return err
	}
	x.buf = x.buf[:len(x.buf)-1]
	return nil
}
