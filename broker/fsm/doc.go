// Package fsm is the broker's replicated state machine: the tables every
// broker holds in the same order (participant directory, broker nodes and,
// later, the record locator and consent), kept in one bbolt file with one
// bucket per table.
//
// Every Raft log entry is a versioned qhinv1.Command. Apply decodes the
// envelope, refuses versions and types it does not know, and dispatches to
// one apply function per command type, each running inside the transaction
// that also records the applied index. Everything an apply needs, the time
// included, travels in the command, so every broker computes the same state.
//
// Snapshot streams a consistent copy of the bbolt file; Restore writes the
// incoming copy beside the live one, checks it and swaps it in last, so a bad
// snapshot leaves the old state intact.
//
// The package knows tables and commands; it does not know gRPC or Raft's
// networking. broker/cluster owns the Raft node that drives it.
package fsm
