package pki

import (
	"crypto/tls"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/credentials"
)

// ServerTLS returns a TLS 1.3 configuration that presents the source's SVID
// and requires a client SVID that verifies against the source's bundle and
// satisfies authorize. Session tickets are off, so every connection is
// authorized from its own certificate.
func ServerTLS(src Source, authorize tlsconfig.Authorizer) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}
	tlsconfig.HookMTLSServerConfig(cfg, src, src, authorize)
	return cfg
}

// ClientTLS returns a TLS 1.3 configuration that presents the source's SVID
// and accepts only a server SVID that satisfies authorize.
func ClientTLS(src Source, authorize tlsconfig.Authorizer) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	tlsconfig.HookMTLSClientConfig(cfg, src, src, authorize)
	return cfg
}

// ServerCredentials are gRPC transport credentials for ServerTLS.
func ServerCredentials(src Source, authorize tlsconfig.Authorizer) credentials.TransportCredentials {
	return credentials.NewTLS(ServerTLS(src, authorize))
}

// ClientCredentials are gRPC transport credentials for ClientTLS.
func ClientCredentials(src Source, authorize tlsconfig.Authorizer) credentials.TransportCredentials {
	return credentials.NewTLS(ClientTLS(src, authorize))
}

// AuthorizeRoles accepts peers of the trust domain whose SPIFFE ID names one
// of the roles.
func AuthorizeRoles(td spiffeid.TrustDomain, roles ...Role) tlsconfig.Authorizer {
	return tlsconfig.AdaptMatcher(func(id spiffeid.ID) error {
		if !id.MemberOf(td) {
			return fmt.Errorf("%s is not a member of trust domain %s", id, td)
		}
		ident, err := ParseIdentity(id)
		if err != nil {
			return err
		}
		if !slices.Contains(roles, ident.Role) {
			return fmt.Errorf("%s: role %s may not connect here", id, ident.Role)
		}
		return nil
	})
}

// AuthorizeID accepts exactly one peer.
func AuthorizeID(id spiffeid.ID) tlsconfig.Authorizer {
	return tlsconfig.AuthorizeID(id)
}
