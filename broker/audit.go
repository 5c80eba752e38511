package broker

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/audit"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// auditedMethods are the operators' calls a broker records whatever their
// outcome, with the action their entries carry. Queries are recorded by
// their handlers; other refused calls by the ledger's observer.
var auditedMethods = map[string]string{
	qhinv1.Directory_RegisterParticipant_FullMethodName:       "register-participant",
	qhinv1.Directory_UpdateParticipant_FullMethodName:         "update-participant",
	qhinv1.Directory_SetParticipantStatus_FullMethodName:      "set-participant-status",
	qhinv1.Directory_WriteParticipants_FullMethodName:         "write-participants",
	qhinv1.Cluster_Join_FullMethodName:                        "cluster-join",
	qhinv1.Cluster_Remove_FullMethodName:                      "cluster-remove",
	qhinv1.Cluster_SaveSnapshot_FullMethodName:                "snapshot-save",
	qhinv1.Cluster_RestoreSnapshot_FullMethodName:             "snapshot-restore",
	qhinv1.Audit_ListEntries_FullMethodName:                   "audit-read",
	qhinv1.Audit_VerifyLedger_FullMethodName:                  "audit-verify",
	qhinv1.Consent_SetConsent_FullMethodName:                  "consent-set",
	qhinv1.Consent_RevokeConsent_FullMethodName:               "consent-revoke",
	qhinv1.Consent_ListDisclosures_FullMethodName:             "disclosures-read",
	qhinv1.Consent_RevokeConsentByDemographics_FullMethodName: "consent-revoke",
	qhinv1.Consent_SetConsentByDemographics_FullMethodName:    "consent-set",
	qhinv1.Consent_FindPatientRecords_FullMethodName:          "person-lookup-read",
}

// errNotRecorded refuses to hand out what the ledger could not record.
var errNotRecorded = status.Error(codes.Unavailable, "this broker cannot record the query in its audit ledger, so it does not answer it; retry on another broker")

// record writes a query's entry, and one entry per member that declined a
// purpose it must answer, and returns once they are durable. The caller
// must not answer when it fails.
func (g *gateway) record(ctx context.Context, method, action string, qc *qhinv1.QueryContext, responders []*qhinv1.ResponderStatus, patients, documents, records []string) error {
	e := &qhinv1.AuditEntry{
		Actor: audit.Caller(ctx), InitiatorParticipantId: qc.InitiatorParticipantId, EndUser: qc.Requester,
		PurposeOfUse: qc.PurposeOfUse, Action: action, Method: method, QueryId: qc.QueryId,
		PatientRefs: patients, DocumentRefs: documents, RecordRefs: records, Outcome: codes.OK.String(),
		Emergency: qc.Emergency, EmergencyReason: qc.EmergencyReason,
	}
	for _, r := range responders {
		e.Members = append(e.Members, &qhinv1.AuditMember{ParticipantId: r.ParticipantId, State: r.Status})
	}
	entries := []*qhinv1.AuditEntry{e}
	declined := declinedRequired(qc.PurposeOfUse, responders)
	for _, id := range declined {
		entries = append(entries, &qhinv1.AuditEntry{
			Actor: e.Actor, InitiatorParticipantId: qc.InitiatorParticipantId, PurposeOfUse: qc.PurposeOfUse,
			Action: audit.ActionInformationBlocking, Method: method, QueryId: qc.QueryId, Outcome: codes.PermissionDenied.String(),
			Emergency: qc.Emergency, EmergencyReason: qc.EmergencyReason,
			Reason:  "member declined a purpose every member must answer",
			Members: []*qhinv1.AuditMember{{ParticipantId: id, State: qhinv1.ResponderState_RESPONDER_STATE_DENIED}},
		})
	}
	g.s.metrics.informationBlocking(qc.PurposeOfUse, declined)
	if err := g.s.ledger.Append(ctx, entries...); err != nil {
		g.s.log.ErrorContext(ctx, "query not answered: its audit entry was not written", "query_id", qc.QueryId, "error", err)
		return errNotRecorded
	}
	return nil
}

// recordFailedRetrieval notes that a retrieval whose start was recorded
// ended in an error.
func (g *gateway) recordFailedRetrieval(ctx context.Context, qc *qhinv1.QueryContext, holder string, documents []string, err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	g.s.ledger.Record(&qhinv1.AuditEntry{
		Actor: audit.Caller(ctx), InitiatorParticipantId: qc.InitiatorParticipantId, EndUser: qc.Requester,
		PurposeOfUse: qc.PurposeOfUse, Action: audit.ActionRetrieveFailed, Method: qhinv1.Gateway_RetrieveDocument_FullMethodName,
		QueryId: qc.QueryId, DocumentRefs: documents, Outcome: status.Code(err).String(), Reason: status.Convert(err).Message(),
		Emergency: qc.Emergency, EmergencyReason: qc.EmergencyReason,
		Members: []*qhinv1.AuditMember{{ParticipantId: holder}},
	})
}

// openLedger opens the broker's ledger, or none when the configuration says
// so (benchmarks comparing the cost of the ledger).
func openLedger(cfg Config, node string, log *slog.Logger) (*audit.Ledger, error) {
	if cfg.NoAudit {
		log.Warn("no audit ledger: queries are not recorded (benchmarks only)")
		return nil, nil
	}
	return audit.Open(filepath.Join(cfg.DataDir, "audit.db"), node, log)
}

// recordRetrieval writes a retrieval's entry before its first byte goes
// to the initiator.
func (g *gateway) recordRetrieval(ctx context.Context, qc *qhinv1.QueryContext, doc *qhinv1.LinkClaims, link string) error {
	var patients, records []string
	if doc.PatientRef != "" {
		patients = []string{doc.PatientRef}
	}
	if doc.PatientId != "" {
		records = []string{audit.RecordRef(doc.ParticipantId, doc.PatientId)}
	}
	return g.record(ctx, qhinv1.Gateway_RetrieveDocument_FullMethodName, audit.ActionRetrieve, qc,
		[]*qhinv1.ResponderStatus{{ParticipantId: doc.ParticipantId, Status: qhinv1.ResponderState_RESPONDER_STATE_OK}},
		patients, []string{audit.LinkRef(link)}, records)
}
