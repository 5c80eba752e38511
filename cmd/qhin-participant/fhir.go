package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/facade"
	"github.com/openqhin/openqhin/participant/upstream"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// fhirFlags configure the FHIR facade and upstream mode.
type fhirFlags struct {
	listen, cert, key, clientCA, baseURL string
	jwks, issuer, audience               string
	maxBody                              int64
	upstream, upstreamCA, upstreamToken  string
	upstreamTimeout                      time.Duration
}

func (f *fhirFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "fhir-listen", "", "serve the FHIR R4 API to the member's EHR at host:port (TLS) or unix:///path (off when empty)")
	fs.StringVar(&f.cert, "fhir-cert", "", "TLS certificate (PEM) of the FHIR API; the member's own SVID when empty")
	fs.StringVar(&f.key, "fhir-key", "", "private key (PEM) of --fhir-cert")
	fs.StringVar(&f.clientCA, "fhir-client-ca", "", "require EHR client certificates issued by these CAs (PEM)")
	fs.StringVar(&f.jwks, "fhir-jwks", "", "require SMART Backend Services bearer tokens signed by a key of this JWKS (file or https URL)")
	fs.StringVar(&f.issuer, "fhir-jwt-issuer", "", "the tokens' iss, when set")
	fs.StringVar(&f.audience, "fhir-jwt-audience", "", "the tokens' aud (default: --fhir-base-url)")
	fs.StringVar(&f.baseURL, "fhir-base-url", "", "the FHIR API's URL as EHRs reach it, for links (default: from each request)")
	fs.Int64Var(&f.maxBody, "fhir-max-body-bytes", facade.DefaultMaxBodyBytes, "largest request body (a transaction Bundle, a C-CDA document)")
	fs.StringVar(&f.upstream, "fhir-upstream", "", "answer the network from this FHIR R4 server (its base URL) instead of the record store")
	fs.StringVar(&f.upstreamCA, "fhir-upstream-ca", "", "CA certificates (PEM) the upstream's TLS certificate is checked against (default: the system's)")
	fs.StringVar(&f.upstreamToken, "fhir-upstream-token-file", "", "file holding a bearer token for the upstream")
	fs.DurationVar(&f.upstreamTimeout, "fhir-upstream-timeout", upstream.DefaultTimeout, "deadline of each call to the upstream")
}

// records builds the upstream source, or nil without --fhir-upstream.
func (f *fhirFlags) records(dataDir string) (participant.Records, error) {
	if f.upstream == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.upstreamCA != "" {
		pem, err := os.ReadFile(f.upstreamCA)
		if err != nil {
			return nil, fmt.Errorf("--fhir-upstream-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, errors.New("--fhir-upstream-ca: no PEM certificate in the file")
		}
	}
	var token string
	if f.upstreamToken != "" {
		b, err := os.ReadFile(f.upstreamToken)
		if err != nil {
			return nil, fmt.Errorf("--fhir-upstream-token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	return upstream.New(upstream.Config{URL: f.upstream, Token: token, Timeout: f.upstreamTimeout, SpoolDir: dataDir,
		Client: &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ResponseHeaderTimeout: f.upstreamTimeout}}})
}

// serve starts the facade; it returns its URL and a stop function.
func (f *fhirFlags) serve(ctx context.Context, s *participant.Server, gw qhinv1.GatewayClient, src pki.Source, log *slog.Logger, served chan<- error) (string, func(), error) {
	var v *facade.Verifier
	if f.jwks != "" {
		aud := f.audience
		if aud == "" {
			aud = f.baseURL
		}
		var err error
		if v, err = facade.NewVerifier(ctx, facade.JWTConfig{JWKS: f.jwks, Issuer: f.issuer, Audience: aud}, log); err != nil {
			return "", nil, err
		}
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return "", nil, err
	}
	api, err := facade.New(facade.Config{ParticipantID: s.ID(), TrustDomain: svid.ID.TrustDomain().Name(), Gateway: gw, Local: s,
		Verifier: v, BaseURL: f.baseURL, MaxBodyBytes: f.maxBody, Logger: log})
	if err != nil {
		return "", nil, err
	}
	l, url, err := facade.Listen(facade.ListenConfig{Addr: f.listen, SVID: src, CertFile: f.cert, KeyFile: f.key,
		ClientCAFile: f.clientCA, Authenticated: v != nil})
	if err != nil {
		return "", nil, err
	}
	srv := facade.HTTPServer(api)
	go func() { served <- srv.Serve(l) }()
	return url, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}, nil
}
