// Package e2e runs whole OpenQHIN networks on real loopback sockets with real
// mutual TLS under their own CA: brokers in a Raft cluster and participants
// with records. Start runs every node in this process, for the tests in this
// directory and for qhinctl bench; PrepareProcesses runs each node as its own
// qhin-broker or qhin-participant process, for qhinctl dev. Both lay the
// network out the same way on disk.
package e2e
