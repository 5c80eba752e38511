// Package facade is a participant's FHIR R4 interface for its own EHR
// (TEFCA's Facilitated FHIR exchange): the EHR finds a person across the
// network with Patient/$match or a Patient search, lists their documents
// with a DocumentReference search and reads each with Binary, all in FHIR
// R4 JSON; the facade makes the network's Gateway queries under the member's
// identity, with the purpose of use and the end user the EHR names (headers,
// or a SMART Backend Services bearer token checked against a JWKS).
//
// The EHR also writes its records into the running participant (the live
// feed): a transaction Bundle (or a C-CDA document) at the base, PUT and
// DELETE of a Patient; each is one atomic change of the store and the
// matcher (participant.Server.Apply). Under /local the facade serves the
// member's own records as a plain FHIR server: what the member answers the
// network with.
//
// Errors are OperationOutcomes whose messages name the parameter or
// element and the rule, never a value the EHR sent; logs carry request and
// handle ids only.
package facade
