package pki

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestNewCA_RefusesEmptyTrustDomain(t *testing.T) {
	if _, err := NewCA(spiffeid.TrustDomain{}, time.Hour); err == nil {
		t.Fatal("NewCA with an empty trust domain succeeded")
	}
}

func TestNewCA_IsASelfSignedCAOfTheTrustDomain(t *testing.T) {
	ca := newTestCA(t, testTD)
	cert := ca.Certificate()
	if !cert.IsCA || !cert.BasicConstraintsValid {
		t.Error("CA certificate is not a CA")
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA certificate cannot sign certificates")
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://qhin.test" {
		t.Errorf("CA URIs = %v, want [spiffe://qhin.test]", cert.URIs)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("CA certificate is not self-signed: %v", err)
	}
	if ca.TrustDomain() != testTD {
		t.Errorf("TrustDomain() = %s", ca.TrustDomain())
	}
	b := ca.Bundle()
	if b.TrustDomain() != testTD || !b.HasX509Authority(cert) || len(b.X509Authorities()) != 1 {
		t.Errorf("Bundle() = %s with %d authorities, want the CA certificate of %s", b.TrustDomain(), len(b.X509Authorities()), testTD)
	}
}

func TestCA_SaveLoadRoundTrip(t *testing.T) {
	ca := newTestCA(t, testTD)
	dir := filepath.Join(t.TempDir(), "ca", "nested")
	if err := ca.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}
	for file, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644, BundleFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %o, want %o", file, got, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Errorf("Save left %d files in the directory, want 3 (no temporary files)", len(entries))
	}

	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.TrustDomain() != testTD {
		t.Errorf("loaded trust domain = %s, want %s", loaded.TrustDomain(), testTD)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) {
		t.Error("loaded CA certificate differs from the saved one")
	}
	// The loaded key is the saved key: what it issues verifies against the
	// original CA's bundle.
	svid := issueSVID(t, loaded, RoleBroker, "b1")
	if _, _, err := x509svid.Verify(svid.Certificates, ca.Bundle()); err != nil {
		t.Errorf("SVID issued by the loaded CA does not verify against the original: %v", err)
	}
	// Saving again over the same directory replaces the files.
	if err := loaded.Save(dir); err != nil {
		t.Fatalf("second Save: %v", err)
	}
}

