package participant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Relay is the member's own side of the network: its EHR sends Gateway
// queries to the sidecar, and the sidecar makes them to the brokers under
// the member's identity, failing over between brokers. The EHR never holds
// the member's private key.
type Relay struct {
	qhinv1.UnimplementedGatewayServer
	conn   *client.Conn
	key    *match.LinkageKey
	ledger *audit.Ledger
}

// NewRelay relays to the brokers of conn, recording each relayed query in
// ledger (none when nil). With the network's linkage key (nil for none), a
// discovery query that carries no record-locator tokens gets the tokens of
// its demographics, so that the brokers ask only the members that hold the
// person.
func NewRelay(conn *client.Conn, key *match.LinkageKey, ledger *audit.Ledger) *Relay {
	return &Relay{conn: conn, key: key, ledger: ledger}
}

// CheckLoopback refuses a listener that is reachable from other hosts.
func CheckLoopback(l net.Listener) error {
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok || !addr.IP.IsLoopback() {
		return fmt.Errorf("the EHR API listens on %s; without authentication it must be a loopback address", l.Addr())
	}
	return nil
}

// record writes a relayed query's entry in the member's ledger before its
// answer goes back to the EHR.
func (r *Relay) record(ctx context.Context, method, action, purposeCode string, req *qhinv1.Requester, queryID string, patients []string) error {
	err := r.ledger.Append(ctx, &qhinv1.AuditEntry{Actor: audit.Caller(ctx), EndUser: req, PurposeOfUse: purposeCode,
		Action: action, Method: method, QueryId: queryID, PatientRefs: patients, Outcome: codes.OK.String()})
	if err != nil {
		return status.Error(codes.Unavailable, "the member cannot record the query in its audit ledger")
	}
	return nil
}

// DiscoverPatients implements qhinv1.GatewayServer.
func (r *Relay) DiscoverPatients(ctx context.Context, req *qhinv1.DiscoverPatientsRequest) (*qhinv1.DiscoverPatientsResponse, error) {
	req = withTokens(req, r.key)
	resp, err := r.conn.Gateway().DiscoverPatients(ctx, req)
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, p := range resp.Persons {
		for _, l := range p.Links {
			refs = append(refs, audit.LinkRef(l.Link))
		}
	}
	return resp, r.record(ctx, qhinv1.Gateway_DiscoverPatients_FullMethodName, audit.ActionDiscover, req.PurposeOfUse, req.Requester, resp.QueryId, refs)
}

// QueryDocuments implements qhinv1.GatewayServer.
func (r *Relay) QueryDocuments(ctx context.Context, req *qhinv1.QueryDocumentsRequest) (*qhinv1.QueryDocumentsResponse, error) {
	resp, err := r.conn.Gateway().QueryDocuments(ctx, req)
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, l := range req.Links {
		refs = append(refs, audit.LinkRef(l.Link))
	}
	return resp, r.record(ctx, qhinv1.Gateway_QueryDocuments_FullMethodName, audit.ActionDocuments, req.PurposeOfUse, req.Requester, resp.QueryId, refs)
}

// RetrieveDocument implements qhinv1.GatewayServer, passing chunks on as
// they arrive.
func (r *Relay) RetrieveDocument(req *qhinv1.RetrieveDocumentRequest, out grpc.ServerStreamingServer[qhinv1.RetrieveDocumentResponse]) error {
	in, err := r.conn.Gateway().RetrieveDocument(out.Context(), req)
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if first {
			if err := r.record(out.Context(), qhinv1.Gateway_RetrieveDocument_FullMethodName, audit.ActionRetrieve, req.PurposeOfUse,
				req.Requester, "", []string{audit.LinkRef(req.GetLink().GetLink())}); err != nil {
				return err
			}
		}
		if err := out.Send(msg); err != nil {
			return err
		}
	}
}

// RelayConfig describes the member's local API: where it listens and how
// callers prove they belong to the member.
type RelayConfig struct {
	// Listen is "unix:PATH" (a unix socket whose file permissions decide who
	// may call: SocketMode, 0600 by default) or "HOST:PORT" (mutual TLS:
	// callers present an SVID of the member's own SPIFFE ID).
	Listen     string
	SocketMode os.FileMode
	// Insecure serves HOST:PORT in plaintext, to anyone who reaches it; it
	// must be a loopback address, and the relay logs a warning.
	Insecure bool
	// Source is the member's SVID: the relay presents it, and accepts only
	// callers that present the same SPIFFE ID.
	Source pki.Source
	// Conn reaches the brokers; Ledger is the member's audit ledger.
	Conn   *client.Conn
	Ledger *audit.Ledger
	// LinkageKey, when set, adds record-locator tokens to discovery queries
	// that carry none.
	LinkageKey *match.LinkageKey
	// Restrictions, when set, serves the member's own restrictions of its
	// patients to its EHR (Server.Restrictions).
	Restrictions qhinv1.RestrictionsServer
	Limits       pki.ServerLimits
	Logger       *slog.Logger
}

