// Package fanout asks many members the same question at once and merges
// their answers. One slow or failing member never fails the whole query: every
// member's outcome comes back as a ResponderStatus (OK, NO_MATCH, TIMEOUT,
// ERROR, DENIED), next to the answers of the others. Keep bounds what the
// broker takes from one member's answer and says in its status what it
// dropped.
//
// Merging turns discovery candidates from different members that are the same
// person into one Person with several links, and de-duplicates documents by
// id and SHA-256, newest first. The person merge compares a candidate only
// with the persons that share a blocking key with it, through one pairwise
// score (pairScore), and stops comparing at the query's deadline. The package
// knows neither Raft nor the directory: the broker decides whom to ask.
package fanout
