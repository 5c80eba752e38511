package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/broker/consent"
	"github.com/openqhin/openqhin/broker/fanout"
	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/broker/sizes"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Consent is enforced where records leave the network: a broker keeps out
// of every discovery answer, document query and retrieval the records
// (member, local patient id) whose patient's directive does not permit the
// query's purpose. It reads the directives from its own state, after
// checking again that it may serve (cluster.Node.AwaitServing): a consent
// write is a restricting write, acknowledged only once every broker holds
// it or can no longer serve without it, so a query that starts after a
// revocation returned sees it on every broker that answers.

// consentService records and shows directives.
type consentService struct {
	qhinv1.UnimplementedConsentServer
	s *Server
}

// home returns the member whose patient a call names: the caller itself
// for a member (naming another member is refused), the named member for
// an operator.
func (c *consentService) home(ctx context.Context, field, claimed string) (string, error) {
	if err := c.s.node.AwaitServing(ctx); err != nil {
		return "", toStatus(err)
	}
	id, ok := pki.IdentityFromContext(ctx)
	if !ok {
		return "", status.Error(codes.PermissionDenied, "no caller identity")
	}
	switch id.Role {
	case pki.RoleOperator:
		if claimed == "" {
			return "", invalid(field, "required: the patient's home member")
		}
		if err := pki.ValidateName(claimed); err != nil {
			return "", invalid(field, memberIDRule)
		}
		return claimed, nil
	case pki.RoleParticipant:
	default:
		return "", status.Error(codes.PermissionDenied, "only members and operators record consent")
	}
	if claimed != "" && claimed != id.Name {
		return "", status.Errorf(codes.PermissionDenied,
			"%s: a member records and reads consent only for its own patients (its certificate names %s)", field, id.Name)
	}
	p, err := c.s.node.FSM().Participant(id.Name)
	if errors.Is(err, fsm.ErrNotFound) {
		return "", status.Errorf(codes.PermissionDenied, "participant %s is not in the directory", id.Name)
	}
	if err != nil {
		return "", toStatus(err)
	}
	if p.SpiffeId != id.ID.String() {
		return "", status.Errorf(codes.PermissionDenied, "participant %s is registered with another identity", id.Name)
	}
	if p.Status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED {
		return "", status.Errorf(codes.PermissionDenied, "participant %s is retired", id.Name)
	}
	return id.Name, nil
}

