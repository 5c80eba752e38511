package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Files of a CA directory besides ca.pem, ca.key and bundle.pem: the next CA
// while a rotation is prepared, and when the old CA may leave the bundle.
const (
	NextCACertFile = "next.pem"
	NextCAKeyFile  = "next.key"
	RetireFile     = "retire-after"
)

// MaxBundleBytes caps a bundle file or message: a trust bundle holds a few
// CA certificates, never megabytes.
const MaxBundleBytes = 1 << 20

// ErrBadBundle is returned for a trust bundle that does not parse or does
// not hold the authority it must hold.
var ErrBadBundle = errors.New("bad trust bundle")

// CAState is what a CA directory holds: the CA that signs SVIDs now, every
// authority peers must trust (the bundle), and, while a rotation is
// prepared, the CA that signs next.
//
// A rotation moves through three phases, each a step of `qhinctl pki
// rotate-ca`, so that no peer ever sees a certificate it cannot verify:
//
//  1. prepare: a new CA is created (next.pem) and joins the bundle; SVIDs
//     are still signed by the old one. Every node learns the new bundle.
//  2. activate: the new CA becomes ca.pem and signs every SVID from now on;
//     every SVID is re-issued. The old CA stays in the bundle, so SVIDs it
//     signed still verify until they are replaced.
//  3. retire: once every connection made under the old CA has been
//     replaced, the bundle holds the new CA alone.
type CAState struct {
	Signing     *CA
	Authorities []*x509.Certificate
	Next        *CA
	// RetireAfter is when the rotation's overlap ends (zero outside one).
	RetireAfter time.Time
}

// TrustDomain is the trust domain of the CA.
func (s *CAState) TrustDomain() spiffeid.TrustDomain { return s.Signing.TrustDomain() }

// Bundle returns the authorities as a go-spiffe bundle.
func (s *CAState) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(s.Signing.TrustDomain(), s.Authorities)
}

// Phase names where a rotation stands: "idle", "prepared" (next CA in the
// bundle, not yet signing) or "overlap" (new CA signing, old CA still
// trusted).
func (s *CAState) Phase() string {
	switch {
	case s.Next != nil:
		return "prepared"
	case len(s.Authorities) > 1:
		return "overlap"
	}
	return "idle"
}

// LoadCAState reads a CA directory and checks that it is consistent: the
// bundle parses, holds only CA certificates of the trust domain, and holds
// the signing CA (and the next CA, during a rotation). A directory written
// by CA.Save before rotations existed is a CA state with one authority.
func LoadCAState(dir string) (*CAState, error) {
	ca, err := LoadCA(dir)
	if err != nil {
		return nil, err
	}
	st := &CAState{Signing: ca}
	b, err := readCapped(filepath.Join(dir, BundleFile), MaxBundleBytes)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if st.Authorities, err = ParseBundle(ca.TrustDomain(), b); err != nil {
		return nil, fmt.Errorf("load CA: %s: %w", BundleFile, err)
	}
	if !containsCert(st.Authorities, ca.Certificate()) {
		return nil, fmt.Errorf("load CA: %s: %w: it does not hold the signing CA (%s); a bundle without the CA that issues SVIDs would make every node refuse its peers",
			BundleFile, ErrBadBundle, CACertFile)
	}
	if _, err := os.Stat(filepath.Join(dir, NextCACertFile)); err == nil {
		next, err := loadCAFiles(dir, NextCACertFile, NextCAKeyFile)
		if err != nil {
			return nil, err
		}
		if next.TrustDomain() != ca.TrustDomain() {
			return nil, fmt.Errorf("load CA: %s is for trust domain %s, not %s", NextCACertFile, next.TrustDomain(), ca.TrustDomain())
		}
		if !containsCert(st.Authorities, next.Certificate()) {
			return nil, fmt.Errorf("load CA: %s: %w: it does not hold the prepared CA (%s)", BundleFile, ErrBadBundle, NextCACertFile)
		}
		st.Next = next
	}
	if b, err := os.ReadFile(filepath.Join(dir, RetireFile)); err == nil {
		if t, err := time.Parse(time.RFC3339, strings.TrimSpace(string(b))); err == nil {
			st.RetireAfter = t
		}
	}
	return st, nil
}

