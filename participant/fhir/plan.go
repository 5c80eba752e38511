package fhir

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Bundle documents: the whole bundle kept as one FHIR document per patient.
const (
	bundleDocPrefix      = "bundle-"
	bundleDocTypeCode    = "60591-5" // LOINC: Patient summary Document
	bundleDocTypeDisplay = "Patient summary Document"
	bundleDocContentType = "application/fhir+json"
	defaultContentType   = "application/octet-stream"
)

// unknownTime is the creation time of a document when the bundle records
// none. It is fixed so that importing again writes the same metadata.
var unknownTime = time.Unix(0, 0).UTC()

// Plan is everything one bundle (or C-CDA document) writes, worked out and
// checked before the first write.
type Plan struct {
	// BundleType is the Bundle's type (transaction, collection, …); empty
	// for a C-CDA document.
	BundleType string
	// Batch holds every write, for one transaction.
	Batch store.Batch
	// Entries describe the bundle's entries in order, for a transaction's
	// response.
	Entries []PlannedEntry
}

// PlannedEntry is what the plan does with one entry of a bundle.
type PlannedEntry struct {
	// Index is the entry's position in Bundle.entry.
	Index int
	// Type is the resource type; ID the id it is stored under (Patient,
	// DocumentReference) or deleted by; empty for resources kept in the
	// bundle document or read as a document's content (Binary).
	Type, ID string
	// Delete is set for a DELETE request.
	Delete bool
}

type plannedPatient = store.Patient

type plannedDocument = store.NewDocument

// bundleIndex finds entries by the references other entries make to them.
type bundleIndex struct {
	entries []entry
	byURL   map[string]int // fullUrl → entry
	byID    map[string]int // "Type/id" → entry
}

func newBundleIndex(entries []entry) *bundleIndex {
	ix := &bundleIndex{entries: entries, byURL: map[string]int{}, byID: map[string]int{}}
	for i, e := range entries {
		if e.fullURL != "" {
			ix.byURL[e.fullURL] = i
		}
		if e.id != "" {
			ix.byID[e.typ+"/"+e.id] = i
		}
	}
	return ix
}

// resolve finds the entry of type typ that ref points at: by fullUrl
// ("urn:uuid:…"), or by a relative or absolute "Type/id" URL, with or without
// a "/_history/n" suffix.
func (ix *bundleIndex) resolve(ref, typ string) (entry, bool) {
	if i, ok := ix.byURL[ref]; ok && ix.entries[i].typ == typ {
		return ix.entries[i], true
	}
	parts := strings.Split(ref, "/")
	if n := len(parts); n >= 4 && parts[n-2] == "_history" {
		parts = parts[:n-2]
	}
	if n := len(parts); n >= 2 && parts[n-2] == typ {
		if i, ok := ix.byID[typ+"/"+parts[n-1]]; ok {
			return ix.entries[i], true
		}
	}
	return entry{}, false
}

