package audit

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// FHIR R4 AuditEvent, the parts an entry fills. Field names are FHIR's.
type (
	// AuditEvent is a FHIR R4 AuditEvent resource.
	AuditEvent struct {
		ResourceType   string            `json:"resourceType"`
		ID             string            `json:"id"`
		Extension      []Extension       `json:"extension,omitempty"`
		Type           Coding            `json:"type"`
		Subtype        []Coding          `json:"subtype,omitempty"`
		Action         string            `json:"action,omitempty"`
		Recorded       string            `json:"recorded"`
		Outcome        string            `json:"outcome"`
		OutcomeDesc    string            `json:"outcomeDesc,omitempty"`
		PurposeOfEvent []CodeableConcept `json:"purposeOfEvent,omitempty"`
		Agent          []Agent           `json:"agent"`
		Source         Source            `json:"source"`
		Entity         []Entity          `json:"entity,omitempty"`
	}
	// Coding is a FHIR Coding.
	Coding struct {
		System  string `json:"system,omitempty"`
		Code    string `json:"code"`
		Display string `json:"display,omitempty"`
	}
	// CodeableConcept is a FHIR CodeableConcept.
	CodeableConcept struct {
		Coding []Coding `json:"coding,omitempty"`
		Text   string   `json:"text,omitempty"`
	}
	// Identifier is a FHIR Identifier.
	Identifier struct {
		System string `json:"system,omitempty"`
		Value  string `json:"value"`
	}
	// Reference is a FHIR Reference by identifier.
	Reference struct {
		Identifier Identifier `json:"identifier"`
		Display    string     `json:"display,omitempty"`
	}
	// Agent is an AuditEvent.agent.
	Agent struct {
		Type      *CodeableConcept  `json:"type,omitempty"`
		Role      []CodeableConcept `json:"role,omitempty"`
		Who       Reference         `json:"who"`
		Requestor bool              `json:"requestor"`
	}
	// Source is an AuditEvent.source.
	Source struct {
		Observer Reference `json:"observer"`
		Type     []Coding  `json:"type,omitempty"`
	}
	// Entity is an AuditEvent.entity.
	Entity struct {
		What        *Reference `json:"what,omitempty"`
		Type        *Coding    `json:"type,omitempty"`
		Role        *Coding    `json:"role,omitempty"`
		Description string     `json:"description,omitempty"`
		Detail      []Detail   `json:"detail,omitempty"`
	}
	// Detail is an AuditEvent.entity.detail.
	Detail struct {
		Type        string `json:"type"`
		ValueString string `json:"valueString"`
	}
	// Extension is a FHIR extension with a string or integer value.
	Extension struct {
		URL          string `json:"url"`
		ValueString  string `json:"valueString,omitempty"`
		ValueInteger uint64 `json:"valueUnsignedInt,omitempty"`
	}
)

// Code systems the export uses.
const (
	systemDICOM       = "http://dicom.nema.org/resources/ontology/DCM"
	systemPurpose     = "urn:oid:2.16.840.1.113883.3.7204.1.5.2.1"
	systemActReason   = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
	systemEntityType  = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	systemObjectRole  = "http://terminology.hl7.org/CodeSystem/object-role"
	systemSourceType  = "http://terminology.hl7.org/CodeSystem/security-source-type"
	systemURI         = "urn:ietf:rfc:3986"
	systemAction      = "urn:openqhin:audit:action"
	systemParticipant = "urn:openqhin:participant"
	extensionBase     = "urn:openqhin:audit:"
)

