package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Defaults of IssuerConfig fields left zero.
const (
	// DefaultWorkloadSVIDTTL is the lifetime of an SVID the issuer hands
	// out; it renews each at half its lifetime.
	DefaultWorkloadSVIDTTL = time.Hour
	// DefaultPropagation is how long a new CA stays in the bundle the
	// issuer hands out before it signs the first SVID, so that every peer
	// trusts it before anyone presents a certificate it signed.
	DefaultPropagation = 5 * time.Second
	// DefaultIssuerPoll is how often the issuer looks at its CA directory
	// and at its SVIDs' ages.
	DefaultIssuerPoll = time.Second
)

// Workload is one identity the issuer hands out and who may have it.
type Workload struct {
	ID spiffeid.ID
	// UID is the user id whose processes receive this SVID (the kernel
	// reports a caller's uid; see IssuerConfig).
	UID uint32
	// Hosts become extra DNS or IP SANs, for tools that check host names.
	Hosts []string
	// Dir, when set, also receives the SVID as files (svid.pem, svid.key,
	// bundle.pem), rewritten at every renewal, for tools that read files.
	Dir string
}

// IssuerConfig describes an embedded SPIFFE Workload API.
type IssuerConfig struct {
	// CADir is the CA directory (pki init, rotate-ca). The issuer re-reads
	// it every Poll, so a rotation written there reaches every workload.
	CADir string
	// Socket is the path of the Unix socket to serve on. Its directory
	// should be private (mode 0700).
	Socket string
	// SVIDTTL is the lifetime of each SVID (DefaultWorkloadSVIDTTL).
	SVIDTTL     time.Duration
	Workloads   []Workload
	Propagation time.Duration
	Poll        time.Duration
	Logger      *slog.Logger
}

// Issuer serves the SPIFFE Workload API (the X.509 half that go-spiffe's
// X509Source and SPIRE's agent clients use: FetchX509SVID and
// FetchX509Bundles, both streams) from a CA directory, over a Unix socket.
//
// Who gets which SVID: the kernel tells the issuer each caller's uid
// (SO_PEERCRED), and a caller receives the SVIDs of every Workload of its
// uid, nothing else; a caller of another uid is refused. Processes that share
// a uid (a development network run by one user) therefore all receive the
// same set, and each picks its own by SPIFFE ID (WorkloadOptions.ID): they
// cannot be told apart by the kernel, exactly as files readable by that user
// could not be. Give nodes their own uids where that matters; SPIRE's agent
// can tell them apart by more (binary path or hash, container, …).
type Issuer struct {
	cfg IssuerConfig
	log *slog.Logger
	ln  net.Listener
	srv *grpc.Server

	mu        sync.Mutex
	state     *CAState
	signer    *CA
	bundle    []*x509.Certificate
	published map[string]time.Time // authority (raw DER) → first handed out
	svids     map[spiffeid.ID]*issued
	renewals  map[spiffeid.ID]int
	changed   chan struct{}
	lastErr   string

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type issued struct {
	svid  *x509svid.SVID
	at    time.Time
	chain []byte
	key   []byte
}

// StartIssuer loads the CA directory, issues every workload's SVID and
// serves the Workload API on the socket until Close.
func StartIssuer(cfg IssuerConfig) (*Issuer, error) {
	if cfg.SVIDTTL <= 0 {
		cfg.SVIDTTL = DefaultWorkloadSVIDTTL
	}
	if cfg.Propagation <= 0 {
		cfg.Propagation = DefaultPropagation
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultIssuerPoll
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Socket) > 100 {
		return nil, fmt.Errorf("issuer: socket path %s is longer than a Unix socket address may be (about 100 bytes); use a shorter directory", cfg.Socket)
	}
	st, err := LoadCAState(cfg.CADir)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	for _, w := range cfg.Workloads {
		if !w.ID.MemberOf(st.TrustDomain()) {
			return nil, fmt.Errorf("issuer: workload %s is not in trust domain %s", w.ID, st.TrustDomain())
		}
	}
	is := &Issuer{
		cfg: cfg, log: cfg.Logger.With("component", "issuer"),
		state: st, signer: st.Signing, bundle: st.Authorities,
		published: map[string]time.Time{}, svids: map[spiffeid.ID]*issued{}, renewals: map[spiffeid.ID]int{},
		changed: make(chan struct{}), stop: make(chan struct{}),
	}
	now := time.Now()
	for _, a := range st.Authorities {
		is.published[string(a.Raw)] = now
	}
	if st.Next != nil {
		// A rotation was prepared before this start: the next CA is in the
		// bundle, but nobody has heard of it from this issuer yet.
		is.published[string(st.Next.Certificate().Raw)] = now
	}
	for _, w := range cfg.Workloads {
		if err := is.issueLocked(w, now); err != nil {
			return nil, fmt.Errorf("issuer: %w", err)
		}
	}
	is.writeFilesLocked(nil)

	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o700); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if err := removeStaleSocket(cfg.Socket); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if is.ln, err = net.Listen("unix", cfg.Socket); err != nil {
		return nil, fmt.Errorf("issuer: listen on %s: %w", cfg.Socket, err)
	}
	if err := os.Chmod(cfg.Socket, 0o600); err != nil {
		is.ln.Close()
		return nil, fmt.Errorf("issuer: %w", err)
	}
	is.srv = grpc.NewServer(
		grpc.Creds(peerCredentials{}),
		grpc.MaxRecvMsgSize(4<<10),
		grpc.MaxConcurrentStreams(64),
	)
	workload.RegisterSpiffeWorkloadAPIServer(is.srv, workloadAPI{is: is})
	is.wg.Add(2)
	go func() {
		defer is.wg.Done()
		is.srv.Serve(is.ln)
	}()
	go func() {
		defer is.wg.Done()
		is.loop()
	}()
	if !peerCredsSupported {
		is.log.Warn("this system does not report the uid of a Unix socket's peer: every process that can open the socket gets every SVID", "socket", cfg.Socket)
	}
	is.log.Info("workload API serving", "socket", cfg.Socket, "workloads", len(cfg.Workloads), "svid_ttl", cfg.SVIDTTL.String())
	return is, nil
}

