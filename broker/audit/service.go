package audit

import (
	"context"
	"log/slog"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Service serves a ledger over the Audit API.
type Service struct {
	qhinv1.UnimplementedAuditServer
	l   *Ledger
	log *slog.Logger
}

// NewService serves l.
func NewService(l *Ledger, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{l: l, log: log}
}

// ListEntries implements qhinv1.AuditServer.
func (s *Service) ListEntries(ctx context.Context, req *qhinv1.ListAuditEntriesRequest) (*qhinv1.ListAuditEntriesResponse, error) {
	if req.Limit > MaxList {
		return nil, status.Errorf(codes.InvalidArgument, "limit: at most %d", MaxList)
	}
	if req.ParticipantId != "" && pki.ValidateName(req.ParticipantId) != nil {
		return nil, status.Error(codes.InvalidArgument, "participant_id: must be a member id")
	}
	for field, v := range map[string]string{"purpose_of_use": req.PurposeOfUse, "action": req.Action} {
		if strings.ContainsFunc(v, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return nil, status.Errorf(codes.InvalidArgument, "%s: printable ASCII only", field)
		}
	}
	f := Filter{Participant: req.ParticipantId, Purpose: req.PurposeOfUse, Patient: req.Patient, Action: req.Action,
		Limit: int(req.Limit), Before: req.BeforeSeq}
	if req.Since != nil {
		if err := req.Since.CheckValid(); err != nil {
			return nil, status.Error(codes.InvalidArgument, "since: must be a valid timestamp")
		}
		f.Since = req.Since.AsTime()
	}
	entries, next, err := s.l.List(f)
	if err != nil {
		s.log.ErrorContext(ctx, "read audit ledger", "file", s.l.Path(), "error", err)
		return nil, status.Error(codes.Internal, "reading the audit ledger failed")
	}
	return &qhinv1.ListAuditEntriesResponse{Node: s.l.Node(), Entries: entries, NextBeforeSeq: next}, nil
}

// VerifyLedger implements qhinv1.AuditServer.
func (s *Service) VerifyLedger(ctx context.Context, _ *qhinv1.VerifyLedgerRequest) (*qhinv1.VerifyLedgerResponse, error) {
	v, err := s.l.Verify()
	if err != nil {
		s.log.ErrorContext(ctx, "verify audit ledger", "file", s.l.Path(), "error", err)
		return nil, status.Error(codes.Internal, "reading the audit ledger failed")
	}
	if !v.OK {
		s.log.WarnContext(ctx, "audit ledger does not verify", "file", s.l.Path(), "first_broken", v.FirstBroken, "problem", v.Problem)
	}
	return &qhinv1.VerifyLedgerResponse{Node: s.l.Node(), Entries: v.Entries, HeadHash: v.Head, Ok: v.OK,
		FirstBrokenSeq: v.FirstBroken, Problem: v.Problem}, nil
}
