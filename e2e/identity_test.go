package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/openqhin/openqhin/pki"
)

// craft signs a certificate for the given URI SANs and validity with the key
// in caDir/ca.key (or self-signs when caDir is empty), as a hostile or
// broken issuer could, and returns it as an SVID a source can present.
func craft(t *testing.T, caDir string, uris []string, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{Organization: []string{"crafted"}},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	parent, signer := tmpl, crypto.Signer(key)
	if caDir != "" {
		parent, signer = loadCAKey(t, caDir)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	id := spiffeid.RequireFromString("spiffe://qhin.test/participant/crafted")
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func loadCAKey(t *testing.T, dir string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	cb, _ := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	kb, _ := os.ReadFile(filepath.Join(dir, pki.CAKeyFile))
	cp, _ := pem.Decode(cb)
	kp, _ := pem.Decode(kb)
	if cp == nil || kp == nil {
		t.Fatal("no CA files")
	}
	cert, err := x509.ParseCertificate(cp.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kp.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert, k.(crypto.Signer)
}

// raftDialer is a Raft stream layer that only dials, with a TLS
// configuration of the test's choosing.
type raftDialer struct{ cfg *tls.Config }

func (d raftDialer) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (d raftDialer) Close() error              { return nil }
func (d raftDialer) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (d raftDialer) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(a), d.cfg)
}

// raftAppend sends one AppendEntries to addr over real mutual TLS,
// presenting src's SVID and claiming to be server id.
func raftAppend(src pki.Source, td spiffeid.TrustDomain, addr, id, claimedAddr string, term uint64) error {
	// The caller accepts any peer: only the broker's refusal counts.
	tr := raft.NewNetworkTransport(raftDialer{cfg: pki.ClientTLS(src, pki.AuthorizeRoles(td, pki.Roles...))}, 1, 5*time.Second, io.Discard)
	defer tr.Close()
	return tr.AppendEntries(raft.ServerID(id), raft.ServerAddress(addr), &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(claimedAddr)},
		Term:      term, Leader: []byte(claimedAddr),
	}, &raft.AppendEntriesResponse{})
}

