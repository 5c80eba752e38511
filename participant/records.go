package participant

import (
	"context"
	"errors"
	"fmt"

	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Records is where a participant's answers come from: its own store and
// matcher, or an existing FHIR server (participant/upstream). The Responder
// answers the brokers from it, and the FHIR facade's /local base serves it
// to the member's own EHR.
//
// Errors: store.ErrNotFound for a patient or document the records do not
// hold, store.ErrChanged for a document replaced while it streamed; any
// other error is the records' failure (mapped to Internal or Unavailable).
type Records interface {
	// Discover returns the patients that may be the person d describes,
	// best first, with a score of at least threshold, at most limit.
	Discover(ctx context.Context, d *qhinv1.Demographics, threshold float64, limit int) ([]*qhinv1.Candidate, error)
	// Patient returns one patient's demographics.
	Patient(ctx context.Context, id string) (*qhinv1.Demographics, error)
	// Documents lists the documents of the patients that pass f.
	Documents(ctx context.Context, patientIDs []string, f store.Filter) ([]*qhinv1.DocumentMetadata, error)
	// StreamDocument calls header with a document's metadata (its size and
	// SHA-256 exact), then chunk with its content in order.
	StreamDocument(ctx context.Context, id string, header func(*qhinv1.DocumentMetadata) error, chunk func([]byte) error) error
}

// ErrUpstream is returned for a write to a participant that answers from an
// upstream FHIR server: its records are written there.
var ErrUpstream = errors.New("this participant answers from an upstream FHIR server; write records there")

// localRecords answers from the participant's store and matcher.
type localRecords struct {
	store *store.Store
	index *match.Index
	// confirmed, when set, is told of every candidate the matcher
	// decided is the person (the record locator records the query's
	// tokens for it).
	confirmed func(id string, q match.Record, pair match.Pair)
}

func (l localRecords) Discover(ctx context.Context, d *qhinv1.Demographics, threshold float64, limit int) ([]*qhinv1.Candidate, error) {
	var out []*qhinv1.Candidate
	q := match.Normalize(d)
	for _, m := range l.index.Search(q, threshold, limit) {
		pd, err := l.store.Patient(m.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue // removed since it was indexed
		}
		if err != nil {
			return nil, fmt.Errorf("read a matched patient: %w", err)
		}
		out = append(out, &qhinv1.Candidate{PatientId: m.ID, Demographics: pd, Score: m.Score, Explanation: m.Pair.Explanation()})
		if l.confirmed != nil && m.Pair.Decision == match.Match {
			l.confirmed(m.ID, q, m.Pair)
		}
	}
	return out, nil
}

func (l localRecords) Patient(_ context.Context, id string) (*qhinv1.Demographics, error) {
	return l.store.Patient(id)
}

func (l localRecords) Documents(_ context.Context, patientIDs []string, f store.Filter) ([]*qhinv1.DocumentMetadata, error) {
	return l.store.Documents(patientIDs, f)
}

func (l localRecords) StreamDocument(ctx context.Context, id string, header func(*qhinv1.DocumentMetadata) error, chunk func([]byte) error) error {
	return l.store.StreamDocument(ctx, id, header, chunk)
}

// ErrUnreachable is wrapped by Records errors of a source that could not be
// reached (an upstream FHIR server down or too slow).
var ErrUnreachable = errors.New("records server unreachable")
