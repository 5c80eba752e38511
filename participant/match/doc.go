// Package match decides whether two sets of patient demographics describe the
// same person.
//
// A responder uses it to answer a patient discovery query: [Validate] checks
// the query, [Normalize] turns wire demographics into a comparable [Record],
// an [Index] of the member's patients finds candidates through blocking keys,
// and [Score] ranks them against [DefaultThreshold]. The broker uses [Score]
// with [SamePersonThreshold] to merge candidates from different members into
// one person.
//
// The package is pure: no I/O, no logging, no clocks except in [Validate].
// Demographics are PHI, so no error or result of this package carries a
// submitted value.
package match
