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

	"github.com/openqhin/openqhin/broker/fanout"
	"github.com/openqhin/openqhin/broker/purpose"
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
	if !purpose.Permits(p.InitiatePurposes, purposeCode) {
		return nil, status.Errorf(codes.PermissionDenied, "participant %s may not initiate %s queries", p.Id, purposeCode)
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
	return nil
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
	init, err := g.initiator(ctx, req.PurposeOfUse, req.Requester)
	if err != nil {
		return nil, err
	}
	if err := match.Validate(req.Demographics); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	directory, _, err := g.s.routing.get(g.s.node.FSM())
	if err != nil {
		return nil, toStatus(err)
	}
	ask, skipped := route(directory, init.Id, req.PurposeOfUse)
	qc := &qhinv1.QueryContext{QueryId: newQueryID(), InitiatorParticipantId: init.Id, PurposeOfUse: req.PurposeOfUse, Requester: req.Requester}
	byID := index(ask)

	ctx, cancel := g.queryContext(ctx)
	defer cancel()
	start := time.Now()
	outcomes := fanout.Run(ctx, ids(ask), fanout.Options{Timeout: g.s.cfg.ResponderTimeout},
		func(ctx context.Context, id string) ([]*qhinv1.Candidate, error) {
			c, err := g.s.responders.client(byID[id])
			if err != nil {
				return nil, err
			}
			resp, err := c.DiscoverPatients(ctx, &qhinv1.ResponderDiscoverPatientsRequest{Context: qc, Demographics: req.Demographics})
			return resp.GetCandidates(), err
		},
		func(c []*qhinv1.Candidate) bool { return len(c) == 0 })

	found := make([]fanout.Found, 0, len(outcomes))
	resp := &qhinv1.DiscoverPatientsResponse{QueryId: qc.QueryId}
	for _, o := range outcomes {
		if o.Status.Status == qhinv1.ResponderState_RESPONDER_STATE_OK {
			found = append(found, fanout.Found{ParticipantID: o.ParticipantID, Candidates: o.Value})
		}
		resp.Responders = append(resp.Responders, o.Status)
	}
	resp.Responders = append(resp.Responders, skipped...)
	resp.Persons = fanout.MergePersons(found)
	g.s.metrics.fanout(len(ask), resp.Responders)
	g.s.logQuery(ctx, "discover", qc, start, resp.Responders, "persons", len(resp.Persons))
	return resp, nil
}

