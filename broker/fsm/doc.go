// Package fsm is the broker's replicated state machine: the tables every
// broker holds in the same order (participant directory, broker nodes and,
// later, the record locator and consent), kept in one bbolt file with one
// bucket per table.
//
// Every Raft log entry is a versioned qhinv1.Command. Apply decodes the
// envelope, refuses versions and types it does not know and commands without
// a valid time, and dispatches to one apply function per command type, each
// running inside the transaction that also records the applied index and
// every table's digest (count and XOR of SHA-256 over each key and value).
// Everything an apply needs, the time included, travels in the command, and
// a refused command's stored result is a code from an ordered table, never
// error text: every broker computes the same state, byte for byte.
//
// A write that fails stops the state machine (Failed): it applies nothing
// more and refuses snapshots until a whole state is installed — Restore from
// Raft, or Replace with the leader's — instead of panicking every broker of a
// shared process. Open refuses a damaged file (truncated, bad pages, content
// that does not match its digests) with an error wrapping ErrDamaged; bbolt's
// panics and page faults on such files become errors (boltfile.go).
//
// Snapshot streams a consistent copy of the bbolt file, framed with the Raft
// index it stands for; Restore writes the incoming copy beside the live one,
// checks it and swaps it in last, so a bad snapshot leaves the old state
// intact.
//
// The package knows tables and commands; it does not know gRPC or Raft's
// networking. broker/cluster owns the Raft node that drives it.
package fsm
