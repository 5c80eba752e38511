package fanout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// testTimeout bounds every wait in these tests; no test should come near it.
const testTimeout = 10 * time.Second

// fakePHI is a patient name a member might put in its own error text. It must
// never reach a ResponderStatus.
const fakePHI = "Jane Q. Doe born 1970-01-01"

func isEmpty(s string) bool { return s == "" }

func TestRun_StatusOfEachMember(t *testing.T) {
	tests := []struct {
		name       string
		call       Call[string]
		empty      func(string) bool
		wantState  qhinv1.ResponderState
		wantDetail string // substring; "" means no detail
		wantValue  string
	}{
		{
			name:      "answer is OK",
			call:      func(context.Context, string) (string, error) { return "found", nil },
			empty:     isEmpty,
			wantState: qhinv1.ResponderState_RESPONDER_STATE_OK,
			wantValue: "found",
		},
		{
			name:      "empty answer is NO_MATCH",
			call:      func(context.Context, string) (string, error) { return "", nil },
			empty:     isEmpty,
			wantState: qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH,
		},
		{
			name:      "without an empty func every answer is OK",
			call:      func(context.Context, string) (string, error) { return "", nil },
			wantState: qhinv1.ResponderState_RESPONDER_STATE_OK,
		},
		{
			name: "call blocked past its timeout is TIMEOUT",
			call: func(ctx context.Context, _ string) (string, error) {
				<-ctx.Done()
				return "", ctx.Err()
			},
			empty:      isEmpty,
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT,
			wantDetail: "deadline",
		},
		{
			name: "gRPC DeadlineExceeded is TIMEOUT",
			call: func(context.Context, string) (string, error) {
				return "", status.Error(codes.DeadlineExceeded, fakePHI)
			},
			empty:      isEmpty,
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT,
			wantDetail: "deadline",
		},
		{
			name: "PermissionDenied is DENIED",
			call: func(context.Context, string) (string, error) {
				return "", status.Error(codes.PermissionDenied, "no consent for "+fakePHI)
			},
			empty:      isEmpty,
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_DENIED,
			wantDetail: "refused",
		},
		{
			name: "Unavailable is ERROR member unreachable",
			call: func(context.Context, string) (string, error) {
				return "", status.Error(codes.Unavailable, "connection refused while looking up "+fakePHI)
			},
			empty:      isEmpty,
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_ERROR,
			wantDetail: "member unreachable",
		},
		{
			name: "gRPC Internal is ERROR naming the code",
			call: func(context.Context, string) (string, error) {
				return "", status.Error(codes.Internal, "nil pointer on "+fakePHI)
			},
			empty:      isEmpty,
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_ERROR,
			wantDetail: "Internal",
		},
		{
			name: "plain Go error is ERROR",
			call: func(context.Context, string) (string, error) {
				return "", fmt.Errorf("record of %s is corrupt", fakePHI)
			},
			empty:      isEmpty,
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_ERROR,
			wantDetail: "member failed",
		},
		{
			name: "wrapped context.Canceled is ERROR",
			call: func(context.Context, string) (string, error) {
				return "", fmt.Errorf("lookup %s: %w", fakePHI, context.Canceled)
			},
			empty:      isEmpty,
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_ERROR,
			wantDetail: "cancelled",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			opts := Options{Timeout: 20 * time.Millisecond}
			out := Run(ctx, []string{"m1"}, opts, tt.call, tt.empty)
			if len(out) != 1 {
				t.Fatalf("Run returned %d outcomes, want 1", len(out))
			}
			o := out[0]
			if o.ParticipantID != "m1" || o.Status.GetParticipantId() != "m1" {
				t.Errorf("outcome names %q / status names %q, want m1", o.ParticipantID, o.Status.GetParticipantId())
			}
			if got := o.Status.GetStatus(); got != tt.wantState {
				t.Errorf("state = %v, want %v", got, tt.wantState)
			}
			if tt.wantDetail == "" && o.Status.GetDetail() != "" {
				t.Errorf("detail = %q, want none", o.Status.GetDetail())
			}
			if !strings.Contains(o.Status.GetDetail(), tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", o.Status.GetDetail(), tt.wantDetail)
			}
			if strings.Contains(o.Status.GetDetail(), "Doe") || strings.Contains(o.Status.GetDetail(), "1970") {
				t.Errorf("detail %q repeats the member's error text", o.Status.GetDetail())
			}
			if o.Value != tt.wantValue {
				t.Errorf("value = %q, want %q", o.Value, tt.wantValue)
			}
			if o.Status.GetLatency() == nil || o.Status.GetLatency().AsDuration() < 0 {
				t.Errorf("latency = %v, want set and non-negative", o.Status.GetLatency())
			}
		})
	}
}

