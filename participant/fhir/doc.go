// Package fhir imports FHIR R4 JSON Bundles, shaped like Synthea's output,
// into a participant's local store.
//
// Each Patient of a bundle becomes a local patient whose demographics the
// participant matches against discovery queries; each DocumentReference
// becomes a document of the patient it names; all other resources (encounters,
// observations, conditions, claims, ...) travel together as one FHIR document
// per patient: the bundle itself. A bundle is checked whole before anything
// is written, so a bad bundle is skipped with a reason and leaves no trace.
// Reasons and errors name the file and the problem, never a name, birth date,
// address or identifier value.
package fhir
