package participant

import (
	"context"
	"fmt"

	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Change is what one committed write did to the member's records: the
// patients created or replaced, with their demographics, and the patients
// removed. Hooks registered with OnChange receive it (the record locator
// publishes the patients' tokens from it).
type Change struct {
	Put       []store.Patient
	Deleted   []string
	Documents int
}

// OnChange registers fn to be called after every committed write of
// Apply (and of PutPatient, PutPatients and PutDocuments, which go through
// it), in commit order, before the write returns. fn must not call Apply.
// Register hooks before the participant serves.
func (s *Server) OnChange(fn func(context.Context, Change)) {
	s.feedMu.Lock()
	defer s.feedMu.Unlock()
	s.hooks = append(s.hooks, fn)
}

// Apply writes b to the member's records as one change: the store commits
// all of it or none, and then the matcher sees all of it at once. Every
// write to a running participant's records (the FHIR facade's live feed,
// imports) goes through here. It fails with ErrUpstream when the
// participant answers from an upstream FHIR server.
func (s *Server) Apply(ctx context.Context, b store.Batch) error {
	if s.cfg.Upstream != nil {
		return ErrUpstream
	}
	for i, d := range b.Documents {
		m := cloneDoc(d.Meta)
		if m.Patient == nil {
			m.Patient = &qhinv1.PatientLink{}
		}
		m.Patient.ParticipantId = s.id.Name
		m.SourceParticipantId = s.id.Name
		b.Documents[i].Meta = m
	}
	// One writer at a time, so that the matcher takes the changes in the
	// order the store committed them.
	s.feedMu.Lock()
	defer s.feedMu.Unlock()
	if err := s.store.Apply(ctx, b); err != nil {
		return fmt.Errorf("participant %s: %w", s.id.Name, err)
	}
	add := make([]match.Entry, len(b.Patients))
	for i, p := range b.Patients {
		add[i] = match.Entry{ID: p.ID, Record: match.Normalize(p.Demographics)}
	}
	s.index.Update(add, b.DeletePatients)
	ch := Change{Put: b.Patients, Deleted: b.DeletePatients, Documents: len(b.Documents)}
	for _, fn := range s.hooks {
		fn(ctx, ch)
	}
	return nil
}

// DeletePatient removes a patient and their documents.
func (s *Server) DeletePatient(ctx context.Context, id string) error {
	return s.Apply(ctx, store.Batch{DeletePatients: []string{id}})
}

// HasPatient reports whether the member's store holds patient id.
func (s *Server) HasPatient(id string) (bool, error) { return s.store.HasPatient(id) }

// IDKey returns the store's key for deriving local ids (store.Store.IDKey).
func (s *Server) IDKey() ([]byte, error) { return s.store.IDKey() }

// Records returns where the participant's answers come from.
func (s *Server) Records() Records { return s.records }
