package pki

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FuzzParseBundle feeds bundle.pem parsing (CA directories, SVID
// directories) arbitrary bytes: it never panics, and whatever it accepts is
// a non-empty list of CA certificates.
func FuzzParseBundle(f *testing.F) {
	ca := newTestCA(f, testTD)
	other := newTestCA(f, otherTD)
	leaf := issueSVID(f, ca, RoleBroker, "b1")
	pemOf := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	f.Add(pemOf(ca.Certificate()))
	f.Add(append(pemOf(ca.Certificate()), pemOf(other.Certificate())...))
	f.Add(pemOf(leaf.Certificates[0]))
	f.Add(ca.Certificate().Raw)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseBundle(testTD, b)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			t.Fatal("accepted an empty bundle")
		}
		for _, c := range certs {
			if !c.IsCA {
				t.Fatal("accepted a certificate that is not a CA")
			}
		}
	})
}

// FuzzLoadSVIDDir writes arbitrary svid.pem and bundle.pem beside a valid
// key and loads the directory: it never panics, and what it accepts is an
// SVID that verifies against its bundle's trust domain.
func FuzzLoadSVIDDir(f *testing.F) {
	ca := newTestCA(f, testTD)
	svid := issueSVID(f, ca, RoleParticipant, "p1")
	certs, key, err := svid.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	bundle, _ := ca.Bundle().Marshal()
	f.Add(certs, bundle)
	f.Add(certs, []byte{})
	f.Add([]byte("junk"), bundle)
	f.Add(bundle, certs)
	f.Fuzz(func(t *testing.T, svidPEM, bundlePEM []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, SVIDFile), svidPEM, 0o600)
		os.WriteFile(filepath.Join(dir, KeyFile), key, 0o600)
		os.WriteFile(filepath.Join(dir, BundleFile), bundlePEM, 0o600)
		src, err := LoadDir(dir)
		if err != nil {
			return
		}
		got, _ := src.GetX509SVID()
		if got == nil || len(got.Certificates) == 0 {
			t.Fatal("loaded no certificate")
		}
		if _, err := x509svid.IDFromCert(got.Certificates[0]); err != nil {
			t.Fatalf("loaded a certificate without one SPIFFE ID: %v", err)
		}
	})
}

// FuzzLoadCAState loads a CA directory whose bundle.pem is arbitrary: it
// never panics, and a state it accepts always trusts its signing CA.
func FuzzLoadCAState(f *testing.F) {
	ca, err := NewCA(testTD, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	if err := ca.Save(dir); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(dir, BundleFile))
	f.Add(good)
	f.Add(append(good, good...))
	f.Add([]byte("not a bundle"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := t.TempDir()
		for _, name := range []string{CACertFile, CAKeyFile} {
			raw, _ := os.ReadFile(filepath.Join(dir, name))
			os.WriteFile(filepath.Join(d, name), raw, 0o600)
		}
		os.WriteFile(filepath.Join(d, BundleFile), b, 0o600)
		st, err := LoadCAState(d)
		if err != nil {
			return
		}
		if !containsCert(st.Authorities, st.Signing.Certificate()) {
			t.Fatal("accepted a bundle without the signing CA")
		}
	})
}
