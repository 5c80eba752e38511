package client

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The one retry policy of calls to the brokers. A call that fails with
// Unavailable — the broker is down, has no leader yet, or cannot vouch for
// its state — is tried again, on the next broker in turn, after a jittered
// delay that doubles from 25ms up to 1s, at most maxAttempts times and never
// past the call's deadline; the last error is returned. Other codes are the
// answer. Writes are safe to retry: they carry idempotency keys. Brokers
// themselves do not retry: a broker forwards a leader-only call once and
// answers Unavailable when that fails. A call only the leader runs goes to
// the leader first, when it is known (leader.go).
const (
	maxAttempts  = 8
	firstBackoff = 25 * time.Millisecond
	maxBackoff   = time.Second
)

func backoff(attempt int) time.Duration {
	d := min(firstBackoff<<min(attempt, 6), maxBackoff)
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

// pause waits before the next attempt; false when ctx would end first.
func pause(ctx context.Context, attempt int) bool {
	d := backoff(attempt)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// unary is the unary interceptor of a Conn: each attempt goes to the
// leader when the call is one only the leader runs and the leader is known
// (leader.go), else round robin; Unavailable is retried as above.
func (r *leaderRoute) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	for attempt := 0; ; attempt++ {
		actx, target := ctx, r.target(method)
		if target != "" {
			actx = withTarget(ctx, target)
		}
		var trailer metadata.MD
		err := invoker(actx, method, req, reply, cc, append(slices.Clip(opts), grpc.Trailer(&trailer))...)
		r.learn(method, trailer, err, target != "")
		if status.Code(err) != codes.Unavailable || attempt+1 >= maxAttempts || !pause(ctx, attempt) {
			return err
		}
	}
}

// retryStream retries a server-streaming call that fails with Unavailable
// before its first message, the same way; once a message has arrived the
// stream's errors are final.
func retryStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || desc.ClientStreams || !desc.ServerStreams {
		return s, err
	}
	return &retryingStream{ClientStream: s, ctx: ctx, desc: desc, cc: cc, method: method, streamer: streamer, opts: opts}, nil
}

type retryingStream struct {
	grpc.ClientStream
	ctx      context.Context
	desc     *grpc.StreamDesc
	cc       *grpc.ClientConn
	method   string
	streamer grpc.Streamer
	opts     []grpc.CallOption

	mu       sync.Mutex
	sent     []any
	closed   bool
	received bool
	attempt  int
}

func (s *retryingStream) SendMsg(m any) error {
	s.mu.Lock()
	s.sent = append(s.sent, m)
	s.mu.Unlock()
	return s.ClientStream.SendMsg(m)
}

func (s *retryingStream) CloseSend() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.ClientStream.CloseSend()
}

func (s *retryingStream) RecvMsg(m any) error {
	for {
		err := s.ClientStream.RecvMsg(m)
		if err == nil {
			s.received = true
			return nil
		}
		if s.received || status.Code(err) != codes.Unavailable || s.attempt+1 >= maxAttempts || !pause(s.ctx, s.attempt) {
			return err
		}
		s.attempt++
		next, nerr := s.streamer(s.ctx, s.desc, s.cc, s.method, s.opts...)
		if nerr != nil {
			return err
		}
		s.mu.Lock()
		sent, closed := s.sent, s.closed
		s.mu.Unlock()
		for _, msg := range sent {
			if serr := next.SendMsg(msg); serr != nil {
				break
			}
		}
		if closed {
			next.CloseSend()
		}
		s.ClientStream = next
	}
}
