package fanout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// DefaultParallelism bounds how many members are asked at the same time.
const DefaultParallelism = 256

// Outcome is one member's answer and status.
type Outcome[T any] struct {
	ParticipantID string
	Value         T
	Status        *qhinv1.ResponderStatus
}

// Call asks one member; empty reports whether an answer holds nothing.
type Call[T any] func(ctx context.Context, participantID string) (T, error)

// Options tune a fan-out.
type Options struct {
	// Timeout bounds each member's call; the caller's context bounds them
	// all.
	Timeout time.Duration
	// Parallelism bounds concurrent calls; DefaultParallelism when zero.
	Parallelism int
}

// Run calls every member concurrently, each under its own timeout inside the
// context's overall deadline, and returns one outcome per member in the
// order given. It returns when every call has finished or timed out.
func Run[T any](ctx context.Context, members []string, opts Options, call Call[T], empty func(T) bool) []Outcome[T] {
	out := make([]Outcome[T], len(members))
	limit := opts.Parallelism
	if limit <= 0 {
		limit = DefaultParallelism
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i, id := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				out[i] = Outcome[T]{ParticipantID: id, Status: statusOf(id, ctx.Err(), false, time.Since(start))}
				return
			}
			cctx, cancel := ctx, context.CancelFunc(func() {})
			if opts.Timeout > 0 {
				cctx, cancel = context.WithTimeout(ctx, opts.Timeout)
			}
			v, err := call(cctx, id)
			cancel()
			isEmpty := err == nil && empty != nil && empty(v)
			out[i] = Outcome[T]{ParticipantID: id, Value: v, Status: statusOf(id, err, isEmpty, time.Since(start))}
		}()
	}
	wg.Wait()
	return out
}

// statusOf classifies one call's result. The detail names the kind of
// failure only: a member's own error text is not passed on, since nothing
// guarantees it is free of patient data.
func statusOf(id string, err error, empty bool, latency time.Duration) *qhinv1.ResponderStatus {
	s := &qhinv1.ResponderStatus{ParticipantId: id, Latency: durationpb.New(latency)}
	switch {
	case err == nil && empty:
		s.Status = qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH
	case err == nil:
		s.Status = qhinv1.ResponderState_RESPONDER_STATE_OK
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		s.Status = qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT
		s.Detail = "no answer before the deadline"
	case errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled:
		s.Status = qhinv1.ResponderState_RESPONDER_STATE_ERROR
		s.Detail = "query cancelled"
	case status.Code(err) == codes.PermissionDenied:
		s.Status = qhinv1.ResponderState_RESPONDER_STATE_DENIED
		s.Detail = "member refused the query"
	case status.Code(err) == codes.Unavailable:
		s.Status = qhinv1.ResponderState_RESPONDER_STATE_ERROR
		s.Detail = "member unreachable"
	case status.Code(err) == codes.ResourceExhausted:
		s.Status = qhinv1.ResponderState_RESPONDER_STATE_ERROR
		s.Detail = "answer larger than the broker accepts from a member"
	default:
		s.Status = qhinv1.ResponderState_RESPONDER_STATE_ERROR
		s.Detail = "member failed: " + status.Code(err).String()
	}
	return s
}

// Skipped is the status of a member the broker chose not to ask.
func Skipped(id, reason string) *qhinv1.ResponderStatus {
	return &qhinv1.ResponderStatus{
		ParticipantId: id,
		Status:        qhinv1.ResponderState_RESPONDER_STATE_SKIPPED,
		Detail:        reason,
		Latency:       durationpb.New(0),
	}
}

// Keep bounds what the broker takes from one member's OK answer: of the
// sent items the member answered with (items may hold only the first of
// them), the first max, and of those only the ones valid accepts (nil
// error). What it drops it says in the member's status detail, in counts
// only. A member whose every item was dropped is an ERROR: it answered, but
// nothing it said could be used. Items beyond max are never looked at, so
// a member that sends a flood costs no more than one that sends max.
func Keep[E any](st *qhinv1.ResponderStatus, items []E, sent, max int, noun string, valid func(E) error) []E {
	if st.GetStatus() != qhinv1.ResponderState_RESPONDER_STATE_OK {
		return nil
	}
	items = items[:min(len(items), max)]
	kept := items[:0]
	malformed := 0
	for _, it := range items {
		if valid(it) != nil {
			malformed++
			continue
		}
		kept = append(kept, it)
	}
	clear(items[len(kept):])
	var notes []string
	if sent > max {
		notes = append(notes, fmt.Sprintf("kept the first %d of %d %s, dropped the rest (at most %d per member)", max, sent, noun, max))
	}
	if malformed > 0 {
		notes = append(notes, fmt.Sprintf("dropped %d malformed %s", malformed, noun))
	}
	if len(notes) > 0 {
		st.Detail = strings.Join(notes, "; ")
		if len(kept) == 0 {
			st.Status = qhinv1.ResponderState_RESPONDER_STATE_ERROR
		}
	}
	return kept
}