// Addr is the socket's address as --workload-api takes it.
func (is *Issuer) Addr() string { return "unix://" + is.cfg.Socket }

// TrustDomain is the trust domain of the issuer's CA.
func (is *Issuer) TrustDomain() spiffeid.TrustDomain {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.state.TrustDomain()
}

// Renewals counts the SVIDs issued for id since the start, the first one
// included.
func (is *Issuer) Renewals(id spiffeid.ID) int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.renewals[id]
}

// Signer returns the certificate of the CA that signs SVIDs now.
func (is *Issuer) Signer() *x509.Certificate {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.signer.Certificate()
}

// Bundle returns the authorities the issuer hands out now.
func (is *Issuer) Bundle() *x509bundle.Bundle {
	is.mu.Lock()
	defer is.mu.Unlock()
	return x509bundle.FromX509Authorities(is.state.TrustDomain(), is.bundle)
}

// Source returns a source of workload id's current SVID and the bundle, read
// from the issuer directly (for the process that runs it).
func (is *Issuer) Source(id spiffeid.ID) Source { return issuerSource{is: is, id: id} }

type issuerSource struct {
	is *Issuer
	id spiffeid.ID
}

func (s issuerSource) GetX509SVID() (*x509svid.SVID, error) {
	s.is.mu.Lock()
	defer s.is.mu.Unlock()
	if v := s.is.svids[s.id]; v != nil {
		return v.svid, nil
	}
	return nil, fmt.Errorf("issuer has no workload %s", s.id)
}

func (s issuerSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.is.Bundle().GetX509BundleForTrustDomain(td)
}

// Close stops serving and ends every stream.
func (is *Issuer) Close() error {
	is.once.Do(func() {
		close(is.stop)
		is.srv.Stop()
		is.wg.Wait()
		os.Remove(is.cfg.Socket)
	})
	return nil
}

