package facade

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ListenConfig says where and how the facade listens.
type ListenConfig struct {
	// Addr is host:port (served over TLS) or unix:///path (a socket whose
	// file permissions decide who may connect; plain HTTP).
	Addr string
	// SVID serves TLS with the member's own certificate, as it rotates,
	// when CertFile and KeyFile are empty.
	SVID x509svid.Source
	// CertFile and KeyFile serve TLS with a configured certificate.
	CertFile, KeyFile string
	// ClientCAFile, when set, requires every client to present a
	// certificate issued by one of these CAs (PEM).
	ClientCAFile string
	// Authenticated says requests carry verified bearer tokens. Without it
	// or a client CA, a TCP listener must be on loopback: the headers alone
	// prove nothing.
	Authenticated bool
}

// Listen opens the facade's listener. It returns the listener (TLS already
// layered on for TCP) and the URL the facade is reached at.
func Listen(cfg ListenConfig) (net.Listener, string, error) {
	if path, ok := strings.CutPrefix(cfg.Addr, "unix://"); ok {
		if path == "" {
			return nil, "", errors.New("fhir listen: unix:// needs a path")
		}
		os.Remove(path) // a socket left by an earlier run
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, "", fmt.Errorf("fhir listen: %w", err)
		}
		if err := os.Chmod(path, 0o660); err != nil {
			l.Close()
			return nil, "", fmt.Errorf("fhir listen: %w", err)
		}
		return l, cfg.Addr, nil
	}
	tc, err := serverTLS(cfg)
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, "", fmt.Errorf("fhir listen: %w", err)
	}
	if !cfg.Authenticated && cfg.ClientCAFile == "" {
		if a, ok := l.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
			l.Close()
			return nil, "", fmt.Errorf("fhir listen: %s is not a loopback address; without a JWKS (bearer tokens) or a client CA the FHIR API has no authentication of its own, so it listens on loopback or a unix socket only", cfg.Addr)
		}
	}
	return tls.NewListener(l, tc), "https://" + l.Addr().String(), nil
}

func serverTLS(cfg ListenConfig) (*tls.Config, error) {
	var tc *tls.Config
	switch {
	case cfg.CertFile != "" || cfg.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("fhir tls: %w", err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}}
	case cfg.SVID != nil:
		tc = tlsconfig.TLSServerConfig(cfg.SVID)
	default:
		return nil, errors.New("fhir tls: neither a certificate nor the member's SVID")
	}
	tc.MinVersion = tls.VersionTLS12
	tc.NextProtos = []string{"http/1.1"}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("fhir client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("fhir client CA: no PEM certificate in the file")
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
		// Every connection is authorized from its certificate.
		tc.SessionTicketsDisabled = true
	}
	return tc, nil
}

// HTTPServer wraps h in an http.Server with bounded header, read and idle
// times. Writes have no deadline: a document streams as long as the
// retrieval's own deadline allows.
func HTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
}
