// Package store is a participant's local record store: patients with their
// demographics and documents with their metadata and content, in one bbolt
// file. Content is kept in chunks of ChunkSize so that a document streams out
// without being read into memory whole.
package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// ChunkSize is the size of the pieces a document's content is stored and
// streamed in: just under 32 KiB, so that a chunk with its message framing
// fits gRPC's pooled 32 KiB buffers. gRPC's next pool size is 1 MiB; 64 KiB
// chunks cost every stream about 10 MiB of buffers instead of 2.
const ChunkSize = 32<<10 - 64

// ErrNotFound is returned for a patient or document the store does not hold.
var ErrNotFound = errors.New("not found")

var (
	bucketPatients = []byte("patients")
	// bucketPatientDocs indexes documents by patient: key patientID 0x00 docID.
	bucketPatientDocs = []byte("patient_documents")
	bucketDocuments   = []byte("documents")
	// bucketContent holds one sub-bucket per document, keyed by big-endian
	// chunk number.
	bucketContent = []byte("content")
)

// Store is a participant's bbolt record store. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
	// putMu serializes document writes: PutDocument's content spans
	// several transactions, which another write of the same id must not
	// interleave with.
	putMu sync.Mutex
}

// Open opens or creates the store at path. It waits at most a few seconds for
// another process to release the file.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: 5 * time.Second,
		// A large initial map keeps writers from waiting on read
		// transactions to remap the file as it grows.
		InitialMmapSize: 1 << 30,
	})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range append([][]byte{bucketPatients, bucketPatientDocs, bucketDocuments, bucketContent}, tokenBuckets...) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: create buckets: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Path returns the file the store lives in.
func (s *Store) Path() string { return s.db.Path() }

// Patient is a local patient record.
type Patient struct {
	ID           string
	Demographics *qhinv1.Demographics
}

// PutPatient creates or replaces a patient.
func (s *Store) PutPatient(ctx context.Context, id string, d *qhinv1.Demographics) error {
	if id == "" {
		return errors.New("put patient: empty id")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	buf, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("put patient %s: %w", id, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPatients).Put([]byte(id), buf)
	})
}

// PutPatients creates or replaces many patients in one transaction.
func (s *Store) PutPatients(ctx context.Context, patients []Patient) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPatients)
		for _, p := range patients {
			if p.ID == "" {
				return errors.New("put patients: empty id")
			}
			buf, err := proto.Marshal(p.Demographics)
			if err != nil {
				return fmt.Errorf("put patient %s: %w", p.ID, err)
			}
			if err := b.Put([]byte(p.ID), buf); err != nil {
				return err
			}
		}
		return nil
	})
}

// Patient returns one patient's demographics.
func (s *Store) Patient(id string) (*qhinv1.Demographics, error) {
	var d qhinv1.Demographics
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPatients).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("patient %s: %w", id, ErrNotFound)
		}
		return proto.Unmarshal(v, &d)
	})
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// ForEachPatient calls fn for every patient in id order. It stops at the first
// error fn returns.
func (s *Store) ForEachPatient(fn func(Patient) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPatients).ForEach(func(k, v []byte) error {
			d, err := unmarshalDemographics(k, v)
			if err != nil {
				return err
			}
			return fn(Patient{ID: string(k), Demographics: d})
		})
	})
}

func unmarshalDemographics(id, v []byte) (*qhinv1.Demographics, error) {
	d := new(qhinv1.Demographics)
	if err := proto.Unmarshal(v, d); err != nil {
		return nil, fmt.Errorf("patient %s: %w", id, err)
	}
	return d, nil
}

// Counts returns how many patients and documents the store holds.
func (s *Store) Counts() (patients, documents int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		patients = tx.Bucket(bucketPatients).Stats().KeyN
		documents = tx.Bucket(bucketDocuments).Stats().KeyN
		return nil
	})
	return patients, documents, err
}