func (c *consentService) checkSizes(req proto.Message) error {
	if err := sizes.Check(req, c.s.limits.Fields); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

func validateConsentPurposes(field string, list []string) error {
	if len(list) > fsm.MaxConsentPurposes {
		return invalid(field, fmt.Sprintf("at most %d purposes", fsm.MaxConsentPurposes))
	}
	if i, err := consent.ValidatePurposes(list); err != nil {
		return invalid(fmt.Sprintf("%s[%d]", field, i), err.Error())
	}
	return nil
}

func recorder(ctx context.Context, proxyName, proxyRelationship string, field string) (*qhinv1.ConsentRecorder, error) {
	if proxyRelationship != "" && proxyName == "" {
		return nil, invalid(field+"proxy_name", "required with proxy_relationship: the representative who acted for the patient")
	}
	return &qhinv1.ConsentRecorder{Actor: caller(ctx), ProxyName: proxyName, ProxyRelationship: proxyRelationship}, nil
}

// apply commits a consent command; it returns once every broker that
// still answers queries holds it (every consent write restricts).
func (c *consentService) apply(ctx context.Context, t qhinv1.CommandType, reqID string, payload proto.Message) (*qhinv1.ConsentDirective, error) {
	cmd, err := fsm.NewCommand(t, requestID(reqID), time.Now(), payload)
	if err != nil {
		return nil, toStatus(err)
	}
	v, index, err := c.s.node.Apply(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	d, ok := v.(*qhinv1.ConsentDirective)
	if !ok {
		return nil, toStatus(fmt.Errorf("%v returned %T", t, v))
	}
	c.s.log.InfoContext(ctx, "consent recorded", "participant", d.ParticipantId, "index", index,
		"opt_out", d.OptOut, "denied", len(d.DeniedPurposes), "allowed", len(d.AllowedPurposes), "caller", caller(ctx))
	return d, nil
}

// SetConsent replaces a patient's directive.
func (c *consentService) SetConsent(ctx context.Context, req *qhinv1.SetConsentRequest) (*qhinv1.SetConsentResponse, error) {
	if err := c.checkSizes(req); err != nil {
		return nil, err
	}
	if req.Directive == nil {
		return nil, invalid("directive", "required")
	}
	d := proto.Clone(req.Directive).(*qhinv1.ConsentDirective)
	home, err := c.home(ctx, "directive.participant_id", d.ParticipantId)
	if err != nil {
		return nil, err
	}
	d.ParticipantId = home
	if d.PatientId == "" {
		return nil, invalid("directive.patient_id", "required: the member's local patient id")
	}
	if d, err = c.checkDirective(ctx, d); err != nil {
		return nil, err
	}
	out, err := c.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_CONSENT_SET, req.RequestId, d)
	if err != nil {
		return nil, err
	}
	return &qhinv1.SetConsentResponse{Directive: out}, nil
}

// checkDirective checks a directive's purposes and returns a copy recorded
// by the caller, its time left to the apply.
func (c *consentService) checkDirective(ctx context.Context, in *qhinv1.ConsentDirective) (*qhinv1.ConsentDirective, error) {
	d := proto.Clone(in).(*qhinv1.ConsentDirective)
	if err := validateConsentPurposes("directive.denied_purposes", d.DeniedPurposes); err != nil {
		return nil, err
	}
	if err := validateConsentPurposes("directive.allowed_purposes", d.AllowedPurposes); err != nil {
		return nil, err
	}
	for i, a := range d.AllowedPurposes {
		for _, x := range d.DeniedPurposes {
			if a == x {
				return nil, invalid(fmt.Sprintf("directive.allowed_purposes[%d]", i), "also in denied_purposes")
			}
		}
	}
	var err error
	if d.RecordedBy, err = recorder(ctx, d.GetRecordedBy().GetProxyName(), d.GetRecordedBy().GetProxyRelationship(), "directive.recorded_by."); err != nil {
		return nil, err
	}
	d.Updated = nil
	return d, nil
}

// RevokeConsent withdraws purposes, or all exchange, from a patient's
// directive. When it returns, no broker discloses the patient's records
// for them.
func (c *consentService) RevokeConsent(ctx context.Context, req *qhinv1.RevokeConsentRequest) (*qhinv1.RevokeConsentResponse, error) {
	if err := c.checkSizes(req); err != nil {
		return nil, err
	}
	home, err := c.home(ctx, "participant_id", req.ParticipantId)
	if err != nil {
		return nil, err
	}
	if req.PatientId == "" {
		return nil, invalid("patient_id", "required: the member's local patient id")
	}
	if err := validateConsentPurposes("purposes", req.Purposes); err != nil {
		return nil, err
	}
	rec, err := recorder(ctx, req.ProxyName, req.ProxyRelationship, "")
	if err != nil {
		return nil, err
	}
	out, err := c.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_CONSENT_REVOKE, req.RequestId, &qhinv1.ConsentRevoke{
		ParticipantId: home, PatientId: req.PatientId, Purposes: req.Purposes, RecordedBy: rec})
	if err != nil {
		return nil, err
	}
	return &qhinv1.RevokeConsentResponse{Directive: out}, nil
}

// GetConsent returns a patient's directive, as of a linearizable read.
func (c *consentService) GetConsent(ctx context.Context, req *qhinv1.GetConsentRequest) (*qhinv1.GetConsentResponse, error) {
	if err := c.checkSizes(req); err != nil {
		return nil, err
	}
	home, err := c.home(ctx, "participant_id", req.ParticipantId)
	if err != nil {
		return nil, err
	}
	if req.PatientId == "" {
		return nil, invalid("patient_id", "required: the member's local patient id")
	}
	f, err := c.s.node.Read(ctx, cluster.ReadLinearizable)
	if err != nil {
		return nil, toStatus(err)
	}
	d, err := f.Consent(fsm.ConsentKey{ParticipantID: home, PatientID: req.PatientId})
	if err != nil {
		return nil, toStatus(err)
	}
	return &qhinv1.GetConsentResponse{Directive: d}, nil
}

