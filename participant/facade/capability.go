package facade

import (
	"net/http"
	"time"
)

type capSearchParam struct {
	Name          string `json:"name"`
	Type          string `json:"type"`
	Documentation string `json:"documentation,omitempty"`
}

type capInteraction struct {
	Code          string `json:"code"`
	Documentation string `json:"documentation,omitempty"`
}

type capOperation struct {
	Name       string `json:"name"`
	Definition string `json:"definition"`
}

type capResource struct {
	Type              string           `json:"type"`
	Interaction       []capInteraction `json:"interaction"`
	SearchParam       []capSearchParam `json:"searchParam,omitempty"`
	Operation         []capOperation   `json:"operation,omitempty"`
	Documentation     string           `json:"documentation,omitempty"`
	UpdateCreate      *bool            `json:"updateCreate,omitempty"`
	ConditionalDelete string           `json:"conditionalDelete,omitempty"`
}

type capRest struct {
	Mode          string           `json:"mode"`
	Documentation string           `json:"documentation,omitempty"`
	Security      *capSecurity     `json:"security,omitempty"`
	Resource      []capResource    `json:"resource"`
	Interaction   []capInteraction `json:"interaction,omitempty"`
}

type capSecurity struct {
	Service     []codeableConcept `json:"service,omitempty"`
	Description string            `json:"description,omitempty"`
}

type capabilityStatement struct {
	ResourceType   string    `json:"resourceType"`
	Status         string    `json:"status"`
	Date           string    `json:"date"`
	Publisher      string    `json:"publisher,omitempty"`
	Kind           string    `json:"kind"`
	Software       *capSoft  `json:"software,omitempty"`
	Implementation *capImpl  `json:"implementation,omitempty"`
	FhirVersion    string    `json:"fhirVersion"`
	Format         []string  `json:"format"`
	Rest           []capRest `json:"rest"`
}

type capSoft struct {
	Name string `json:"name"`
}

type capImpl struct {
	Description string `json:"description"`
	URL         string `json:"url,omitempty"`
}

var (
	patientSearch = []capSearchParam{
		{Name: "family", Type: "string"}, {Name: "given", Type: "string", Documentation: "repeat for several given names"},
		{Name: "birthdate", Type: "date", Documentation: "an exact date (eq)"}, {Name: "gender", Type: "token"},
		{Name: "address-postalcode", Type: "string"}, {Name: "address-city", Type: "string"}, {Name: "address-state", Type: "string"},
		{Name: "phone", Type: "token"}, {Name: "identifier", Type: "token"},
		{Name: "_count", Type: "number", Documentation: "at most this many persons"},
	}
	documentSearch = []capSearchParam{
		{Name: "patient", Type: "reference", Documentation: "required"},
		{Name: "type", Type: "token", Documentation: "LOINC document type codes"},
		{Name: "date", Type: "date", Documentation: "ge, gt, le, lt, eq"},
		{Name: "category", Type: "token", Documentation: "every document is a clinical-note"},
		{Name: "_count", Type: "number", Documentation: "page size; the Bundle's next link pages on"},
	}
	matchOp = []capOperation{{Name: "match", Definition: "http://hl7.org/fhir/OperationDefinition/Patient-match"}}
)

// capabilities answers GET /metadata (local: GET /local/metadata) with
// exactly what this facade serves.
func (s *Server) capabilities(local bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		base := s.base(r)
		cs := &capabilityStatement{
			ResourceType: "CapabilityStatement", Status: "active", Date: time.Now().UTC().Format("2006-01-02"),
			Publisher: "OpenQHIN", Kind: "instance", Software: &capSoft{Name: "OpenQHIN participant"},
			FhirVersion: "4.0.1", Format: []string{"json"},
		}
		rest := capRest{Mode: "server"}
		if s.verifier != nil {
			rest.Security = &capSecurity{
				Service:     []codeableConcept{{Coding: []coding{{System: "http://terminology.hl7.org/CodeSystem/restful-security-service", Code: "SMART-on-FHIR"}}}},
				Description: "SMART Backend Services: a bearer JWT signed by a key of the configured JWKS, with iss, aud, exp, sub and purpose_of_use (or the hl7-b2b extension)",
			}
		}
		if local {
			cs.Implementation = &capImpl{Description: "participant " + s.cfg.ParticipantID + ": the member's own records, as it answers the network", URL: base + "/local"}
			rest.Documentation = "Read-only. Ids are the member's own."
			rest.Resource = []capResource{
				{Type: "Patient", Interaction: []capInteraction{{Code: "read"}, {Code: "search-type"}}, SearchParam: patientSearch, Operation: matchOp},
				{Type: "DocumentReference", Interaction: []capInteraction{{Code: "read"}, {Code: "search-type"}}, SearchParam: documentSearch},
				{Type: "Binary", Interaction: []capInteraction{{Code: "read", Documentation: "the document's bytes, or a Binary resource under Accept: application/fhir+json"}}},
			}
		} else {
			cs.Implementation = &capImpl{Description: "participant " + s.cfg.ParticipantID + ": the network, through this member", URL: base}
			rest.Documentation = "Searches and reads go to the network with the purpose of use (X-Purpose-Of-Use) and end user (X-Requester-Id) of each request. Ids of what the network found are this server's and expire. Writes (update, delete, transaction) change this member's own records."
			var res []capResource
			if s.cfg.Gateway != nil {
				res = []capResource{
					{Type: "Patient", Interaction: []capInteraction{{Code: "read"}, {Code: "search-type"}}, SearchParam: patientSearch, Operation: matchOp},
					{Type: "DocumentReference", Interaction: []capInteraction{{Code: "read"}, {Code: "search-type"}}, SearchParam: documentSearch},
					{Type: "Binary", Interaction: []capInteraction{{Code: "read", Documentation: "the document's bytes, or a Binary resource under Accept: application/fhir+json"}}},
				}
			}
			if s.cfg.Local != nil {
				yes := true
				if len(res) == 0 {
					res = append(res, capResource{Type: "Patient"})
				}
				res[0].Interaction = append(res[0].Interaction, capInteraction{Code: "update", Documentation: "this member's patient"}, capInteraction{Code: "delete", Documentation: "this member's patient, with their documents"})
				res[0].UpdateCreate = &yes
				res[0].ConditionalDelete = "not-supported"
				rest.Interaction = []capInteraction{{Code: "transaction", Documentation: "Patient, DocumentReference and Binary (other resources are kept as one document of the first Patient); or a C-CDA R2.1 document (Content-Type: application/xml). All or nothing."}}
			}
			rest.Resource = res
		}
		cs.Rest = []capRest{rest}
		writeJSON(w, http.StatusOK, cs)
	}
}
