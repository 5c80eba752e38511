// Package broker is a QHIN broker node: the Gateway that participants query,
// the Directory that operators manage, and the Cluster service brokers and
// operators use to run the Raft cluster that replicates the network's state.
//
// A query arrives at any broker. The broker checks the caller (from its
// certificate) and the exchange purpose, chooses the members to ask (one
// routing function), fans the query out with one overall deadline and a
// per-member timeout (broker/fanout), merges the answers and reports every
// member's outcome next to them. Retrieval is proxied chunk by chunk.
package broker
