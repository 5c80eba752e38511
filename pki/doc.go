// Package pki gives every OpenQHIN process its SPIFFE identity and builds the
// mutual TLS it speaks with.
//
// A network has one trust domain and one certificate authority (CA). The CA
// issues X.509-SVIDs whose SPIFFE IDs name a role and a node:
//
//	spiffe://<td>/broker/<node-id>
//	spiffe://<td>/participant/<participant-id>
//	spiffe://<td>/operator/<name>
//
// Every TLS configuration is built through go-spiffe's tlsconfig package from
// a Source, so a static SVID in tests, files on disk and (later) the Workload
// API share one constructor. The caller of a gRPC method is known only from its
// certificate; the Authorizer interceptors decide from a single table which
// roles may call which method.
package pki
