package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// handshakeTimeout bounds a Raft connection's TLS handshake.
const handshakeTimeout = 10 * time.Second

// tlsStreamLayer is Raft's network over mutual TLS: both ends present broker
// SVIDs and accept only broker SVIDs, so no participant or operator
// certificate can open a Raft connection.
type tlsStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
	log       *slog.Logger

	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

func newTLSStreamLayer(ln net.Listener, advertise net.Addr, server, client *tls.Config, log *slog.Logger) *tlsStreamLayer {
	s := &tlsStreamLayer{
		ln: ln, advertise: advertise, server: server, client: client, log: log,
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
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
			select {
			case s.conns <- tc:
			case <-s.closed:
				tc.Close()
			}
		}()
	}
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

// Dial implements raft.StreamLayer.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", string(address))
}
