// Package participant is a member's sidecar node. It keeps the member's
// records in a local store (participant/store), answers the brokers' queries
// through the Responder service with a demographic matcher
// (participant/match), and imports records from FHIR bundles
// (participant/fhir) or a synthetic population (participant/synth).
//
// Only brokers may call a participant: its server accepts broker SVIDs of its
// trust domain and nothing else.
package participant
