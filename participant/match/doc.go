// Package match decides whether two sets of patient demographics describe the
// same person: a Fellegi–Sunter matcher.
//
// A responder uses it to answer a patient discovery query: [Validate] checks
// the query, [Normalize] turns wire demographics into a comparable [Record],
// an [Index] of the member's patients finds candidates through blocking keys
// and scores them with a [Model] (graded comparison levels per field, m and
// u probabilities, term frequencies of names), and each [Result] carries a
// probability and an explanation ([Pair.Explanation]). The broker merges
// candidates from different members with [SamePerson], the same default
// model. [Train] fits a model by EM, [Evaluate] measures one against
// labelled records read by [ReadCSV]. See DESIGN.md.
//
// The package does no I/O and no logging, and reads the clock only in
// [Validate]. Demographics are PHI, so no error or result of this package
// carries a submitted value.
package match