func TestRun_SlowMemberTimesOutOthersStillAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	const perMember = 30 * time.Millisecond
	members := []string{"fast-a", "slow", "fast-b", "denies", "empty"}
	call := func(ctx context.Context, id string) (string, error) {
		switch id {
		case "slow":
			<-ctx.Done()
			return "", ctx.Err()
		case "denies":
			return "", status.Error(codes.PermissionDenied, "denied")
		case "empty":
			return "", nil
		}
		return "answer of " + id, nil
	}
	out := Run(ctx, members, Options{Timeout: perMember}, call, isEmpty)

	want := []struct {
		value string
		state qhinv1.ResponderState
	}{
		{"answer of fast-a", qhinv1.ResponderState_RESPONDER_STATE_OK},
		{"", qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT},
		{"answer of fast-b", qhinv1.ResponderState_RESPONDER_STATE_OK},
		{"", qhinv1.ResponderState_RESPONDER_STATE_DENIED},
		{"", qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH},
	}
	if len(out) != len(members) {
		t.Fatalf("Run returned %d outcomes, want %d", len(out), len(members))
	}
	for i, o := range out {
		if o.ParticipantID != members[i] || o.Status.GetParticipantId() != members[i] {
			t.Errorf("outcome %d is for %q (status %q), want %q: outcomes must keep input order",
				i, o.ParticipantID, o.Status.GetParticipantId(), members[i])
		}
		if o.Value != want[i].value || o.Status.GetStatus() != want[i].state {
			t.Errorf("%s: got (%q, %v), want (%q, %v)", members[i], o.Value, o.Status.GetStatus(), want[i].value, want[i].state)
		}
		if o.Status.GetLatency() == nil {
			t.Errorf("%s: latency not set", members[i])
		}
	}
	// The slow member cannot have returned before its own deadline.
	if got := out[1].Status.GetLatency().AsDuration(); got < perMember {
		t.Errorf("slow member latency = %v, want at least its timeout %v", got, perMember)
	}
}

func TestRun_CallerContextEnds(t *testing.T) {
	tests := []struct {
		name       string
		ctx        func() (context.Context, context.CancelFunc)
		cancelAt   int32 // cancel the caller's context when this many calls started; 0: never
		wantState  qhinv1.ResponderState
		wantDetail string
	}{
		{
			name:       "cancelled is ERROR query cancelled",
			ctx:        func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			cancelAt:   2,
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_ERROR,
			wantDetail: "query cancelled",
		},
		{
			name: "overall deadline is TIMEOUT",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 30*time.Millisecond)
			},
			wantState:  qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT,
			wantDetail: "deadline",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			// Parallelism 2 over 4 members: two calls are in flight and two
			// wait for a slot when the caller's context ends.
			members := []string{"m1", "m2", "m3", "m4"}
			var started atomic.Int32
			call := func(ctx context.Context, _ string) (string, error) {
				if started.Add(1) == tt.cancelAt {
					cancel()
				}
				<-ctx.Done()
				return "", ctx.Err()
			}
			done := make(chan []Outcome[string], 1)
			go func() { done <- Run(ctx, members, Options{Parallelism: 2}, call, isEmpty) }()
			var out []Outcome[string]
			select {
			case out = <-done:
			case <-time.After(testTimeout):
				t.Fatalf("phase %q: timed out after %v", "Run returns once the caller's context ended", testTimeout)
			}
			for i, o := range out {
				if o.ParticipantID != members[i] {
					t.Errorf("outcome %d is for %q, want %q", i, o.ParticipantID, members[i])
				}
				if o.Status.GetStatus() != tt.wantState || !strings.Contains(o.Status.GetDetail(), tt.wantDetail) {
					t.Errorf("%s: got (%v, %q), want (%v, ...%q...)", members[i],
						o.Status.GetStatus(), o.Status.GetDetail(), tt.wantState, tt.wantDetail)
				}
				if o.Status.GetLatency() == nil {
					t.Errorf("%s: latency not set", members[i])
				}
			}
		})
	}
}

