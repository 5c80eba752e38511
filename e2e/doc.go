// Package e2e runs whole OpenQHIN networks in one process: brokers in a Raft
// cluster and participants with records, on real loopback sockets with real
// mutual TLS under their own CA. qhinctl dev runs the default network with
// it, qhinctl bench measures with it, and the tests in this directory check
// the network's behaviour end to end.
package e2e
