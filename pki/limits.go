package pki

import (
	"math"
	"time"
)

// Defaults of ServerLimits fields left zero.
const (
	DefaultHandshakeTimeout        = 10 * time.Second
	DefaultMaxConnections          = 1024
	DefaultMaxConnectionsPerSource = 64
	DefaultMaxStreamsPerConnection = 128
	DefaultMaxRequestBytes         = 1 << 20
	DefaultStreamWindowBytes       = 64 << 10
	DefaultConnWindowBytes         = 1 << 20
)

// ServerLimits bound what one peer can make a server hold before it has
// proven anything, and what one connection can carry. Zero fields take the
// defaults.
type ServerLimits struct {
	// HandshakeTimeout bounds the TLS handshake and HTTP/2 preface of a new
	// connection (gRPC's own default is 120s).
	HandshakeTimeout time.Duration
	// MaxConnections caps the open connections in total;
	// MaxConnectionsPerSource caps them per source IP address. A connection
	// over either cap is closed as soon as it is accepted.
	MaxConnections          int
	MaxConnectionsPerSource int
	// MaxStreamsPerConnection caps the concurrent calls on one connection.
	MaxStreamsPerConnection int
	// MaxRequestBytes caps one received message.
	MaxRequestBytes int
	// StreamWindowBytes and ConnWindowBytes are the HTTP/2 flow-control
	// windows the server grants its peers: what a peer may send ahead of
	// what the server has read. Static, so that a stream's buffer never
	// grows beyond them. Callers send small requests, never streams, so
	// the stream window is gRPC's smallest: it is also what a caller can
	// make the server read of a request that is refused for its size.
	StreamWindowBytes int
	ConnWindowBytes   int
}

// WithDefaults returns l with every zero field set to its default.
func (l ServerLimits) WithDefaults() ServerLimits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	def(&l.MaxConnections, DefaultMaxConnections)
	def(&l.MaxConnectionsPerSource, DefaultMaxConnectionsPerSource)
	def(&l.MaxStreamsPerConnection, DefaultMaxStreamsPerConnection)
	def(&l.MaxRequestBytes, DefaultMaxRequestBytes)
	def(&l.StreamWindowBytes, DefaultStreamWindowBytes)
	def(&l.ConnWindowBytes, DefaultConnWindowBytes)
	// gRPC takes windows and stream counts as 32-bit numbers.
	l.StreamWindowBytes = min(l.StreamWindowBytes, math.MaxInt32)
	l.ConnWindowBytes = min(l.ConnWindowBytes, math.MaxInt32)
	l.MaxStreamsPerConnection = min(l.MaxStreamsPerConnection, math.MaxUint32)
	return l
}