// QueryDocuments asks the members that hold the linked patients for their
// documents.
func (g *gateway) QueryDocuments(ctx context.Context, req *qhinv1.QueryDocumentsRequest) (_ *qhinv1.QueryDocumentsResponse, err error) {
	defer func(start time.Time) { g.s.metrics.query("documents", req.PurposeOfUse, start, err) }(time.Now())
	init, err := g.initiator(ctx, req.PurposeOfUse, req.Requester)
	if err != nil {
		return nil, err
	}
	if len(req.Links) == 0 {
		return nil, invalid("links", "at least one patient link is required")
	}
	for i, l := range req.Links {
		if l.GetParticipantId() == "" {
			return nil, invalid(fmt.Sprintf("links[%d].participant_id", i), "required")
		}
		if l.GetPatientId() == "" {
			return nil, invalid(fmt.Sprintf("links[%d].patient_id", i), "required")
		}
	}
	if req.Since != nil && req.Until != nil && !req.Since.AsTime().Before(req.Until.AsTime()) {
		return nil, invalid("since", "must be before until")
	}
	_, directory, err := g.s.routing.get(g.s.node.FSM())
	if err != nil {
		return nil, toStatus(err)
	}
	ask, patients, skipped := routeLinks(directory, req.Links, req.PurposeOfUse)
	qc := &qhinv1.QueryContext{QueryId: newQueryID(), InitiatorParticipantId: init.Id, PurposeOfUse: req.PurposeOfUse, Requester: req.Requester}
	byID := index(ask)

	ctx, cancel := g.queryContext(ctx)
	defer cancel()
	start := time.Now()
	outcomes := fanout.Run(ctx, ids(ask), fanout.Options{Timeout: g.s.cfg.ResponderTimeout},
		func(ctx context.Context, id string) ([]*qhinv1.DocumentMetadata, error) {
			c, err := g.s.responders.client(byID[id])
			if err != nil {
				return nil, err
			}
			resp, err := c.QueryDocuments(ctx, &qhinv1.ResponderQueryDocumentsRequest{
				Context: qc, PatientIds: patients[id], TypeCodes: req.TypeCodes, Since: req.Since, Until: req.Until,
			})
			if err != nil {
				return nil, err
			}
			docs := resp.GetDocuments()
			for _, d := range docs {
				// The broker states where a document came from; a
				// member cannot claim another's.
				d.SourceParticipantId = id
				if d.Patient == nil {
					d.Patient = &qhinv1.PatientLink{}
				}
				d.Patient.ParticipantId = id
			}
			return docs, nil
		},
		func(d []*qhinv1.DocumentMetadata) bool { return len(d) == 0 })

	resp := &qhinv1.QueryDocumentsResponse{QueryId: qc.QueryId}
	var lists [][]*qhinv1.DocumentMetadata
	for _, o := range outcomes {
		lists = append(lists, o.Value)
		resp.Responders = append(resp.Responders, o.Status)
	}
	resp.Responders = append(resp.Responders, skipped...)
	resp.Documents = fanout.MergeDocuments(lists...)
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
	init, err := g.initiator(ctx, req.PurposeOfUse, req.Requester)
	if err != nil {
		return err
	}
	if req.GetLink().GetParticipantId() == "" {
		return invalid("link.participant_id", "required")
	}
	if req.GetLink().GetDocumentId() == "" {
		return invalid("link.document_id", "required")
	}
	_, directory, err := g.s.routing.get(g.s.node.FSM())
	if err != nil {
		return toStatus(err)
	}
	holder, ok := directory[req.Link.ParticipantId]
	if !ok {
		return status.Errorf(codes.NotFound, "link.participant_id: %s is not a member of the network", req.Link.ParticipantId)
	}
	if reason, ok := askable(holder, req.PurposeOfUse); !ok {
		return status.Errorf(codes.FailedPrecondition, "participant %s: %s", holder.Id, reason)
	}
	qc := &qhinv1.QueryContext{QueryId: newQueryID(), InitiatorParticipantId: init.Id, PurposeOfUse: req.PurposeOfUse, Requester: req.Requester}
	c, err := g.s.responders.client(holder)
	if err != nil {
		return toStatus(err)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errStalled := fmt.Errorf("participant %s stopped sending for %v", holder.Id, g.s.cfg.ResponderTimeout)
	watchdog := time.AfterFunc(g.s.cfg.ResponderTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()

	start := time.Now()
	in, err := c.RetrieveDocument(ctx, &qhinv1.ResponderRetrieveDocumentRequest{Context: qc, DocumentId: req.Link.DocumentId})
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
		watchdog.Reset(g.s.cfg.ResponderTimeout)
		switch part := msg.Part.(type) {
		case *qhinv1.RetrieveDocumentResponse_Header:
			if header != nil {
				return status.Errorf(codes.DataLoss, "participant %s sent a second header", holder.Id)
			}
			header = proto.Clone(part.Header).(*qhinv1.DocumentMetadata)
			header.SourceParticipantId = holder.Id
			if header.Patient == nil {
				header.Patient = &qhinv1.PatientLink{}
			}
			header.Patient.ParticipantId = holder.Id
			h = sha256.New()
			if err := out.Send(&qhinv1.RetrieveDocumentResponse{Part: &qhinv1.RetrieveDocumentResponse_Header{Header: header}}); err != nil {
				return err
			}
		case *qhinv1.RetrieveDocumentResponse_Chunk:
			if header == nil {
				return status.Errorf(codes.DataLoss, "participant %s sent content before the header", holder.Id)
			}
			data := part.Chunk
			h.Write(data)
			size += int64(len(data))
			for len(data) > 0 {
				n := min(len(data), MaxChunk)
				if err := out.Send(&qhinv1.RetrieveDocumentResponse{Part: &qhinv1.RetrieveDocumentResponse_Chunk{Chunk: data[:n]}}); err != nil {
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
		return status.Errorf(codes.NotFound, "link.document_id: not found at participant %s", holder)
	case codes.PermissionDenied:
		return status.Errorf(codes.PermissionDenied, "participant %s refused the retrieval", holder)
	case codes.DeadlineExceeded:
		return status.Errorf(codes.DeadlineExceeded, "participant %s did not answer in time", holder)
	case codes.Unavailable:
		return status.Errorf(codes.Unavailable, "participant %s is unreachable", holder)
	case codes.Canceled:
		return status.Error(codes.Canceled, "retrieval cancelled")
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
