package broker

import (
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func TestUnanswered(t *testing.T) {
	for _, tc := range []struct {
		state  qhinv1.ResponderState
		detail string
		want   bool
	}{
		{qhinv1.ResponderState_RESPONDER_STATE_OK, "", false},
		{qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH, "", false},
		{qhinv1.ResponderState_RESPONDER_STATE_SKIPPED, NoLocatorHit, false},
		{qhinv1.ResponderState_RESPONDER_STATE_SKIPPED, "member is suspended", true},
		{qhinv1.ResponderState_RESPONDER_STATE_DENIED, "member does not answer T-IAS", true},
		{qhinv1.ResponderState_RESPONDER_STATE_ERROR, "member unreachable", true},
		{qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT, "", true},
	} {
		if got := unanswered(&qhinv1.MemberRecords{State: tc.state, Detail: tc.detail}); got != tc.want {
			t.Errorf("%v %q: unanswered %v, want %v", tc.state, tc.detail, got, tc.want)
		}
	}
}

func TestRecordRequestID(t *testing.T) {
	if recordRequestID("", "p2", "x") != "" {
		t.Error("no request id: want none (the apply makes one)")
	}
	a, b := recordRequestID("r1", "p2", "x"), recordRequestID("r1", "p3", "x")
	if a == b || a != recordRequestID("r1", "p2", "x") {
		t.Errorf("ids %q %q: want one per record, stable across retries", a, b)
	}
}