// PutDocument stores a document's content read from r, computing its size and
// SHA-256, and returns the stored metadata. meta must name the document id
// and the patient; the patient must exist. A document with the same id is
// replaced. Content is written in transactions of a few megabytes, and the
// metadata last, so a large document never sits in memory whole and a reader
// never sees a document whose content is incomplete.
func (s *Store) PutDocument(ctx context.Context, meta *qhinv1.DocumentMetadata, r io.Reader) (*qhinv1.DocumentMetadata, error) {
	if meta.GetId() == "" {
		return nil, errors.New("put document: empty id")
	}
	patientID := meta.GetPatient().GetPatientId()
	if patientID == "" {
		return nil, fmt.Errorf("put document %s: no patient", meta.GetId())
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.putMu.Lock()
	defer s.putMu.Unlock()
	m := proto.Clone(meta).(*qhinv1.DocumentMetadata)
	m.Size = 0 // counted from the content below, not taken from the caller
	id := []byte(m.Id)
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketPatients).Get([]byte(patientID)) == nil {
			return fmt.Errorf("put document %s: patient %s: %w", m.Id, patientID, ErrNotFound)
		}
		if err := deleteDocument(tx, id); err != nil {
			return err
		}
		_, err := tx.Bucket(bucketContent).CreateBucket(id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("put document %s: %w", m.Id, err)
	}

	h := sha256.New()
	buf := make([]byte, chunksPerTx*ChunkSize)
	var seq uint64
	for done := false; !done; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := io.ReadFull(r, buf)
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			done = true
		case err != nil:
			return nil, fmt.Errorf("put document %s: read content: %w", m.Id, err)
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
		m.Size += int64(n)
		err = s.db.Update(func(tx *bolt.Tx) error {
			chunks := tx.Bucket(bucketContent).Bucket(id)
			if chunks == nil {
				return fmt.Errorf("content bucket vanished: %w", ErrNotFound)
			}
			chunks.FillPercent = 1.0
			for off := 0; off < n; off += ChunkSize {
				end := min(off+ChunkSize, n)
				if err := chunks.Put(chunkKey(seq), buf[off:end]); err != nil {
					return err
				}
				seq++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("put document %s: %w", m.Id, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.Sha256 = hex.EncodeToString(h.Sum(nil))
	enc, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketDocuments).Put(id, enc); err != nil {
			return err
		}
		return tx.Bucket(bucketPatientDocs).Put(patientDocKey(patientID, m.Id), nil)
	})
	if err != nil {
		return nil, fmt.Errorf("put document %s: %w", m.Id, err)
	}
	return m, nil
}

// NewDocument is a document whose content is already in memory.
type NewDocument struct {
	Meta    *qhinv1.DocumentMetadata
	Content []byte
}

// PutDocuments stores many small documents in one transaction, computing
// each one's size and SHA-256. Every document's patient must exist; a
// document with the same id is replaced. Large documents belong in
// PutDocument, which streams.
func (s *Store) PutDocuments(ctx context.Context, docs []NewDocument) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.putMu.Lock()
	defer s.putMu.Unlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, d := range docs {
			if err := putDocument(tx, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// chunksPerTx bounds how much content one write transaction holds.
const chunksPerTx = 64

// deleteDocument removes a document's metadata, index entry and content,
// including the content of an earlier write that did not finish.
func deleteDocument(tx *bolt.Tx, id []byte) error {
	if err := tx.Bucket(bucketContent).DeleteBucket(id); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
		return err
	}
	old := tx.Bucket(bucketDocuments).Get(id)
	if old == nil {
		return nil
	}
	var m qhinv1.DocumentMetadata
	if err := proto.Unmarshal(old, &m); err != nil {
		return err
	}
	if err := tx.Bucket(bucketPatientDocs).Delete(patientDocKey(m.GetPatient().GetPatientId(), m.Id)); err != nil {
		return err
	}
	return tx.Bucket(bucketDocuments).Delete(id)
}

// Filter narrows a document listing.
type Filter struct {
	// TypeCodes keeps documents of these types; all when empty.
	TypeCodes []string
	// Since keeps documents created at or after it, when not zero.
	Since time.Time
	// Until keeps documents created before it, when not zero.
	Until time.Time
}

func (f Filter) keep(m *qhinv1.DocumentMetadata) bool {
	if len(f.TypeCodes) > 0 {
		found := false
		for _, c := range f.TypeCodes {
			if c == m.TypeCode {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	created := m.GetCreated().AsTime()
	if !f.Since.IsZero() && created.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !created.Before(f.Until) {
		return false
	}
	return true
}

// Documents lists the documents of the given patients that pass the filter.
// Unknown patients have no documents.
func (s *Store) Documents(patientIDs []string, f Filter) ([]*qhinv1.DocumentMetadata, error) {
	var out []*qhinv1.DocumentMetadata
	err := s.db.View(func(tx *bolt.Tx) error {
		idx := tx.Bucket(bucketPatientDocs).Cursor()
		docs := tx.Bucket(bucketDocuments)
		for _, pid := range patientIDs {
			prefix := patientDocKey(pid, "")
			for k, _ := idx.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = idx.Next() {
				v := docs.Get(k[len(prefix):])
				if v == nil {
					continue
				}
				m := new(qhinv1.DocumentMetadata)
				if err := proto.Unmarshal(v, m); err != nil {
					return fmt.Errorf("document %s: %w", k[len(prefix):], err)
				}
				if f.keep(m) {
					out = append(out, m)
				}
			}
		}
		return nil
	})
	return out, err
}

// Document returns one document's metadata.
func (s *Store) Document(id string) (*qhinv1.DocumentMetadata, error) {
	m := new(qhinv1.DocumentMetadata)
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDocuments).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("document %s: %w", id, ErrNotFound)
		}
		return proto.Unmarshal(v, m)
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// streamBatch is how many chunks one read transaction of StreamDocument
// reads: 128 KiB, read in well under a millisecond.
const streamBatch = 4

// ErrChanged is returned by StreamDocument when the document was replaced
// or removed while it streamed.
var ErrChanged = errors.New("document changed while it was read")

// StreamDocument calls header with the document's metadata, then chunk with
// each piece of its content in order. The slices passed to chunk are valid
// only during the call.
//
// The stream reads from short read transactions of streamBatch chunks each
// and holds none while header and chunk run, so that a slow reader never
// keeps a transaction open (a long one would hold back every write once the
// file outgrows its memory map, and pins pages). Each transaction checks
// that the document's metadata is still the one the stream started with;
// if the document was replaced or removed in between, StreamDocument stops
// with ErrChanged rather than mix two versions.
func (s *Store) StreamDocument(ctx context.Context, id string, header func(*qhinv1.DocumentMetadata) error, chunk func([]byte) error) error {
	var (
		meta []byte // the metadata as the stream first read it
		buf  []byte
		lens []int
		next uint64
	)
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf, lens = buf[:0], lens[:0]
		done := false
		err := s.db.View(func(tx *bolt.Tx) error {
			v := tx.Bucket(bucketDocuments).Get([]byte(id))
			switch {
			case first && v == nil:
				return fmt.Errorf("document %s: %w", id, ErrNotFound)
			case first:
				meta = bytes.Clone(v)
			case !bytes.Equal(v, meta):
				return fmt.Errorf("document %s: %w", id, ErrChanged)
			}
			chunks := tx.Bucket(bucketContent).Bucket([]byte(id))
			if chunks == nil {
				return fmt.Errorf("document %s content: %w", id, ErrNotFound)
			}
			c := chunks.Cursor()
			k, v := c.Seek(chunkKey(next))
			for n := 0; n < streamBatch && k != nil; n++ {
				if buf == nil {
					buf = make([]byte, 0, streamBatch*ChunkSize)
				}
				buf = append(buf, v...)
				lens = append(lens, len(v))
				next = binary.BigEndian.Uint64(k) + 1
				k, v = c.Next()
			}
			done = k == nil
			return nil
		})
		if err != nil {
			return err
		}
		if first {
			m := new(qhinv1.DocumentMetadata)
			if err := proto.Unmarshal(meta, m); err != nil {
				return fmt.Errorf("document %s: %w", id, err)
			}
			if err := header(m); err != nil {
				return err
			}
		}
		for off, i := 0, 0; i < len(lens); off, i = off+lens[i], i+1 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := chunk(buf[off : off+lens[i]]); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
	}
}

func chunkKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func patientDocKey(patientID, docID string) []byte {
	k := make([]byte, 0, len(patientID)+1+len(docID))
	k = append(k, patientID...)
	k = append(k, 0)
	return append(k, docID...)
}
