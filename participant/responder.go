package participant

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/sizes"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// responder answers brokers from the local store.
type responder struct {
	qhinv1.UnimplementedResponderServer
	s *Server
}

// delay holds an answer back by the configured injected latency.
func (r *responder) delay(ctx context.Context) error {
	if r.s.cfg.Delay <= 0 {
		return nil
	}
	t := time.NewTimer(r.s.cfg.Delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// checkSizes caps every string and repeated field of a broker's request
// before anything else is done with it.
func (r *responder) checkSizes(req proto.Message) error {
	if err := sizes.Check(req, r.s.cfg.Fields); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

func checkContext(qc *qhinv1.QueryContext) error {
	if qc == nil {
		return status.Error(codes.InvalidArgument, "context: required")
	}
	if qc.QueryId == "" {
		return status.Error(codes.InvalidArgument, "context.query_id: required")
	}
	if qc.PurposeOfUse == "" {
		return status.Error(codes.InvalidArgument, "context.purpose_of_use: required")
	}
	return nil
}

func (r *responder) DiscoverPatients(ctx context.Context, req *qhinv1.ResponderDiscoverPatientsRequest) (_ *qhinv1.ResponderDiscoverPatientsResponse, err error) {
	defer func(start time.Time) { r.s.metrics.answer("discover", req.GetContext().GetPurposeOfUse(), start, err) }(time.Now())
	if err := r.checkSizes(req); err != nil {
		return nil, err
	}
	if err := checkContext(req.Context); err != nil {
		return nil, err
	}
	if err := r.answers(req.Context); err != nil {
		return nil, err
	}
	if err := match.Validate(req.Demographics); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := r.delay(ctx); err != nil {
		return nil, err
	}
	cands, err := r.s.records.Discover(ctx, req.Demographics, r.s.cfg.MatchThreshold, r.s.cfg.MaxCandidates)
	if err != nil {
		r.s.log.ErrorContext(ctx, "discover", "query_id", req.Context.QueryId, "error", err)
		return nil, recordsError(ctx, err, "matching failed")
	}
	if cands, err = r.withholdCandidates(ctx, qhinv1.Responder_DiscoverPatients_FullMethodName, req.Context, cands); err != nil {
		return nil, err
	}
	ids := make([]string, len(cands))
	for i, c := range cands {
		ids[i] = c.PatientId
	}
	if err := r.record(ctx, qhinv1.Responder_DiscoverPatients_FullMethodName, audit.ActionDiscover, req.Context, ids, nil); err != nil {
		return nil, err
	}
	resp := &qhinv1.ResponderDiscoverPatientsResponse{Candidates: cands}
	r.s.log.InfoContext(ctx, "discover", "query_id", req.Context.QueryId, "initiator", req.Context.InitiatorParticipantId,
		"purpose", req.Context.PurposeOfUse, "candidates", len(resp.Candidates))
	return resp, nil
}

func (r *responder) QueryDocuments(ctx context.Context, req *qhinv1.ResponderQueryDocumentsRequest) (_ *qhinv1.ResponderQueryDocumentsResponse, err error) {
	defer func(start time.Time) { r.s.metrics.answer("documents", req.GetContext().GetPurposeOfUse(), start, err) }(time.Now())
	if err := r.checkSizes(req); err != nil {
		return nil, err
	}
	if err := checkContext(req.Context); err != nil {
		return nil, err
	}
	if len(req.PatientIds) == 0 {
		return nil, status.Error(codes.InvalidArgument, "patient_ids: at least one is required")
	}
	if err := r.answers(req.Context); err != nil {
		return nil, err
	}
	if err := r.delay(ctx); err != nil {
		return nil, err
	}
	f := store.Filter{TypeCodes: req.TypeCodes}
	if req.Since != nil {
		f.Since = req.Since.AsTime()
	}
	if req.Until != nil {
		f.Until = req.Until.AsTime()
	}
	patientIDs, err := r.withholdPatients(ctx, qhinv1.Responder_QueryDocuments_FullMethodName, req.Context, req.PatientIds)
	if err != nil {
		return nil, err
	}
	var docs []*qhinv1.DocumentMetadata
	if len(patientIDs) > 0 {
		docs, err = r.s.records.Documents(ctx, patientIDs, f)
		if err != nil {
			r.s.log.ErrorContext(ctx, "list documents", "query_id", req.Context.QueryId, "error", err)
			return nil, recordsError(ctx, err, "listing documents failed")
		}
	}
	docs = r.withholdDocuments(ctx, req.Context, docs)
	var patients, docIDs []string
	for _, d := range docs {
		patients, docIDs = append(patients, d.GetPatient().GetPatientId()), append(docIDs, d.Id)
	}
	if err := r.record(ctx, qhinv1.Responder_QueryDocuments_FullMethodName, audit.ActionDocuments, req.Context, unique(patients), docIDs); err != nil {
		return nil, err
	}
	r.s.log.InfoContext(ctx, "documents", "query_id", req.Context.QueryId, "initiator", req.Context.InitiatorParticipantId,
		"purpose", req.Context.PurposeOfUse, "documents", len(docs))
	return &qhinv1.ResponderQueryDocumentsResponse{Documents: docs}, nil
}

func (r *responder) RetrieveDocument(req *qhinv1.ResponderRetrieveDocumentRequest, out grpc.ServerStreamingServer[qhinv1.RetrieveDocumentResponse]) (err error) {
	defer func(start time.Time) { r.s.metrics.answer("retrieve", req.GetContext().GetPurposeOfUse(), start, err) }(time.Now())
	ctx := out.Context()
	if err := r.checkSizes(req); err != nil {
		return err
	}
	if err := checkContext(req.Context); err != nil {
		return err
	}
	if req.DocumentId == "" {
		return status.Error(codes.InvalidArgument, "document_id: required")
	}
	if err := r.answers(req.Context); err != nil {
		return err
	}
	if err := r.delay(ctx); err != nil {
		return err
	}
	var size int64
	var docID string
	err = r.s.records.StreamDocument(ctx, req.DocumentId,
		func(m *qhinv1.DocumentMetadata) error {
			if err := r.checkRetrieval(ctx, req.Context, m); err != nil {
				return err
			}
			size, docID = m.Size, m.Id
			if err := r.record(ctx, qhinv1.Responder_RetrieveDocument_FullMethodName, audit.ActionRetrieve, req.Context,
				[]string{m.GetPatient().GetPatientId()}, []string{m.Id}); err != nil {
				return err
			}
			return out.Send(&qhinv1.RetrieveDocumentResponse{Part: &qhinv1.RetrieveDocumentResponse_Header{Header: m}})
		},
		func(chunk []byte) error {
			// Send encodes the message before it returns, so the chunk
			// may point into the store's memory map.
			return out.Send(&qhinv1.RetrieveDocumentResponse{Part: &qhinv1.RetrieveDocumentResponse_Chunk{Chunk: chunk}})
		})
	// Errors name the field, never the id the broker passed on: until the
	// store has it, it is the initiator's text.
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "document_id: no such document")
	case errors.Is(err, store.ErrChanged):
		return status.Error(codes.Aborted, "document_id: the document changed during the retrieval; retry")
	case err != nil && status.Code(err) != codes.Unknown:
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case err != nil:
		r.s.log.ErrorContext(ctx, "read document", "query_id", req.Context.QueryId, "document", docID, "error", err)
		return status.Error(codes.Internal, "reading the document failed")
	}
	r.s.log.InfoContext(ctx, "retrieve", "query_id", req.Context.QueryId, "initiator", req.Context.InitiatorParticipantId,
		"purpose", req.Context.PurposeOfUse, "document", docID, "bytes", size)
	return nil
}

// recordsError maps a failure of the records (the store, or an upstream
// FHIR server) to a status: the caller's deadline, an upstream that does not
// answer, or an internal failure described by what.
func recordsError(ctx context.Context, err error, what string) error {
	switch {
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case errors.Is(err, ErrUnreachable):
		return status.Error(codes.Unavailable, "the member's records server does not answer")
	}
	return status.Error(codes.Internal, what)
}

func cloneDoc(m *qhinv1.DocumentMetadata) *qhinv1.DocumentMetadata {
	return proto.Clone(m).(*qhinv1.DocumentMetadata)
}
