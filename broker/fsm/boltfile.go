package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged marks a bbolt file that cannot be used as it is: truncated,
// with damaged headers or pages, or whose content does not match its
// checksums.
var ErrDamaged = errors.New("damaged")

// bbolt's on-disk header: every page starts with a 16-byte header; pages 0
// and 1 hold a meta record each, written in the machine's byte order.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64 // magic, version, page size, flags, root (2×8), freelist, pgid, txid, checksum
)

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readMeta decodes the meta record of the page at off, or says why it is
// not valid.
func readMeta(f io.ReaderAt, off int64) (boltMeta, error) {
	buf := make([]byte, pageHeaderSize+metaSize)
	if _, err := f.ReadAt(buf, off); err != nil {
		return boltMeta{}, fmt.Errorf("read header page at %d: %w", off, err)
	}
	m := buf[pageHeaderSize:]
	le := binary.NativeEndian
	if le.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, errors.New("not a bbolt header")
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt format version %d", v)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if le.Uint64(m[56:]) != h.Sum64() {
		return boltMeta{}, errors.New("header checksum mismatch")
	}
	return boltMeta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}, nil
}

// CheckBoltFile checks, without mapping it, that the bbolt file at path is
// whole: one of its two headers is valid and the file is at least as long
// as that header says. bbolt maps the file and would read past its end —
// a SIGBUS that kills the process — if it were shorter. A missing file is
// fine (it will be created).
func CheckBoltFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil // bbolt initializes an empty file
	}
	m0, err0 := readMeta(f, 0)
	pageSize := int64(os.Getpagesize())
	if err0 == nil {
		pageSize = int64(m0.pageSize)
	}
	m1, err1 := readMeta(f, pageSize)
	var m boltMeta
	switch {
	case err0 != nil && err1 != nil:
		return fmt.Errorf("%w: %s has no valid header (%v; %v)", ErrDamaged, path, err0, err1)
	case err0 != nil:
		m = m1
	case err1 != nil:
		m = m0
	case m1.txid > m0.txid:
		m = m1
	default:
		m = m0
	}
	if m.pageSize < 512 || m.pageSize > 1<<20 || m.pageSize&(m.pageSize-1) != 0 {
		return fmt.Errorf("%w: %s has page size %d", ErrDamaged, path, m.pageSize)
	}
	if want := int64(m.pgid) * int64(m.pageSize); fi.Size() < want {
		return fmt.Errorf("%w: %s is truncated: %d bytes, its header says %d", ErrDamaged, path, fi.Size(), want)
	}
	if m.root >= m.pgid || (m.freelist >= m.pgid && m.freelist != ^uint64(0)) {
		return fmt.Errorf("%w: %s header points past the end of its data", ErrDamaged, path)
	}
	return nil
}

// OpenBolt opens a bbolt file after CheckBoltFile, turning the panics bbolt
// raises on damaged pages into errors.
func OpenBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	if err := CheckBoltFile(path); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("%w: %s: %v", ErrDamaged, path, p)
		}
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	return bolt.Open(path, 0o600, opts)
}

// guard runs fn, turning a panic (bbolt asserts on damaged pages; a fault
// on a page past the end of the file) into an error.
func guard(what string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %s: %v", ErrDamaged, what, p)
		}
	}()
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	return fn()
}