// ParseBundle parses PEM or DER CA certificates of a trust domain. It
// refuses an empty bundle, a certificate that is not a CA, and a CA of
// another trust domain (one whose SPIFFE ID names another; a CA without a
// URI SAN is taken as the operator's choice).
func ParseBundle(td spiffeid.TrustDomain, b []byte) ([]*x509.Certificate, error) {
	if len(b) > MaxBundleBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadBundle, MaxBundleBytes)
	}
	var certs []*x509.Certificate
	if bytes.Contains(b, []byte("-----BEGIN")) {
		rest := b
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("%w: a %q block where only certificates belong", ErrBadBundle, truncate(blk.Type, 32))
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: certificate %d: %v", ErrBadBundle, len(certs)+1, err)
			}
			certs = append(certs, c)
		}
	} else if len(b) > 0 {
		var err error
		if certs, err = x509.ParseCertificates(b); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadBundle, err)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no certificates", ErrBadBundle)
	}
	for i, c := range certs {
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("%w: certificate %d is not a CA", ErrBadBundle, i+1)
		}
		for _, u := range c.URIs {
			if ctd, err := spiffeid.TrustDomainFromURI(u); err == nil && ctd != td {
				return nil, fmt.Errorf("%w: certificate %d is a CA of trust domain %s, not %s", ErrBadBundle, i+1, ctd, td)
			}
		}
	}
	return certs, nil
}

// PrepareRotation is phase 1 of a CA rotation: it creates the next CA
// (valid for ttl) and adds it to the bundle. It returns the prepared CA; a
// rotation already prepared is kept.
func PrepareRotation(dir string, ttl time.Duration) (*CA, error) {
	st, err := LoadCAState(dir)
	if err != nil {
		return nil, err
	}
	if st.Next != nil {
		return st.Next, nil
	}
	next, err := NewCA(st.TrustDomain(), ttl)
	if err != nil {
		return nil, err
	}
	// The next CA's files first, then the bundle that names it: a reader
	// that sees the bundle finds the CA files too.
	if err := next.saveFiles(dir, NextCACertFile, NextCAKeyFile); err != nil {
		return nil, fmt.Errorf("prepare rotation: %w", err)
	}
	if err := writeBundle(dir, append(slices.Clone(st.Authorities), next.Certificate())); err != nil {
		return nil, fmt.Errorf("prepare rotation: %w", err)
	}
	return next, nil
}

// ActivateRotation is phase 2: the prepared CA becomes the signing CA. The
// old CA stays in the bundle until RetireRotation, no earlier than
// retireAfter.
func ActivateRotation(dir string, retireAfter time.Time) error {
	st, err := LoadCAState(dir)
	if err != nil {
		return err
	}
	if st.Next == nil {
		return errors.New("activate rotation: no prepared CA (run the prepare phase first, and let every node learn the new bundle)")
	}
	if err := os.WriteFile(filepath.Join(dir, RetireFile), []byte(retireAfter.UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return fmt.Errorf("activate rotation: %w", err)
	}
	// ca.key then ca.pem: until both are written LoadCA sees a key that
	// does not belong to the certificate and refuses, so a reader keeps
	// the state it had and looks again.
	if err := st.Next.saveFiles(dir, CACertFile, CAKeyFile); err != nil {
		return fmt.Errorf("activate rotation: %w", err)
	}
	os.Remove(filepath.Join(dir, NextCACertFile))
	os.Remove(filepath.Join(dir, NextCAKeyFile))
	return nil
}

// RetireRotation is phase 3: the bundle holds the signing CA alone.
func RetireRotation(dir string) error {
	st, err := LoadCAState(dir)
	if err != nil {
		return err
	}
	if st.Next != nil {
		return errors.New("retire rotation: a prepared CA is not active yet (run the activate phase first)")
	}
	if err := writeBundle(dir, []*x509.Certificate{st.Signing.Certificate()}); err != nil {
		return fmt.Errorf("retire rotation: %w", err)
	}
	os.Remove(filepath.Join(dir, RetireFile))
	return nil
}

func writeBundle(dir string, certs []*x509.Certificate) error {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return writeFileAtomic(filepath.Join(dir, BundleFile), b, 0o644)
}

func containsCert(certs []*x509.Certificate, c *x509.Certificate) bool {
	return slices.ContainsFunc(certs, func(x *x509.Certificate) bool { return x.Equal(c) })
}

// readCapped reads a file of at most limit bytes.
func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
