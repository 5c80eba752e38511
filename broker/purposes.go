package broker

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/openqhin/openqhin/broker/fanout"
	"github.com/openqhin/openqhin/broker/purpose"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// mayInitiate refuses a purpose the member may not initiate (its directory
// entry does not list it; an empty list allows nothing).
func mayInitiate(p *qhinv1.Participant, purposeCode string) error {
	if !purpose.Permits(p.InitiatePurposes, purposeCode) {
		return status.Errorf(codes.PermissionDenied, "purpose_of_use: participant %s may not initiate %s queries (it initiates: %s)",
			p.Id, purposeCode, purpose.Describe(p.InitiatePurposes))
	}
	return nil
}

// checkNPI applies the purposes' rules about the requester's NPI: T-TRTMNT
// requires one, and one given must be well formed.
func checkNPI(purposeCode string, r *qhinv1.Requester) error {
	switch {
	case r.GetNpi() == "" && purposeCode == "T-TRTMNT":
		return invalid("requester.npi", "required for T-TRTMNT: the requesting clinician's National Provider Identifier")
	case r.GetNpi() != "" && !ValidNPI(r.Npi):
		return invalid("requester.npi", "must be a National Provider Identifier: 10 digits, the last a Luhn check digit over the 80840 prefix and the first nine")
	}
	return nil
}

// ValidNPI reports whether s is a well-formed National Provider Identifier:
// ten digits whose last is the Luhn check digit of the other nine prefixed
// with 80840 (the NPI's card issuer prefix).
func ValidNPI(s string) bool {
	if len(s) != 10 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	digits := "80840" + s
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 1 {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

// notAsked is the status of a member a query does not go to. A member that
// does not answer a purpose it must answer is not skipped: it is DENIED,
// and counted as possible information blocking.
func notAsked(p *qhinv1.Participant, purposeCode, reason string) *qhinv1.ResponderStatus {
	if p != nil && p.Status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE && purpose.IsRequired(purposeCode) &&
		!purpose.Permits(p.RespondPurposes, purposeCode) {
		return &qhinv1.ResponderStatus{ParticipantId: p.Id, Status: qhinv1.ResponderState_RESPONDER_STATE_DENIED,
			Detail:  fmt.Sprintf("member does not answer %s, a purpose every member must answer (possible information blocking)", purposeCode),
			Latency: durationpb.New(0)}
	}
	return fanout.Skipped(p.GetId(), reason)
}

// declinedRequired returns the members that declined a query of a required
// purpose: DENIED, whether the broker did not ask them (they do not list
// the purpose) or they refused.
func declinedRequired(purposeCode string, rs []*qhinv1.ResponderStatus) []string {
	if !purpose.IsRequired(purposeCode) {
		return nil
	}
	var out []string
	for _, r := range rs {
		if r.Status == qhinv1.ResponderState_RESPONDER_STATE_DENIED {
			out = append(out, r.ParticipantId)
		}
	}
	return out
}

// validatePurposeLists checks a directory entry's purpose lists.
func validatePurposeLists(prefix string, p *qhinv1.Participant) error {
	if i, err := purpose.ValidateList(p.InitiatePurposes); err != nil {
		return invalid(fmt.Sprintf("%sinitiate_purposes[%d]", prefix, i), err.Error())
	}
	if i, err := purpose.ValidateList(p.RespondPurposes); err != nil {
		return invalid(fmt.Sprintf("%srespond_purposes[%d]", prefix, i), err.Error())
	}
	return nil
}
