package pki

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// dialFrom connects to addr from a given loopback address.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer reports whether the server closed c: a read gets EOF (or a
// reset) rather than timing out.
func closedByServer(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestLimitListener_ClosesConnectionsOverTheCapsAtOnce(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := LimitListener(raw, ServerLimits{MaxConnections: 3, MaxConnectionsPerSource: 2})
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := raw.Addr().String()
	next := func() net.Conn {
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no connection accepted")
			return nil
		}
	}

	a1 := dialFrom(t, "127.0.0.1", addr)
	s1 := next()
	dialFrom(t, "127.0.0.1", addr)
	next()
	// A third from the same address is over its source's cap.
	a3 := dialFrom(t, "127.0.0.1", addr)
	if !closedByServer(a3, 5*time.Second) {
		t.Fatal("a third connection from one source was not closed")
	}
	// Another source still gets in, up to the total.
	b1 := dialFrom(t, "127.0.0.2", addr)
	next()
	c1 := dialFrom(t, "127.0.0.3", addr)
	if !closedByServer(c1, 5*time.Second) {
		t.Fatal("a connection over the total cap was not closed")
	}
	if l.Open() != 3 {
		t.Errorf("Open() = %d, want 3", l.Open())
	}
	if total, perSource := l.Refused(); total != 1 || perSource != 1 {
		t.Errorf("Refused() = %d total, %d per source; want 1, 1", total, perSource)
	}
	// The admitted ones are untouched.
	for _, c := range []net.Conn{a1, b1} {
		if closedByServer(c, 50*time.Millisecond) {
			t.Error("an admitted connection was closed")
		}
	}
	// Closing one gives its slot back, once, however often it is closed.
	s1.Close()
	s1.Close()
	if l.Open() != 2 {
		t.Errorf("Open() after a close = %d, want 2", l.Open())
	}
	dialFrom(t, "127.0.0.3", addr)
	next()
}

func TestServerOptions_StalledHandshakeIsCutOff(t *testing.T) {
	ca := newTestCA(t, testTD)
	src := sourceFor(t, ca, RoleBroker, "b1")
	opts, err := ServerConfig{Source: src, Policy: DefaultPolicy, Limits: ServerLimits{HandshakeTimeout: 200 * time.Millisecond}}.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := LimitListener(raw, ServerLimits{})
	go s.Serve(l)
	defer s.Stop()

	c := dialFrom(t, "127.0.0.1", raw.Addr().String())
	c.Write([]byte{0x16, 0x03, 0x01}) // a TLS record header, and nothing more
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a stalled handshake was still open after 30s with a 200ms handshake timeout")
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Open() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the listener counts %d open connections after the server closed the only one", l.Open())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
