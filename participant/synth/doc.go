// Package synth generates a deterministic synthetic patient population for
// development networks, tests and benchmarks: fictional people registered at
// one or more members, each registration with the small demographic
// differences real registrations have, and a few clinical documents.
//
// The output is ground truth for discovery: every registration names the
// person it belongs to, so matching, record-locator and merge code can be
// scored against it. The same seed and options always give byte-identical
// output, and registrations stream out one person at a time, so a network of
// a million patients never sits in memory. Nothing generated refers to a real
// person: phone numbers use 555, SSNs the never-issued 9xx areas, and MRN
// systems the ISO/ITU example OID arc 2.999.
package synth
