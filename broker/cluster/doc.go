// Package cluster owns a broker's Raft node: the log and stable store
// (raft-boltdb), the file snapshot store, the mutual-TLS transport and the
// state machine (broker/fsm). It is the one place that decides how a write
// reaches the leader and how consistent a read is.
//
// Writes may arrive at any broker. A follower forwards the encoded command to
// the leader's Cluster.Apply once; the leader applies it directly, never
// forwarding again. While there is no leader the node holds the write and
// retries with jitter until the caller's deadline. Every write carries an
// idempotency key, so a retry after an unknown outcome applies once.
//
// Reads come in two levels (ReadLevel): local, straight from this node's
// state, and linearizable, which first confirms the leader's commit index
// and waits until this node has applied it.
package cluster
