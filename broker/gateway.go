package broker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/fanout"
	"github.com/openqhin/openqhin/broker/purpose"
	"github.com/openqhin/openqhin/broker/sizes"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// MaxChunk is the largest piece of a document the broker sends in one
// message: just under 32 KiB, so that the message fits gRPC's pooled 32 KiB
// buffers (see store.ChunkSize).
const MaxChunk = 32<<10 - 64

type gateway struct {
	qhinv1.UnimplementedGatewayServer
	s *Server
}

// initiator checks that the caller is a participant in good standing that
// may initiate the purpose, and returns its directory entry. Standing is
// checked before the request is looked at: a refused caller learns nothing
// about its input.
func (g *gateway) initiator(ctx context.Context, purposeCode string, requester *qhinv1.Requester) (*qhinv1.Participant, error) {
	// A broker answers only from state it can vouch for: what the leader
	// committed a lease ago, applied here (cluster.Node.Serving).
	if err := g.s.node.AwaitServing(ctx); err != nil {
		return nil, toStatus(err)
	}
	id, ok := pki.IdentityFromContext(ctx)
	if !ok || id.Role != pki.RoleParticipant {
		return nil, status.Error(codes.PermissionDenied, "only participants may query")
	}
	_, members, err := g.s.routing.get(g.s.node.FSM())
	if err != nil {
		return nil, toStatus(err)
	}
	p, ok := members[id.Name]
	if !ok {
		if _, err := g.s.node.FSM().Participant(id.Name); err == nil {
			return nil, status.Errorf(codes.PermissionDenied, "participant %s is not active", id.Name)
		}
		return nil, status.Errorf(codes.PermissionDenied, "participant %s is not in the directory", id.Name)
	}
	if p.SpiffeId != id.ID.String() {
		return nil, status.Errorf(codes.PermissionDenied, "participant %s is registered with another identity", id.Name)
	}
	switch p.Status {
	case qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE:
	case qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED:
		return nil, status.Errorf(codes.PermissionDenied, "participant %s is suspended", p.Id)
	default:
		return nil, status.Errorf(codes.PermissionDenied, "participant %s is not active", p.Id)
	}
	if err := validateCommon(purposeCode, requester); err != nil {
		return nil, err
	}
	if err := mayInitiate(p, purposeCode); err != nil {
		return nil, err
	}
	return p, nil
}

func validateCommon(purposeCode string, r *qhinv1.Requester) error {
	if err := purpose.ValidateQuery(purposeCode); err != nil {
		return invalid("purpose_of_use", err.Error())
	}
	if r == nil {
		return invalid("requester", "required: the end user the query is made for")
	}
	if r.Id == "" {
		return invalid("requester.id", "required")
	}
	return checkNPI(purposeCode, r)
}

// queryContext bounds a query by the caller's deadline, capped at the
// broker's maximum.
func (g *gateway) queryContext(ctx context.Context) (context.Context, context.CancelFunc) {
	max := g.s.cfg.MaxQueryTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < max {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, max)
}

