// Package fanout asks many members the same question at once and merges
// their answers. One slow or failing member never fails the whole query: every
// member's outcome comes back as a ResponderStatus (OK, NO_MATCH, TIMEOUT,
// ERROR, DENIED), next to the answers of the others.
//
// Merging turns discovery candidates from different members that are the same
// person into one Person with several links, and de-duplicates documents by
// id and SHA-256, newest first. The package knows neither Raft nor the
// directory: the broker decides whom to ask.
package fanout
