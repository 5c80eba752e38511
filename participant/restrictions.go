package participant

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/broker/purpose"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// restrictions serves the member's own restrictions of its patients
// (qhinv1.Restrictions) from its store; every change is recorded in the
// member's ledger.
type restrictions struct {
	qhinv1.UnimplementedRestrictionsServer
	s *Server
}

// Restrictions returns the member's Restrictions service, for its local
// API (RelayConfig.Restrictions); the Responder's port serves it to
// operators.
func (s *Server) Restrictions() qhinv1.RestrictionsServer { return &restrictions{s: s} }

// maxPatientID caps a patient id a caller sends.
const maxPatientID = 256

func checkPatientID(id string) error {
	switch {
	case id == "":
		return status.Error(codes.InvalidArgument, "patient_id: required")
	case len(id) > maxPatientID:
		return status.Error(codes.InvalidArgument, "patient_id: at most 256 bytes")
	}
	return nil
}

func (x *restrictions) SetRestriction(ctx context.Context, req *qhinv1.SetRestrictionRequest) (*qhinv1.SetRestrictionResponse, error) {
	if err := checkPatientID(req.PatientId); err != nil {
		return nil, err
	}
	if len(req.Purposes) > 64 {
		return nil, status.Error(codes.InvalidArgument, "purposes: at most 64")
	}
	if i, err := purpose.ValidateList(req.Purposes); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "purposes[%d]: %v", i, err)
	}
	rr := &qhinv1.Restriction{PatientId: req.PatientId, Purposes: req.Purposes, RecordedBy: audit.Caller(ctx), RecordedAt: timestamppb.Now()}
	if err := x.s.store.SetRestriction(ctx, rr); err != nil {
		return nil, x.storeError(ctx, err)
	}
	if err := x.audit(ctx, qhinv1.Restrictions_SetRestriction_FullMethodName, "restrict", req.PatientId); err != nil {
		return nil, err
	}
	x.s.log.InfoContext(ctx, "patient restricted by the member", "purposes", purpose.Describe(req.Purposes))
	return &qhinv1.SetRestrictionResponse{Restriction: rr}, nil
}

func (x *restrictions) ClearRestriction(ctx context.Context, req *qhinv1.ClearRestrictionRequest) (*qhinv1.ClearRestrictionResponse, error) {
	if err := checkPatientID(req.PatientId); err != nil {
		return nil, err
	}
	cleared, err := x.s.store.ClearRestriction(ctx, req.PatientId)
	if err != nil {
		return nil, x.storeError(ctx, err)
	}
	if err := x.audit(ctx, qhinv1.Restrictions_ClearRestriction_FullMethodName, "unrestrict", req.PatientId); err != nil {
		return nil, err
	}
	return &qhinv1.ClearRestrictionResponse{Cleared: cleared}, nil
}

func (x *restrictions) ListRestrictions(ctx context.Context, _ *qhinv1.ListRestrictionsRequest) (*qhinv1.ListRestrictionsResponse, error) {
	list, err := x.s.store.Restrictions()
	if err != nil {
		return nil, x.storeError(ctx, err)
	}
	return &qhinv1.ListRestrictionsResponse{Restrictions: list}, nil
}

// audit records a change of the restrictions in the member's ledger
// before it is acknowledged.
func (x *restrictions) audit(ctx context.Context, method, action, patientID string) error {
	err := x.s.ledger.Append(ctx, &qhinv1.AuditEntry{Actor: audit.Caller(ctx), Action: action, Method: method,
		PatientRefs: []string{patientID}, Outcome: codes.OK.String()})
	if err != nil {
		return status.Error(codes.Unavailable, "the member cannot record the change in its audit ledger")
	}
	return nil
}

func (x *restrictions) storeError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, "patient_id: this member holds no such patient")
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	}
	x.s.log.ErrorContext(ctx, "restrictions", "error", err)
	return status.Error(codes.Internal, "the member's store failed")
}