// PlanBundle decodes and checks a bundle and works out what it writes,
// without writing anything. A DocumentReference's subject is a Patient of
// the bundle or, by a relative reference ("Patient/ID"), one the Sink holds.
// Errors never hold PHI.
func (im *Importer) PlanBundle(data []byte) (*Plan, error) {
	bundleType, entries, err := decodeBundle(data)
	if err != nil {
		return nil, err
	}
	ix := newBundleIndex(entries)
	p := &Plan{BundleType: bundleType}
	patientIDs := map[string]bool{}
	patientOf := map[int]string{} // entry index → patient id
	others := false
	var (
		latest    time.Time // the latest time any resource records
		haveTimes bool
		first     = -1 // index in p.Batch.Patients of the bundle document's patient
	)
	for _, e := range entries {
		switch {
		case e.method == "DELETE":
			if e.typ != "Patient" || !fhirID.MatchString(e.id) {
				return nil, fmt.Errorf("entry[%d]: request.url: only a Patient can be deleted, as DELETE Patient/ID", e.index)
			}
			p.Batch.DeletePatients = append(p.Batch.DeletePatients, e.id)
			p.Entries = append(p.Entries, PlannedEntry{Index: e.index, Type: "Patient", ID: e.id, Delete: true})
			continue
		case e.method != "" && e.method != "POST" && e.method != "PUT":
			return nil, fmt.Errorf("entry[%d]: request.method: must be POST, PUT or DELETE", e.index)
		}
		pe := PlannedEntry{Index: e.index, Type: e.typ}
		switch e.typ {
		case "Patient":
			id, d, err := mapPatient(e)
			if err != nil {
				return nil, err
			}
			if e.method == "PUT" && e.url != "Patient/"+id {
				return nil, fmt.Errorf("entry[%d]: request.url: a PUT must name the Patient's own id (Patient/ID)", e.index)
			}
			if patientIDs[id] {
				return nil, fmt.Errorf("entry[%d]: a second Patient with id %s", e.index, id)
			}
			patientIDs[id] = true
			patientOf[e.index] = id
			if first < 0 {
				first = len(p.Batch.Patients)
			}
			p.Batch.Patients = append(p.Batch.Patients, plannedPatient{ID: id, Demographics: d})
			pe.ID = id
		case "DocumentReference", "Binary":
		default:
			others = true
		}
		p.Entries = append(p.Entries, pe)
		if e.hasTime && (!haveTimes || e.latest.After(latest)) {
			latest, haveTimes = e.latest, true
		}
	}
	docIDs := map[string]bool{}
	addDoc := func(d plannedDocument) error {
		if docIDs[d.Meta.Id] {
			return fmt.Errorf("two documents with id %s", d.Meta.Id)
		}
		docIDs[d.Meta.Id] = true
		p.Batch.Documents = append(p.Batch.Documents, d)
		return nil
	}
	for i, e := range entries {
		if e.typ != "DocumentReference" || e.method == "DELETE" {
			continue
		}
		d, err := im.mapDocumentReference(ix, patientOf, e)
		if err != nil {
			return nil, err
		}
		if err := addDoc(d); err != nil {
			return nil, err
		}
		for j := range p.Entries {
			if p.Entries[j].Index == entries[i].index {
				p.Entries[j].ID = d.Meta.Id
			}
		}
	}
	if others {
		if first < 0 {
			return nil, ErrNoPatient
		}
		// The bundle document goes to the first Patient. Synthea writes one
		// Patient per bundle; in a bundle of several, this one document
		// holds every patient's resources and is disclosed as the first's.
		pid := p.Batch.Patients[first].ID
		if !haveTimes {
			latest = unknownTime
		}
		d := plannedDocument{
			Meta: &qhinv1.DocumentMetadata{
				Id:                  bundleDocPrefix + pid,
				Patient:             &qhinv1.PatientLink{ParticipantId: im.ParticipantID, PatientId: pid},
				TypeCode:            bundleDocTypeCode,
				TypeDisplay:         bundleDocTypeDisplay,
				Title:               fmt.Sprintf("FHIR bundle (%d resources)", len(entries)),
				Created:             timestamppb.New(latest),
				ContentType:         bundleDocContentType,
				SourceParticipantId: im.ParticipantID,
			},
			Content: data,
		}
		if err := addDoc(d); err != nil {
			return nil, err
		}
	}
	if p.Batch.Empty() {
		return nil, ErrNoPatient
	}
	return p, nil
}

// fhirID is the form of a FHIR resource id.
var fhirID = regexp.MustCompile(`^[A-Za-z0-9.\-]{1,64}$`)

func mapPatient(e entry) (string, *qhinv1.Demographics, error) {
	id, d, err := parsePatient(e.raw, fmt.Sprintf("entry[%d] (Patient)", e.index))
	if err != nil {
		return "", nil, err
	}
	if id == "" {
		id = strings.TrimPrefix(e.fullURL, "urn:uuid:")
	}
	if !fhirID.MatchString(id) {
		return "", nil, fmt.Errorf("entry[%d]: Patient has no valid id", e.index)
	}
	return id, d, nil
}

