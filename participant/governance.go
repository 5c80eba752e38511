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

// ActionWithheldByMember records what a member's own policy kept out of an
// answer: documents by security label, patients it restricted locally.
const ActionWithheldByMember = "withheld-by-member"

// errWithheld is a retrieval the member's own policy refuses.
var errWithheld = status.Error(codes.PermissionDenied, "document_id: withheld by the member's own policy for this purpose")

// restricted returns the patients among ids that the member restricted
// locally for the query's purpose.
func (r *responder) restricted(ids []string, qc *qhinv1.QueryContext) (map[string]bool, error) {
	rs, err := r.s.store.RestrictionsOf(ids)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for id, rr := range rs {
		if restrictionWithholds(rr, qc.PurposeOfUse) {
			out[id] = true
		}
	}
	return out, nil
}

// withheld notes in the member's ledger what its own policy kept out of an
// answer (local ids, like the member's other entries) and counts it;
// nothing about it reaches the answer or the log.
func (r *responder) withheld(ctx context.Context, method string, qc *qhinv1.QueryContext, patients, documents []string, reason string) {
	if len(patients) == 0 && len(documents) == 0 {
		return
	}
	r.s.metrics.withheld(qc.PurposeOfUse, len(patients)+len(documents))
	r.s.ledger.Record(&qhinv1.AuditEntry{
		Actor: audit.Caller(ctx), InitiatorParticipantId: qc.InitiatorParticipantId, EndUser: qc.Requester,
		PurposeOfUse: qc.PurposeOfUse, Action: ActionWithheldByMember, Method: method, QueryId: qc.QueryId,
		PatientRefs: patients, DocumentRefs: documents, Outcome: codes.PermissionDenied.String(), Reason: reason,
		Emergency: qc.Emergency, EmergencyReason: qc.EmergencyReason,
	})
}

// Fixed words of the withholding reasons.
const (
	reasonRestricted = "the member restricted the patient for this purpose"
	reasonLabel      = "the document's security label is not allowed for this purpose by the member's policy"
)

// withholdCandidates drops the discovery candidates the member restricted
// for the query's purpose.
func (r *responder) withholdCandidates(ctx context.Context, method string, qc *qhinv1.QueryContext, cands []*qhinv1.Candidate) ([]*qhinv1.Candidate, error) {
	ids := make([]string, len(cands))
	for i, c := range cands {
		ids[i] = c.PatientId
	}
	out, err := r.withholdPatients(ctx, method, qc, ids)
	if err != nil || len(out) == len(ids) {
		return cands, err
	}
	keep := make(map[string]bool, len(out))
	for _, id := range out {
		keep[id] = true
	}
	kept := cands[:0:0]
	for _, c := range cands {
		if keep[c.PatientId] {
			kept = append(kept, c)
		}
	}
	return kept, nil
}

// withholdPatients returns ids without the patients the member restricted
// for the query's purpose, and records those it dropped.
func (r *responder) withholdPatients(ctx context.Context, method string, qc *qhinv1.QueryContext, ids []string) ([]string, error) {
	restricted, err := r.restricted(ids, qc)
	if err != nil {
		r.s.log.ErrorContext(ctx, "read local restrictions", "query_id", qc.QueryId, "error", err)
		return nil, status.Error(codes.Internal, "reading the member's restrictions failed")
	}
	if len(restricted) == 0 {
		return ids, nil
	}
	var kept, dropped []string
	for _, id := range ids {
		if restricted[id] {
			dropped = append(dropped, id)
		} else {
			kept = append(kept, id)
		}
	}
	r.withheld(ctx, method, qc, unique(dropped), nil, reasonRestricted)
	return kept, nil
}

// withholdDocuments drops the documents the member's label policy
// withholds from the query's purpose, and records those it dropped (the
// patients it restricted were dropped before their documents were read).
func (r *responder) withholdDocuments(ctx context.Context, qc *qhinv1.QueryContext, docs []*qhinv1.DocumentMetadata) []*qhinv1.DocumentMetadata {
	kept := docs[:0:0]
	var dropped []string
	for _, d := range docs {
		if r.s.cfg.LabelPolicy.Withholds(d.SecurityLabels, qc.PurposeOfUse) {
			dropped = append(dropped, d.Id)
			continue
		}
		kept = append(kept, d)
	}
	r.withheld(ctx, qhinv1.Responder_QueryDocuments_FullMethodName, qc, nil, dropped, reasonLabel)
	return kept
}

// checkRetrieval refuses a retrieval of a document the member's own policy
// withholds from the query's purpose, and records it; the refusal does
// not echo the id.
func (r *responder) checkRetrieval(ctx context.Context, qc *qhinv1.QueryContext, m *qhinv1.DocumentMetadata) error {
	const method = qhinv1.Responder_RetrieveDocument_FullMethodName
	patient := m.GetPatient().GetPatientId()
	restricted, err := r.restricted([]string{patient}, qc)
	if err != nil {
		r.s.log.ErrorContext(ctx, "read local restrictions", "query_id", qc.QueryId, "error", err)
		return status.Error(codes.Internal, "reading the member's restrictions failed")
	}
	if restricted[patient] {
		r.withheld(ctx, method, qc, []string{patient}, []string{m.Id}, reasonRestricted)
		return errWithheld
	}
	if r.s.cfg.LabelPolicy.Withholds(m.SecurityLabels, qc.PurposeOfUse) {
		r.withheld(ctx, method, qc, nil, []string{m.Id}, reasonLabel)
		return errWithheld
	}
	return nil
}
