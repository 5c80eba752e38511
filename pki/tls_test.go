package pki

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

func TestServerTLS_Settings(t *testing.T) {
	ca := newTestCA(t, testTD)
	src := sourceFor(t, ca, RoleBroker, "b1")
	srv := ServerTLS(src, AuthorizeRoles(testTD, Roles...))
	if !srv.SessionTicketsDisabled {
		t.Error("server config allows session tickets: resumed connections would skip the client certificate check")
	}
	if srv.MinVersion != tls.VersionTLS13 {
		t.Errorf("server MinVersion = %x, want TLS 1.3", srv.MinVersion)
	}
	if srv.ClientAuth != tls.RequireAnyClientCert {
		t.Errorf("server ClientAuth = %v, want RequireAnyClientCert", srv.ClientAuth)
	}
	cli := ClientTLS(src, AuthorizeRoles(testTD, RoleBroker))
	if cli.MinVersion != tls.VersionTLS13 {
		t.Errorf("client MinVersion = %x, want TLS 1.3", cli.MinVersion)
	}
	if cli.GetClientCertificate == nil {
		t.Error("client config presents no certificate")
	}
}

func TestTLS_Handshake(t *testing.T) {
	ca := newTestCA(t, testTD)
	otherCA := newTestCA(t, otherTD)
	rogueCA := newTestCA(t, testTD) // claims the same trust domain with its own key

	broker := sourceFor(t, ca, RoleBroker, "b1")
	brokerID := broker.SVID.ID
	participant := sourceFor(t, ca, RoleParticipant, "hospital-a")
	operator := sourceFor(t, ca, RoleOperator, "alice")
	// A member of another trust domain that trusts ours, so that only the
	// server's checks can reject it.
	foreign := StaticSource{SVID: issueSVID(t, otherCA, RoleParticipant, "hospital-a"), Bundle: ca.Bundle()}
	rogue := StaticSource{SVID: issueSVID(t, rogueCA, RoleParticipant, "hospital-a"), Bundle: ca.Bundle()}
	workload := StaticSource{SVID: issueID(t, ca, "spiffe://qhin.test/workload/x", time.Hour), Bundle: ca.Bundle()}
	// Expired: backdated by clockSkew at issue, it stopped being valid a
	// minute ago.
	expiredClient := StaticSource{SVID: issueID(t, ca, "spiffe://qhin.test/participant/hospital-a", -time.Minute), Bundle: ca.Bundle()}
	expiredServer := StaticSource{SVID: issueID(t, ca, "spiffe://qhin.test/broker/b1", -time.Minute), Bundle: ca.Bundle()}
	// A broker that federates with other.test: it holds that bundle, so
	// only AuthorizeRoles' trust domain check keeps other.test out.
	federated := federatedSource{svid: broker.SVID, bundles: x509bundle.NewSet(ca.Bundle(), otherCA.Bundle())}

	participants := AuthorizeRoles(testTD, RoleParticipant)
	serverIs := AuthorizeID(brokerID)
	tls12Only := func() *tls.Config {
		cfg := ServerTLS(broker, participants)
		cfg.MaxVersion = tls.VersionTLS12
		return cfg
	}

	tests := []struct {
		name   string
		server *tls.Config
		client *tls.Config
		wantOK bool
		// wantServerReject / wantClientReject: which side must refuse,
		// and wantErr: part of the reason it gives.
		wantServerReject bool
		wantClientReject bool
		wantErr          string
	}{
		{
			name:   "participant to broker",
			server: ServerTLS(broker, participants),
			client: ClientTLS(participant, serverIs),
			wantOK: true,
		},
		{
			name:   "any role allowed",
			server: ServerTLS(broker, AuthorizeRoles(testTD, Roles...)),
			client: ClientTLS(operator, AuthorizeRoles(testTD, RoleBroker)),
			wantOK: true,
		},
		{
			name:             "client without a certificate",
			server:           ServerTLS(broker, participants),
			client:           tlsconfig.TLSClientConfig(ca.Bundle(), serverIs),
			wantServerReject: true,
			wantErr:          `didn't provide a certificate`,
		},
		{
			name:             "client of another trust domain",
			server:           ServerTLS(broker, participants),
			client:           ClientTLS(foreign, serverIs),
			wantServerReject: true,
			wantErr:          `no X.509 bundle found for trust domain: "other.test"`,
		},
		{
			name:             "client of another trust domain, server federates",
			server:           ServerTLS(federated, participants),
			client:           ClientTLS(foreign, serverIs),
			wantServerReject: true,
			wantErr:          `is not a member of trust domain qhin.test`,
		},
		{
			name:             "client from a rogue CA with our trust domain name",
			server:           ServerTLS(broker, participants),
			client:           ClientTLS(rogue, serverIs),
			wantServerReject: true,
			wantErr:          `signed by unknown authority`,
		},
		{
			name:             "role not allowed",
			server:           ServerTLS(broker, participants),
			client:           ClientTLS(operator, serverIs),
			wantServerReject: true,
			wantErr:          `role operator may not connect here`,
		},
		{
			name:             "not an OpenQHIN identity",
			server:           ServerTLS(broker, AuthorizeRoles(testTD, Roles...)),
			client:           ClientTLS(workload, serverIs),
			wantServerReject: true,
			wantErr:          `unknown role "workload"`,
		},
		{
			name:             "expired client SVID",
			server:           ServerTLS(broker, participants),
			client:           ClientTLS(expiredClient, serverIs),
			wantServerReject: true,
			wantErr:          `expired`,
		},
		{
			name:             "server is not the expected broker",
			server:           ServerTLS(broker, participants),
			client:           ClientTLS(participant, AuthorizeID(spiffeid.RequireFromString("spiffe://qhin.test/broker/b2"))),
			wantClientReject: true,
			wantErr:          `unexpected ID "spiffe://qhin.test/broker/b1"`,
		},
		{
			name:             "server role not accepted",
			server:           ServerTLS(participant, AuthorizeRoles(testTD, RoleBroker)),
			client:           ClientTLS(broker, AuthorizeRoles(testTD, RoleBroker)),
			wantClientReject: true,
			wantErr:          `role participant may not connect here`,
		},
		{
			name:             "expired server SVID",
			server:           ServerTLS(expiredServer, participants),
			client:           ClientTLS(participant, serverIs),
			wantClientReject: true,
			wantErr:          `expired`,
		},
		{
			name:             "server from a rogue CA",
			server:           ServerTLS(StaticSource{SVID: issueSVID(t, rogueCA, RoleBroker, "b1"), Bundle: ca.Bundle()}, participants),
			client:           ClientTLS(participant, serverIs),
			wantClientReject: true,
			wantErr:          `signed by unknown authority`,
		},
		{
			name:             "server capped at TLS 1.2",
			server:           tls12Only(),
			client:           ClientTLS(participant, serverIs),
			wantServerReject: true,
			wantErr:          `unsupported versions`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := handshake(t, tt.server, tt.client)
			if tt.wantOK {
				if !res.ok() {
					t.Fatalf("handshake failed: client %v, server %v", res.clientErr, res.serverErr)
				}
				if res.client.Version != tls.VersionTLS13 || res.server.Version != tls.VersionTLS13 {
					t.Errorf("negotiated %s/%s, want TLS 1.3", tls.VersionName(res.client.Version), tls.VersionName(res.server.Version))
				}
				if got := peerID(t, res.client.PeerCertificates); got != brokerID {
					t.Errorf("client saw server %s, want %s", got, brokerID)
				}
				if got := peerID(t, res.server.PeerCertificates); got.TrustDomain() != testTD {
					t.Errorf("server saw client %s", got)
				}
				return
			}
			if res.ok() {
				t.Fatal("handshake succeeded, want a failure")
			}
			// Whichever side refuses, the client must never get a usable
			// connection.
			if res.clientErr == nil {
				t.Error("client got a usable connection")
			}
			rejectErr := res.clientErr
			if tt.wantServerReject {
				rejectErr = res.serverErr
			}
			if tt.wantClientReject && res.clientErr != nil && strings.HasPrefix(res.clientErr.Error(), "remote error") {
				t.Errorf("server refused first (%v); want the client to refuse the server", res.clientErr)
			}
			if rejectErr == nil || !strings.Contains(rejectErr.Error(), tt.wantErr) {
				t.Errorf("rejecting side's error = %v, want it to contain %q", rejectErr, tt.wantErr)
			}
			t.Logf("client: %v; server: %v", res.clientErr, res.serverErr)
		})
	}
}