// RelayServer serves the member's local API.
type RelayServer struct {
	grpc     *grpc.Server
	listener net.Listener
	addr     string
	socket   string
}

// NewRelayServer listens as cfg says and builds the local API's server:
// the Gateway relay, the member's Audit service, its Restrictions and
// health.
func NewRelayServer(cfg RelayConfig) (*RelayServer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	self, err := pki.SourceIdentity(cfg.Source)
	if err != nil {
		return nil, err
	}
	opts := cfg.Limits.GRPCOptions()
	r := &RelayServer{}
	var l net.Listener
	switch path, ok := strings.CutPrefix(cfg.Listen, "unix:"); {
	case ok:
		path = strings.TrimPrefix(path, "//")
		if path == "" {
			return nil, errors.New("the EHR API socket needs a path: unix:PATH")
		}
		if cfg.Insecure {
			return nil, errors.New("--insecure-local-api applies to a TCP address; a unix socket is guarded by its file permissions")
		}
		if l, err = listenUnix(path, cfg.SocketMode); err != nil {
			return nil, err
		}
		r.socket = path
		r.addr = "unix:" + path
		opts = append(opts, grpc.Creds(unixCredentials{}))
	case cfg.Insecure:
		if l, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, err
		}
		if err := CheckLoopback(l); err != nil {
			l.Close()
			return nil, err
		}
		r.addr = l.Addr().String()
		cfg.Logger.Warn("the EHR API takes calls in plaintext from anything on this host that reaches its port (--insecure-local-api); use a unix socket or mutual TLS",
			"addr", r.addr)
	default:
		if l, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, err
		}
		r.addr = l.Addr().String()
		opts = append(opts, grpc.Creds(pki.ServerCredentials(cfg.Source, pki.AuthorizeID(self.ID))))
	}
	r.listener = pki.LimitListener(l, cfg.Limits)
	// Every call is logged and recorded: a unix socket's caller by its uid,
	// a TLS caller by its SPIFFE ID.
	obs := cfg.Ledger.Observer(relayAudited)
	log := cfg.Logger.With("api", "ehr")
	opts = append(opts,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			ctx = localCaller(ctx)
			resp, err := h(ctx, req)
			logRelayed(ctx, log, info.FullMethod, err)
			obs(ctx, info.FullMethod, err)
			return resp, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ss = &callerStream{ServerStream: ss, ctx: localCaller(ss.Context())}
			err := h(srv, ss)
			logRelayed(ss.Context(), log, info.FullMethod, err)
			obs(ss.Context(), info.FullMethod, err)
			return err
		}))
	r.grpc = grpc.NewServer(opts...)
	qhinv1.RegisterGatewayServer(r.grpc, NewRelay(cfg.Conn, cfg.LinkageKey, cfg.Ledger))
	if cfg.Ledger != nil {
		qhinv1.RegisterAuditServer(r.grpc, audit.NewService(cfg.Ledger, cfg.Logger))
	}
	if cfg.Restrictions != nil {
		qhinv1.RegisterRestrictionsServer(r.grpc, cfg.Restrictions)
	}
	hs := health.NewServer()
	healthpb.RegisterHealthServer(r.grpc, hs)
	return r, nil
}

// relayAudited are the local API's calls recorded whatever their outcome:
// reads of the member's ledger.
var relayAudited = map[string]string{
	qhinv1.Audit_ListEntries_FullMethodName:  "audit-read",
	qhinv1.Audit_VerifyLedger_FullMethodName: "audit-verify",
	// A read of who the member restricts; changes are recorded by the
	// Restrictions service itself.
	qhinv1.Restrictions_ListRestrictions_FullMethodName: "restrictions-read",
}

// localCaller marks a unix socket call with its caller for the ledger.
func localCaller(ctx context.Context) context.Context {
	if who, ok := UnixCaller(ctx); ok {
		return audit.WithLocalCaller(ctx, who)
	}
	return ctx
}

type callerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *callerStream) Context() context.Context { return s.ctx }

