package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// socketDir is a short private directory for Unix sockets: t.TempDir()
// paths can be longer than a socket address may be.
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "qs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startTestIssuer creates a CA directory and an issuer handing out ids to
// this process's uid.
func startTestIssuer(t testing.TB, ttl time.Duration, ids ...string) (*Issuer, string) {
	t.Helper()
	caDir := filepath.Join(t.TempDir(), "ca")
	if err := newTestCA(t, testTD).Save(caDir); err != nil {
		t.Fatal(err)
	}
	var ws []Workload
	for _, id := range ids {
		ws = append(ws, Workload{ID: spiffeid.RequireFromString(id), UID: uint32(os.Getuid())})
	}
	is, err := StartIssuer(IssuerConfig{
		CADir: caDir, Socket: filepath.Join(socketDir(t), "api.sock"), SVIDTTL: ttl, Workloads: ws,
		Propagation: 300 * time.Millisecond, Poll: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { is.Close() })
	return is, caDir
}

func openWorkload(t testing.TB, is *Issuer, id string) *WorkloadSource {
	t.Helper()
	ws, err := OpenWorkloadAPI(context.Background(), WorkloadOptions{Addr: is.Addr(), ID: spiffeid.RequireFromString(id), Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func TestWorkloadSource_EachNodePicksItsOwnSVID(t *testing.T) {
	ids := []string{"spiffe://qhin.test/broker/b1", "spiffe://qhin.test/broker/b2", "spiffe://qhin.test/participant/p1"}
	is, _ := startTestIssuer(t, time.Hour, ids...)
	for _, id := range ids {
		svid, err := openWorkload(t, is, id).GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if svid.ID.String() != id {
			t.Errorf("asked for %s, got %s", id, svid.ID)
		}
	}
	// Two nodes talk mutual TLS with what they got.
	b1, p1 := openWorkload(t, is, ids[0]), openWorkload(t, is, ids[2])
	res := handshake(t, ServerTLS(b1, AuthorizeRoles(testTD, RoleParticipant)), ClientTLS(p1, AuthorizeRoles(testTD, RoleBroker)))
	if !res.ok() {
		t.Fatalf("handshake: client %v, server %v", res.clientErr, res.serverErr)
	}
}

func TestOpenWorkloadAPI_RefusesToStartNamingTheCause(t *testing.T) {
	is, _ := startTestIssuer(t, time.Hour, "spiffe://qhin.test/broker/b2")
	dir := socketDir(t)

	// A socket that accepts connections and never answers.
	slowPath := filepath.Join(dir, "slow.sock")
	slow, err := net.Listen("unix", slowPath)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	go func() {
		for {
			c, err := slow.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// A file that is not a socket.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)

	for _, tc := range []struct {
		name string
		opts WorkloadOptions
		want []string
	}{
		{"missing socket", WorkloadOptions{Addr: "unix://" + filepath.Join(dir, "nope.sock")}, []string{filepath.Join(dir, "nope.sock"), "does not exist"}},
		{"not a socket", WorkloadOptions{Addr: "unix://" + plain}, []string{plain, "not a socket"}},
		{"not a unix or tcp address", WorkloadOptions{Addr: "http://example.org/x"}, []string{"unix:///path"}},
		{"no address", WorkloadOptions{}, []string{"no address"}},
		{"slow socket", WorkloadOptions{Addr: "unix://" + slowPath, Timeout: time.Second}, []string{slowPath, "no SVID within 1s"}},
		{"SVID for the wrong id", WorkloadOptions{Addr: is.Addr(), ID: spiffeid.RequireFromString("spiffe://qhin.test/broker/b3")},
			[]string{is.Addr(), "offers spiffe://qhin.test/broker/b2, not spiffe://qhin.test/broker/b3"}},
		{"SVID for the wrong path", WorkloadOptions{Addr: is.Addr(), Path: "/participant/p1"},
			[]string{"offers spiffe://qhin.test/broker/b2, not spiffe://<trust domain>/participant/p1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			ws, err := OpenWorkloadAPI(context.Background(), tc.opts)
			if err == nil {
				ws.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, ErrWorkloadAPI) {
				t.Errorf("error %v is not ErrWorkloadAPI", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if d := time.Since(start); d > testTimeout {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestIssuer_CallerOfAnotherUIDGetsNothing(t *testing.T) {
	if !peerCredsSupported {
		t.Skip("no peer credentials on this system")
	}
	caDir := filepath.Join(t.TempDir(), "ca")
	newTestCA(t, testTD).Save(caDir)
	is, err := StartIssuer(IssuerConfig{CADir: caDir, Socket: filepath.Join(socketDir(t), "api.sock"),
		Workloads: []Workload{{ID: spiffeid.RequireFromString("spiffe://qhin.test/broker/b1"), UID: uint32(os.Getuid()) + 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	_, err = OpenWorkloadAPI(context.Background(), WorkloadOptions{Addr: is.Addr(), Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "no identity issued") {
		t.Fatalf("err = %v, want the agent's PermissionDenied named", err)
	}
}

func TestIssuer_RequiresTheSecurityHeader(t *testing.T) {
	is, _ := startTestIssuer(t, time.Hour, "spiffe://qhin.test/broker/b1")
	cc, err := grpc.NewClient(is.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		code codes.Code
	}{
		{"without header", ctx, codes.InvalidArgument},
		{"with header", metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"), codes.OK},
	} {
		s, err := workload.NewSpiffeWorkloadAPIClient(cc).FetchX509SVID(tc.ctx, &workload.X509SVIDRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
		}
	}
}

func TestIssuer_RenewsAtHalfLife(t *testing.T) {
	const id = "spiffe://qhin.test/broker/b1"
	is, _ := startTestIssuer(t, 2*time.Second, id)
	ws := openWorkload(t, is, id)
	seen := map[string]bool{}
	waitFor(t, "three SVIDs seen", func() bool {
		svid, _ := ws.GetX509SVID()
		seen[svid.Certificates[0].SerialNumber.String()] = true
		return len(seen) >= 3
	})
	if n := is.Renewals(spiffeid.RequireFromString(id)); n < 3 {
		t.Errorf("issuer counts %d issues", n)
	}
}

// TestIssuer_CARotationUnderHandshakes rotates the CA through the CA
// directory while two nodes handshake continuously: every handshake
// succeeds, the bundle grows before the new CA signs, and ends with the new
// CA alone.
func TestIssuer_CARotationUnderHandshakes(t *testing.T) {
	is, caDir := startTestIssuer(t, time.Hour, "spiffe://qhin.test/broker/b1", "spiffe://qhin.test/participant/p1")
	b1, p1 := openWorkload(t, is, "spiffe://qhin.test/broker/b1"), openWorkload(t, is, "spiffe://qhin.test/participant/p1")
	oldCA := is.Signer()

	var failures, total atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			res := handshake(t, ServerTLS(b1, AuthorizeRoles(testTD, RoleParticipant)), ClientTLS(p1, AuthorizeRoles(testTD, RoleBroker)))
			total.Add(1)
			if !res.ok() {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, errors.Join(res.clientErr, res.serverErr))
			}
		}
	}()
	bundleHas := func(src *WorkloadSource, c *x509.Certificate) bool {
		b, err := src.GetX509BundleForTrustDomain(testTD)
		return err == nil && b.HasX509Authority(c)
	}
	next, err := PrepareRotation(caDir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new CA in both bundles", func() bool { return bundleHas(b1, next.Certificate()) && bundleHas(p1, next.Certificate()) })
	if svid, _ := b1.GetX509SVID(); !signedByOneOf(svid, []*x509.Certificate{oldCA}) {
		t.Fatal("an SVID of the new CA was handed out before its bundle")
	}
	if err := ActivateRotation(caDir, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "SVIDs re-issued under the new CA", func() bool {
		s1, _ := b1.GetX509SVID()
		s2, _ := p1.GetX509SVID()
		return signedByOneOf(s1, []*x509.Certificate{next.Certificate()}) && signedByOneOf(s2, []*x509.Certificate{next.Certificate()})
	})
	if err := RetireRotation(caDir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "old CA out of both bundles", func() bool { return !bundleHas(b1, oldCA) && !bundleHas(p1, oldCA) })
	n := total.Load()
	waitFor(t, "handshakes after the retirement", func() bool { return total.Load() > n+3 })
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d handshakes failed during the rotation; first: %v", failures.Load(), total.Load(), firstErr.Load())
	}
	t.Logf("%d handshakes, none failed", total.Load())
}

// TestIssuer_RefusesABundleWithoutTheSigningCA: a bundle.pem that lost the
// CA that signs (a botched rotation by hand) is refused, and the issuer
// keeps handing out the bundle it had.
func TestIssuer_RefusesABundleWithoutTheSigningCA(t *testing.T) {
	is, caDir := startTestIssuer(t, time.Hour, "spiffe://qhin.test/broker/b1")
	ws := openWorkload(t, is, "spiffe://qhin.test/broker/b1")
	signer := is.Signer()
	other := newTestCA(t, testTD)
	if err := writeBundle(caDir, []*x509.Certificate{other.Certificate()}); err != nil {
		t.Fatal(err)
	}
	_, err := LoadCAState(caDir)
	if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), "does not hold the signing CA") {
		t.Fatalf("LoadCAState: %v", err)
	}
	// Give the issuer polls to (wrongly) pick the bundle up.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		b, err := ws.GetX509BundleForTrustDomain(testTD)
		if err != nil || !b.HasX509Authority(signer) || b.HasX509Authority(other.Certificate()) {
			t.Fatalf("the node's bundle changed to the refused one (err %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
