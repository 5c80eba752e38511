package pki

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// qhinMethods lists every RPC of every service in proto/qhin/v1, read from
// the generated file descriptors, so that a new RPC shows up here without
// anyone editing this test.
func qhinMethods(t testing.TB) []protoreflect.MethodDescriptor {
	t.Helper()
	var methods []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("qhin.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				methods = append(methods, sd.Methods().Get(j))
			}
		}
		return true
	})
	slices.SortFunc(methods, func(a, b protoreflect.MethodDescriptor) int {
		return strings.Compare(fullMethod(a), fullMethod(b))
	})
	// Guard against an empty registry making every check below vacuous.
	for _, known := range []string{
		qhinv1.Gateway_DiscoverPatients_FullMethodName,
		qhinv1.Responder_RetrieveDocument_FullMethodName,
		qhinv1.Directory_ListParticipants_FullMethodName,
		qhinv1.Cluster_RestoreSnapshot_FullMethodName,
	} {
		if !slices.ContainsFunc(methods, func(md protoreflect.MethodDescriptor) bool { return fullMethod(md) == known }) {
			t.Fatalf("file descriptors of qhin.v1 do not list %s", known)
		}
	}
	return methods
}

// fullMethod is the gRPC full method name of md: /<package>.<Service>/<Method>.
func fullMethod(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}

func TestDefaultPolicy_EveryMethodHasADecision(t *testing.T) {
	methods := qhinMethods(t)
	hs, err := protoregistry.GlobalFiles.FindDescriptorByName("grpc.health.v1.Health")
	if err != nil {
		t.Fatal(err)
	}
	for i := range hs.(protoreflect.ServiceDescriptor).Methods().Len() {
		methods = append(methods, hs.(protoreflect.ServiceDescriptor).Methods().Get(i))
	}
	for _, md := range methods {
		m := fullMethod(md)
		roles, ok := DefaultPolicy[m]
		if !ok {
			t.Errorf("%s has no entry in DefaultPolicy: decide which roles may call it", m)
			continue
		}
		if len(roles) == 0 {
			t.Errorf("%s: DefaultPolicy entry allows no role; remove the RPC or name its callers", m)
		}
	}
}

func TestDefaultPolicy_EntriesAreRealMethodsAndRoles(t *testing.T) {
	var real []string
	for _, md := range qhinMethods(t) {
		real = append(real, fullMethod(md))
	}
	for m, roles := range DefaultPolicy {
		parts := strings.Split(m, "/")
		if len(parts) != 3 || parts[0] != "" || parts[1] == "" || parts[2] == "" {
			t.Errorf("%q is not a full method name /<service>/<method>", m)
		}
		if strings.HasPrefix(m, "/qhin.v1.") && !slices.Contains(real, m) {
			t.Errorf("DefaultPolicy names %s, which is not an RPC of qhin.v1", m)
		}
		for _, r := range roles {
			if !slices.Contains(Roles, r) {
				t.Errorf("%s: unknown role %q", m, r)
			}
		}
	}
}

func TestPolicy_Allows(t *testing.T) {
	p := Policy{"/s/M": {RoleOperator}}
	tests := []struct {
		method string
		role   Role
		want   bool
	}{
		{"/s/M", RoleOperator, true},
		{"/s/M", RoleBroker, false},
		{"/s/Other", RoleOperator, false},
		{"", RoleOperator, false},
		{"/s/M", Role(""), false},
	}
	for _, tt := range tests {
		if got := p.Allows(tt.method, tt.role); got != tt.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tt.method, tt.role, got, tt.want)
		}
	}
}

