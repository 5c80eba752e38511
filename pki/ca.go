package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// File names used in CA and SVID directories.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca.key"
	SVIDFile   = "svid.pem"
	KeyFile    = "svid.key"
	BundleFile = "bundle.pem"
)

// Default lifetimes.
const (
	DefaultCATTL   = 5 * 365 * 24 * time.Hour
	DefaultSVIDTTL = 30 * 24 * time.Hour
)

// clockSkew backdates certificates so that peers whose clocks run a little
// behind accept them.
const clockSkew = 5 * time.Minute

// CA is the certificate authority of one trust domain.
type CA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
}

// NewCA creates a self-signed CA for the trust domain, valid for ttl.
func NewCA(td spiffeid.TrustDomain, ttl time.Duration) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("new CA: trust domain is empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"OpenQHIN"}, CommonName: td.Name() + " CA"},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new CA: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA: parse certificate: %w", err)
	}
	return &CA{td: td, cert: cert, key: key}, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Bundle returns the X.509 bundle that verifies the CA's SVIDs.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// Issue mints an X.509-SVID for id, valid for ttl (capped at the CA's own
// expiry). Hosts (DNS names or IP addresses) become extra SANs, so that tools
// that check host names, such as grpcurl, accept the node; SPIFFE peers
// ignore them.
func (ca *CA) Issue(id spiffeid.ID, ttl time.Duration, hosts ...string) (*x509svid.SVID, error) {
	if !id.MemberOf(ca.td) {
		return nil, fmt.Errorf("issue %s: not in trust domain %s", id, ca.td)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue %s: generate key: %w", id, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"OpenQHIN"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: create certificate: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue %s: parse certificate: %w", id, err)
	}
	return &x509svid.SVID{
		ID:           id,
		Certificates: []*x509.Certificate{cert},
		PrivateKey:   key,
		Hint:         "",
	}, nil
}

// IssueIdentity mints an SVID for a role and name of the CA's trust domain.
func (ca *CA) IssueIdentity(role Role, name string, ttl time.Duration, hosts ...string) (*x509svid.SVID, error) {
	id, err := NewIdentity(ca.td, role, name)
	if err != nil {
		return nil, err
	}
	return ca.Issue(id.ID, ttl, hosts...)
}

// Save writes the CA certificate, its key (mode 0600) and the bundle to dir.
func (ca *CA) Save(dir string) error {
	if err := ca.saveFiles(dir, CACertFile, CAKeyFile); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
	if err := writeFileAtomic(filepath.Join(dir, BundleFile), certPEM, 0o644); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	return nil
}

// saveFiles writes the key (mode 0600), then the certificate.
func (ca *CA) saveFiles(dir, certFile, keyFile string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, certFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644)
}

// LoadCA reads a CA written by Save. The trust domain comes from the CA
// certificate's URI SAN.
func LoadCA(dir string) (*CA, error) {
	return loadCAFiles(dir, CACertFile, CAKeyFile)
}

func loadCAFiles(dir, certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("load CA: %s: no certificate", certFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", certFile, err)
	}
	if !cert.IsCA || len(cert.URIs) != 1 {
		return nil, fmt.Errorf("load CA: %s: not an OpenQHIN CA certificate", certFile)
	}
	td, err := spiffeid.TrustDomainFromURI(cert.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: trust domain: %w", certFile, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("load CA: %s: no private key", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load CA: %s: key cannot sign", keyFile)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load CA: %s does not belong to %s", keyFile, certFile)
	}
	return &CA{td: td, cert: cert, key: signer}, nil
}

// WriteSVID writes svid.pem, svid.key (mode 0600) and bundle.pem to dir.
func WriteSVID(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write SVID: %w", err)
	}
	certs, key, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("write SVID %s: %w", svid.ID, err)
	}
	b, err := bundle.Marshal()
	if err != nil {
		return fmt.Errorf("write SVID %s: bundle: %w", svid.ID, err)
	}
	// The bundle goes first so that a reader never sees a new SVID without
	// the authorities that verify it.
	if err := writeFileAtomic(filepath.Join(dir, BundleFile), b, 0o644); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, KeyFile), key, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, SVIDFile), certs, 0o644)
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return serial, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
