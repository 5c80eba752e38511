package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// A snapshot is the bbolt file framed so that a truncated or foreign stream
// is refused before anything opens it:
//
//	magic "QHINSNAP" | format uint32 | length uint64 | [index uint64] | bbolt file | SHA-256 of the file
//
// Format 2 adds the Raft index the snapshot was taken at (0 for a backup
// saved outside Raft): a broker that restores a Raft snapshot holds every
// entry up to that index, including entries the state machine never sees
// (a leader's no-op, barriers) and that the log may no longer hold.
const (
	snapshotMagic  = "QHINSNAP"
	snapshotFormat = 2
	headerLen      = len(snapshotMagic) + 4 + 8
)

// writeSnapshot writes the file as tx sees it, framed, with the Raft index
// it stands for (0 when none).
func writeSnapshot(tx *bolt.Tx, w io.Writer, index uint64) (int64, error) {
	hdr := make([]byte, headerLen+8)
	copy(hdr, snapshotMagic)
	binary.BigEndian.PutUint32(hdr[8:], snapshotFormat)
	binary.BigEndian.PutUint64(hdr[12:], uint64(tx.Size()))
	binary.BigEndian.PutUint64(hdr[headerLen:], index)
	if _, err := w.Write(hdr); err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := tx.WriteTo(io.MultiWriter(w, h))
	if err != nil {
		return 0, err
	}
	if n != tx.Size() {
		return 0, fmt.Errorf("wrote %d bytes of a %d byte file", n, tx.Size())
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return 0, err
	}
	return int64(len(hdr)) + n + sha256.Size, nil
}

// readSnapshot copies the bbolt file out of a framed snapshot into w, checks
// its length and hash, and returns the Raft index the snapshot stands for.
func readSnapshot(r io.Reader, w io.Writer) (uint64, error) {
	index, length, err := readHeader(r)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(r, length))
	if err != nil {
		return 0, fmt.Errorf("read state: %w", err)
	}
	if n != length {
		return 0, fmt.Errorf("snapshot is truncated: %d of %d bytes", n, length)
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, sum); err != nil {
		return 0, fmt.Errorf("snapshot is truncated: checksum: %w", err)
	}
	if !bytes.Equal(sum, h.Sum(nil)) {
		return 0, errors.New("snapshot checksum does not match its content")
	}
	return index, nil
}

func readHeader(r io.Reader) (index uint64, length int64, err error) {
	hdr := make([]byte, headerLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, 0, fmt.Errorf("read header: %w", err)
	}
	if !bytes.Equal(hdr[:8], []byte(snapshotMagic)) {
		return 0, 0, errors.New("not an OpenQHIN broker snapshot")
	}
	switch f := binary.BigEndian.Uint32(hdr[8:]); f {
	case 1:
	case 2:
		var idx [8]byte
		if _, err := io.ReadFull(r, idx[:]); err != nil {
			return 0, 0, fmt.Errorf("read header: %w", err)
		}
		index = binary.BigEndian.Uint64(idx[:])
	default:
		return 0, 0, fmt.Errorf("snapshot format %d, this broker reads up to %d", f, snapshotFormat)
	}
	return index, int64(binary.BigEndian.Uint64(hdr[12:])), nil
}

// ClearSnapshotIndex zeroes the Raft index in the header of a snapshot
// file, so that restoring a saved snapshot into a cluster never makes that
// cluster's entries up to an index from another log look applied.
func ClearSnapshotIndex(f io.ReadWriteSeeker) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	hdr := make([]byte, headerLen)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	if binary.BigEndian.Uint32(hdr[8:]) != 2 {
		_, err := f.Seek(0, io.SeekStart)
		return err
	}
	if _, err := f.Write(make([]byte, 8)); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}
