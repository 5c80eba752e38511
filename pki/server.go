package pki

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// MaxConnectionAge caps how long a client connection lives, so that clients
// reconnect, and so re-authenticate with current certificates, at least this
// often.
const MaxConnectionAge = 30 * time.Minute

// ServerConfig describes how an OpenQHIN gRPC server authenticates,
// authorizes and logs its callers.
type ServerConfig struct {
	Source Source
	// Policy decides which role may call which method.
	Policy Policy
	// Roles may open a connection at all (the TLS handshake refuses the
	// others); every role when empty.
	Roles  []Role
	Logger *slog.Logger
	// Interceptors that run after authorization.
	Unary  []grpc.UnaryServerInterceptor
	Stream []grpc.StreamServerInterceptor
	// DefaultTimeout bounds a unary call whose caller set no deadline, so
	// that everything the handler calls downstream has one;
	// DefaultCallTimeout when zero.
	DefaultTimeout time.Duration
	// Limits bound handshakes, streams, messages and flow-control windows
	// (the connection caps are the listener's: see LimitListener).
	Limits ServerLimits
	// Observe, when set, is told the outcome of every call, refusals by
	// the policy included (the node's audit ledger records them).
	Observe func(ctx context.Context, method string, err error)
}

// DefaultCallTimeout is the deadline of a unary call that came without one.
const DefaultCallTimeout = time.Minute

// ServerOptions returns the options every OpenQHIN gRPC server is built
// with: mutual TLS for the trust domain of the server's own SVID, then the
// interceptor chain in its one order — log, then authorize by policy, then
// give deadline-less unary calls a deadline, then the extra interceptors —
// and the limits: a handshake timeout, concurrent streams per connection,
// the largest message, and static flow-control windows, so that what a
// peer can make the server buffer never grows past them.
func (c ServerConfig) ServerOptions() ([]grpc.ServerOption, error) {
	self, err := SourceIdentity(c.Source)
	if err != nil {
		return nil, err
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	roles := c.Roles
	if len(roles) == 0 {
		roles = Roles
	}
	timeout := c.DefaultTimeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	lim := c.Limits.WithDefaults()
	u := append([]grpc.UnaryServerInterceptor{logUnary(log, c.Observe), c.Policy.UnaryInterceptor(), defaultDeadline(timeout)}, c.Unary...)
	s := append([]grpc.StreamServerInterceptor{logStream(log, c.Observe), c.Policy.StreamInterceptor()}, c.Stream...)
	return append([]grpc.ServerOption{
		grpc.Creds(logRefusals(ServerCredentials(c.Source, AuthorizeRoles(self.ID.TrustDomain(), roles...)), log)),
		grpc.ChainUnaryInterceptor(u...),
		grpc.ChainStreamInterceptor(s...),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      MaxConnectionAge,
			MaxConnectionAgeGrace: time.Minute,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Reuse a few goroutines for calls instead of starting one per call,
		// whose stack then has to grow for every call.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	}, lim.serverOptions()...), nil
}

// GRPCOptions are the gRPC server options that enforce l (its defaults
// where zero): handshake timeout, streams per connection, message size and
// static flow-control windows. ServerConfig.ServerOptions includes them; a
// server built without it (the member's loopback EHR API) uses them alone.
func (l ServerLimits) GRPCOptions() []grpc.ServerOption {
	return l.WithDefaults().serverOptions()
}

func (l ServerLimits) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(l.HandshakeTimeout),
		grpc.MaxConcurrentStreams(uint32(l.MaxStreamsPerConnection)),
		grpc.MaxRecvMsgSize(l.MaxRequestBytes),
		grpc.StaticStreamWindowSize(int32(l.StreamWindowBytes)),
		grpc.StaticConnWindowSize(int32(l.ConnWindowBytes)),
	}
}

// defaultDeadline gives a unary call without a deadline one.
func defaultDeadline(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return handler(ctx, req)
	}
}

// logUnary logs every call: method, caller, outcome and duration, and
// tells observe its outcome. It never logs a request or response, which may
// carry patient data.
func logUnary(log *slog.Logger, observe func(context.Context, string, error)) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		logCall(ctx, log, info.FullMethod, start, err)
		if observe != nil {
			observe(ctx, info.FullMethod, err)
		}
		return resp, err
	}
}

func logStream(log *slog.Logger, observe func(context.Context, string, error)) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		logCall(ss.Context(), log, info.FullMethod, start, err)
		if observe != nil {
			observe(ss.Context(), info.FullMethod, err)
		}
		return err
	}
}

func logCall(ctx context.Context, log *slog.Logger, method string, start time.Time, err error) {
	caller := "unauthenticated"
	if id, err := PeerIdentity(ctx); err == nil {
		caller = id.String()
	}
	attrs := []any{"method", method, "caller", caller, "code", status.Code(err).String(),
		"ms", float64(time.Since(start).Microseconds()) / 1000}
	level := slog.LevelDebug
	if err != nil {
		// Handlers' messages name fields and ids, never their values.
		level = slog.LevelInfo
		attrs = append(attrs, "error", status.Convert(err).Message())
	}
	log.Log(ctx, level, "rpc", attrs...)
}

// GracefulStop stops a server: it takes no new calls and lets running ones
// finish until ctx ends, then cuts them off.
func GracefulStop(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
		<-done
	}
}

// refusalLogRate caps the handshake refusals logged per second; a flood of
// bad handshakes costs a line a second, not a line each.
const refusalLogRate = 10

// refusalLogger logs why TLS handshakes were refused (an expired
// certificate, an unknown authority, a SPIFFE ID that may not connect),
// at most refusalLogRate a second.
type refusalLogger struct {
	credentials.TransportCredentials
	log *slog.Logger

	mu         sync.Mutex
	second     time.Time
	logged     int
	suppressed int
}

func logRefusals(c credentials.TransportCredentials, log *slog.Logger) credentials.TransportCredentials {
	return &refusalLogger{TransportCredentials: c, log: log}
}

func (r *refusalLogger) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := r.TransportCredentials.ServerHandshake(c)
	if err != nil {
		r.refused(c.RemoteAddr(), err)
	}
	return conn, info, err
}

func (r *refusalLogger) refused(remote net.Addr, err error) {
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.second) >= time.Second {
		if r.suppressed > 0 {
			r.log.Warn("refused TLS handshakes not logged", "count", r.suppressed)
		}
		r.second, r.logged, r.suppressed = now, 0, 0
	}
	r.logged++
	log := r.logged <= refusalLogRate
	if !log {
		r.suppressed++
	}
	r.mu.Unlock()
	if log && !errors.Is(err, io.EOF) {
		r.log.Warn("refused TLS handshake", "remote", remote.String(), "error", err)
	}
}

func (r *refusalLogger) Clone() credentials.TransportCredentials {
	return &refusalLogger{TransportCredentials: r.TransportCredentials.Clone(), log: r.log}
}
