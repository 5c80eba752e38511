package facade

import (
	"strings"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// FHIR R4 resources as the facade writes them: only the elements it sets.

type coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

type codeableConcept struct {
	Coding []coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

type extension struct {
	URL         string      `json:"url"`
	ValueCode   string      `json:"valueCode,omitempty"`
	ValueString string      `json:"valueString,omitempty"`
	ValueCoding *coding     `json:"valueCoding,omitempty"`
	Extension   []extension `json:"extension,omitempty"`
}

type identifier struct {
	Use    string           `json:"use,omitempty"`
	Type   *codeableConcept `json:"type,omitempty"`
	System string           `json:"system,omitempty"`
	Value  string           `json:"value,omitempty"`
}

type humanName struct {
	Use    string   `json:"use,omitempty"`
	Family string   `json:"family,omitempty"`
	Given  []string `json:"given,omitempty"`
}

type contactPoint struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value,omitempty"`
}

type address struct {
	Line       []string `json:"line,omitempty"`
	City       string   `json:"city,omitempty"`
	State      string   `json:"state,omitempty"`
	PostalCode string   `json:"postalCode,omitempty"`
	Country    string   `json:"country,omitempty"`
}

type reference struct {
	Reference string `json:"reference,omitempty"`
	Display   string `json:"display,omitempty"`
}

type patient struct {
	ResourceType string         `json:"resourceType"`
	ID           string         `json:"id,omitempty"`
	Identifier   []identifier   `json:"identifier,omitempty"`
	Name         []humanName    `json:"name,omitempty"`
	Telecom      []contactPoint `json:"telecom,omitempty"`
	Gender       string         `json:"gender,omitempty"`
	BirthDate    string         `json:"birthDate,omitempty"`
	Address      []address      `json:"address,omitempty"`
}

type attachment struct {
	Extension   []extension `json:"extension,omitempty"`
	ContentType string      `json:"contentType,omitempty"`
	URL         string      `json:"url,omitempty"`
	Size        int64       `json:"size,omitempty"`
	Title       string      `json:"title,omitempty"`
	Creation    string      `json:"creation,omitempty"`
}

type documentReference struct {
	ResourceType string            `json:"resourceType"`
	ID           string            `json:"id,omitempty"`
	Identifier   []identifier      `json:"identifier,omitempty"`
	Status       string            `json:"status"`
	Type         *codeableConcept  `json:"type,omitempty"`
	Category     []codeableConcept `json:"category,omitempty"`
	Subject      *reference        `json:"subject,omitempty"`
	Date         string            `json:"date,omitempty"`
	Custodian    *reference        `json:"custodian,omitempty"`
	Description  string            `json:"description,omitempty"`
	// SecurityLabel carries the document's security labels.
	SecurityLabel []codeableConcept `json:"securityLabel,omitempty"`
	Content       []struct {
		Attachment attachment `json:"attachment"`
	} `json:"content"`
}

type bundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type entrySearch struct {
	Extension []extension `json:"extension,omitempty"`
	Mode      string      `json:"mode,omitempty"`
	Score     *float64    `json:"score,omitempty"`
}

type entryResponse struct {
	Status   string `json:"status"`
	Location string `json:"location,omitempty"`
}

type bundleEntry struct {
	FullURL  string         `json:"fullUrl,omitempty"`
	Resource any            `json:"resource,omitempty"`
	Search   *entrySearch   `json:"search,omitempty"`
	Response *entryResponse `json:"response,omitempty"`
}

type bundle struct {
	ResourceType string        `json:"resourceType"`
	ID           string        `json:"id,omitempty"`
	Type         string        `json:"type"`
	Timestamp    string        `json:"timestamp,omitempty"`
	Total        *int          `json:"total,omitempty"`
	Link         []bundleLink  `json:"link,omitempty"`
	Entry        []bundleEntry `json:"entry,omitempty"`
}

func newBundle(typ string) *bundle {
	return &bundle{ResourceType: "Bundle", ID: newID(), Type: typ, Timestamp: time.Now().UTC().Format(time.RFC3339)}
}

// Systems and extensions the facade writes.
const (
	// matchGradeURL is the FHIR extension that grades a $match result:
	// certain, probable or possible.
	matchGradeURL = "http://hl7.org/fhir/StructureDefinition/match-grade"
	// alternateHashURL carries a document's SHA-256: Attachment.hash is
	// SHA-1 by definition in R4, and the network checks SHA-256.
	alternateHashURL = "http://hl7.org/fhir/StructureDefinition/alternate-hash"
	loincSystem      = "http://loinc.org"
	// categorySystem is US Core's DocumentReference category system; every
	// document the network holds is a clinical note.
	categorySystem = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
	categoryCode   = "clinical-note"
)

// patientOf renders demographics as a Patient.
func patientOf(id string, d *qhinv1.Demographics) *patient {
	p := &patient{ResourceType: "Patient", ID: id, Gender: d.GetGender(), BirthDate: d.GetBirthDate()}
	if d.GetGiven() != "" || d.GetFamily() != "" {
		p.Name = []humanName{{Use: "official", Family: d.GetFamily(), Given: strings.Fields(d.GetGiven())}}
	}
	if d.GetPhone() != "" {
		p.Telecom = []contactPoint{{System: "phone", Value: d.GetPhone()}}
	}
	if a := d.GetAddress(); a != nil {
		p.Address = []address{{Line: a.Lines, City: a.City, State: a.State, PostalCode: a.PostalCode, Country: a.Country}}
	}
	for _, idf := range d.GetIdentifiers() {
		i := identifier{System: idf.System, Value: idf.Value}
		if idf.Type != "" {
			i.Type = &codeableConcept{Coding: []coding{{System: "http://terminology.hl7.org/CodeSystem/v2-0203", Code: idf.Type}}}
		}
		p.Identifier = append(p.Identifier, i)
	}
	return p
}

// documentOf renders a document's metadata as a DocumentReference whose
// attachment points at binaryURL.
func documentOf(id string, m *qhinv1.DocumentMetadata, subject, binaryURL string) *documentReference {
	r := &documentReference{
		ResourceType: "DocumentReference", ID: id, Status: "current",
		Category:    []codeableConcept{{Coding: []coding{{System: categorySystem, Code: categoryCode, Display: "Clinical Note"}}}},
		Description: m.Title,
	}
	if m.TypeCode != "" || m.TypeDisplay != "" {
		r.Type = &codeableConcept{Text: m.TypeDisplay}
		if m.TypeCode != "" {
			r.Type.Coding = []coding{{System: loincSystem, Code: m.TypeCode, Display: m.TypeDisplay}}
		}
	}
	if subject != "" {
		r.Subject = &reference{Reference: subject}
	}
	if m.Created != nil {
		r.Date = m.Created.AsTime().UTC().Format(time.RFC3339)
	}
	if src := m.SourceParticipantId; src != "" {
		r.Custodian = &reference{Display: src}
	}
	for _, l := range m.SecurityLabels {
		r.SecurityLabel = append(r.SecurityLabel, codeableConcept{Coding: []coding{{System: labelSystem(l), Code: l}}})
	}
	att := attachment{ContentType: m.ContentType, URL: binaryURL, Size: m.Size, Title: m.Title}
	if att.ContentType == "" {
		att.ContentType = "application/octet-stream"
	}
	if m.Sha256 != "" {
		att.Extension = []extension{{URL: alternateHashURL, Extension: []extension{
			{URL: "algorithm", ValueCoding: &coding{System: "urn:ietf:rfc:3986", Code: "urn:oid:2.16.840.1.101.3.4.2.1", Display: "SHA-256"}},
			{URL: "hash", ValueString: m.Sha256},
		}}}
	}
	r.Content = append(r.Content, struct {
		Attachment attachment `json:"attachment"`
	}{att})
	return r
}

// labelSystem is the code system of a security label: HL7 v3
// Confidentiality for U, L, M, N, R and V, v3 ActCode (the sensitivity
// codes: ETH, HIV, PSY, SDV, ...) otherwise.
func labelSystem(code string) string {
	switch code {
	case "U", "L", "M", "N", "R", "V":
		return "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
	}
	return "http://terminology.hl7.org/CodeSystem/v3-ActCode"
}
