package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// MaxParticipantWrites caps the writes of one WriteParticipants call.
const MaxParticipantWrites = 10_000

type directory struct {
	qhinv1.UnimplementedDirectoryServer
	s *Server
}

// validateParticipant checks the operator-supplied fields of a directory
// entry and fills in its SPIFFE ID.
func (d *directory) validateParticipant(p *qhinv1.Participant) error {
	if p == nil {
		return invalid("participant", "required")
	}
	if err := pki.ValidateName(p.Id); err != nil {
		return invalid("participant.id", err.Error())
	}
	want, err := pki.NewIdentity(d.s.id.ID.TrustDomain(), pki.RoleParticipant, p.Id)
	if err != nil {
		return invalid("participant.id", err.Error())
	}
	switch p.SpiffeId {
	case "":
		p.SpiffeId = want.String()
	case want.String():
	default:
		return invalid("participant.spiffe_id", fmt.Sprintf("must be %s for participant %s", want, p.Id))
	}
	if err := validateEndpoint(p.Endpoint); err != nil {
		return invalid("participant.endpoint", err.Error())
	}
	return validatePurposeLists("participant.", p)
}

func validateEndpoint(ep string) error {
	if ep == "" {
		return fmt.Errorf("required: host:port of the member's Responder service")
	}
	host, port, err := net.SplitHostPort(ep)
	if err != nil || host == "" {
		return fmt.Errorf("must be host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("port must be 1-65535")
	}
	return nil
}

func requestID(id string) string {
	if id != "" {
		return id
	}
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// apply commits a directory command and returns the participant it yields.
// A change that withdraws access (suspend, retire, fewer purposes) returns
// only once every broker still serving holds it (cluster.Node.Apply).
func (d *directory) apply(ctx context.Context, t qhinv1.CommandType, reqID string, payload proto.Message) (*qhinv1.Participant, error) {
	cmd, err := fsm.NewCommand(t, requestID(reqID), time.Now(), payload)
	if err != nil {
		return nil, toStatus(err)
	}
	v, _, err := d.s.node.Apply(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	p, ok := v.(*qhinv1.Participant)
	if !ok {
		return nil, toStatus(fmt.Errorf("%v returned %T", t, v))
	}
	return p, nil
}

// validateStatus checks a status an operator sets.
func validateStatus(field string, st qhinv1.ParticipantStatus) error {
	switch st {
	case qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE, qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED,
		qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED:
		return nil
	}
	return invalid(field, "must be active, suspended or retired")
}

// validateNew checks a participant to register.
func (d *directory) validateNew(field string, p *qhinv1.Participant) error {
	if err := d.validateParticipant(p); err != nil {
		if field != "" {
			return status.Errorf(codes.InvalidArgument, "%s.%s", field, status.Convert(err).Message())
		}
		return err
	}
	switch p.Status {
	case qhinv1.ParticipantStatus_PARTICIPANT_STATUS_UNSPECIFIED, qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE,
		qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED:
	default:
		return invalid(strings.TrimPrefix(field+".participant.status", "."), "a new participant is active or suspended")
	}
	p.CreatedAt, p.UpdatedAt = nil, nil
	return nil
}

// WriteParticipants applies up to MaxParticipantWrites directory writes as
// one Raft entry: the bulk path (a load, a migration) runs at the speed of
// one replicated write per call. Every write is checked before any is
// proposed; each gets its own result.
func (d *directory) WriteParticipants(ctx context.Context, req *qhinv1.WriteParticipantsRequest) (*qhinv1.WriteParticipantsResponse, error) {
	if len(req.Writes) == 0 {
		return nil, invalid("writes", "at least one write is required")
	}
	if len(req.Writes) > MaxParticipantWrites {
		return nil, invalid("writes", fmt.Sprintf("at most %d writes per call", MaxParticipantWrites))
	}
	now := time.Now()
	cmds := make([]*qhinv1.Command, len(req.Writes))
	for i, w := range req.Writes {
		field := fmt.Sprintf("writes[%d]", i)
		var (
			t       qhinv1.CommandType
			payload proto.Message
		)
		switch op := w.Write.(type) {
		case *qhinv1.ParticipantWrite_Register:
			p := cloneParticipant(op.Register)
			if err := d.validateNew(field+".register", p); err != nil {
				return nil, err
			}
			t, payload = qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, p
		case *qhinv1.ParticipantWrite_Update:
			p := cloneParticipant(op.Update)
			if err := d.validateParticipant(p); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "%s.update.%s", field, status.Convert(err).Message())
			}
			t, payload = qhinv1.CommandType_COMMAND_TYPE_UPDATE_PARTICIPANT, p
		case *qhinv1.ParticipantWrite_SetStatus:
			if op.SetStatus.GetParticipantId() == "" {
				return nil, invalid(field+".set_status.participant_id", "required")
			}
			if err := validateStatus(field+".set_status.status", op.SetStatus.Status); err != nil {
				return nil, err
			}
			t, payload = qhinv1.CommandType_COMMAND_TYPE_SET_PARTICIPANT_STATUS, &qhinv1.SetParticipantStatus{
				ParticipantId: op.SetStatus.ParticipantId, Status: op.SetStatus.Status, Reason: op.SetStatus.Reason}
		default:
			return nil, invalid(field, "one of register, update or set_status is required")
		}
		c, err := fsm.NewCommand(t, "", now, payload)
		if err != nil {
			return nil, toStatus(err)
		}
		cmds[i] = c
	}
	newBatch := fsm.NewCodesOnlyBatch
	if req.ReturnParticipants {
		newBatch = fsm.NewBatch
	}
	batch, err := newBatch(requestID(req.RequestId), now, cmds)
	if err != nil {
		return nil, toStatus(err)
	}
	v, _, err := d.s.node.Apply(ctx, batch)
	if err != nil {
		return nil, toStatus(err)
	}
	br, ok := v.(*qhinv1.BatchResult)
	if !ok || len(br.Results) != len(cmds) {
		return nil, toStatus(fmt.Errorf("batch returned %T", v))
	}
	out := &qhinv1.WriteParticipantsResponse{Results: make([]*qhinv1.ParticipantWriteResult, len(cmds))}
	written := 0
	for i, r := range fsm.BatchResults(cmds, br) {
		res := &qhinv1.ParticipantWriteResult{}
		if r.Err != nil {
			st := status.Convert(toStatus(r.Err))
			res.Code, res.Message = int32(st.Code()), st.Message()
		} else {
			if req.ReturnParticipants {
				res.Participant, _ = r.Value.(*qhinv1.Participant)
			}
			written++
		}
		out.Results[i] = res
	}
	d.s.log.Info("participants written", "writes", len(cmds), "applied", written, "operator", caller(ctx))
	return out, nil
}

func (d *directory) RegisterParticipant(ctx context.Context, req *qhinv1.RegisterParticipantRequest) (*qhinv1.RegisterParticipantResponse, error) {
	p := cloneParticipant(req.Participant)
	if err := d.validateNew("", p); err != nil {
		return nil, err
	}
	out, err := d.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, req.RequestId, p)
	if err != nil {
		return nil, err
	}
	d.s.log.Info("participant registered", "participant", out.Id, "operator", caller(ctx))
	return &qhinv1.RegisterParticipantResponse{Participant: out}, nil
}