func (is *Issuer) loop() {
	t := time.NewTicker(min(is.cfg.Poll, max(is.cfg.SVIDTTL/10, 10*time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-is.stop:
			return
		case now := <-t.C:
			is.tick(now)
		}
	}
}

// tick reloads the CA directory, moves a rotation forward and renews SVIDs
// past half their lifetime; every change reaches every stream at once.
func (is *Issuer) tick(now time.Time) {
	is.mu.Lock()
	defer is.mu.Unlock()
	changed := map[spiffeid.ID]bool{}
	bundleChanged := false

	st, err := LoadCAState(is.cfg.CADir)
	if err != nil {
		if msg := err.Error(); msg != is.lastErr {
			is.lastErr = msg
			is.log.Error("CA directory refused; the issuer keeps what it had", "dir", is.cfg.CADir, "error", err)
		}
		st = is.state
	} else {
		is.lastErr = ""
	}
	is.state = st

	// A new signing CA signs only once it has been in the bundle handed
	// out for Propagation: new-CA bundles reach every workload before the
	// first new-CA SVID does.
	want := st.Authorities
	if !st.Signing.Certificate().Equal(is.signer.Certificate()) {
		first, known := is.published[string(st.Signing.Certificate().Raw)]
		switch {
		case !containsCert(want, is.signer.Certificate()):
			// The old CA left the bundle at once (no prepare phase): its
			// SVIDs fail from now on whatever the issuer does.
			is.log.Warn("the CA changed without a rotation; SVIDs of the old CA no longer verify", "dir", is.cfg.CADir)
			is.switchSigner(st.Signing, now, changed)
		case known && now.Sub(first) >= is.cfg.Propagation:
			is.switchSigner(st.Signing, now, changed)
		}
	}
	if !sameCerts(want, is.bundle) {
		// Before an authority leaves the bundle, no SVID may still depend
		// on it.
		for id, v := range is.svids {
			if !signedByOneOf(v.svid, want) && containsCert(want, is.signer.Certificate()) {
				if w, ok := is.workload(id); ok {
					if err := is.issueLocked(w, now); err == nil {
						changed[id] = true
					}
				}
			}
		}
		is.bundle = slices.Clone(want)
		for _, a := range want {
			if _, ok := is.published[string(a.Raw)]; !ok {
				is.published[string(a.Raw)] = now
			}
		}
		bundleChanged = true
		is.log.Info("trust bundle changed", "authorities", len(want), "phase", st.Phase())
	}
	for _, w := range is.cfg.Workloads {
		v := is.svids[w.ID]
		if v != nil && now.Sub(v.at) < is.cfg.SVIDTTL/2 {
			continue
		}
		if err := is.issueLocked(w, now); err != nil {
			is.log.Error("renew SVID", "id", w.ID.String(), "error", err)
			continue
		}
		changed[w.ID] = true
	}
	if len(changed) == 0 && !bundleChanged {
		return
	}
	if bundleChanged {
		is.writeFilesLocked(nil)
	} else {
		is.writeFilesLocked(changed)
	}
	close(is.changed)
	is.changed = make(chan struct{})
}

func (is *Issuer) switchSigner(ca *CA, now time.Time, changed map[spiffeid.ID]bool) {
	is.signer = ca
	for _, w := range is.cfg.Workloads {
		if err := is.issueLocked(w, now); err != nil {
			is.log.Error("re-issue SVID under the new CA", "id", w.ID.String(), "error", err)
			continue
		}
		changed[w.ID] = true
	}
	is.log.Info("new CA signs every SVID from now on", "svids", len(is.cfg.Workloads))
}

func (is *Issuer) workload(id spiffeid.ID) (Workload, bool) {
	for _, w := range is.cfg.Workloads {
		if w.ID == id {
			return w, true
		}
	}
	return Workload{}, false
}

func (is *Issuer) issueLocked(w Workload, now time.Time) error {
	svid, err := is.signer.Issue(w.ID, is.cfg.SVIDTTL, w.Hosts...)
	if err != nil {
		return err
	}
	var chain []byte
	for _, c := range svid.Certificates {
		chain = append(chain, c.Raw...)
	}
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return fmt.Errorf("issue %s: marshal key: %w", w.ID, err)
	}
	is.svids[w.ID] = &issued{svid: svid, at: now, chain: chain, key: key}
	is.renewals[w.ID]++
	return nil
}

// writeFilesLocked rewrites the files of the workloads that have a Dir:
// those in only, or every one when only is nil.
func (is *Issuer) writeFilesLocked(only map[spiffeid.ID]bool) {
	b := x509bundle.FromX509Authorities(is.state.TrustDomain(), is.bundle)
	for _, w := range is.cfg.Workloads {
		if w.Dir == "" || (only != nil && !only[w.ID]) {
			continue
		}
		if err := WriteSVID(w.Dir, is.svids[w.ID].svid, b); err != nil {
			is.log.Error("write SVID files", "id", w.ID.String(), "dir", w.Dir, "error", err)
		}
	}
}