// FHIR turns a ledger entry of node into a FHIR R4 AuditEvent. The hash
// chain travels in extensions (seq, prev-hash, hash), so an exported ledger
// can be checked without the node.
func FHIR(node string, e *qhinv1.AuditEntry) AuditEvent {
	ev := AuditEvent{
		ResourceType: "AuditEvent",
		ID:           fmt.Sprintf("%s-%d", nodeName(node), e.Seq),
		Extension: []Extension{
			{URL: extensionBase + "seq", ValueInteger: e.Seq},
			{URL: extensionBase + "prev-hash", ValueString: hex.EncodeToString(e.PrevHash)},
			{URL: extensionBase + "hash", ValueString: hex.EncodeToString(e.Hash)},
			{URL: extensionBase + "method", ValueString: e.Method},
		},
		Subtype:  []Coding{{System: systemAction, Code: e.Action}},
		Recorded: e.GetTime().AsTime().UTC().Format(time.RFC3339Nano),
		Source: Source{Observer: Reference{Identifier: Identifier{System: systemURI, Value: node}},
			Type: []Coding{{System: systemSourceType, Code: "4", Display: "Application Server"}}},
	}
	if e.QueryId != "" {
		ev.Extension = append(ev.Extension, Extension{URL: extensionBase + "query-id", ValueString: e.QueryId})
	}
	if e.Count > 1 {
		ev.Extension = append(ev.Extension, Extension{URL: extensionBase + "count", ValueInteger: uint64(e.Count)})
	}
	switch e.Action {
	case ActionDiscover, ActionDocuments:
		ev.Type, ev.Action = Coding{System: systemDICOM, Code: "110112", Display: "Query"}, "E"
	case ActionRetrieve, ActionRetrieveFailed:
		ev.Type, ev.Action = Coding{System: systemDICOM, Code: "110106", Display: "Export"}, "R"
	case ActionRefused, ActionInformationBlocking:
		ev.Type, ev.Action = Coding{System: systemDICOM, Code: "110113", Display: "Security Alert"}, "E"
	default:
		ev.Type, ev.Action = Coding{System: systemDICOM, Code: "110100", Display: "Application Activity"}, "E"
	}
	switch {
	case e.Outcome == "OK" && e.Action != ActionRetrieveFailed:
		ev.Outcome = "0"
	case e.Action == ActionRefused || e.Action == ActionInformationBlocking:
		ev.Outcome = "4"
	default:
		ev.Outcome = "8"
	}
	ev.OutcomeDesc = strings.TrimSpace(e.Outcome + " " + e.Reason)
	if e.PurposeOfUse != "" {
		pc := CodeableConcept{Coding: []Coding{{System: systemPurpose, Code: e.PurposeOfUse}}}
		if e.Emergency {
			pc.Coding = append(pc.Coding, Coding{System: systemActReason, Code: "ETREAT", Display: "Emergency Treatment"})
		}
		ev.PurposeOfEvent = []CodeableConcept{pc}
	}
	ev.Agent = append(ev.Agent, Agent{Who: Reference{Identifier: Identifier{System: systemURI, Value: e.Actor}}, Requestor: e.EndUser == nil})
	if u := e.EndUser; u != nil {
		a := Agent{Who: Reference{Identifier: Identifier{Value: u.Id}, Display: u.Name}, Requestor: true}
		if u.Npi != "" {
			a.Who.Identifier = Identifier{System: "http://hl7.org/fhir/sid/us-npi", Value: u.Npi}
		}
		if u.Role != "" {
			a.Role = []CodeableConcept{{Text: u.Role}}
		}
		ev.Agent = append(ev.Agent, a)
	}
	if e.InitiatorParticipantId != "" {
		ev.Agent = append(ev.Agent, Agent{Who: Reference{Identifier: Identifier{System: systemParticipant, Value: e.InitiatorParticipantId}},
			Type: &CodeableConcept{Text: "initiating member"}})
	}
	for _, p := range e.PatientRefs {
		ev.Entity = append(ev.Entity, Entity{What: &Reference{Identifier: Identifier{Value: p}},
			Type: &Coding{System: systemEntityType, Code: "1", Display: "Person"}, Role: &Coding{System: systemObjectRole, Code: "1", Display: "Patient"}})
	}
	for _, d := range e.DocumentRefs {
		ev.Entity = append(ev.Entity, Entity{What: &Reference{Identifier: Identifier{Value: d}},
			Type: &Coding{System: systemEntityType, Code: "2", Display: "System Object"}, Role: &Coding{System: systemObjectRole, Code: "3", Display: "Report"}})
	}
	for _, m := range e.Members {
		ev.Entity = append(ev.Entity, Entity{What: &Reference{Identifier: Identifier{System: systemParticipant, Value: m.ParticipantId}},
			Type: &Coding{System: systemEntityType, Code: "2", Display: "System Object"}, Description: "member asked",
			Detail: []Detail{{Type: "state", ValueString: strings.TrimPrefix(m.State.String(), "RESPONDER_STATE_")}}})
	}
	return ev
}

// nodeName is the last segment of a SPIFFE ID.
func nodeName(id string) string {
	if i := strings.LastIndexByte(id, '/'); i >= 0 {
		return id[i+1:]
	}
	return id
}