// checkEmergency refuses an emergency declaration that is not a treatment
// query's, or has no reason.
func checkEmergency(purposeCode string, emergency bool, reason string) error {
	if field, err := consent.ValidateEmergency(purposeCode, emergency, reason); err != nil {
		return invalid(field, err.Error())
	}
	return nil
}

// directives reads the directives of the records a query would disclose.
// It checks again that this broker serves: a query may have run for longer
// than a lease since it started, and a revocation acknowledged meanwhile
// counted on this broker's not serving without it.
func (g *gateway) directives(ctx context.Context, keys []fsm.ConsentKey) (map[fsm.ConsentKey]*qhinv1.ConsentDirective, error) {
	if err := g.s.node.AwaitServing(ctx); err != nil {
		return nil, toStatus(err)
	}
	m, err := g.s.node.FSM().Consents(keys)
	if err != nil {
		return nil, toStatus(err)
	}
	return m, nil
}

// withheld are the records consent kept out of an answer.
type withheld []string

// record notes the records withheld in the ledger, by reference, and counts
// them; nothing about them reaches the answer or the log.
func (w withheld) record(g *gateway, ctx context.Context, method string, qc *qhinv1.QueryContext) {
	if len(w) == 0 {
		return
	}
	g.s.metrics.consentWithheld(qc.PurposeOfUse, len(w))
	g.s.ledger.Record(&qhinv1.AuditEntry{
		Actor: audit.Caller(ctx), InitiatorParticipantId: qc.InitiatorParticipantId, EndUser: qc.Requester,
		PurposeOfUse: qc.PurposeOfUse, Action: audit.ActionWithheld, Method: method, QueryId: qc.QueryId,
		RecordRefs: w, Outcome: codes.PermissionDenied.String(), Emergency: qc.Emergency, EmergencyReason: qc.EmergencyReason,
		Reason: "the patient's consent directive does not permit the purpose",
	})
}

// withholdCandidates drops from a discovery's answers the candidates whose
// directive does not permit the query. A member all of whose candidates
// were withheld is reported as holding nothing for the query: its OK would
// tell the initiator that it holds a record it may not see.
func (g *gateway) withholdCandidates(ctx context.Context, qc *qhinv1.QueryContext, found []fanout.Found, responders []*qhinv1.ResponderStatus) ([]fanout.Found, error) {
	var keys []fsm.ConsentKey
	for _, f := range found {
		for _, c := range f.Candidates {
			keys = append(keys, fsm.ConsentKey{ParticipantID: f.ParticipantID, PatientID: c.PatientId})
		}
	}
	dirs, err := g.directives(ctx, keys)
	if err != nil || len(dirs) == 0 {
		return found, err
	}
	var w withheld
	out := found[:0]
	for _, f := range found {
		kept := f.Candidates[:0]
		for _, c := range f.Candidates {
			d := dirs[fsm.ConsentKey{ParticipantID: f.ParticipantID, PatientID: c.PatientId}]
			if consent.Decide(d, qc.PurposeOfUse, qc.Emergency).Discloses() {
				kept = append(kept, c)
			} else {
				w = append(w, audit.RecordRef(f.ParticipantID, c.PatientId))
			}
		}
		if len(kept) > 0 {
			out = append(out, fanout.Found{ParticipantID: f.ParticipantID, Candidates: kept})
			continue
		}
		for _, r := range responders {
			if r.ParticipantId == f.ParticipantID {
				r.Status, r.Detail = qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH, ""
			}
		}
	}
	w.record(g, ctx, qhinv1.Gateway_DiscoverPatients_FullMethodName, qc)
	return out, nil
}

// withholdLinks drops from a document query the patients whose directive
// does not permit it: their members are not asked about them.
func (g *gateway) withholdLinks(ctx context.Context, qc *qhinv1.QueryContext, opened *openedLinks) error {
	keys := make([]fsm.ConsentKey, len(opened.links))
	for i, l := range opened.links {
		keys[i] = fsm.ConsentKey{ParticipantID: l.ParticipantId, PatientID: l.PatientId}
	}
	dirs, err := g.directives(ctx, keys)
	if err != nil || len(dirs) == 0 {
		return err
	}
	var w withheld
	kept := opened.links[:0]
	for _, l := range opened.links {
		d := dirs[fsm.ConsentKey{ParticipantID: l.ParticipantId, PatientID: l.PatientId}]
		if consent.Decide(d, qc.PurposeOfUse, qc.Emergency).Discloses() {
			kept = append(kept, l)
			continue
		}
		w = append(w, audit.RecordRef(l.ParticipantId, l.PatientId))
		delete(opened.patients[l.ParticipantId], l.PatientId)
	}
	opened.links = kept
	w.record(g, ctx, qhinv1.Gateway_QueryDocuments_FullMethodName, qc)
	return nil
}

