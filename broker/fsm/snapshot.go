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
//	magic "QHINSNAP" | format uint32 | length uint64 | bbolt file | SHA-256 of the file
const (
	snapshotMagic  = "QHINSNAP"
	snapshotFormat = 1
	headerLen      = len(snapshotMagic) + 4 + 8
)

// writeSnapshot writes the file as tx sees it, framed.
func writeSnapshot(tx *bolt.Tx, w io.Writer) (int64, error) {
	hdr := make([]byte, headerLen)
	copy(hdr, snapshotMagic)
	binary.BigEndian.PutUint32(hdr[8:], snapshotFormat)
	binary.BigEndian.PutUint64(hdr[12:], uint64(tx.Size()))
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
	return int64(headerLen) + n + sha256.Size, nil
}

// readSnapshot copies the bbolt file out of a framed snapshot into w and
// checks its length and hash.
func readSnapshot(r io.Reader, w io.Writer) error {
	hdr := make([]byte, headerLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	if !bytes.Equal(hdr[:8], []byte(snapshotMagic)) {
		return errors.New("not an OpenQHIN broker snapshot")
	}
	if f := binary.BigEndian.Uint32(hdr[8:]); f != snapshotFormat {
		return fmt.Errorf("snapshot format %d, this broker reads %d", f, snapshotFormat)
	}
	length := int64(binary.BigEndian.Uint64(hdr[12:]))
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(r, length))
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if n != length {
		return fmt.Errorf("snapshot is truncated: %d of %d bytes", n, length)
	}
	sum := make([]byte, sha256.Size)
	if _, err := io.ReadFull(r, sum); err != nil {
		return fmt.Errorf("snapshot is truncated: checksum: %w", err)
	}
	if !bytes.Equal(sum, h.Sum(nil)) {
		return errors.New("snapshot checksum does not match its content")
	}
	return nil
}