// ParsePatient reads a FHIR R4 Patient resource into demographics, and
// returns its id (empty when it has none; not checked). Errors name the
// field and the rule, never a value.
func ParsePatient(raw []byte) (id string, d *qhinv1.Demographics, err error) {
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return "", nil, jsonProblem("Patient", err)
	}
	if head.ResourceType != "Patient" {
		return "", nil, fmt.Errorf("resourceType: must be Patient")
	}
	return parsePatient(raw, "Patient")
}

// IsID reports whether s has the form of a FHIR resource id.
func IsID(s string) bool { return fhirID.MatchString(s) }

func parsePatient(raw []byte, where string) (string, *qhinv1.Demographics, error) {
	var r patientResource
	if err := json.Unmarshal(raw, &r); err != nil {
		return "", nil, jsonProblem(where, err)
	}
	id := r.ID
	d := &qhinv1.Demographics{BirthDate: r.BirthDate, Gender: r.Gender}
	if d.BirthDate != "" {
		if _, ok := parseDate(d.BirthDate); !ok {
			return "", nil, fmt.Errorf("%s: birthDate is not a FHIR date", where)
		}
	}
	switch d.Gender {
	case "", "male", "female", "other", "unknown":
	default:
		return "", nil, fmt.Errorf("%s: gender is not a FHIR administrative gender", where)
	}
	if n := pickName(r.Name); n != nil {
		var given []string
		for _, g := range n.Given {
			if g = cleanName(g); g != "" {
				given = append(given, g)
			}
		}
		d.Given = strings.Join(given, " ")
		d.Family = cleanName(n.Family)
	}
	if len(r.Address) > 0 {
		a := r.Address[0]
		d.Address = &qhinv1.Address{Lines: a.Line, City: a.City, State: a.State, PostalCode: a.PostalCode, Country: a.Country}
	}
	for _, t := range r.Telecom {
		if t.System == "phone" && t.Value != "" {
			d.Phone = t.Value
			break
		}
	}
	for _, idf := range r.Identifier {
		if idf.Value == "" {
			continue
		}
		var typ string
		if len(idf.Type.Coding) > 0 {
			typ = idf.Type.Coding[0].Code
		}
		d.Identifiers = append(d.Identifiers, &qhinv1.Identifier{System: idf.System, Value: idf.Value, Type: typ})
	}
	return id, d, nil
}

