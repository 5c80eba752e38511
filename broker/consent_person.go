package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// A patient who asks the network to withdraw consent, or who asks who
// read their records, names themself by demographics, not by the local id
// of each member holding them. An operator acting for them asks the
// brokers to find their records the way discovery does: a fan-out to the
// active members under T-IAS (individual access: the patient's own
// request, which every member must answer), keeping only the records a
// member's matcher decided are the person (MATCH; a possible match is
// counted, never acted on).

// lookupPurpose is the purpose a person lookup asks the members under.
const lookupPurpose = "T-IAS"

// ActionPersonLookup is the ledger action of an operator's lookup of a
// person's records.
const ActionPersonLookup = "person-lookup"

// operatorOnly checks that the caller is an operator (the authorization
// table says so too) and that this broker serves.
func (c *consentService) operatorOnly(ctx context.Context) (pki.Identity, error) {
	if err := c.s.node.AwaitServing(ctx); err != nil {
		return pki.Identity{}, toStatus(err)
	}
	id, ok := pki.IdentityFromContext(ctx)
	if !ok || id.Role != pki.RoleOperator {
		return pki.Identity{}, status.Error(codes.PermissionDenied, "only operators look a person up by demographics")
	}
	return id, nil
}

// lookup finds the person's records at the members. It validates the
// demographics first (the error names the field, never the value).
func (c *consentService) lookup(ctx context.Context, op pki.Identity, person *qhinv1.PersonLookup) (*qhinv1.RecordLookup, error) {
	if person == nil {
		return nil, invalid("person", "required: the person's demographics")
	}
	if err := match.Validate(person.Demographics); err != nil {
		return nil, status.Error(codes.InvalidArgument, "person."+err.Error())
	}
	g := &gateway{s: c.s}
	ask, skipped, err := g.discoveryResponders(ctx, "", &qhinv1.DiscoverPatientsRequest{PurposeOfUse: lookupPurpose, LocatorTokens: person.LocatorTokens})
	if err != nil {
		return nil, err
	}
	qc := &qhinv1.QueryContext{QueryId: newQueryID(), PurposeOfUse: lookupPurpose,
		Requester: &qhinv1.Requester{Id: op.Name, Role: "operator", Name: "network operator acting on the patient's request"}}
	ctx, cancel := g.queryContext(ctx)
	defer cancel()
	answers := g.askCandidates(ctx, ask, qc, person.Demographics)

	out := &qhinv1.RecordLookup{}
	var statuses []*qhinv1.ResponderStatus
	var records []string
	for _, a := range answers {
		m := &qhinv1.MemberRecords{ParticipantId: a.participantID}
		for _, cand := range a.candidates {
			if cand.GetExplanation().GetDecision() == qhinv1.MatchDecision_MATCH_DECISION_MATCH {
				m.PatientIds = append(m.PatientIds, cand.PatientId)
				records = append(records, audit.RecordRef(a.participantID, cand.PatientId))
			} else {
				m.Possible++
			}
		}
		m.State, m.Detail = a.status.Status, a.status.Detail
		out.Members = append(out.Members, m)
		statuses = append(statuses, a.status)
	}
	for _, s := range skipped {
		out.Members = append(out.Members, &qhinv1.MemberRecords{ParticipantId: s.ParticipantId, State: s.Status, Detail: s.Detail})
		statuses = append(statuses, s)
	}
	for _, m := range out.Members {
		if unanswered(m) {
			out.Unanswered = append(out.Unanswered, m.ParticipantId)
		}
	}
	method, _ := grpc.Method(ctx)
	if err := g.record(ctx, method, ActionPersonLookup, qc, statuses, nil, nil, records); err != nil {
		return nil, err
	}
	c.s.log.InfoContext(ctx, "person lookup", "query_id", qc.QueryId, "caller", caller(ctx),
		"members", len(out.Members), "records", len(records), "unanswered", out.Unanswered)
	return out, nil
}

// unanswered reports whether a member may hold the person's records and
// did not say: it failed, timed out, declined or was not asked for any
// reason but the record locator's saying it holds no record of them.
func unanswered(m *qhinv1.MemberRecords) bool {
	switch m.State {
	case qhinv1.ResponderState_RESPONDER_STATE_OK, qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH:
		return false
	case qhinv1.ResponderState_RESPONDER_STATE_SKIPPED:
		return m.Detail != NoLocatorHit
	}
	return true
}

