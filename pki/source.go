package pki

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source supplies a node's own X.509-SVID and the bundle of authorities it
// trusts. TLS configurations ask it on every handshake, so a source whose
// contents change rotates certificates without a restart.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// StaticSource is a Source that never changes, for tests and for nodes that
// are handed their SVID in memory.
type StaticSource struct {
	SVID   *x509svid.SVID
	Bundle *x509bundle.Bundle
}

// GetX509SVID implements x509svid.Source.
func (s StaticSource) GetX509SVID() (*x509svid.SVID, error) { return s.SVID, nil }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s StaticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.Bundle.GetX509BundleForTrustDomain(td)
}

// reloadCheck is how often a DirSource looks at its files for changes.
const reloadCheck = time.Second

// DirSource reads svid.pem, svid.key and bundle.pem from a directory and
// reloads them when they change on disk, so that certificates written by an
// operator or an agent take effect on the next handshake.
type DirSource struct {
	dir string

	mu        sync.Mutex
	svid      *x509svid.SVID
	bundle    *x509bundle.Bundle
	modTimes  [3]time.Time
	lastCheck time.Time
}

// LoadDir reads an SVID directory. It fails when the files are missing, do not
// parse, or the key does not belong to the certificate.
func LoadDir(dir string) (*DirSource, error) {
	s := &DirSource{dir: dir}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// ID returns the SPIFFE ID of the current SVID.
func (s *DirSource) ID() spiffeid.ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.svid.ID
}

// GetX509SVID implements x509svid.Source.
func (s *DirSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maybeReloadLocked()
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *DirSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maybeReloadLocked()
	return s.bundle.GetX509BundleForTrustDomain(td)
}

func (s *DirSource) files() [3]string {
	return [3]string{
		filepath.Join(s.dir, SVIDFile),
		filepath.Join(s.dir, KeyFile),
		filepath.Join(s.dir, BundleFile),
	}
}

// maybeReloadLocked reloads the files when their modification times changed.
// A half-written rotation (new key, old certificate) fails to parse and keeps
// the previous SVID until the next check.
func (s *DirSource) maybeReloadLocked() {
	now := time.Now()
	if now.Sub(s.lastCheck) < reloadCheck {
		return
	}
	s.lastCheck = now
	var mt [3]time.Time
	for i, f := range s.files() {
		fi, err := os.Stat(f)
		if err != nil {
			return
		}
		mt[i] = fi.ModTime()
	}
	if mt == s.modTimes {
		return
	}
	svid, bundle, err := readDir(s.files())
	if err != nil {
		return
	}
	s.svid, s.bundle, s.modTimes = svid, bundle, mt
}

func (s *DirSource) load() error {
	files := s.files()
	var mt [3]time.Time
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("load SVID directory %s: %w", s.dir, err)
		}
		mt[i] = fi.ModTime()
	}
	svid, bundle, err := readDir(files)
	if err != nil {
		return fmt.Errorf("load SVID directory %s: %w", s.dir, err)
	}
	s.svid, s.bundle, s.modTimes, s.lastCheck = svid, bundle, mt, time.Now()
	return nil
}

func readDir(files [3]string) (*x509svid.SVID, *x509bundle.Bundle, error) {
	svid, err := x509svid.Load(files[0], files[1])
	if err != nil {
		return nil, nil, err
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), files[2])
	if err != nil {
		return nil, nil, err
	}
	if bundle.Empty() {
		return nil, nil, errors.New("bundle holds no authorities")
	}
	return svid, bundle, nil
}

// SourceIdentity returns the parsed identity of a source's current SVID.
func SourceIdentity(src Source) (Identity, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return Identity{}, fmt.Errorf("own SVID: %w", err)
	}
	return ParseIdentity(svid.ID)
}

// SourceRole returns the identity of a source's SVID and checks that it is
// of the role a node is started as.
func SourceRole(src Source, role Role) (Identity, error) {
	if src == nil {
		return Identity{}, errors.New("no SVID source")
	}
	id, err := SourceIdentity(src)
	if err != nil {
		return Identity{}, err
	}
	if id.Role != role {
		return Identity{}, fmt.Errorf("SVID %s is not a %s identity", id, role)
	}
	return id, nil
}
