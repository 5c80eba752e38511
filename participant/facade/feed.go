package facade

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/fhir"
	"github.com/openqhin/openqhin/participant/store"
)

// The live feed: the EHR writes its records into the running participant.
// Every write is planned and checked whole, then applied in one transaction
// of the store and one step of the matcher (participant.Server.Apply), so a
// write with one bad entry changes nothing.

// xmlTypes are the media types of a C-CDA document posted to the base.
var xmlTypes = []string{"application/xml", "text/xml", "application/cda+xml", "application/hl7-cda+xml"}

// importer plans writes for this member.
func (s *Server) importer() (*fhir.Importer, error) {
	key, err := s.cfg.Local.IDKey()
	if err != nil {
		return nil, err
	}
	return &fhir.Importer{Sink: s.cfg.Local, ParticipantID: s.cfg.ParticipantID, MaxBundleSize: s.cfg.MaxBodyBytes, IDKey: key}, nil
}

// applyProblem maps a failed write.
func applyProblem(err error) error {
	switch {
	case errors.Is(err, participant.ErrUpstream):
		return &problem{status: http.StatusMethodNotAllowed, code: "not-supported", msg: participant.ErrUpstream.Error()}
	case errors.Is(err, store.ErrNotFound):
		return notFound("Patient", "the write names a patient this member does not hold; nothing was written")
	}
	return err
}

// transaction applies a transaction Bundle (or a C-CDA document) posted to
// the base, all or nothing.
func (s *Server) transaction(w http.ResponseWriter, r *http.Request, c *caller) error {
	body, mt, err := s.readBody(w, r, append(append([]string{}, fhirTypes...), xmlTypes...)...)
	if err != nil {
		return err
	}
	im, err := s.importer()
	if err != nil {
		return err
	}
	var plan *fhir.Plan
	if contains(xmlTypes, mt) {
		if plan, err = im.PlanCCDA(body); err != nil {
			return badRequest("ClinicalDocument", "C-CDA document: "+err.Error())
		}
	} else {
		if plan, err = im.PlanBundle(body); err != nil {
			return badRequest("Bundle", err.Error())
		}
		if plan.BundleType != "transaction" {
			return badRequest("Bundle.type", "Bundle.type: must be transaction: every write to this server is all or nothing (batch is not supported)")
		}
	}
	for _, e := range plan.Entries {
		if e.Type != "" && !c.allows(e.Type, true) {
			return forbidden("the bearer token's scopes do not allow writing " + e.Type)
		}
	}
	existed := map[string]bool{}
	for _, p := range plan.Batch.Patients {
		ok, err := s.cfg.Local.HasPatient(p.ID)
		if err != nil {
			return err
		}
		existed[p.ID] = ok
	}
	if err := s.cfg.Local.Apply(r.Context(), plan.Batch); err != nil {
		return applyProblem(err)
	}
	b := newBundle("transaction-response")
	for _, e := range plan.Entries {
		resp := &entryResponse{Status: "200 OK"}
		switch {
		case e.Delete:
			resp.Status = "204 No Content"
		case e.Type == "Patient":
			resp.Location = "Patient/" + e.ID
			if !existed[e.ID] {
				resp.Status = "201 Created"
			}
		case e.Type == "DocumentReference":
			resp.Location = "local/DocumentReference/" + e.ID
		}
		b.Entry = append(b.Entry, bundleEntry{Response: resp})
	}
	// How much was written, for importers: the transaction's entries do not
	// show the document that keeps a bundle's other resources.
	w.Header().Set("X-Patients-Written", fmt.Sprint(len(plan.Batch.Patients)))
	w.Header().Set("X-Documents-Written", fmt.Sprint(len(plan.Batch.Documents)))
	s.log.InfoContext(r.Context(), "fhir write", "kind", "transaction", "patients", len(plan.Batch.Patients),
		"deleted", len(plan.Batch.DeletePatients), "documents", len(plan.Batch.Documents))
	writeJSON(w, http.StatusOK, b)
	return nil
}

// putPatient creates or replaces one of the member's patients.
func (s *Server) putPatient(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.allows("Patient", true) {
		return forbidden("the bearer token's scopes do not allow writing Patient")
	}
	id := r.PathValue("id")
	if !fhir.IsID(id) {
		return badRequest("Patient.id", "Patient.id: the id in the URL must be a FHIR id (1-64 letters, digits, '-' and '.')")
	}
	body, _, err := s.readBody(w, r, fhirTypes...)
	if err != nil {
		return err
	}
	bodyID, d, err := fhir.ParsePatient(body)
	if err != nil {
		return badRequest("Patient", err.Error())
	}
	if bodyID != "" && bodyID != id {
		return badRequest("Patient.id", "Patient.id: must equal the id in the URL")
	}
	existed, err := s.cfg.Local.HasPatient(id)
	if err != nil {
		return err
	}
	if err := s.cfg.Local.Apply(r.Context(), store.Batch{Patients: []store.Patient{{ID: id, Demographics: d}}}); err != nil {
		return applyProblem(err)
	}
	s.log.InfoContext(r.Context(), "fhir write", "kind", "put patient", "patient", id)
	status := http.StatusOK
	if !existed {
		status = http.StatusCreated
		w.Header().Set("Location", s.base(r)+"/local/Patient/"+id)
	}
	writeJSON(w, status, patientOf(id, d))
	return nil
}

// deletePatient removes one of the member's patients with their documents.
func (s *Server) deletePatient(w http.ResponseWriter, r *http.Request, c *caller) error {
	if !c.allows("Patient", true) {
		return forbidden("the bearer token's scopes do not allow writing Patient")
	}
	id := r.PathValue("id")
	if !fhir.IsID(id) {
		return notFound("Patient.id", "Patient.id: no such patient at this member")
	}
	if err := s.cfg.Local.Apply(r.Context(), store.Batch{DeletePatients: []string{id}}); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("Patient.id", "Patient.id: no such patient at this member")
		}
		return applyProblem(err)
	}
	s.log.InfoContext(r.Context(), "fhir write", "kind", "delete patient", "patient", id)
	writeJSON(w, http.StatusOK, outcome(issue{Severity: "information", Code: "informational", Diagnostics: "the patient and their documents were deleted"}))
	return nil
}
