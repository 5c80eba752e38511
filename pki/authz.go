package pki

import (
	"context"
	"slices"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Policy maps a full gRPC method name to the roles that may call it. A method
// that is not in the policy is denied to everyone.
type Policy map[string][]Role

var everyone = []Role{RoleBroker, RoleParticipant, RoleOperator}

// DefaultPolicy is who may call what in an OpenQHIN network: participants
// query through the Gateway, brokers ask Responders, operators run the
// Directory and the cluster.
var DefaultPolicy = Policy{
	qhinv1.Gateway_DiscoverPatients_FullMethodName: {RoleParticipant},
	qhinv1.Gateway_QueryDocuments_FullMethodName:   {RoleParticipant},
	qhinv1.Gateway_RetrieveDocument_FullMethodName: {RoleParticipant},

	qhinv1.Responder_DiscoverPatients_FullMethodName: {RoleBroker},
	qhinv1.Responder_QueryDocuments_FullMethodName:   {RoleBroker},
	qhinv1.Responder_RetrieveDocument_FullMethodName: {RoleBroker},

	qhinv1.Directory_RegisterParticipant_FullMethodName:  {RoleOperator},
	qhinv1.Directory_UpdateParticipant_FullMethodName:    {RoleOperator},
	qhinv1.Directory_SetParticipantStatus_FullMethodName: {RoleOperator},
	qhinv1.Directory_GetParticipant_FullMethodName:       {RoleOperator},
	qhinv1.Directory_ListParticipants_FullMethodName:     {RoleOperator},
	qhinv1.Directory_WriteParticipants_FullMethodName:    {RoleOperator},

	qhinv1.Cluster_Join_FullMethodName: {RoleOperator, RoleBroker},
	// Brokers forward an operator's removal to the leader.
	qhinv1.Cluster_Remove_FullMethodName:     {RoleOperator, RoleBroker},
	qhinv1.Cluster_Status_FullMethodName:     {RoleOperator, RoleBroker},
	qhinv1.Cluster_NodeStatus_FullMethodName: {RoleOperator, RoleBroker},
	qhinv1.Cluster_Brokers_FullMethodName:    everyone,
	qhinv1.Cluster_Apply_FullMethodName:      {RoleBroker},
	qhinv1.Cluster_ReadIndex_FullMethodName:  {RoleBroker},
	// Brokers reinstall the leader's state from a snapshot, and forward an
	// operator's restore to the leader.
	qhinv1.Cluster_SaveSnapshot_FullMethodName:    {RoleOperator, RoleBroker},
	qhinv1.Cluster_RestoreSnapshot_FullMethodName: {RoleOperator, RoleBroker},
	qhinv1.Cluster_WaitApplied_FullMethodName:     {RoleBroker},
	qhinv1.Cluster_Checksums_FullMethodName:       {RoleBroker},

	// Members publish their own patients' tokens; operators manage the
	// linkage keys.
	qhinv1.Locator_PublishTokens_FullMethodName:  {RoleParticipant},
	qhinv1.Locator_WithdrawTokens_FullMethodName: {RoleParticipant},
	qhinv1.Locator_SetLinkageKey_FullMethodName:  {RoleOperator},
	qhinv1.Locator_LocatorStatus_FullMethodName:  {RoleOperator},
	// Every node's own ledger; operators read it (a participant serves it
	// to its member on the member's local API too).
	qhinv1.Audit_ListEntries_FullMethodName:  {RoleOperator},
	qhinv1.Audit_VerifyLedger_FullMethodName: {RoleOperator},
	// A member records and reads consent for its own patients (the
	// Consent service checks whose); operators for anyone's.
	qhinv1.Consent_SetConsent_FullMethodName:    {RoleParticipant, RoleOperator},
	qhinv1.Consent_RevokeConsent_FullMethodName: {RoleParticipant, RoleOperator},
	qhinv1.Consent_GetConsent_FullMethodName:    {RoleParticipant, RoleOperator},
	// The accounting of a member's patient's disclosures, from each
	// broker's ledger.
	qhinv1.Consent_ListDisclosures_FullMethodName: {RoleParticipant, RoleOperator},
	// Consent and the accounting of a person named by demographics: a
	// lookup at every member, for operators only.
	qhinv1.Consent_RevokeConsentByDemographics_FullMethodName: {RoleOperator},
	qhinv1.Consent_SetConsentByDemographics_FullMethodName:    {RoleOperator},
	qhinv1.Consent_FindPatientRecords_FullMethodName:          {RoleOperator},

	// A member's own restrictions of its patients, served by the
	// participant to operators.
	qhinv1.Restrictions_SetRestriction_FullMethodName:   {RoleOperator},
	qhinv1.Restrictions_ClearRestriction_FullMethodName: {RoleOperator},
	qhinv1.Restrictions_ListRestrictions_FullMethodName: {RoleOperator},

	"/grpc.health.v1.Health/Check": everyone,
	"/grpc.health.v1.Health/Watch": everyone,
	"/grpc.health.v1.Health/List":  everyone,

	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      everyone,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": everyone,
}

// Allows reports whether role may call method.
func (p Policy) Allows(method string, role Role) bool {
	return slices.Contains(p[method], role)
}

type identityKey struct{}

// WithIdentity returns a context that carries the caller's identity.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFromContext returns the identity the authorization interceptor
// established for the caller.
func IdentityFromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// PeerIdentity reads the caller's identity from its TLS certificate.
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return Identity{}, status.Error(codes.Unauthenticated, "no client certificate")
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	ident, err := ParseIdentity(id)
	if err != nil {
		return Identity{}, status.Errorf(codes.PermissionDenied, "%v", err)
	}
	return ident, nil
}

// authorize establishes the caller's identity and checks it against the
// policy; it is the one decision both interceptors make.
func (p Policy) authorize(ctx context.Context, method string) (context.Context, error) {
	ident, err := PeerIdentity(ctx)
	if err != nil {
		return nil, err
	}
	if !p.Allows(method, ident.Role) {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s", ident.ID, method)
	}
	return WithIdentity(ctx, ident), nil
}

// UnaryInterceptor enforces the policy on unary calls.
func (p Policy) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := p.authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor enforces the policy on streaming calls.
func (p Policy) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := p.authorize(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &identityStream{ServerStream: ss, ctx: ctx})
	}
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identityStream) Context() context.Context { return s.ctx }
