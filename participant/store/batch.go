package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Batch is a set of changes to the records that Apply makes in one
// transaction: all of them or, on any error, none.
type Batch struct {
	// Patients are created or replaced.
	Patients []Patient
	// DeletePatients are removed with every document they have. Deleting a
	// patient the store does not hold fails the batch with ErrNotFound.
	// Deletions are applied first, so a batch may delete a patient and
	// create it again.
	DeletePatients []string
	// Documents are created or replaced, after the patients are written;
	// each document's patient must exist once they are.
	Documents []NewDocument
}

// Empty reports whether the batch changes nothing.
func (b Batch) Empty() bool {
	return len(b.Patients) == 0 && len(b.DeletePatients) == 0 && len(b.Documents) == 0
}

// Apply makes every change of b in one write transaction, or none of them.
// Documents' content is held in memory; large single documents belong in
// PutDocument, which streams.
func (s *Store) Apply(ctx context.Context, b Batch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.putMu.Lock()
	defer s.putMu.Unlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, id := range b.DeletePatients {
			if err := deletePatient(tx, id); err != nil {
				return err
			}
		}
		pb := tx.Bucket(bucketPatients)
		for _, p := range b.Patients {
			if p.ID == "" {
				return errors.New("apply: a patient has no id")
			}
			buf, err := proto.Marshal(p.Demographics)
			if err != nil {
				return fmt.Errorf("put patient %s: %w", p.ID, err)
			}
			if err := pb.Put([]byte(p.ID), buf); err != nil {
				return err
			}
		}
		for _, d := range b.Documents {
			if err := putDocument(tx, d); err != nil {
				return err
			}
		}
		return nil
	})
}

// putDocument writes one in-memory document in tx, computing its size and
// SHA-256. Its patient must exist.
func putDocument(tx *bolt.Tx, d NewDocument) error {
	m := proto.Clone(d.Meta).(*qhinv1.DocumentMetadata)
	patientID := m.GetPatient().GetPatientId()
	if m.Id == "" || patientID == "" {
		return errors.New("put documents: a document lacks an id or a patient")
	}
	if tx.Bucket(bucketPatients).Get([]byte(patientID)) == nil {
		return fmt.Errorf("put document %s: patient %s: %w", m.Id, patientID, ErrNotFound)
	}
	id := []byte(m.Id)
	if err := deleteDocument(tx, id); err != nil {
		return err
	}
	chunks, err := tx.Bucket(bucketContent).CreateBucket(id)
	if err != nil {
		return err
	}
	chunks.FillPercent = 1.0
	for seq, off := uint64(0), 0; off < len(d.Content); seq, off = seq+1, off+ChunkSize {
		if err := chunks.Put(chunkKey(seq), d.Content[off:min(off+ChunkSize, len(d.Content))]); err != nil {
			return err
		}
	}
	sum := sha256.Sum256(d.Content)
	m.Size = int64(len(d.Content))
	m.Sha256 = hex.EncodeToString(sum[:])
	enc, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketDocuments).Put(id, enc); err != nil {
		return err
	}
	return tx.Bucket(bucketPatientDocs).Put(patientDocKey(patientID, m.Id), nil)
}

// deletePatient removes a patient and every document of theirs.
func deletePatient(tx *bolt.Tx, id string) error {
	pb := tx.Bucket(bucketPatients)
	if pb.Get([]byte(id)) == nil {
		return fmt.Errorf("delete patient %s: %w", id, ErrNotFound)
	}
	prefix := patientDocKey(id, "")
	var docs [][]byte
	c := tx.Bucket(bucketPatientDocs).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		docs = append(docs, bytes.Clone(k[len(prefix):]))
	}
	for _, d := range docs {
		if err := deleteDocument(tx, d); err != nil {
			return err
		}
	}
	// Its record-locator tokens that no other patient holds are queued
	// for withdrawal in the same transaction.
	t := tokenTx{tx}
	old, err := t.entry(id)
	if err != nil {
		return err
	}
	if old != nil {
		if err := t.replace(id, old, nil); err != nil {
			return err
		}
	}
	return pb.Delete([]byte(id))
}

// HasPatient reports whether the store holds patient id.
func (s *Store) HasPatient(id string) (bool, error) {
	var ok bool
	err := s.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketPatients).Get([]byte(id)) != nil
		return nil
	})
	return ok, err
}

// IDKey returns the store's secret key for deriving local ids from
// identifiers (a C-CDA document's patient id, say), creating it on first
// use. Ids derived with it are stable for this store and reveal nothing of
// the identifiers they come from.
func (s *Store) IDKey() ([]byte, error) {
	var key []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketMeta); b != nil {
			key = bytes.Clone(b.Get(keyIDKey))
		}
		return nil
	})
	if err != nil || key != nil {
		return key, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if key = bytes.Clone(b.Get(keyIDKey)); key != nil {
			return nil
		}
		key = make([]byte, 32)
		rand.Read(key)
		return b.Put(keyIDKey, key)
	})
	return key, err
}

var (
	bucketMeta = []byte("meta")
	keyIDKey   = []byte("id-key")
)