// TestIdentity_BadCertificatesAreRefused presents broken, foreign and
// misused certificates to a broker's gRPC port and to its Raft port over
// real TLS. Each is refused at the handshake or before Raft reads the RPC,
// no call reaches a handler, and Raft's leadership does not move.
func TestIdentity_BadCertificatesAreRefused(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 3, Participants: 1})
	caDir := filepath.Join(n.opts.Dir, "ca")
	now := time.Now()
	bundle := n.CA.Bundle()
	static := func(s *x509svid.SVID) pki.Source { return pki.StaticSource{SVID: s, Bundle: bundle} }
	other, _ := pki.NewCA(spiffeid.RequireTrustDomainFromString("other.test"), time.Hour)
	foreign, _ := other.IssueIdentity(pki.RoleParticipant, "p1", time.Hour)
	b2, _ := n.CA.IssueIdentity(pki.RoleBroker, "b2", time.Hour)
	p1 := n.ParticipantSource(0)
	leader := n.Leader()
	if leader < 0 {
		t.Fatal("no leader")
	}
	target := n.Brokers[(leader+1)%3] // a follower
	impersonated := n.Brokers[(leader+2)%3]
	changes := target.Server.Node().LeaderChanges()

	const p1ID = "spiffe://qhin.test/participant/p1"
	for _, tc := range []struct {
		name string
		src  pki.Source
		// grpc: the refusal on the gRPC port ("" skips it); raft: on the
		// Raft port.
		grpc, raft string
		raftAs     string
	}{
		{name: "control: p1's own SVID", src: p1, raft: "role participant may not connect here"},
		{name: "expired", src: static(craft(t, caDir, []string{p1ID}, now.Add(-2*time.Hour), now.Add(-time.Hour))), grpc: "expired", raft: "expired"},
		{name: "not yet valid", src: static(craft(t, caDir, []string{p1ID}, now.Add(time.Hour), now.Add(2*time.Hour))), grpc: "not yet valid", raft: "not yet valid"},
		{name: "another trust domain", src: pki.StaticSource{SVID: foreign, Bundle: bundle}, grpc: `no X.509 bundle found for trust domain: \"other.test\"`, raft: `no X.509 bundle found for trust domain: \"other.test\"`},
		{name: "self-signed", src: static(craft(t, "", []string{p1ID}, now.Add(-time.Minute), now.Add(time.Hour))), grpc: "unknown authority", raft: "unknown authority"},
		{name: "two URI SANs", src: static(craft(t, caDir, []string{p1ID, "spiffe://qhin.test/broker/b1"}, now.Add(-time.Minute), now.Add(time.Hour))), grpc: "more than one URI SAN", raft: "more than one URI SAN"},
		{name: "no URI SAN", src: static(craft(t, caDir, nil, now.Add(-time.Minute), now.Add(time.Hour))), grpc: "no URI SAN", raft: "no URI SAN"},
		{name: "broker b2 as Raft server b3", src: static(b2), raftAs: impersonated.ID, raft: `as server \"` + impersonated.ID + `\"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.grpc != "" {
				cc := rawConn(t, target.GRPCAddr, brokerCreds(n, tc.src))
				err := listParticipants(callCtx(t), cc)
				if err == nil {
					t.Fatal("gRPC call accepted")
				}
				pollUntil(t, 10*time.Second, "the broker logs the refusal", func() error {
					if !strings.Contains(logs.String(), tc.grpc) {
						return fmt.Errorf("not logged; the call failed with %v; refusals logged:\n%s", err, refusals(logs.String()))
					}
					return nil
				})
			}
			as := tc.raftAs
			if as == "" {
				as = "b9"
			}
			before := len(logs.String())
			err := raftAppend(tc.src, n.td, target.RaftAddr, as, impersonated.RaftAddr, 1<<40)
			if err == nil {
				t.Fatal("Raft RPC accepted")
			}
			pollUntil(t, 10*time.Second, "the broker logs the Raft refusal", func() error {
				if !strings.Contains(logs.String()[before:], tc.raft) {
					return fmt.Errorf("not logged; the RPC failed with %v; refusals logged:\n%s", err, refusals(logs.String()[before:]))
				}
				return nil
			})
		})
	}
	// Control: the same certificate as b2 itself, with a stale term, is
	// delivered to Raft (which answers that the term is stale).
	if err := raftAppend(static(b2), n.td, target.RaftAddr, "b2", n.Brokers[1].RaftAddr, 0); err != nil && !strings.Contains(err.Error(), "EOF") {
		t.Logf("b2 as itself: %v", err)
	}
	if got := target.Server.Node().LeaderChanges(); got != changes {
		t.Errorf("the follower saw %d leader changes during the refusals", got-changes)
	}
	if n.Leader() != leader {
		t.Error("leadership moved")
	}
	for _, l := range logLines(t, logs) {
		if l["msg"] == "rpc" && strings.Contains(l["caller"].(string), "crafted") {
			t.Errorf("a call with a crafted certificate reached a handler: %v", l)
		}
	}
}

// TestIdentity_BundleWithoutTheIssuingCAAfterRotation: after a CA
// rotation, a node left with the old bundle (it missed the rotation)
// cannot verify the broker, and a node left with an SVID of the retired CA
// is refused by the broker; the network itself goes on answering.
func TestIdentity_BundleWithoutTheIssuingCAAfterRotation(t *testing.T) {
	n, logs := startNetwork(t, Options{Brokers: 1, Participants: 2, WorkloadAPI: true, CAPropagation: 100 * time.Millisecond})
	caDir := filepath.Join(n.opts.Dir, "ca")
	oldBundle := n.Issuer.Bundle()
	stale, err := n.CA.IssueIdentity(pki.RoleParticipant, "p2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	next, err := pki.PrepareRotation(caDir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.ActivateRotation(caDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "the broker holds an SVID of the new CA", func() error {
		svid, err := n.Brokers[0].source.GetX509SVID()
		if err != nil || svid.Certificates[0].CheckSignatureFrom(next.Certificate()) != nil {
			return errors.New("not yet")
		}
		return nil
	})
	if err := pki.RetireRotation(caDir); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "the broker's bundle lost the old CA", func() error {
		b, _ := n.Brokers[0].source.GetX509BundleForTrustDomain(n.td)
		if b.HasX509Authority(n.CA.Certificate()) {
			return errors.New("not yet")
		}
		return nil
	})
	for _, tc := range []struct {
		name string
		src  pki.Source
		want string
	}{
		{"old bundle, current SVID", pki.StaticSource{SVID: mustSVID(t, n.ParticipantSource(1)), Bundle: oldBundle}, "unknown authority"},
		{"SVID of the retired CA", pki.StaticSource{SVID: stale, Bundle: n.Issuer.Bundle()}, "unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc := rawConn(t, n.Brokers[0].GRPCAddr, brokerCreds(n, tc.src))
			err := discoverMaria(callCtx(t), cc)
			if err == nil {
				t.Fatalf("a call with %s was answered", tc.name)
			}
			// The client may see the alert before the broker has logged
			// why it sent it.
			pollUntil(t, 10*time.Second, "the refusal names its cause", func() error {
				if !strings.Contains(err.Error()+logs.String(), tc.want) {
					return fmt.Errorf("err = %v, want a refusal naming %q", err, tc.want)
				}
				return nil
			})
		})
	}
	// The network goes on: a fresh connection with current identities.
	if err := discoverMaria(callCtx(t), rawConn(t, n.Brokers[0].GRPCAddr, brokerCreds(n, n.ParticipantSource(1)))); err != nil {
		t.Fatalf("a current node after the rotation: %v", err)
	}
}

// refusals are the log lines that tell of a refusal.
func refusals(logs string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "refused") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func mustSVID(t *testing.T, src pki.Source) *x509svid.SVID {
	t.Helper()
	s, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestIdentity_NodeRefusesToStartWithoutItsWorkloadAPISVID runs the node
// commands against a Workload API socket that is missing, one that never
// answers, and the network's own, which does not hold the id asked for:
// each exits at once with an error naming the socket and the cause.
func TestIdentity_NodeRefusesToStartWithoutItsWorkloadAPISVID(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the commands")
	}
	bin := buildCommands(t)
	n, _ := startNetwork(t, Options{Brokers: 1, Participants: 1, WorkloadAPI: true})
	dir, err := os.MkdirTemp("", "qw")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	slowPath := filepath.Join(dir, "slow.sock")
	slow, err := net.Listen("unix", slowPath)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := slow.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	missing := filepath.Join(dir, "missing.sock")
	for _, cmd := range []string{"qhin-broker", "qhin-participant"} {
		for _, tc := range []struct {
			name string
			args []string
			want []string
		}{
			{"missing socket", []string{"--workload-api", "unix://" + missing}, []string{missing, "does not exist"}},
			{"slow socket", []string{"--workload-api", "unix://" + slowPath, "--workload-api-timeout", "2s"}, []string{slowPath, "no SVID within 2s"}},
			{"SVID for the wrong id", []string{"--workload-api", n.Issuer.Addr(), "--spiffe-id", "spiffe://qhin.test/broker/b99"},
				[]string{n.Issuer.Addr(), "not spiffe://qhin.test/broker/b99", "spiffe://qhin.test/broker/b1"}},
			{"both files and a Workload API", []string{"--workload-api", n.Issuer.Addr(), "--svid-dir", dir}, []string{"give one, not both"}},
		} {
			t.Run(cmd+"/"+tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				args := append(tc.args, "--data-dir", filepath.Join(t.TempDir(), "data"), "--listen", "127.0.0.1:0")
				if cmd == "qhin-broker" {
					args = append(args, "--raft-listen", "127.0.0.1:0")
				}
				out, err := exec.CommandContext(ctx, filepath.Join(bin, cmd), args...).CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Fatalf("exit: %v, want status 1\n%s", err, out)
				}
				for _, w := range tc.want {
					if !strings.Contains(string(out), w) {
						t.Errorf("output does not say %q:\n%s", w, out)
					}
				}
			})
		}
	}
}
