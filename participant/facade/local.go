package facade

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/openqhin/openqhin/participant/fhir"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The /local base serves the member's own records (its store, or its
// upstream FHIR server) as a FHIR server: the answers the member gives the
// network, for its own EHR to check, and for another participant to use as
// its upstream. Ids here are the member's own.

// localProblem maps an error of the member's records.
func localProblem(ctx context.Context, err error, what string) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound(what, what+": no such resource at this member")
	case errors.Is(err, store.ErrChanged):
		return &problem{status: http.StatusConflict, code: "conflict", msg: "the document changed while it was read; retry"}
	case ctx.Err() != nil:
		return &problem{status: http.StatusGatewayTimeout, code: "timeout", msg: "the member's records did not answer in time"}
	}
	return fmt.Errorf("local %s: %w", what, err)
}

func (s *Server) localSearchPatients(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.allows("Patient", false) {
		return forbidden("the bearer token's scopes do not allow reading Patient")
	}
	q, err := newSearch(r, patientParams...)
	if err != nil {
		return err
	}
	d, err := demographicsOf(q)
	if err != nil {
		return err
	}
	count, err := q.count(DefaultCount)
	if err != nil {
		return err
	}
	return s.localMatch(w, r, d, false, count, q.selfURL(s.base(r), "/local/Patient"))
}

func (s *Server) localMatchPatients(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.allows("Patient", false) {
		return forbidden("the bearer token's scopes do not allow reading Patient")
	}
	body, _, err := s.readBody(w, r, fhirTypes...)
	if err != nil {
		return err
	}
	d, onlyCertain, count, err := matchRequest(body)
	if err != nil {
		return err
	}
	if count == 0 {
		count = DefaultCount
	}
	return s.localMatch(w, r, d, onlyCertain, count, s.base(r)+"/local/Patient/$match")
}

// localMatch answers with the member's patients that may be the person d
// describes, scored by its matcher.
func (s *Server) localMatch(w http.ResponseWriter, r *http.Request, d *qhinv1.Demographics, onlyCertain bool, count int, self string) error {
	if err := match.Validate(d); err != nil {
		return badRequest("", err.Error())
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
	defer cancel()
	cands, err := s.cfg.Local.Records().Discover(ctx, d, match.DefaultThreshold, min(count, MaxCount))
	if err != nil {
		return localProblem(ctx, err, "Patient")
	}
	base := s.base(r)
	b := newBundle("searchset")
	b.Link = []bundleLink{{Relation: "self", URL: self}}
	for _, cand := range cands {
		grade := gradeOfCandidate(cand)
		if onlyCertain && grade != "certain" {
			continue
		}
		score := cand.Score
		b.Entry = append(b.Entry, bundleEntry{
			FullURL: base + "/local/Patient/" + cand.PatientId, Resource: patientOf(cand.PatientId, cand.Demographics),
			Search: &entrySearch{Mode: "match", Score: &score, Extension: []extension{{URL: matchGradeURL, ValueCode: grade}}},
		})
	}
	total := len(b.Entry)
	b.Total = &total
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) localReadPatient(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.allows("Patient", false) {
		return forbidden("the bearer token's scopes do not allow reading Patient")
	}
	id := r.PathValue("id")
	d, err := s.cfg.Local.Records().Patient(r.Context(), id)
	if err != nil {
		return localProblem(r.Context(), err, "Patient.id")
	}
	writeJSON(w, http.StatusOK, patientOf(id, d))
	return nil
}

func (s *Server) localSearchDocuments(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.allows("DocumentReference", false) {
		return forbidden("the bearer token's scopes do not allow reading DocumentReference")
	}
	q, err := newSearch(r, "patient", "subject", "type", "date", "category", "_count", "_offset")
	if err != nil {
		return err
	}
	count, err := q.count(DefaultCount)
	if err != nil {
		return err
	}
	offset, err := offsetOf(q)
	if err != nil {
		return err
	}
	var ids []string
	for _, t := range append(q.tokens("patient"), q.tokens("subject")...) {
		id := t.code
		if len(id) > len("Patient/") && id[:len("Patient/")] == "Patient/" {
			id = id[len("Patient/"):]
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return badRequest("patient", "patient: required: the id of one of this member's patients")
	}
	f, none, err := q.documentFilter()
	if err != nil {
		return err
	}
	var docs []*qhinv1.DocumentMetadata
	if !none {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
		defer cancel()
		if docs, err = s.cfg.Local.Records().Documents(ctx, ids, f); err != nil {
			return localProblem(ctx, err, "DocumentReference")
		}
	}
	base := s.base(r)
	total := len(docs)
	b := newBundle("searchset")
	b.Total = &total
	self := q.selfURL(base, "/local/DocumentReference")
	b.Link = []bundleLink{{Relation: "self", URL: self}}
	if offset+count < total {
		next := q.used
		next.Set("_offset", strconv.Itoa(offset+count))
		next.Set("_count", strconv.Itoa(count))
		b.Link = append(b.Link, bundleLink{Relation: "next", URL: base + "/local/DocumentReference?" + next.Encode()})
	}
	for i := offset; i < min(total, offset+count); i++ {
		m := docs[i]
		b.Entry = append(b.Entry, bundleEntry{
			FullURL:  base + "/local/DocumentReference/" + m.Id,
			Resource: documentOf(m.Id, m, "Patient/"+m.GetPatient().GetPatientId(), base+"/local/Binary/"+m.Id),
			Search:   &entrySearch{Mode: "match"},
		})
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) localReadDocument(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.allows("DocumentReference", false) {
		return forbidden("the bearer token's scopes do not allow reading DocumentReference")
	}
	id := r.PathValue("id")
	m, err := localDocument(r.Context(), s.cfg.Local, id)
	if err != nil {
		return localProblem(r.Context(), err, "DocumentReference.id")
	}
	base := s.base(r)
	writeJSON(w, http.StatusOK, documentOf(m.Id, m, "Patient/"+m.GetPatient().GetPatientId(), base+"/local/Binary/"+m.Id))
	return nil
}

// localReadBinary streams one of the member's documents. The store reads it
// in short transactions of a few chunks, so memory stays flat whatever its
// size.
func (s *Server) localReadBinary(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.allows("Binary", false) {
		return forbidden("the bearer token's scopes do not allow reading Binary")
	}
	id := r.PathValue("id")
	if !fhir.IsID(id) {
		return notFound("Binary.id", "Binary.id: no such resource at this member")
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RetrieveTimeout)
	defer cancel()
	// The store holds no transaction while these callbacks run.
	var out *binaryOut
	err := s.cfg.Local.Records().StreamDocument(ctx, id,
		func(m *qhinv1.DocumentMetadata) error {
			var err error
			out, err = startBinary(w, r, id, m)
			return err
		},
		func(b []byte) error { return out.write(b) })
	if err == nil && out != nil {
		err = out.finish()
	}
	switch {
	case out == nil && err != nil:
		return localProblem(ctx, err, "Binary.id")
	case err != nil:
		s.log.WarnContext(ctx, "fhir local binary cut short", "document", id, "bytes", out.n)
		panic(http.ErrAbortHandler)
	}
	return nil
}