func TestLoadCA_Errors(t *testing.T) {
	ca := newTestCA(t, testTD)
	other := newTestCA(t, testTD)
	svid := issueSVID(t, ca, RoleBroker, "b1")
	leafPEM, _, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	if err := other.Save(otherDir); err != nil {
		t.Fatal(err)
	}
	otherKey, err := os.ReadFile(filepath.Join(otherDir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		corrupt func(dir string) // applied to a directory holding a saved CA
		wantErr string
	}{
		{"missing certificate", func(dir string) { os.Remove(filepath.Join(dir, CACertFile)) }, CACertFile},
		{"missing key", func(dir string) { os.Remove(filepath.Join(dir, CAKeyFile)) }, CAKeyFile},
		{"garbage certificate", func(dir string) { writeFile(t, dir, CACertFile, []byte("garbage")) }, CACertFile},
		{"garbage key", func(dir string) { writeFile(t, dir, CAKeyFile, []byte("garbage")) }, CAKeyFile},
		{"leaf instead of CA", func(dir string) { writeFile(t, dir, CACertFile, leafPEM) }, "not an OpenQHIN CA"},
		{"key of another CA", func(dir string) { writeFile(t, dir, CAKeyFile, otherKey) }, "does not belong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := ca.Save(dir); err != nil {
				t.Fatal(err)
			}
			tt.corrupt(dir)
			_, err := LoadCA(dir)
			if err == nil {
				t.Fatal("LoadCA succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCA_IssueVerifiesAgainstBundle(t *testing.T) {
	ca := newTestCA(t, testTD)
	before := time.Now()
	svid, err := ca.IssueIdentity(RoleParticipant, "hospital-a", 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := "spiffe://qhin.test/participant/hospital-a"
	if svid.ID.String() != want {
		t.Errorf("svid.ID = %s, want %s", svid.ID, want)
	}
	id, chains, err := x509svid.Verify(svid.Certificates, ca.Bundle())
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if id.String() != want {
		t.Errorf("verified ID = %s, want %s", id, want)
	}
	if len(chains) != 1 || !chains[0][len(chains[0])-1].Equal(ca.Certificate()) {
		t.Error("chain does not end at the CA certificate")
	}

	leaf := svid.Certificates[0]
	if leaf.IsCA {
		t.Error("SVID is a CA")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		t.Errorf("key usage = %b", leaf.KeyUsage)
	}
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if !slices.Contains(leaf.ExtKeyUsage, eku) {
			t.Errorf("extended key usage %v lacks %v", leaf.ExtKeyUsage, eku)
		}
	}
	if len(leaf.URIs) != 1 {
		t.Errorf("SVID has %d URI SANs, want 1", len(leaf.URIs))
	}
	if !leaf.NotBefore.Before(before.Add(-clockSkew + time.Second)) {
		t.Errorf("NotBefore %v is not backdated by %v", leaf.NotBefore, clockSkew)
	}
	if d := leaf.NotAfter.Sub(before); d < 10*time.Minute-time.Second || d > 10*time.Minute+time.Minute {
		t.Errorf("NotAfter is %v after issue, want about 10m", d)
	}
	if _, err := x509svid.ParseRaw(leaf.Raw, mustMarshalKey(t, svid)); err != nil {
		t.Errorf("private key does not belong to the certificate: %v", err)
	}
	ident, err := ParseIdentity(svid.ID)
	if err != nil || ident.Role != RoleParticipant || ident.Name != "hospital-a" {
		t.Errorf("ParseIdentity(svid.ID) = %+v, %v", ident, err)
	}

	again := issueSVID(t, ca, RoleParticipant, "hospital-a")
	if again.Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two SVIDs share a serial number")
	}
}

func TestCA_IssueRefusesOtherTrustDomain(t *testing.T) {
	ca := newTestCA(t, testTD)
	for _, id := range []string{"spiffe://other.test/broker/b1", "spiffe://qhin.test.evil/broker/b1"} {
		if svid, err := ca.Issue(spiffeid.RequireFromString(id), time.Hour); err == nil {
			t.Errorf("Issue(%s) = %s, want an error", id, svid.ID)
		}
	}
	if _, err := ca.Issue(spiffeid.ID{}, time.Hour); err == nil {
		t.Error("Issue of the zero ID succeeded")
	}
}

func TestCA_IssueIdentityRefusesBadIdentity(t *testing.T) {
	ca := newTestCA(t, testTD)
	if _, err := ca.IssueIdentity(Role("admin"), "alice", time.Hour); err == nil {
		t.Error("IssueIdentity with an unknown role succeeded")
	}
	if _, err := ca.IssueIdentity(RoleOperator, "Alice", time.Hour); err == nil {
		t.Error("IssueIdentity with a bad name succeeded")
	}
}

func TestCA_IssueTTLCappedAtCAExpiry(t *testing.T) {
	ca, err := NewCA(testTD, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.IssueIdentity(RoleBroker, "b1", DefaultSVIDTTL)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := svid.Certificates[0].NotAfter, ca.Certificate().NotAfter; !got.Equal(want) {
		t.Errorf("SVID NotAfter = %v, want the CA's %v", got, want)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, ca.Bundle(), x509svid.WithTime(ca.Certificate().NotAfter.Add(-time.Second))); err != nil {
		t.Errorf("capped SVID does not verify just before the CA expires: %v", err)
	}
}

func TestWriteSVID_LoadDirRoundTrip(t *testing.T) {
	ca := newTestCA(t, testTD)
	svid := issueSVID(t, ca, RoleBroker, "b1")
	dir := filepath.Join(t.TempDir(), "svid")
	if err := WriteSVID(dir, svid, ca.Bundle()); err != nil {
		t.Fatalf("WriteSVID: %v", err)
	}
	for file, want := range map[string]os.FileMode{KeyFile: 0o600, SVIDFile: 0o644, BundleFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %o, want %o", file, got, want)
		}
	}

	src, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	if src.ID() != svid.ID {
		t.Errorf("ID() = %s, want %s", src.ID(), svid.ID)
	}
	got, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificates[0].Equal(svid.Certificates[0]) {
		t.Error("loaded SVID certificate differs")
	}
	b, err := src.GetX509BundleForTrustDomain(testTD)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Equal(ca.Bundle()) {
		t.Error("loaded bundle differs")
	}
	if _, err := src.GetX509BundleForTrustDomain(otherTD); err == nil {
		t.Error("DirSource has a bundle for another trust domain")
	}
	ident, err := SourceIdentity(src)
	if err != nil || ident.Role != RoleBroker || ident.Name != "b1" {
		t.Errorf("SourceIdentity = %+v, %v", ident, err)
	}
}

func TestLoadDir_ErrorsNameTheDirectory(t *testing.T) {
	ca := newTestCA(t, testTD)
	svid := issueSVID(t, ca, RoleBroker, "b1")
	_, otherKey := marshalSVID(t, issueSVID(t, ca, RoleBroker, "b2"))

	tests := []struct {
		name    string
		corrupt func(dir string) // applied to a directory holding a written SVID
	}{
		{"missing certificate", func(dir string) { os.Remove(filepath.Join(dir, SVIDFile)) }},
		{"missing key", func(dir string) { os.Remove(filepath.Join(dir, KeyFile)) }},
		{"missing bundle", func(dir string) { os.Remove(filepath.Join(dir, BundleFile)) }},
		{"garbage certificate", func(dir string) { writeFile(t, dir, SVIDFile, []byte("garbage")) }},
		{"garbage key", func(dir string) { writeFile(t, dir, KeyFile, []byte("garbage")) }},
		{"garbage bundle", func(dir string) { writeFile(t, dir, BundleFile, []byte("garbage")) }},
		{"empty bundle", func(dir string) { writeFile(t, dir, BundleFile, nil) }},
		{"key of another SVID", func(dir string) { writeFile(t, dir, KeyFile, otherKey) }},
		{"no directory", func(dir string) { os.RemoveAll(dir) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "svid-dir")
			if err := WriteSVID(dir, svid, ca.Bundle()); err != nil {
				t.Fatal(err)
			}
			tt.corrupt(dir)
			src, err := LoadDir(dir)
			if err == nil {
				t.Fatalf("LoadDir succeeded with ID %s", src.ID())
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name the directory %s", err, dir)
			}
		})
	}
}

func TestDirSource_PicksUpRotatedSVID(t *testing.T) {
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

	// Rotate to a new CA of the same trust domain: bundle and SVID change.
	ca2 := newTestCA(t, testTD)
	second := issueSVID(t, ca2, RoleBroker, "b1")
	if err := WriteSVID(dir, second, ca2.Bundle()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rotated SVID", func() bool {
		got, err := src.GetX509SVID()
		return err == nil && got.Certificates[0].Equal(second.Certificates[0])
	})
	b, err := src.GetX509BundleForTrustDomain(testTD)
	if err != nil {
		t.Fatal(err)
	}
	if !b.HasX509Authority(ca2.Certificate()) {
		t.Error("bundle was not rotated with the SVID")
	}
	if src.ID() != second.ID {
		t.Errorf("ID() = %s after rotation", src.ID())
	}
}

func TestDirSource_KeepsLastGoodSVIDOnBrokenFiles(t *testing.T) {
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
	// checkNow makes the next Get look at the files, without waiting out
	// the reload interval.
	checkNow := func() {
		src.mu.Lock()
		src.lastCheck = time.Time{}
		src.mu.Unlock()
	}

	// A half-written rotation: new key, old certificate.
	second := issueSVID(t, ca, RoleBroker, "b1")
	_, newKey := marshalSVID(t, second)
	writeFile(t, dir, KeyFile, newKey)
	checkNow()
	got, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("DirSource dropped its SVID for a mismatched key and certificate")
	}

	// Garbage in the bundle.
	writeFile(t, dir, BundleFile, []byte("garbage"))
	checkNow()
	if b, err := src.GetX509BundleForTrustDomain(testTD); err != nil || !b.Equal(ca.Bundle()) {
		t.Fatalf("DirSource dropped its bundle for garbage: %v", err)
	}

	// The rotation completes.
	if err := WriteSVID(dir, second, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	checkNow()
	got, err = src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificates[0].Equal(second.Certificates[0]) {
		t.Fatal("DirSource did not load the completed rotation")
	}
}

func writeFile(t testing.TB, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func marshalSVID(t testing.TB, svid *x509svid.SVID) (certs, key []byte) {
	t.Helper()
	certs, key, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return certs, key
}

func mustMarshalKey(t testing.TB, svid *x509svid.SVID) []byte {
	t.Helper()
	_, key, err := svid.MarshalRaw()
	if err != nil {
		t.Fatal(err)
	}
	return key
}