func (d *directory) UpdateParticipant(ctx context.Context, req *qhinv1.UpdateParticipantRequest) (*qhinv1.UpdateParticipantResponse, error) {
	p := cloneParticipant(req.Participant)
	if err := d.validateParticipant(p); err != nil {
		return nil, err
	}
	out, err := d.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_UPDATE_PARTICIPANT, req.RequestId, p)
	if err != nil {
		return nil, err
	}
	d.s.log.Info("participant updated", "participant", out.Id, "operator", caller(ctx))
	return &qhinv1.UpdateParticipantResponse{Participant: out}, nil
}

func (d *directory) SetParticipantStatus(ctx context.Context, req *qhinv1.SetParticipantStatusRequest) (*qhinv1.SetParticipantStatusResponse, error) {
	if req.ParticipantId == "" {
		return nil, invalid("participant_id", "required")
	}
	if err := validateStatus("status", req.Status); err != nil {
		return nil, err
	}
	out, err := d.apply(ctx, qhinv1.CommandType_COMMAND_TYPE_SET_PARTICIPANT_STATUS, req.RequestId,
		&qhinv1.SetParticipantStatus{ParticipantId: req.ParticipantId, Status: req.Status, Reason: req.Reason})
	if err != nil {
		return nil, err
	}
	d.s.log.Info("participant status changed", "participant", out.Id, "status", out.Status.String(), "operator", caller(ctx))
	return &qhinv1.SetParticipantStatusResponse{Participant: out}, nil
}

func readLevel(consistent bool) cluster.ReadLevel {
	if consistent {
		return cluster.ReadLinearizable
	}
	return cluster.ReadLocal
}

func (d *directory) GetParticipant(ctx context.Context, req *qhinv1.GetParticipantRequest) (*qhinv1.GetParticipantResponse, error) {
	if req.ParticipantId == "" {
		return nil, invalid("participant_id", "required")
	}
	f, err := d.s.node.Read(ctx, readLevel(req.Consistent))
	if err != nil {
		return nil, toStatus(err)
	}
	p, err := f.Participant(req.ParticipantId)
	if err != nil {
		return nil, toStatus(err)
	}
	return &qhinv1.GetParticipantResponse{Participant: p}, nil
}

func (d *directory) ListParticipants(ctx context.Context, req *qhinv1.ListParticipantsRequest) (*qhinv1.ListParticipantsResponse, error) {
	f, err := d.s.node.Read(ctx, readLevel(req.Consistent))
	if err != nil {
		return nil, toStatus(err)
	}
	ps, err := f.Participants(req.Status)
	if err != nil {
		return nil, toStatus(err)
	}
	return &qhinv1.ListParticipantsResponse{Participants: ps}, nil
}

func caller(ctx context.Context) string {
	if id, ok := pki.IdentityFromContext(ctx); ok {
		return id.String()
	}
	return ""
}

func cloneParticipant(p *qhinv1.Participant) *qhinv1.Participant {
	if p == nil {
		return nil
	}
	return proto.Clone(p).(*qhinv1.Participant)
}
