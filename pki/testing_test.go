package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Test helpers shared by the package's tests. Like SPIRE's test/testca, they
// mint real certificates; nothing here is a mock.

// testTD is the trust domain of the network under test; otherTD is a second,
// unrelated network.
var (
	testTD  = spiffeid.RequireTrustDomainFromString("qhin.test")
	otherTD = spiffeid.RequireTrustDomainFromString("other.test")
)

// testTimeout bounds every handshake, call and poll in these tests.
const testTimeout = 10 * time.Second

// newTestCA creates a CA for td, valid for an hour.
func newTestCA(t testing.TB, td spiffeid.TrustDomain) *CA {
	t.Helper()
	ca, err := NewCA(td, time.Hour)
	if err != nil {
		t.Fatalf("NewCA(%s): %v", td, err)
	}
	return ca
}

// issueSVID mints an SVID for role/name of the CA's trust domain.
func issueSVID(t testing.TB, ca *CA, role Role, name string) *x509svid.SVID {
	t.Helper()
	svid, err := ca.IssueIdentity(role, name, time.Hour)
	if err != nil {
		t.Fatalf("IssueIdentity(%s, %s): %v", role, name, err)
	}
	return svid
}

// issueID mints an SVID for any SPIFFE ID of the CA's trust domain, valid for
// ttl (which may be negative, for an already expired certificate).
func issueID(t testing.TB, ca *CA, id string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	svid, err := ca.Issue(spiffeid.RequireFromString(id), ttl)
	if err != nil {
		t.Fatalf("Issue(%s): %v", id, err)
	}
	return svid
}

// sourceFor is a node of the CA's network: an SVID for role/name and the
// CA's bundle.
func sourceFor(t testing.TB, ca *CA, role Role, name string) StaticSource {
	t.Helper()
	return StaticSource{SVID: issueSVID(t, ca, role, name), Bundle: ca.Bundle()}
}

// federatedSource holds one SVID and the bundles of several trust domains.
type federatedSource struct {
	svid    *x509svid.SVID
	bundles *x509bundle.Set
}

func (s federatedSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s federatedSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundles.GetX509BundleForTrustDomain(td)
}

// handshakeResult is what each side of one TLS connection saw.
type handshakeResult struct {
	clientErr error
	serverErr error
	client    tls.ConnectionState
	server    tls.ConnectionState
}

// ok reports whether both sides completed the handshake and exchanged data.
func (r handshakeResult) ok() bool { return r.clientErr == nil && r.serverErr == nil }

// handshake runs one TLS connection over loopback TCP between the two configs.
// After a successful handshake the server writes a byte and the client reads
// it, so a client certificate the server rejects after the client's side of
// a TLS 1.3 handshake finished still shows up as a client error.
func handshake(t testing.TB, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	type serverSide struct {
		err   error
		state tls.ConnectionState
	}
	done := make(chan serverSide, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			done <- serverSide{err: err}
			return
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(testTimeout))
		conn := tls.Server(raw, serverCfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			done <- serverSide{err: err}
			return
		}
		if _, err := conn.Write([]byte{1}); err != nil {
			done <- serverSide{err: err}
			return
		}
		// Wait for the client to hang up, so that the byte (and any session
		// ticket) reaches it before the connection closes.
		_, _ = io.Copy(io.Discard, conn)
		done <- serverSide{state: conn.ConnectionState()}
	}()

	var res handshakeResult
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(testTimeout))
	conn := tls.Client(raw, clientCfg)
	res.clientErr = conn.HandshakeContext(ctx)
	if res.clientErr == nil {
		buf := make([]byte, 1)
		if _, err := io.ReadFull(conn, buf); err != nil {
			res.clientErr = err
		}
		res.client = conn.ConnectionState()
	}
	conn.Close()
	s := <-done
	res.serverErr, res.server = s.err, s.state
	return res
}

// peerID is the SPIFFE ID of the leaf certificate a side of a connection saw.
func peerID(t testing.TB, certs []*x509.Certificate) spiffeid.ID {
	t.Helper()
	if len(certs) == 0 {
		t.Fatal("no peer certificate")
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		t.Fatalf("peer certificate: %v", err)
	}
	return id
}

// waitFor polls cond until it holds, failing the test with the phase it was
// waiting for when testTimeout passes first.
func waitFor(t testing.TB, phase string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("phase %q: timed out after %v", phase, testTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
