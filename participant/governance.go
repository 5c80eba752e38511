package participant

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/purpose"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// answers refuses a query whose purpose the member does not answer by its
// own policy (Config.AnswerPurposes). The broker reports the refusal: as
// DENIED, and as possible information blocking when every member must
// answer the purpose.
func (r *responder) answers(qc *qhinv1.QueryContext) error {
	if err := purpose.ValidateQuery(qc.PurposeOfUse); err != nil {
		return status.Errorf(codes.InvalidArgument, "context.purpose_of_use: %v", err)
	}
	if !purpose.Permits(r.s.cfg.AnswerPurposes, qc.PurposeOfUse) {
		return status.Errorf(codes.PermissionDenied, "context.purpose_of_use: this member does not answer %s queries", qc.PurposeOfUse)
	}
	return nil
}

// record writes an answer's entry in the member's ledger — the broker that
// asked, the member that initiated, the end user, the purpose and the local
// ids disclosed — and returns once it is durable. The answer must not leave
// when it fails.
func (r *responder) record(ctx context.Context, method, action string, qc *qhinv1.QueryContext, patients, documents []string) error {
	err := r.s.ledger.Append(ctx, &qhinv1.AuditEntry{
		Actor: audit.Caller(ctx), InitiatorParticipantId: qc.InitiatorParticipantId, EndUser: qc.Requester,
		PurposeOfUse: qc.PurposeOfUse, Action: action, Method: method, QueryId: qc.QueryId,
		PatientRefs: patients, DocumentRefs: documents, Outcome: codes.OK.String(),
		Emergency: qc.Emergency, EmergencyReason: qc.EmergencyReason,
	})
	if err != nil {
		r.s.log.ErrorContext(ctx, "answer withheld: its audit entry was not written", "query_id", qc.QueryId, "error", err)
		return status.Error(codes.Unavailable, "the member cannot record the answer in its audit ledger")
	}
	return nil
}

// unique returns the distinct strings of list, in order.
func unique(list []string) []string {
	seen := make(map[string]bool, len(list))
	out := list[:0:0]
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
