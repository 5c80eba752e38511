package broker

import (
	"errors"
	"time"

	"google.golang.org/grpc"
)

// errSendTimeout is returned when the reader of a stream did not take a
// message within the send timeout.
var errSendTimeout = errors.New("send timeout")

// boundedSender sends a server stream's messages with a deadline on each:
// gRPC's Send blocks for as long as the reader does not read, and cannot be
// given a deadline of its own. Sends run on a goroutine of their own; when
// one overruns, send returns errSendTimeout and the handler must return,
// which ends the stream and so unblocks that goroutine.
type boundedSender[T any] struct {
	out     grpc.ServerStreamingServer[T]
	timeout time.Duration
	msgs    chan *T
	errs    chan error
}

func newBoundedSender[T any](out grpc.ServerStreamingServer[T], timeout time.Duration) *boundedSender[T] {
	s := &boundedSender[T]{out: out, timeout: timeout, msgs: make(chan *T), errs: make(chan error, 1)}
	go func() {
		for m := range s.msgs {
			s.errs <- s.out.Send(m)
		}
	}()
	return s
}

// send hands m to the stream and waits for it to be taken, at most the
// timeout. m must not be changed afterwards. After an error, send must not
// be called again.
func (s *boundedSender[T]) send(m *T) error {
	s.msgs <- m
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case err := <-s.errs:
		return err
	case <-t.C:
		return errSendTimeout
	}
}

// close lets the sending goroutine end once its last Send returns.
func (s *boundedSender[T]) close() { close(s.msgs) }
