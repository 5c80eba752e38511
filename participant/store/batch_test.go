package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestApply_AllOrNothing(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	putPatient(t, s, "a")
	if err := s.PutDocuments(ctx, []NewDocument{{Meta: meta("a-1", "a", "11488-4", time.Now()), Content: []byte("note")}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		batch Batch
		want  error
	}{
		{"document of an unknown patient", Batch{
			Patients:  []Patient{{ID: "b", Demographics: fakePatient(2)}},
			Documents: []NewDocument{{Meta: meta("x-1", "x", "11488-4", time.Now()), Content: []byte("x")}},
		}, ErrNotFound},
		{"delete of an unknown patient", Batch{
			Patients:       []Patient{{ID: "b", Demographics: fakePatient(2)}},
			DeletePatients: []string{"a", "nobody"},
		}, ErrNotFound},
		{"patient without id", Batch{Patients: []Patient{{ID: "b", Demographics: fakePatient(2)}, {Demographics: fakePatient(3)}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Apply(ctx, tt.batch)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Apply = %v, want %v", err, tt.want)
			}
			np, nd, _ := s.Counts()
			if np != 1 || nd != 1 {
				t.Errorf("after a failed batch the store holds %d patients and %d documents, want 1 and 1", np, nd)
			}
			if ok, _ := s.HasPatient("b"); ok {
				t.Error("patient b was written by a failed batch")
			}
		})
	}
}

func TestApply_DeletesAPatientWithTheirDocuments(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	err := s.Apply(ctx, Batch{
		Patients: []Patient{{ID: "a", Demographics: fakePatient(1)}, {ID: "b", Demographics: fakePatient(2)}},
		Documents: []NewDocument{
			{Meta: meta("a-1", "a", "11488-4", time.Now()), Content: []byte("one")},
			{Meta: meta("a-2", "a", "11488-4", time.Now()), Content: []byte("two")},
			{Meta: meta("b-1", "b", "11488-4", time.Now()), Content: []byte("three")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, Batch{DeletePatients: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	np, nd, _ := s.Counts()
	if np != 1 || nd != 1 {
		t.Fatalf("after deleting a: %d patients, %d documents; want 1 and 1", np, nd)
	}
	if _, err := s.Document("a-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a's document after the delete: %v", err)
	}
	docs, _ := s.Documents([]string{"a"}, Filter{})
	if len(docs) != 0 {
		t.Errorf("a still lists %d documents", len(docs))
	}
	// Delete and create again in one batch.
	if err := s.Apply(ctx, Batch{DeletePatients: []string{"b"}, Patients: []Patient{{ID: "b", Demographics: fakePatient(5)}}}); err != nil {
		t.Fatal(err)
	}
	if np, nd, _ := s.Counts(); np != 1 || nd != 0 {
		t.Errorf("after re-creating b: %d patients, %d documents; want 1 and 0", np, nd)
	}
}

func TestIDKey_StableAcrossCalls(t *testing.T) {
	s := openStore(t)
	a, err := s.IDKey()
	if err != nil || len(a) != 32 {
		t.Fatalf("IDKey = %x, %v", a, err)
	}
	b, _ := s.IDKey()
	if string(a) != string(b) {
		t.Error("IDKey changed between calls")
	}
}