// recordRequestID derives a record's command id from the caller's request
// id, so that a retried call applies each record's directive once.
func recordRequestID(reqID, member, patient string) string {
	if reqID == "" {
		return ""
	}
	h := sha256.Sum256([]byte(reqID + "\x00" + member + "\x00" + patient))
	return hex.EncodeToString(h[:16])
}

// FindPatientRecords returns the person's records at the members.
func (c *consentService) FindPatientRecords(ctx context.Context, req *qhinv1.FindPatientRecordsRequest) (*qhinv1.FindPatientRecordsResponse, error) {
	if err := c.checkSizes(req); err != nil {
		return nil, err
	}
	op, err := c.operatorOnly(ctx)
	if err != nil {
		return nil, err
	}
	l, err := c.lookup(ctx, op, req.Person)
	if err != nil {
		return nil, err
	}
	return &qhinv1.FindPatientRecordsResponse{Lookup: l}, nil
}

// RevokeConsentByDemographics revokes for each of the person's records,
// each a restricting write: when it returns, no broker discloses them for
// the purposes.
func (c *consentService) RevokeConsentByDemographics(ctx context.Context, req *qhinv1.RevokeConsentByDemographicsRequest) (*qhinv1.ConsentByDemographicsResponse, error) {
	if err := c.checkSizes(req); err != nil {
		return nil, err
	}
	op, err := c.operatorOnly(ctx)
	if err != nil {
		return nil, err
	}
	if err := validateConsentPurposes("purposes", req.Purposes); err != nil {
		return nil, err
	}
	rec, err := recorder(ctx, req.ProxyName, req.ProxyRelationship, "")
	if err != nil {
		return nil, err
	}
	l, err := c.lookup(ctx, op, req.Person)
	if err != nil {
		return nil, err
	}
	resp := &qhinv1.ConsentByDemographicsResponse{Lookup: l}
	err = eachRecord(l, func(member, patient string) error {
		d, err := c.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_CONSENT_REVOKE, recordRequestID(req.RequestId, member, patient), &qhinv1.ConsentRevoke{
			ParticipantId: member, PatientId: patient, Purposes: req.Purposes, RecordedBy: rec})
		if err == nil {
			resp.Directives = append(resp.Directives, d)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// SetConsentByDemographics replaces the directive of each of the person's
// records.
func (c *consentService) SetConsentByDemographics(ctx context.Context, req *qhinv1.SetConsentByDemographicsRequest) (*qhinv1.ConsentByDemographicsResponse, error) {
	if err := c.checkSizes(req); err != nil {
		return nil, err
	}
	op, err := c.operatorOnly(ctx)
	if err != nil {
		return nil, err
	}
	if req.Directive == nil {
		return nil, invalid("directive", "required")
	}
	if req.Directive.ParticipantId != "" || req.Directive.PatientId != "" {
		return nil, invalid("directive.participant_id", "must be empty: the lookup names the records")
	}
	base, err := c.checkDirective(ctx, req.Directive)
	if err != nil {
		return nil, err
	}
	l, err := c.lookup(ctx, op, req.Person)
	if err != nil {
		return nil, err
	}
	resp := &qhinv1.ConsentByDemographicsResponse{Lookup: l}
	err = eachRecord(l, func(member, patient string) error {
		d := proto.Clone(base).(*qhinv1.ConsentDirective)
		d.ParticipantId, d.PatientId = member, patient
		out, err := c.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_CONSENT_SET, recordRequestID(req.RequestId, member, patient), d)
		if err == nil {
			resp.Directives = append(resp.Directives, out)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// eachRecord calls f for each record a lookup found, stopping at the
// first error; the error says how many records were done before it.
func eachRecord(l *qhinv1.RecordLookup, f func(member, patient string) error) error {
	done := 0
	for _, m := range l.Members {
		for _, p := range m.PatientIds {
			if err := f(m.ParticipantId, p); err != nil {
				st := status.Convert(err)
				return status.Errorf(st.Code(), "%s (after %d of the person's records; retry with the same request id)", st.Message(), done)
			}
			done++
		}
	}
	return nil
}