// x509Response is what a caller of uid receives now, and a channel closed
// at the next change; ok is false when uid is entitled to nothing.
func (is *Issuer) x509Response(uid uint32) (resp *workload.X509SVIDResponse, next <-chan struct{}, ok bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	bundle := concatDER(is.bundle)
	resp = &workload.X509SVIDResponse{}
	for _, w := range is.cfg.Workloads {
		if w.UID != uid {
			continue
		}
		v := is.svids[w.ID]
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId: w.ID.String(), X509Svid: v.chain, X509SvidKey: v.key, Bundle: bundle,
		})
	}
	return resp, is.changed, len(resp.Svids) > 0
}

func (is *Issuer) bundlesResponse() (*workload.X509BundlesResponse, <-chan struct{}) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return &workload.X509BundlesResponse{Bundles: map[string][]byte{
		is.state.TrustDomain().IDString(): concatDER(is.bundle),
	}}, is.changed
}

func (is *Issuer) entitled(uid uint32) bool {
	return slices.ContainsFunc(is.cfg.Workloads, func(w Workload) bool { return w.UID == uid })
}

// workloadAPI is the gRPC service. Only the X.509 methods are served; the
// JWT and WIT ones answer Unimplemented.
type workloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	is *Issuer
}

// errNoIdentity is SPIRE's answer to a caller entitled to nothing.
var errNoIdentity = status.Error(codes.PermissionDenied, "no identity issued")

func (a workloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	uid, err := callerUID(stream.Context())
	if err != nil {
		return err
	}
	for {
		resp, next, ok := a.is.x509Response(uid)
		if !ok {
			return errNoIdentity
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if err := a.wait(stream.Context(), next); err != nil {
			return err
		}
	}
}

func (a workloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	uid, err := callerUID(stream.Context())
	if err != nil {
		return err
	}
	if !a.is.entitled(uid) {
		return errNoIdentity
	}
	var last *workload.X509BundlesResponse
	for {
		resp, next := a.is.bundlesResponse()
		if last == nil || !bytes.Equal(last.Bundles[a.is.TrustDomain().IDString()], resp.Bundles[a.is.TrustDomain().IDString()]) {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last = resp
		}
		if err := a.wait(stream.Context(), next); err != nil {
			return err
		}
	}
}

func (a workloadAPI) wait(ctx context.Context, next <-chan struct{}) error {
	select {
	case <-next:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-a.is.stop:
		return status.Error(codes.Unavailable, "workload API stopping")
	}
}

// callerUID checks the Workload API's security header and returns the
// caller's uid as the kernel reported it.
func callerUID(ctx context.Context) (uint32, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return 0, status.Error(codes.InvalidArgument, "security header missing from request")
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return 0, status.Error(codes.Internal, "no peer")
	}
	ci, ok := p.AuthInfo.(callerInfo)
	if !ok {
		return 0, status.Error(codes.PermissionDenied, "caller unknown")
	}
	return ci.uid, nil
}

// peerCredentials are gRPC transport credentials for a Unix socket: no
// encryption (the kernel carries the bytes), and the caller's uid from the
// kernel as its authentication.
type peerCredentials struct{}

type callerInfo struct {
	credentials.CommonAuthInfo
	uid uint32
	pid int32
}

func (callerInfo) AuthType() string { return "peercred" }

func (peerCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uid, pid, err := peerCred(c)
	if err != nil {
		return nil, nil, err
	}
	return c, callerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, uid: uid, pid: pid}, nil
}

func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peer credentials are for the server side")
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCredentials) Clone() credentials.TransportCredentials { return p }

func (peerCredentials) OverrideServerName(string) error { return nil }

// removeStaleSocket removes a socket file nobody listens on (left by a
// process that died); it refuses to take over a live one.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s: another workload API already serves there", path)
	}
	return os.Remove(path)
}

func concatDER(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, c.Raw...)
	}
	return b
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

// signedByOneOf reports whether the SVID's leaf was signed by one of the
// authorities.
func signedByOneOf(svid *x509svid.SVID, authorities []*x509.Certificate) bool {
	leaf := svid.Certificates[0]
	return slices.ContainsFunc(authorities, func(a *x509.Certificate) bool { return leaf.CheckSignatureFrom(a) == nil })
}
