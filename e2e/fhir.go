package e2e

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/facade"
)

// facadeNode is a participant's FHIR facade: its connection to the brokers
// and its HTTPS server on loopback, with the member's own certificate.
type facadeNode struct {
	conn   *client.Conn
	server *http.Server
	done   chan error
}

// startFacade serves p's FHIR facade on a free loopback port.
func (n *Network) startFacade(p *ParticipantNode) error {
	conn, err := n.Dial(p.source)
	if err != nil {
		return fmt.Errorf("participant %s: fhir: %w", p.ID, err)
	}
	f, err := facade.New(facade.Config{
		ParticipantID: p.ID, TrustDomain: n.td.Name(), Gateway: participant.GatewayWithTokens(conn.Gateway(), n.opts.LinkageKey), Local: p.Server, Logger: n.log,
		Verifier: n.opts.FHIRVerifier,
	})
	if err != nil {
		conn.Close()
		return err
	}
	l, url, err := facade.Listen(facade.ListenConfig{Addr: "127.0.0.1:0", SVID: p.source, Authenticated: n.opts.FHIRVerifier != nil})
	if err != nil {
		conn.Close()
		return err
	}
	fn := &facadeNode{conn: conn, server: facade.HTTPServer(f), done: make(chan error, 1)}
	go func() { fn.done <- fn.server.Serve(l) }()
	p.fhir, p.FHIRURL = fn, url
	return nil
}

// stopFacade stops p's facade, if it runs.
func (p *ParticipantNode) stopFacade() {
	if p.fhir == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if p.fhir.server.Shutdown(ctx) != nil {
		p.fhir.server.Close()
	}
	<-p.fhir.done
	p.fhir.conn.Close()
	p.fhir = nil
}