func newQueryID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// DiscoverPatients asks every member that may hold records for the person
// and merges their candidates.
func (g *gateway) DiscoverPatients(ctx context.Context, req *qhinv1.DiscoverPatientsRequest) (_ *qhinv1.DiscoverPatientsResponse, err error) {
	defer func(start time.Time) { g.s.metrics.query("discover", req.PurposeOfUse, start, err) }(time.Now())
	if err := g.checkSizes(req); err != nil {
		return nil, err
	}
	init, err := g.initiator(ctx, req.PurposeOfUse, req.Requester)
	if err != nil {
		return nil, err
	}
	if err := checkEmergency(req.PurposeOfUse, req.Emergency, req.EmergencyReason); err != nil {
		return nil, err
	}
	release, err := g.s.queries.acquire(init.Id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := match.Validate(req.Demographics); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ask, skipped, err := g.discoveryResponders(ctx, init.Id, req)
	if err != nil {
		return nil, err
	}
	qc := &qhinv1.QueryContext{QueryId: newQueryID(), InitiatorParticipantId: init.Id, PurposeOfUse: req.PurposeOfUse, Requester: req.Requester,
		Emergency: req.Emergency, EmergencyReason: req.EmergencyReason}

	ctx, cancel := g.queryContext(ctx)
	defer cancel()
	start := time.Now()
	answers := g.askCandidates(ctx, ask, qc, req.Demographics)

	found := make([]fanout.Found, 0, len(answers))
	resp := &qhinv1.DiscoverPatientsResponse{QueryId: qc.QueryId}
	for _, a := range answers {
		if a.status.Status == qhinv1.ResponderState_RESPONDER_STATE_OK {
			found = append(found, fanout.Found{ParticipantID: a.participantID, Candidates: a.candidates})
		}
		resp.Responders = append(resp.Responders, a.status)
	}
	resp.Responders = append(resp.Responders, skipped...)
	if found, err = g.withholdCandidates(ctx, qc, found, resp.Responders); err != nil {
		return nil, err
	}
	resp.Persons = fanout.MergePersons(ctx, found)
	refs, err := g.issuePersonLinks(init.Id, req.PurposeOfUse, resp.Persons)
	if err != nil {
		return nil, err
	}
	if err := g.record(ctx, qhinv1.Gateway_DiscoverPatients_FullMethodName, audit.ActionDiscover, qc, resp.Responders, refs, nil, personRecords(resp.Persons)); err != nil {
		return nil, err
	}
	g.s.metrics.fanout(len(ask), resp.Responders)
	g.s.logQuery(ctx, "discover", qc, start, resp.Responders, "persons", len(resp.Persons))
	return resp, nil
}

// memberCandidates is one member's part of a discovery fan-out: its status
// and the candidates kept of its answer.
type memberCandidates struct {
	participantID string
	status        *qhinv1.ResponderStatus
	candidates    []*qhinv1.Candidate
}

// askCandidates asks each member of ask, under qc, for its patients that may
// be the person d describes, and keeps of each answer the valid candidates
// up to the cap (fanout.Keep, which notes what it dropped in the status).
func (g *gateway) askCandidates(ctx context.Context, ask []*qhinv1.Participant, qc *qhinv1.QueryContext, d *qhinv1.Demographics) []memberCandidates {
	byID := index(ask)
	limit := g.s.limits.MaxCandidatesPerResponder
	outcomes := fanout.Run(ctx, ids(ask), fanout.Options{Timeout: g.s.cfg.ResponderTimeout},
		func(ctx context.Context, id string) (*candidatesAnswer, error) {
			conn, err := g.s.responders.conn(byID[id])
			if err != nil {
				return nil, err
			}
			ans := newCandidatesAnswer(limit)
			err = conn.Invoke(ctx, qhinv1.Responder_DiscoverPatients_FullMethodName,
				&qhinv1.ResponderDiscoverPatientsRequest{Context: qc, Demographics: d}, ans, grpc.ForceCodecV2(answerCodec{}))
			return ans, err
		},
		func(a *candidatesAnswer) bool { return a.sent == 0 })
	out := make([]memberCandidates, len(outcomes))
	for i, o := range outcomes {
		out[i] = memberCandidates{participantID: o.ParticipantID, status: o.Status}
		if o.Value != nil {
			out[i].candidates = fanout.Keep(o.Status, o.Value.items, o.Value.sent, limit, "candidates", g.validCandidate)
		}
	}
	return out
}

// QueryDocuments asks the members that hold the linked patients for their
// documents.
func (g *gateway) QueryDocuments(ctx context.Context, req *qhinv1.QueryDocumentsRequest) (_ *qhinv1.QueryDocumentsResponse, err error) {
	defer func(start time.Time) { g.s.metrics.query("documents", req.PurposeOfUse, start, err) }(time.Now())
	if err := g.checkSizes(req); err != nil {
		return nil, err
	}
	init, err := g.initiator(ctx, req.PurposeOfUse, req.Requester)
	if err != nil {
		return nil, err
	}
	if err := checkEmergency(req.PurposeOfUse, req.Emergency, req.EmergencyReason); err != nil {
		return nil, err
	}
	release, err := g.s.queries.acquire(init.Id)
	if err != nil {
		return nil, err
	}
	defer release()
	if len(req.Links) == 0 {
		return nil, invalid("links", "at least one patient link is required")
	}
	opened, err := g.openPatientLinks(init.Id, req.PurposeOfUse, req.Links)
	if err != nil {
		return nil, err
	}
	if len(opened.expires) > g.s.limits.MaxMembersPerQuery {
		return nil, invalid("links", fmt.Sprintf("must name at most %d distinct members (--max-members-per-query)", g.s.limits.MaxMembersPerQuery))
	}
	if req.Since != nil && req.Until != nil && !req.Since.AsTime().Before(req.Until.AsTime()) {
		return nil, invalid("since", "must be before until")
	}
	_, directory, err := g.s.routing.get(g.s.node.FSM())
	if err != nil {
		return nil, toStatus(err)
	}
	qc := &qhinv1.QueryContext{QueryId: newQueryID(), InitiatorParticipantId: init.Id, PurposeOfUse: req.PurposeOfUse, Requester: req.Requester,
		Emergency: req.Emergency, EmergencyReason: req.EmergencyReason}
	if err := g.withholdLinks(ctx, qc, opened); err != nil {
		return nil, err
	}
	ask, patients, skipped := routeLinks(directory, opened.links, req.PurposeOfUse)
	byID := index(ask)

	ctx, cancel := g.queryContext(ctx)
	defer cancel()
	start := time.Now()
	outcomes := fanout.Run(ctx, ids(ask), fanout.Options{Timeout: g.s.cfg.ResponderTimeout},
		func(ctx context.Context, id string) (*documentsAnswer, error) {
			conn, err := g.s.responders.conn(byID[id])
			if err != nil {
				return nil, err
			}
			ans := newDocumentsAnswer(g.s.limits.MaxDocumentsPerResponder)
			err = conn.Invoke(ctx, qhinv1.Responder_QueryDocuments_FullMethodName, &qhinv1.ResponderQueryDocumentsRequest{
				Context: qc, PatientIds: patients[id], TypeCodes: req.TypeCodes, Since: req.Since, Until: req.Until,
			}, ans, grpc.ForceCodecV2(answerCodec{}))
			return ans, err
		},
		func(a *documentsAnswer) bool { return a.sent == 0 })

	resp := &qhinv1.QueryDocumentsResponse{QueryId: qc.QueryId}
	var lists [][]*qhinv1.DocumentMetadata
	for _, o := range outcomes {
		var kept []*qhinv1.DocumentMetadata
		if o.Value != nil {
			// A document of a patient the member was not asked about is
			// malformed: no link to it could name its patient, and no
			// consent directive could be checked when it is retrieved.
			asked := opened.patients[o.ParticipantID]
			valid := func(d *qhinv1.DocumentMetadata) error {
				if err := g.validDocument(d); err != nil {
					return err
				}
				if _, ok := asked[d.GetPatient().GetPatientId()]; !ok {
					return errors.New("a patient the member was not asked about")
				}
				return nil
			}
			kept = fanout.Keep(o.Status, o.Value.items, o.Value.sent, g.s.limits.MaxDocumentsPerResponder, "documents", valid)
		}
		for _, d := range kept {
			// The broker states where a document came from; a member
			// cannot claim another's.
			d.SourceParticipantId = o.ParticipantID
			if d.Patient == nil {
				d.Patient = &qhinv1.PatientLink{}
			}
			d.Patient.ParticipantId = o.ParticipantID
		}
		lists = append(lists, kept)
		resp.Responders = append(resp.Responders, o.Status)
	}
	resp.Responders = append(resp.Responders, skipped...)
	resp.Documents = fanout.MergeDocuments(lists...)
	docRefs, err := g.issueDocumentLinks(init.Id, req.PurposeOfUse, opened, resp.Documents)
	if err != nil {
		return nil, err
	}
	if err := g.record(ctx, qhinv1.Gateway_QueryDocuments_FullMethodName, audit.ActionDocuments, qc, resp.Responders, opened.refs, docRefs, linkRecords(opened.links)); err != nil {
		return nil, err
	}
	g.s.metrics.fanout(len(ask), resp.Responders)
	g.s.logQuery(ctx, "documents", qc, start, resp.Responders, "documents", len(resp.Documents))
	return resp, nil
}

// RetrieveDocument proxies one document from the member that holds it, one
// chunk at a time, checking its size and SHA-256 on the way through. The
// header must arrive within the responder timeout, and so must each chunk
// after it: a stalled member ends the stream, a slow but steady one does not.
func (g *gateway) RetrieveDocument(req *qhinv1.RetrieveDocumentRequest, out grpc.ServerStreamingServer[qhinv1.RetrieveDocumentResponse]) (err error) {
	defer func(start time.Time) { g.s.metrics.query("retrieve", req.PurposeOfUse, start, err) }(time.Now())
	ctx := out.Context()
	if err := g.checkSizes(req); err != nil {
		return err
	}
	init, err := g.initiator(ctx, req.PurposeOfUse, req.Requester)
	if err != nil {
		return err
	}
	if err := checkEmergency(req.PurposeOfUse, req.Emergency, req.EmergencyReason); err != nil {
		return err
	}
	release, err := g.s.retrievals.acquire(init.Id)
	if err != nil {
		return err
	}
	defer release()
	doc, err := g.s.open("link.link", req.GetLink().GetLink(), qhinv1.LinkKind_LINK_KIND_DOCUMENT, init.Id, req.PurposeOfUse)
	if err != nil {
		return err
	}
	_, directory, err := g.s.routing.get(g.s.node.FSM())
	if err != nil {
		return toStatus(err)
	}
	holder, ok := directory[doc.ParticipantId]
	if !ok {
		return status.Errorf(codes.NotFound, "link.link: participant %s is no longer a member of the network", doc.ParticipantId)
	}
	if reason, ok := askable(holder, req.PurposeOfUse); !ok {
		return status.Errorf(codes.FailedPrecondition, "participant %s: %s", holder.Id, reason)
	}
	qc := &qhinv1.QueryContext{QueryId: newQueryID(), InitiatorParticipantId: init.Id, PurposeOfUse: req.PurposeOfUse, Requester: req.Requester,
		Emergency: req.Emergency, EmergencyReason: req.EmergencyReason}
	if err := g.consentRetrieve(ctx, qc, doc); err != nil {
		return err
	}
	c, err := g.s.responders.client(holder)
	if err != nil {
		return toStatus(err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The watchdog runs only while the broker waits on the holder: time
	// spent handing chunks to a slow initiator is the initiator's, bounded
	// by the send timeout, and never blamed on the holder.
	errStalled := fmt.Errorf("participant %s stopped sending for %v", holder.Id, g.s.cfg.ResponderTimeout)
	watchdog := time.AfterFunc(g.s.cfg.ResponderTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	sender := newBoundedSender(out, g.s.limits.SendTimeout)
	defer sender.close()
	send := func(m *qhinv1.RetrieveDocumentResponse) error {
		watchdog.Stop()
		err := sender.send(m)
		if errors.Is(err, errSendTimeout) {
			return status.Errorf(codes.DeadlineExceeded, "the initiator did not take the next chunk within %v (--send-timeout)", g.s.limits.SendTimeout)
		}
		watchdog.Reset(g.s.cfg.ResponderTimeout)
		return err
	}

	// Once the retrieval is recorded, a stream that then fails is recorded
	// too.
	recorded := false
	defer func() {
		if recorded {
			g.recordFailedRetrieval(ctx, qc, holder.Id, []string{audit.LinkRef(req.Link.Link)}, err)
		}
	}()
	start := time.Now()
	in, err := c.RetrieveDocument(ctx, &qhinv1.ResponderRetrieveDocumentRequest{Context: qc, DocumentId: doc.DocumentId})
	if err != nil {
		return retrieveError(ctx, holder.Id, err)
	}
	var (
		header *qhinv1.DocumentMetadata
		h      hash.Hash
		size   int64
	)
	for {
		msg, err := in.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return retrieveError(ctx, holder.Id, err)
		}
		switch part := msg.Part.(type) {
		case *qhinv1.RetrieveDocumentResponse_Header:
			if header != nil {
				return status.Errorf(codes.DataLoss, "participant %s sent a second header", holder.Id)
			}
			if err := sizes.Check(part.Header, g.s.limits.Fields); err != nil {
				return status.Errorf(codes.DataLoss, "participant %s sent a malformed header: %v", holder.Id, err)
			}
			header = proto.Clone(part.Header).(*qhinv1.DocumentMetadata)
			header.SourceParticipantId = holder.Id
			if header.Patient == nil {
				header.Patient = &qhinv1.PatientLink{}
			}
			header.Patient.ParticipantId = holder.Id
			header.Link = req.Link.Link
			h = sha256.New()
			if err := g.recordRetrieval(ctx, qc, doc, req.Link.Link); err != nil {
				return err
			}
			recorded = true
			if err := send(&qhinv1.RetrieveDocumentResponse{Part: &qhinv1.RetrieveDocumentResponse_Header{Header: header}}); err != nil {
				return err
			}
		case *qhinv1.RetrieveDocumentResponse_Chunk:
			if header == nil {
				return status.Errorf(codes.DataLoss, "participant %s sent content before the header", holder.Id)
			}
			data := part.Chunk
			h.Write(data)
			size += int64(len(data))
			if size > header.Size {
				return status.Errorf(codes.DataLoss, "participant %s sent more content than its header announced", holder.Id)
			}
			for len(data) > 0 {
				n := min(len(data), MaxChunk)
				if err := send(&qhinv1.RetrieveDocumentResponse{Part: &qhinv1.RetrieveDocumentResponse_Chunk{Chunk: data[:n]}}); err != nil {
					return err
				}
				data = data[n:]
			}
		}
	}
	if header == nil {
		return status.Errorf(codes.DataLoss, "participant %s sent no header", holder.Id)
	}
	if size != header.Size || hex.EncodeToString(h.Sum(nil)) != header.Sha256 {
		return status.Errorf(codes.DataLoss, "document %s from participant %s does not match its size and sha256", header.Id, holder.Id)
	}
	g.s.log.Info("retrieve", "query_id", qc.QueryId, "initiator", init.Id, "purpose", qc.PurposeOfUse,
		"holder", holder.Id, "document", header.Id, "bytes", size, "ms", time.Since(start).Milliseconds())
	return nil
}

func retrieveError(ctx context.Context, holder string, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return status.Error(codes.DeadlineExceeded, cause.Error())
	}
	switch status.Code(err) {
	case codes.NotFound:
		return status.Errorf(codes.NotFound, "link.link: the document is no longer at participant %s", holder)
	case codes.PermissionDenied:
		return status.Errorf(codes.PermissionDenied, "participant %s refused the retrieval", holder)
	case codes.DeadlineExceeded:
		return status.Errorf(codes.DeadlineExceeded, "participant %s did not answer in time", holder)
	case codes.Unavailable:
		return status.Errorf(codes.Unavailable, "participant %s is unreachable", holder)
	case codes.Canceled:
		return status.Error(codes.Canceled, "retrieval cancelled")
	case codes.Aborted:
		return status.Errorf(codes.Aborted, "the document changed at participant %s during the retrieval; retry", holder)
	case codes.ResourceExhausted:
		return status.Errorf(codes.DataLoss, "participant %s sent a message larger than the broker accepts", holder)
	}
	return status.Errorf(codes.Internal, "participant %s failed: %s", holder, status.Code(err))
}

func index(ps []*qhinv1.Participant) map[string]*qhinv1.Participant {
	m := make(map[string]*qhinv1.Participant, len(ps))
	for _, p := range ps {
		m[p.Id] = p
	}
	return m
}

func ids(ps []*qhinv1.Participant) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Id
	}
	return out
}

// memberIDRule is what a member id must look like, in the words errors use.
const memberIDRule = "must be a member id: 1-63 lowercase letters, digits, '.', '_' or '-'"

// checkSizes caps every string and repeated field of a Gateway request
// before anything else is done with it.
func (g *gateway) checkSizes(req proto.Message) error {
	if err := sizes.Check(req, g.s.limits.Fields); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// validCandidate accepts a member's candidate that is within the field
// limits and names a patient with a score in [0, 1].
func (g *gateway) validCandidate(c *qhinv1.Candidate) error {
	switch {
	case c == nil || c.PatientId == "":
		return errors.New("no patient id")
	case !(c.Score >= 0 && c.Score <= 1):
		return errors.New("score outside [0, 1]")
	}
	return sizes.Check(c, g.s.limits.Fields)
}

// validDocument accepts a member's document entry that is within the field
// limits and has an id and a size.
func (g *gateway) validDocument(d *qhinv1.DocumentMetadata) error {
	switch {
	case d == nil || d.Id == "":
		return errors.New("no document id")
	case d.Size < 0:
		return errors.New("negative size")
	}
	return sizes.Check(d, g.s.limits.Fields)
}
