package fhir

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/participant/ccda"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// CCDAContentType is the content type a C-CDA document is kept and served
// with (IHE XDS's for CDA documents).
const CCDAContentType = "text/xml"

// PlanCCDA reads a C-CDA R2.1 document and works out what it writes: its
// patient (created or replaced from recordTarget) and the document itself,
// whole, as a document of that patient. Both ids are derived from the
// document's identifiers with the Importer's IDKey (an HMAC), so importing
// the same document again replaces it, a later document of the same patient
// joins the same local patient, and the ids reveal nothing of the MRN or
// SSN they come from.
func (im *Importer) PlanCCDA(data []byte) (*Plan, error) {
	if len(im.IDKey) == 0 {
		return nil, errors.New("C-CDA import needs the store's id key")
	}
	doc, err := ccda.Parse(data)
	if err != nil {
		return nil, err
	}
	pid := im.derivedID("patient", doc.PatientIDs[0])
	docID := im.derivedID("document", doc.ID)
	created := unknownTime
	if !doc.Effective.IsZero() {
		created = doc.Effective
	}
	title := firstNonEmpty(doc.Title, doc.TypeDisplay, "C-CDA document")
	p := &Plan{
		Batch: store.Batch{
			Patients: []store.Patient{{ID: pid, Demographics: doc.Patient}},
			Documents: []store.NewDocument{{
				Meta: &qhinv1.DocumentMetadata{
					Id:                  docID,
					Patient:             &qhinv1.PatientLink{ParticipantId: im.ParticipantID, PatientId: pid},
					TypeCode:            doc.TypeCode,
					TypeDisplay:         doc.TypeDisplay,
					Title:               title,
					Created:             timestamppb.New(created),
					ContentType:         CCDAContentType,
					SourceParticipantId: im.ParticipantID,
				},
				Content: data,
			}},
		},
		Entries: []PlannedEntry{{Type: "Patient", ID: pid}, {Type: "DocumentReference", ID: docID}},
	}
	return p, nil
}

// derivedID is a local id for an HL7 instance identifier: "cda-" and 24 hex
// digits of an HMAC-SHA256 under the store's key.
func (im *Importer) derivedID(kind string, id ccda.InstanceID) string {
	m := hmac.New(sha256.New, im.IDKey)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(id.Root))
	m.Write([]byte{0})
	m.Write([]byte(id.Extension))
	return "cda-" + hex.EncodeToString(m.Sum(nil))[:24]
}
