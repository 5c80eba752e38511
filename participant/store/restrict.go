package store

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// bucketRestrictions holds the member's own restrictions of its patients,
// keyed by local patient id: a qhinv1.Restriction.
var bucketRestrictions = []byte("restrictions")

// SetRestriction records (or replaces) the member's own restriction of one
// of its patients. A patient the store does not hold is ErrNotFound.
func (s *Store) SetRestriction(ctx context.Context, r *qhinv1.Restriction) error {
	if r.GetPatientId() == "" {
		return errors.New("set restriction: empty patient id")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	buf, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("set restriction: %w", err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketPatients).Get([]byte(r.PatientId)) == nil {
			return fmt.Errorf("set restriction: patient: %w", ErrNotFound)
		}
		b, err := tx.CreateBucketIfNotExists(bucketRestrictions)
		if err != nil {
			return err
		}
		return b.Put([]byte(r.PatientId), buf)
	})
}

// ClearRestriction lifts a patient's restriction and reports whether there
// was one.
func (s *Store) ClearRestriction(ctx context.Context, patientID string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var cleared bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRestrictions)
		if b == nil || b.Get([]byte(patientID)) == nil {
			return nil
		}
		cleared = true
		return b.Delete([]byte(patientID))
	})
	return cleared, err
}

// RestrictionsOf returns the restrictions of those of ids that have one, by
// id, read in one transaction.
func (s *Store) RestrictionsOf(ids []string) (map[string]*qhinv1.Restriction, error) {
	out := map[string]*qhinv1.Restriction{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRestrictions)
		if b == nil {
			return nil
		}
		for _, id := range ids {
			v := b.Get([]byte(id))
			if v == nil {
				continue
			}
			r := new(qhinv1.Restriction)
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("read restriction: %w", err)
			}
			out[id] = r
		}
		return nil
	})
	return out, err
}

// Restrictions returns every restriction, in patient id order.
func (s *Store) Restrictions() ([]*qhinv1.Restriction, error) {
	var out []*qhinv1.Restriction
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRestrictions)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			r := new(qhinv1.Restriction)
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("read restriction: %w", err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}