// startServer serves gRPC on 127.0.0.1:0 with the transport credentials and
// the policy's interceptors, and returns its address. The server stops when
// the test ends.
func startServer(t testing.TB, creds credentials.TransportCredentials, policy Policy, register func(*grpc.Server)) string {
	t.Helper()
	s := grpc.NewServer(
		grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(policy.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(policy.StreamInterceptor()),
	)
	register(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// brokerCreds are the server credentials of broker "b0", accepting every role
// of the trust domain.
func brokerCreds(t testing.TB, ca *CA) (credentials.TransportCredentials, spiffeid.ID) {
	t.Helper()
	src := sourceFor(t, ca, RoleBroker, "b0")
	return ServerCredentials(src, AuthorizeRoles(ca.TrustDomain(), Roles...)), src.SVID.ID
}

func dial(t testing.TB, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func callContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// invoke calls md with an empty request, the way a generated client would,
// and returns the call's error.
func invoke(ctx context.Context, conn *grpc.ClientConn, md protoreflect.MethodDescriptor) error {
	newMsg := func(d protoreflect.MessageDescriptor) (any, error) {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(d.FullName())
		if err != nil {
			return nil, err
		}
		return mt.New().Interface(), nil
	}
	req, err := newMsg(md.Input())
	if err != nil {
		return err
	}
	resp, err := newMsg(md.Output())
	if err != nil {
		return err
	}
	method := fullMethod(md)
	if !md.IsStreamingClient() && !md.IsStreamingServer() {
		return conn.Invoke(ctx, method, req, resp)
	}
	desc := &grpc.StreamDesc{
		StreamName:    string(md.Name()),
		ServerStreams: md.IsStreamingServer(),
		ClientStreams: md.IsStreamingClient(),
	}
	stream, err := conn.NewStream(ctx, desc, method)
	if err != nil {
		return err
	}
	if !md.IsStreamingClient() {
		// A server-streaming method reads exactly one request. io.EOF means
		// the server already ended the call; RecvMsg says how.
		if err := stream.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	return stream.RecvMsg(resp)
}

// wantCallers is who may call each RPC, written out independently of
// DefaultPolicy (as SPIRE's endpoints test does), so that widening or
// narrowing the policy is a deliberate change to both.
var wantCallers = map[string][]Role{
	"/qhin.v1.Gateway/DiscoverPatients": {RoleParticipant},
	"/qhin.v1.Gateway/QueryDocuments":   {RoleParticipant},
	"/qhin.v1.Gateway/RetrieveDocument": {RoleParticipant},

	"/qhin.v1.Responder/DiscoverPatients": {RoleBroker},
	"/qhin.v1.Responder/QueryDocuments":   {RoleBroker},
	"/qhin.v1.Responder/RetrieveDocument": {RoleBroker},

	"/qhin.v1.Directory/RegisterParticipant":  {RoleOperator},
	"/qhin.v1.Directory/UpdateParticipant":    {RoleOperator},
	"/qhin.v1.Directory/SetParticipantStatus": {RoleOperator},
	"/qhin.v1.Directory/GetParticipant":       {RoleOperator},
	"/qhin.v1.Directory/ListParticipants":     {RoleOperator},
	"/qhin.v1.Directory/WriteParticipants":    {RoleOperator},

	"/qhin.v1.Cluster/Join":            {RoleBroker, RoleOperator},
	"/qhin.v1.Cluster/Remove":          {RoleOperator, RoleBroker},
	"/qhin.v1.Cluster/Status":          {RoleBroker, RoleOperator},
	"/qhin.v1.Cluster/NodeStatus":      {RoleBroker, RoleOperator},
	"/qhin.v1.Cluster/Brokers":         {RoleBroker, RoleParticipant, RoleOperator},
	"/qhin.v1.Cluster/Apply":           {RoleBroker},
	"/qhin.v1.Cluster/ReadIndex":       {RoleBroker},
	"/qhin.v1.Cluster/SaveSnapshot":    {RoleOperator, RoleBroker},
	"/qhin.v1.Cluster/RestoreSnapshot": {RoleOperator, RoleBroker},
	"/qhin.v1.Cluster/WaitApplied":     {RoleBroker},
	"/qhin.v1.Cluster/Checksums":       {RoleBroker},

	"/qhin.v1.Locator/PublishTokens":  {RoleParticipant},
	"/qhin.v1.Locator/WithdrawTokens": {RoleParticipant},
	"/qhin.v1.Locator/SetLinkageKey":  {RoleOperator},
	"/qhin.v1.Locator/LocatorStatus":  {RoleOperator},
	"/qhin.v1.Audit/ListEntries":      {RoleOperator},
	"/qhin.v1.Audit/VerifyLedger":     {RoleOperator},

	"/qhin.v1.Consent/SetConsent":      {RoleParticipant, RoleOperator},
	"/qhin.v1.Consent/RevokeConsent":   {RoleParticipant, RoleOperator},
	"/qhin.v1.Consent/GetConsent":      {RoleParticipant, RoleOperator},
	"/qhin.v1.Consent/ListDisclosures": {RoleParticipant, RoleOperator},

	"/qhin.v1.Consent/RevokeConsentByDemographics": {RoleOperator},
	"/qhin.v1.Consent/SetConsentByDemographics":    {RoleOperator},
	"/qhin.v1.Consent/FindPatientRecords":          {RoleOperator},

	"/qhin.v1.Restrictions/SetRestriction":   {RoleOperator},
	"/qhin.v1.Restrictions/ClearRestriction": {RoleOperator},
	"/qhin.v1.Restrictions/ListRestrictions": {RoleOperator},
}

// TestDefaultPolicy_EveryMethodAsEveryRole calls every RPC of qhin.v1 as
// every role over real mTLS, against the generated Unimplemented servers: a
// call wantCallers allows reaches the handler (Unimplemented), any other is
// PermissionDenied.
func TestDefaultPolicy_EveryMethodAsEveryRole(t *testing.T) {
	ca := newTestCA(t, testTD)
	creds, serverID := brokerCreds(t, ca)
	addr := startServer(t, creds, DefaultPolicy, func(s *grpc.Server) {
		qhinv1.RegisterGatewayServer(s, qhinv1.UnimplementedGatewayServer{})
		qhinv1.RegisterResponderServer(s, qhinv1.UnimplementedResponderServer{})
		qhinv1.RegisterDirectoryServer(s, qhinv1.UnimplementedDirectoryServer{})
		qhinv1.RegisterClusterServer(s, qhinv1.UnimplementedClusterServer{})
		qhinv1.RegisterLocatorServer(s, qhinv1.UnimplementedLocatorServer{})
		qhinv1.RegisterAuditServer(s, qhinv1.UnimplementedAuditServer{})
		qhinv1.RegisterConsentServer(s, qhinv1.UnimplementedConsentServer{})
		qhinv1.RegisterRestrictionsServer(s, qhinv1.UnimplementedRestrictionsServer{})
	})

	conns := map[Role]*grpc.ClientConn{}
	for _, role := range Roles {
		src := sourceFor(t, ca, role, "caller-"+string(role))
		conns[role] = dial(t, addr, ClientCredentials(src, AuthorizeID(serverID)))
	}

	methods := qhinMethods(t)
	registered := []string{"qhin.v1.Gateway", "qhin.v1.Responder", "qhin.v1.Directory", "qhin.v1.Cluster", "qhin.v1.Locator", "qhin.v1.Audit", "qhin.v1.Consent", "qhin.v1.Restrictions"}
	for _, md := range methods {
		if svc := string(md.Parent().FullName()); !slices.Contains(registered, svc) {
			t.Fatalf("service %s is not registered on the test server: add its Unimplemented server above", svc)
		}
	}
	for _, md := range methods {
		for _, role := range Roles {
			method := fullMethod(md)
			t.Run(strings.TrimPrefix(method, "/qhin.v1.")+"/"+string(role), func(t *testing.T) {
				allowed, ok := wantCallers[method]
				if !ok {
					t.Fatalf("%s has no row in wantCallers: add the roles that may call it", method)
				}
				want := codes.PermissionDenied
				if slices.Contains(allowed, role) {
					want = codes.Unimplemented
				}
				err := invoke(callContext(t), conns[role], md)
				if got := status.Code(err); got != want {
					t.Fatalf("%s as %s: code %v (%v), want %v", method, role, got, err, want)
				}
				if want == codes.PermissionDenied && !strings.Contains(status.Convert(err).Message(), method) {
					t.Errorf("denial %q does not name the method", status.Convert(err).Message())
				}
			})
		}
	}
}

func TestDefaultPolicy_HealthForEveryRole(t *testing.T) {
	ca := newTestCA(t, testTD)
	creds, serverID := brokerCreds(t, ca)
	addr := startServer(t, creds, DefaultPolicy, func(s *grpc.Server) {
		healthpb.RegisterHealthServer(s, health.NewServer())
	})
	for _, role := range Roles {
		src := sourceFor(t, ca, role, "caller")
		client := healthpb.NewHealthClient(dial(t, addr, ClientCredentials(src, AuthorizeID(serverID))))
		resp, err := client.Check(callContext(t), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Errorf("Health/Check as %s: %v", role, err)
			continue
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Health/Check as %s: %v", role, resp.GetStatus())
		}
	}
}

func TestPolicy_DeniesMethodsItDoesNotName(t *testing.T) {
	ca := newTestCA(t, testTD)
	creds, serverID := brokerCreds(t, ca)
	policy := Policy{qhinv1.Directory_GetParticipant_FullMethodName: {RoleOperator}}
	addr := startServer(t, creds, policy, func(s *grpc.Server) {
		qhinv1.RegisterDirectoryServer(s, qhinv1.UnimplementedDirectoryServer{})
		qhinv1.RegisterGatewayServer(s, qhinv1.UnimplementedGatewayServer{})
	})
	src := sourceFor(t, ca, RoleOperator, "alice")
	conn := dial(t, addr, ClientCredentials(src, AuthorizeID(serverID)))
	dir := qhinv1.NewDirectoryClient(conn)
	gw := qhinv1.NewGatewayClient(conn)
	ctx := callContext(t)

	_, err := dir.GetParticipant(ctx, &qhinv1.GetParticipantRequest{})
	if got := status.Code(err); got != codes.Unimplemented {
		t.Errorf("named method: %v, want Unimplemented", err)
	}
	_, err = dir.ListParticipants(ctx, &qhinv1.ListParticipantsRequest{})
	if got := status.Code(err); got != codes.PermissionDenied {
		t.Errorf("unnamed unary method: %v, want PermissionDenied", err)
	}
	stream, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if got := status.Code(err); got != codes.PermissionDenied {
		t.Errorf("unnamed streaming method: %v, want PermissionDenied", err)
	}
}

// identityDirectory and identityGateway record the identity their handlers
// see in the context.
type identityDirectory struct {
	qhinv1.UnimplementedDirectoryServer
	seen chan<- Identity
}

func (d identityDirectory) ListParticipants(ctx context.Context, _ *qhinv1.ListParticipantsRequest) (*qhinv1.ListParticipantsResponse, error) {
	return &qhinv1.ListParticipantsResponse{}, recordIdentity(ctx, d.seen)
}

type identityGateway struct {
	qhinv1.UnimplementedGatewayServer
	seen chan<- Identity
}

func (g identityGateway) RetrieveDocument(_ *qhinv1.RetrieveDocumentRequest, stream grpc.ServerStreamingServer[qhinv1.RetrieveDocumentResponse]) error {
	return recordIdentity(stream.Context(), g.seen)
}

func recordIdentity(ctx context.Context, seen chan<- Identity) error {
	id, ok := IdentityFromContext(ctx)
	if !ok {
		return status.Error(codes.Internal, "no identity in the handler's context")
	}
	peer, err := PeerIdentity(ctx)
	if err != nil {
		return err
	}
	if peer != id {
		return status.Errorf(codes.Internal, "context identity %s, certificate %s", id, peer)
	}
	seen <- id
	return nil
}

func TestInterceptors_HandlerSeesCallerIdentity(t *testing.T) {
	ca := newTestCA(t, testTD)
	creds, serverID := brokerCreds(t, ca)
	seen := make(chan Identity, 1)
	addr := startServer(t, creds, DefaultPolicy, func(s *grpc.Server) {
		qhinv1.RegisterDirectoryServer(s, identityDirectory{seen: seen})
		qhinv1.RegisterGatewayServer(s, identityGateway{seen: seen})
	})

	operator := sourceFor(t, ca, RoleOperator, "alice")
	participant := sourceFor(t, ca, RoleParticipant, "hospital-a")
	ctx := callContext(t)

	t.Run("unary", func(t *testing.T) {
		conn := dial(t, addr, ClientCredentials(operator, AuthorizeID(serverID)))
		if _, err := qhinv1.NewDirectoryClient(conn).ListParticipants(ctx, &qhinv1.ListParticipantsRequest{}); err != nil {
			t.Fatal(err)
		}
		got := <-seen
		if got.Role != RoleOperator || got.Name != "alice" || got.ID != operator.SVID.ID {
			t.Errorf("handler saw %+v, want operator alice", got)
		}
	})
	t.Run("stream", func(t *testing.T) {
		conn := dial(t, addr, ClientCredentials(participant, AuthorizeID(serverID)))
		stream, err := qhinv1.NewGatewayClient(conn).RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("Recv: %v, want io.EOF", err)
		}
		got := <-seen
		if got.Role != RoleParticipant || got.Name != "hospital-a" || got.ID != participant.SVID.ID {
			t.Errorf("handler saw %+v, want participant hospital-a", got)
		}
	})
}

func TestIdentityFromContext_EmptyWithoutInterceptor(t *testing.T) {
	if id, ok := IdentityFromContext(context.Background()); ok {
		t.Errorf("IdentityFromContext(background) = %v, true", id)
	}
	want := MustIdentity(testTD, RoleBroker, "b1")
	if got, ok := IdentityFromContext(WithIdentity(context.Background(), want)); !ok || got != want {
		t.Errorf("IdentityFromContext(WithIdentity(%v)) = %v, %v", want, got, ok)
	}
}

// TestServer_RejectsCallersOutsideTheTrustDomain: callers the transport
// refuses never reach a handler or the policy; their calls fail as
// Unavailable.
func TestServer_RejectsCallersOutsideTheTrustDomain(t *testing.T) {
	ca := newTestCA(t, testTD)
	otherCA := newTestCA(t, otherTD)
	rogueCA := newTestCA(t, testTD)
	creds, serverID := brokerCreds(t, ca)
	addr := startServer(t, creds, DefaultPolicy, func(s *grpc.Server) {
		qhinv1.RegisterClusterServer(s, qhinv1.UnimplementedClusterServer{})
		qhinv1.RegisterLocatorServer(s, qhinv1.UnimplementedLocatorServer{})
	})

	tests := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"another trust domain", ClientCredentials(StaticSource{SVID: issueSVID(t, otherCA, RoleOperator, "alice"), Bundle: ca.Bundle()}, AuthorizeID(serverID))},
		{"rogue CA with our trust domain name", ClientCredentials(StaticSource{SVID: issueSVID(t, rogueCA, RoleOperator, "alice"), Bundle: ca.Bundle()}, AuthorizeID(serverID))},
		{"no client certificate", credentials.NewTLS(tlsconfig.TLSClientConfig(ca.Bundle(), AuthorizeID(serverID)))},
		{"expired client certificate", ClientCredentials(StaticSource{SVID: issueID(t, ca, "spiffe://qhin.test/operator/alice", -time.Minute), Bundle: ca.Bundle()}, AuthorizeID(serverID))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := dial(t, addr, tt.creds)
			// Brokers is open to every role, so only the handshake can
			// refuse it.
			_, err := qhinv1.NewClusterClient(conn).Brokers(callContext(t), &qhinv1.BrokersRequest{})
			if got := status.Code(err); got != codes.Unavailable {
				t.Fatalf("code %v (%v), want Unavailable", got, err)
			}
		})
	}
}

// TestInterceptors_RefuseWhatTheTransportLetsThrough checks the
// interceptors' own checks, under transports more lenient than
// AuthorizeRoles.
func TestInterceptors_RefuseWhatTheTransportLetsThrough(t *testing.T) {
	ca := newTestCA(t, testTD)
	brokerSrc := sourceFor(t, ca, RoleBroker, "b0")
	register := func(s *grpc.Server) {
		qhinv1.RegisterClusterServer(s, qhinv1.UnimplementedClusterServer{})
	}

	t.Run("no TLS", func(t *testing.T) {
		addr := startServer(t, insecure.NewCredentials(), DefaultPolicy, register)
		conn := dial(t, addr, insecure.NewCredentials())
		_, err := qhinv1.NewClusterClient(conn).Brokers(callContext(t), &qhinv1.BrokersRequest{})
		if got := status.Code(err); got != codes.Unauthenticated {
			t.Fatalf("code %v (%v), want Unauthenticated", got, err)
		}
	})
	t.Run("not an OpenQHIN identity", func(t *testing.T) {
		creds := ServerCredentials(brokerSrc, tlsconfig.AuthorizeMemberOf(testTD))
		addr := startServer(t, creds, DefaultPolicy, register)
		workload := StaticSource{SVID: issueID(t, ca, "spiffe://qhin.test/workload/x", time.Hour), Bundle: ca.Bundle()}
		conn := dial(t, addr, ClientCredentials(workload, AuthorizeID(brokerSrc.SVID.ID)))
		_, err := qhinv1.NewClusterClient(conn).Brokers(callContext(t), &qhinv1.BrokersRequest{})
		if got := status.Code(err); got != codes.PermissionDenied {
			t.Fatalf("code %v (%v), want PermissionDenied", got, err)
		}
	})
}