// logRelayed logs a call of the local API: method, caller and outcome.
func logRelayed(ctx context.Context, log *slog.Logger, method string, err error) {
	level := slog.LevelDebug
	attrs := []any{"method", method, "caller", audit.Caller(ctx), "code", status.Code(err).String()}
	if err != nil {
		level = slog.LevelInfo
		attrs = append(attrs, "error", status.Convert(err).Message())
	}
	log.Log(ctx, level, "rpc", attrs...)
}

// listenUnix listens on a unix socket at path with mode, replacing a
// socket a stopped relay left behind (but never another kind of file).
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if mode == 0 {
		mode = 0o600
	}
	if mode&0o007 != 0 {
		return nil, fmt.Errorf("the EHR API socket mode %#o lets every user of the host call it; allow at most the group", mode)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		os.Remove(path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// The socket is made in a directory only this process's user can
	// enter, opened to mode there, then moved into place: no caller can
	// connect before its permissions are set.
	tmp, err := os.MkdirTemp(dir, ".ehr-api-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	l, err := net.Listen("unix", filepath.Join(tmp, "s"))
	if err != nil {
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(filepath.Join(tmp, "s"), mode); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Rename(filepath.Join(tmp, "s"), path); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Addr is where the local API listens: HOST:PORT or unix:PATH.
func (r *RelayServer) Addr() string { return r.addr }

// Serve answers until Stop.
func (r *RelayServer) Serve() error { return r.grpc.Serve(r.listener) }

// Stop lets running calls finish until ctx ends, and removes the socket.
func (r *RelayServer) Stop(ctx context.Context) {
	pki.GracefulStop(ctx, r.grpc)
	if r.socket != "" {
		os.Remove(r.socket)
	}
}

// unixCredentials are the transport credentials of the unix socket: the
// connection is the kernel's, and the caller is whoever the socket's file
// permissions let in; its uid names it in the ledger.
type unixCredentials struct{}

// unixAuthInfo carries the peer's uid.
type unixAuthInfo struct {
	credentials.CommonAuthInfo
	uid int
}

func (unixAuthInfo) AuthType() string { return "unix" }

func (unixCredentials) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, unixAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, uid: -1}, nil
}

func (unixCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		if lc, isLimited := c.(interface{ NetConn() net.Conn }); isLimited {
			uc, ok = lc.NetConn().(*net.UnixConn)
		}
	}
	uid := -1
	if ok {
		uid = peerUID(uc)
	}
	return c, unixAuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, uid: uid}, nil
}

func (unixCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix"}
}
func (unixCredentials) Clone() credentials.TransportCredentials { return unixCredentials{} }
func (unixCredentials) OverrideServerName(string) error         { return nil }

// UnixCaller names the peer of a unix socket call ("unix:UID"), if it is
// one.
func UnixCaller(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	info, ok := p.AuthInfo.(unixAuthInfo)
	if !ok {
		return "", false
	}
	if info.uid < 0 {
		return "unix", true
	}
	return fmt.Sprintf("unix:%d", info.uid), true
}

// withTokens returns req with the record-locator tokens of its demographics
// under key, when it carries none and a key is given; req itself otherwise.
func withTokens(req *qhinv1.DiscoverPatientsRequest, key *match.LinkageKey) *qhinv1.DiscoverPatientsRequest {
	if key == nil || len(req.LocatorTokens) > 0 {
		return req
	}
	t := key.QueryTokens(req.Demographics)
	if t == nil {
		return req
	}
	req = proto.Clone(req).(*qhinv1.DiscoverPatientsRequest)
	req.LocatorTokens = []*qhinv1.LocatorTokens{t}
	return req
}

// GatewayWithTokens is gw whose discovery queries carry the record-locator
// tokens of their demographics under key (gw itself when key is nil): the
// member's own queries, from its FHIR facade as from its EHR API, are then
// routed to the members that hold the person.
func GatewayWithTokens(gw qhinv1.GatewayClient, key *match.LinkageKey) qhinv1.GatewayClient {
	if key == nil {
		return gw
	}
	return tokenGateway{GatewayClient: gw, key: key}
}

type tokenGateway struct {
	qhinv1.GatewayClient
	key *match.LinkageKey
}

func (g tokenGateway) DiscoverPatients(ctx context.Context, req *qhinv1.DiscoverPatientsRequest, opts ...grpc.CallOption) (*qhinv1.DiscoverPatientsResponse, error) {
	return g.GatewayClient.DiscoverPatients(ctx, withTokens(req, g.key), opts...)
}
