package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Every table keeps a digest of its content in the meta table, updated in
// the same transaction as the data: the number of entries and the XOR of a
// SHA-256 over each key and value. Two brokers that applied the same entries
// hold the same digests at the same index, whatever order their pages are
// in; and a broker can check its file against its own digests by reading
// every entry again (Verify).

// Digest summarizes one table.
type Digest struct {
	Count uint64
	Sum   [sha256.Size]byte
}

// String renders a digest as count:hex.
func (d Digest) String() string { return fmt.Sprintf("%d:%s", d.Count, hex.EncodeToString(d.Sum[:])) }

func (d *Digest) add(k, v []byte) {
	d.Count++
	d.xor(entryHash(k, v))
}

func (d *Digest) remove(k, v []byte) {
	d.Count--
	d.xor(entryHash(k, v))
}

func (d *Digest) xor(h [sha256.Size]byte) {
	for i := range d.Sum {
		d.Sum[i] ^= h[i]
	}
}

func entryHash(k, v []byte) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(k)))
	h.Write(n[:])
	h.Write(k)
	h.Write(v)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// dataTables are the tables digests cover: every table but meta.
var dataTables = [][]byte{bucketParticipants, bucketBrokers, bucketRequests, bucketRequestTimes,
	bucketLocator, bucketLocatorKeys, bucketLocatorCounts, bucketLinkKeys, bucketConsent}

// TableNames lists the tables digests cover, in the order of
// Digests.Tables.
func TableNames() []string {
	out := make([]string, len(dataTables))
	for i, t := range dataTables {
		out[i] = string(t)
	}
	return out
}

// Digests is the state of every data table as of an applied index.
type Digests struct {
	Index  uint64
	Tables [9]Digest // in dataTables order
}

// Map returns the digests by table name.
func (d Digests) Map() map[string]string {
	out := make(map[string]string, len(dataTables))
	for i, name := range dataTables {
		out[string(name)] = d.Tables[i].String()
	}
	return out
}

// Diff names the tables whose digests differ.
func (d Digests) Diff(o Digests) []string {
	var out []string
	for i, name := range dataTables {
		if d.Tables[i] != o.Tables[i] {
			out = append(out, string(name))
		}
	}
	return out
}

func tableIndex(name []byte) int {
	for i, t := range dataTables {
		if bytes.Equal(t, name) {
			return i
		}
	}
	return -1
}

func digestKey(table []byte) []byte { return append([]byte("digest/"), table...) }

// storedDigests reads the digests the meta table holds; ok is false when a
// file predates them.
func storedDigests(tx *bolt.Tx) (d Digests, ok bool, err error) {
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyAppliedIndex); len(v) == 8 {
		d.Index = binary.BigEndian.Uint64(v)
	}
	for i, name := range dataTables {
		v := meta.Get(digestKey(name))
		if v == nil {
			return d, false, nil
		}
		if len(v) != 8+sha256.Size {
			return d, false, fmt.Errorf("%w: digest of table %s has %d bytes", ErrDamaged, name, len(v))
		}
		d.Tables[i].Count = binary.BigEndian.Uint64(v)
		copy(d.Tables[i].Sum[:], v[8:])
	}
	return d, true, nil
}

func putDigests(tx *bolt.Tx, d *Digests) error {
	meta := tx.Bucket(bucketMeta)
	for i, name := range dataTables {
		v := make([]byte, 8+sha256.Size)
		binary.BigEndian.PutUint64(v, d.Tables[i].Count)
		copy(v[8:], d.Tables[i].Sum[:])
		if err := meta.Put(digestKey(name), v); err != nil {
			return err
		}
	}
	return nil
}

// computeDigests reads every entry of every data table.
func computeDigests(tx *bolt.Tx) (Digests, error) {
	var d Digests
	for i, name := range dataTables {
		b := tx.Bucket(name)
		if b == nil {
			return d, fmt.Errorf("%w: table %s missing", ErrDamaged, name)
		}
		err := b.ForEach(func(k, v []byte) error {
			d.Tables[i].add(k, v)
			return nil
		})
		if err != nil {
			return d, err
		}
	}
	return d, nil
}

// verifyTx reads every entry of tx's file and compares what it finds with
// the digests the file holds.
func verifyTx(tx *bolt.Tx) (Digests, error) {
	stored, ok, err := storedDigests(tx)
	if err != nil {
		return stored, err
	}
	if !ok {
		return stored, fmt.Errorf("%w: no table digests", ErrDamaged)
	}
	actual, err := computeDigests(tx)
	if err != nil {
		return stored, err
	}
	actual.Index = stored.Index
	if diff := stored.Diff(actual); len(diff) > 0 {
		return stored, fmt.Errorf("%w: the content of table(s) %s does not match the digests recorded with it at index %d",
			ErrDamaged, strings.Join(diff, ", "), stored.Index)
	}
	return stored, nil
}

// history remembers the digests after each of the last entries applied, so
// that a follower can compare its digests at its applied index with the
// leader's at the same index.
type history struct {
	mu   sync.Mutex
	ring []Digests
	next int
	full bool
}

const historySize = 8192

func (h *history) add(ds []Digests) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ring == nil {
		h.ring = make([]Digests, historySize)
	}
	for _, d := range ds {
		h.ring[h.next] = d
		h.next = (h.next + 1) % historySize
		if h.next == 0 {
			h.full = true
		}
	}
}

func (h *history) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next, h.full = 0, false
}

func (h *history) at(index uint64) (Digests, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.next
	if h.full {
		n = historySize
	}
	for k := 1; k <= n; k++ {
		d := h.ring[(h.next-k+historySize)%historySize]
		if d.Index == index {
			return d, true
		}
		if d.Index < index {
			return Digests{}, false
		}
	}
	return Digests{}, false
}