// errConsentRetrieve refuses a retrieval the patient's directive does not
// permit.
var errConsentRetrieve = status.Error(codes.PermissionDenied, "link.link: the patient's consent directive does not permit this purpose")

// consentRetrieve refuses a retrieval whose patient's directive does not
// permit it.
func (g *gateway) consentRetrieve(ctx context.Context, qc *qhinv1.QueryContext, doc *qhinv1.LinkClaims) error {
	if doc.PatientId == "" {
		return nil
	}
	k := fsm.ConsentKey{ParticipantID: doc.ParticipantId, PatientID: doc.PatientId}
	dirs, err := g.directives(ctx, []fsm.ConsentKey{k})
	if err != nil {
		return err
	}
	if consent.Decide(dirs[k], qc.PurposeOfUse, qc.Emergency).Discloses() {
		return nil
	}
	withheld{audit.RecordRef(doc.ParticipantId, doc.PatientId)}.record(g, ctx, qhinv1.Gateway_RetrieveDocument_FullMethodName, qc)
	return errConsentRetrieve
}

// personRecords are the record references of the persons a discovery
// discloses.
func personRecords(persons []*qhinv1.Person) []string {
	var out []string
	for _, p := range persons {
		for _, l := range p.Links {
			out = append(out, audit.RecordRef(l.ParticipantId, l.PatientId))
		}
	}
	return out
}

// linkRecords are the record references of a document query's patients.
func linkRecords(links []*qhinv1.PatientLink) []string {
	out := make([]string, len(links))
	for i, l := range links {
		out[i] = audit.RecordRef(l.ParticipantId, l.PatientId)
	}
	return out
}

// disclosingActions are the ledger actions that disclose the records they
// name.
var disclosingActions = []string{audit.ActionDiscover, audit.ActionDocuments, audit.ActionRetrieve}

// ListDisclosures returns the disclosures of a record this broker's
// ledger holds.
func (c *consentService) ListDisclosures(ctx context.Context, req *qhinv1.ListDisclosuresRequest) (*qhinv1.ListDisclosuresResponse, error) {
	if err := c.checkSizes(req); err != nil {
		return nil, err
	}
	home, err := c.home(ctx, "participant_id", req.ParticipantId)
	if err != nil {
		return nil, err
	}
	if req.PatientId == "" {
		return nil, invalid("patient_id", "required: the member's local patient id")
	}
	if c.s.ledger == nil {
		return nil, status.Error(codes.FailedPrecondition, "this broker keeps no audit ledger")
	}
	limit := int(req.Limit)
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, audit.MaxList)
	f := audit.Filter{Patient: audit.RecordRef(home, req.PatientId), Limit: audit.MaxList}
	if req.Since != nil {
		f.Since = req.Since.AsTime()
	}
	resp := &qhinv1.ListDisclosuresResponse{Node: c.s.ledger.Node()}
	for len(resp.Disclosures) < limit {
		entries, next, err := c.s.ledger.List(f)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "read the audit ledger: %v", err)
		}
		for _, e := range entries {
			if e.Outcome != codes.OK.String() || !slices.Contains(disclosingActions, e.Action) || len(resp.Disclosures) == limit {
				continue
			}
			resp.Disclosures = append(resp.Disclosures, &qhinv1.Disclosure{
				Time: e.Time, InitiatorParticipantId: e.InitiatorParticipantId, EndUser: e.EndUser, PurposeOfUse: e.PurposeOfUse,
				Action: e.Action, Emergency: e.Emergency, EmergencyReason: e.EmergencyReason, QueryId: e.QueryId,
				Broker: c.s.ledger.Node(), Seq: e.Seq, RecordParticipantId: home, RecordPatientId: req.PatientId,
			})
		}
		if next == 0 {
			break
		}
		f.Before = next
	}
	return resp, nil
}