func TestTLS_NoSessionResumption(t *testing.T) {
	ca := newTestCA(t, testTD)
	broker := sourceFor(t, ca, RoleBroker, "b1")
	participant := sourceFor(t, ca, RoleParticipant, "hospital-a")
	server := ServerTLS(broker, AuthorizeRoles(testTD, RoleParticipant))
	client := ClientTLS(participant, AuthorizeID(broker.SVID.ID))
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)

	for i := range 3 {
		res := handshake(t, server, client)
		if !res.ok() {
			t.Fatalf("handshake %d: client %v, server %v", i, res.clientErr, res.serverErr)
		}
		if res.client.DidResume || res.server.DidResume {
			t.Fatalf("handshake %d resumed a session: the client certificate was not checked", i)
		}
		if len(res.server.PeerCertificates) == 0 {
			t.Fatalf("handshake %d: server saw no client certificate", i)
		}
	}
}

func TestTLS_RotatedSVIDReachesNewHandshakes(t *testing.T) {
	ca := newTestCA(t, testTD)
	dir := t.TempDir()
	first := issueSVID(t, ca, RoleBroker, "b1")
	if err := WriteSVID(dir, first, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	server := ServerTLS(src, AuthorizeRoles(testTD, RoleParticipant))
	client := ClientTLS(sourceFor(t, ca, RoleParticipant, "hospital-a"), AuthorizeID(first.ID))

	res := handshake(t, server, client)
	if !res.ok() || !res.client.PeerCertificates[0].Equal(first.Certificates[0]) {
		t.Fatalf("first handshake: client %v, server %v", res.clientErr, res.serverErr)
	}

	second := issueSVID(t, ca, RoleBroker, "b1")
	if err := WriteSVID(dir, second, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a handshake with the rotated SVID", func() bool {
		res := handshake(t, server, client)
		return res.ok() && res.client.PeerCertificates[0].Equal(second.Certificates[0])
	})
}