// parseDate reads a FHIR date: YYYY, YYYY-MM or YYYY-MM-DD.
func parseDate(s string) (time.Time, bool) {
	for _, layout := range []string{"2006-01-02", "2006-01", "2006"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// pickName returns the official name, else the first.
func pickName(names []humanName) *humanName {
	for i := range names {
		if names[i].Use == "official" {
			return &names[i]
		}
	}
	if len(names) > 0 {
		return &names[0]
	}
	return nil
}

// cleanName removes the digits Synthea appends to names ("Agustín352").
func cleanName(s string) string {
	return strings.TrimSpace(strings.TrimRight(strings.TrimSpace(s), "0123456789"))
}

func (im *Importer) mapDocumentReference(ix *bundleIndex, patientOf map[int]string, e entry) (plannedDocument, error) {
	where := fmt.Sprintf("entry[%d] (DocumentReference)", e.index)
	var r documentReference
	if err := json.Unmarshal(e.raw, &r); err != nil {
		return plannedDocument{}, jsonProblem(where, err)
	}
	if !fhirID.MatchString(r.ID) {
		return plannedDocument{}, fmt.Errorf("%s: no valid id", where)
	}
	where = "DocumentReference " + r.ID
	var pid string
	if subject, ok := ix.resolve(r.Subject.Reference, "Patient"); ok {
		pid = patientOf[subject.index]
	} else {
		id, ok := strings.CutPrefix(r.Subject.Reference, "Patient/")
		known := false
		if ok && fhirID.MatchString(id) && im.Sink != nil {
			var err error
			if known, err = im.Sink.HasPatient(id); err != nil {
				return plannedDocument{}, fmt.Errorf("%s: look up its subject: %w", where, err)
			}
		}
		if !known {
			return plannedDocument{}, fmt.Errorf("%s: subject: references neither a Patient in this bundle nor one this member holds", where)
		}
		pid = id
	}
	if len(r.Content) == 0 {
		return plannedDocument{}, fmt.Errorf("%s: no content", where)
	}
	att := r.Content[0].Attachment
	created := unknownTime
	switch {
	case r.Date != "":
		t, ok := parseTime(r.Date)
		if !ok {
			return plannedDocument{}, fmt.Errorf("%s: date is not a FHIR instant", where)
		}
		created = t
	default:
		for _, s := range []string{att.Creation, r.Meta.LastUpdated} {
			if t, ok := parseTime(s); ok {
				created = t
				break
			}
		}
	}
	contentType := att.ContentType
	var data string
	switch {
	case att.Data != nil:
		data = *att.Data
	case att.URL != "":
		bin, ok := ix.resolve(att.URL, "Binary")
		if !ok {
			return plannedDocument{}, fmt.Errorf("%s: attachment url references no Binary in this bundle", where)
		}
		var b binaryResource
		if err := json.Unmarshal(bin.raw, &b); err != nil {
			return plannedDocument{}, jsonProblem(fmt.Sprintf("entry[%d] (Binary)", bin.index), err)
		}
		if b.Data == nil {
			return plannedDocument{}, fmt.Errorf("%s: its Binary (entry[%d]) has no data", where, bin.index)
		}
		if b.ContentType == "" {
			return plannedDocument{}, fmt.Errorf("%s: its Binary (entry[%d]) has no contentType (required)", where, bin.index)
		}
		data = *b.Data
		contentType = b.ContentType
	default:
		return plannedDocument{}, fmt.Errorf("%s: attachment has neither data nor url", where)
	}
	content, err := base64.StdEncoding.DecodeString(data)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return plannedDocument{}, fmt.Errorf("%s: attachment data is not valid base64 (at byte %d)", where, int64(ce))
		}
		return plannedDocument{}, fmt.Errorf("%s: attachment data is not valid base64", where)
	}
	if contentType == "" {
		contentType = defaultContentType
	}
	var typeCode, typeDisplay string
	if len(r.Type.Coding) > 0 {
		typeCode, typeDisplay = r.Type.Coding[0].Code, r.Type.Coding[0].Display
	}
	if typeDisplay == "" {
		typeDisplay = r.Type.Text
	}
	title := firstNonEmpty(r.Description, r.Type.Text, typeDisplay, att.Title, "Document")
	labels, err := securityLabels(r)
	if err != nil {
		return plannedDocument{}, fmt.Errorf("%s: %w", where, err)
	}
	return plannedDocument{
		Meta: &qhinv1.DocumentMetadata{
			Id:                  r.ID,
			Patient:             &qhinv1.PatientLink{ParticipantId: im.ParticipantID, PatientId: pid},
			TypeCode:            typeCode,
			TypeDisplay:         typeDisplay,
			Title:               title,
			Created:             timestamppb.New(created),
			ContentType:         contentType,
			SourceParticipantId: im.ParticipantID,
			SecurityLabels:      labels,
		},
		Content: content,
	}, nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// MaxSecurityLabels caps the security labels of one document.
const MaxSecurityLabels = 16

// securityLabel is a security label code: letters, digits, '-' and '_'.
var securityLabel = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// securityLabels reads a DocumentReference's security labels, from
// meta.security and securityLabel, each code once in order. Every code
// counts, whatever its system: a member's policy withholds a document whose
// labels it does not allow, so an unknown label fails closed.
func securityLabels(r documentReference) ([]string, error) {
	codings := r.Meta.Security
	for _, c := range r.SecurityLabel {
		codings = append(codings, c.Coding...)
	}
	var out []string
	for i, c := range codings {
		if !securityLabel.MatchString(c.Code) {
			return nil, fmt.Errorf("security label %d: code must be 1 to 32 letters, digits, '-' or '_'", i+1)
		}
		if !slices.Contains(out, c.Code) {
			out = append(out, c.Code)
		}
	}
	if len(out) > MaxSecurityLabels {
		return nil, fmt.Errorf("security labels: at most %d", MaxSecurityLabels)
	}
	return out, nil
}