func TestRun_ParallelismBoundHonoured(t *testing.T) {
	const members, limit = 10, 2
	ids := make([]string, members)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%02d", i)
	}
	var inFlight, peak atomic.Int32
	entered := make(chan string)
	release := make(chan struct{})
	call := func(ctx context.Context, id string) (string, error) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		entered <- id
		select {
		case <-release:
		case <-ctx.Done():
		}
		inFlight.Add(-1)
		return id, ctx.Err()
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	done := make(chan []Outcome[string], 1)
	go func() { done <- Run(ctx, ids, Options{Parallelism: limit}, call, isEmpty) }()

	// Fill the slots, then let one call finish at a time: each release must
	// admit exactly one more call, never two.
	wait := func() {
		t.Helper()
		select {
		case <-entered:
		case <-ctx.Done():
			t.Fatalf("phase %q: timed out after %v", "the next call starts", testTimeout)
		}
	}
	for range limit {
		wait()
	}
	for range members - limit {
		release <- struct{}{}
		wait()
	}
	for range limit {
		release <- struct{}{}
	}
	out := <-done

	if got := peak.Load(); got != limit {
		t.Errorf("peak concurrent calls = %d, want %d", got, limit)
	}
	for i, o := range out {
		if o.Status.GetStatus() != qhinv1.ResponderState_RESPONDER_STATE_OK || o.Value != ids[i] {
			t.Errorf("outcome %d = (%q, %v), want (%q, OK)", i, o.Value, o.Status.GetStatus(), ids[i])
		}
	}
}

func TestRun_NoMembersNoOutcomes(t *testing.T) {
	called := false
	out := Run(context.Background(), nil, Options{}, func(context.Context, string) (string, error) {
		called = true
		return "", nil
	}, isEmpty)
	if len(out) != 0 || called {
		t.Errorf("Run over no members = %d outcomes (called %v), want none", len(out), called)
	}
}

func TestStatusOf_DetailNeverCarriesMemberText(t *testing.T) {
	errs := []error{
		errors.New(fakePHI),
		fmt.Errorf("wrapped: %w", errors.New(fakePHI)),
		status.Error(codes.PermissionDenied, fakePHI),
		status.Error(codes.Unavailable, fakePHI),
		status.Error(codes.NotFound, fakePHI),
		status.Error(codes.InvalidArgument, fakePHI),
		status.Error(codes.DeadlineExceeded, fakePHI),
		status.Error(codes.Canceled, fakePHI),
		fmt.Errorf("%s: %w", fakePHI, context.DeadlineExceeded),
	}
	for _, err := range errs {
		s := statusOf("m1", err, false, time.Millisecond)
		if s.GetDetail() == "" {
			t.Errorf("statusOf(%v) has no detail", err)
		}
		if strings.Contains(s.GetDetail(), "Doe") || strings.Contains(s.GetDetail(), "1970") {
			t.Errorf("statusOf(%v).Detail = %q carries the member's text", err, s.GetDetail())
		}
		if s.GetStatus() == qhinv1.ResponderState_RESPONDER_STATE_OK || s.GetStatus() == qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH {
			t.Errorf("statusOf(%v) = %v for a failed call", err, s.GetStatus())
		}
	}
}

func TestSkipped(t *testing.T) {
	s := Skipped("m1", "suspended")
	if s.GetParticipantId() != "m1" || s.GetStatus() != qhinv1.ResponderState_RESPONDER_STATE_SKIPPED ||
		s.GetDetail() != "suspended" || s.GetLatency() == nil {
		t.Errorf("Skipped = %v", s)
	}
}
