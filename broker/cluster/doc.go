// Package cluster owns a broker's Raft node: the log and stable store
// (raft-boltdb), the file snapshot store, the mutual-TLS transport and the
// state machine (broker/fsm). It decides, in one place each, how a
// leader-only operation reaches the leader, when a write is acknowledged,
// how consistent a read is, and whether this broker may serve at all.
//
// Forwarding (forward.go). Every leader-only operation — apply, join,
// remove, the read barrier, restore — goes through onLeader: it runs here
// when this node leads, or is forwarded once to the leader, marked with the
// qhin-forwarded gRPC metadata. A marked call is never forwarded again; a
// node that cannot run it answers Unavailable with a LeaderHint. Brokers do
// not retry: the client (broker/client) does, within the caller's deadline.
//
// Clients send writes to the leader directly once a broker has named it:
// Apply names the leader in the call's trailer (LeaderKey), whether it ran
// the write or forwarded it.
//
// Group commit (commit.go). On the leader, single commands that arrive
// while a Raft round is in flight wait for it to finish and then go into
// the next round together, as one batch entry; each keeps its own result,
// request id and acknowledgement rule. A lone command is proposed at once.
//
// Serving (fence.go, serve.go). A follower serves while the leader told
// it, less than a lease (the election timeout) ago, a commit index it has
// applied; a leader once it applied a barrier of its own term. A node whose
// log or state machine cannot be written serves nothing. Gateway calls,
// local reads and the health service all ask Serving.
//
// Acknowledgement (apply.go). A write that withdraws access (a suspension,
// a retirement, fewer purposes) returns only once every other broker has
// confirmed it holds the entry, or the lease has run out since it was
// committed — after which a broker that did not confirm cannot serve
// without it. Other writes return once applied on the leader. Every write
// carries an idempotency key, so a retry after an unknown outcome applies
// once.
//
// Integrity (node.go, verify.go). At start, a missing, damaged or outdated
// state file is rebuilt from the newest snapshot and the log before the
// node serves; a damaged Raft log is an error that says how to recover.
// Periodically the whole state is read back against its digests and, on a
// follower, compared with the leader's digests at the same index; on a
// mismatch the node stops serving and reinstalls the leader's state.
package cluster
