package fsm

import (
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func init() {
	participant := func() proto.Message { return new(qhinv1.Participant) }
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, handler{
		newPayload: participant, newResult: participant, apply: applyRegisterParticipant, directory: true,
	})
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_UPDATE_PARTICIPANT, handler{
		newPayload: participant, newResult: participant, apply: applyUpdateParticipant, directory: true,
	})
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_SET_PARTICIPANT_STATUS, handler{
		newPayload: func() proto.Message { return new(qhinv1.SetParticipantStatus) },
		newResult:  participant, apply: applySetParticipantStatus, directory: true,
	})
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_PUT_BROKER, handler{
		newPayload: func() proto.Message { return new(qhinv1.BrokerRecord) },
		apply:      applyPutBroker,
	})
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_REMOVE_BROKER, handler{
		newPayload: func() proto.Message { return new(qhinv1.RemoveBroker) },
		apply:      applyRemoveBroker,
	})
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_BATCH, handler{
		newPayload: func() proto.Message { return new(qhinv1.CommandBatch) },
		newResult:  func() proto.Message { return new(qhinv1.BatchResult) },
		apply:      applyBatch,
		// A batch may hold directory commands; it counts as a change.
		directory: true,
	})
}

func getParticipant(tx *bolt.Tx, id string) (*qhinv1.Participant, error) {
	return decodeParticipant(id, tx.Bucket(bucketParticipants).Get([]byte(id)))
}

func decodeParticipant(id string, v []byte) (*qhinv1.Participant, error) {
	if v == nil {
		return nil, fmt.Errorf("participant %s: %w", id, ErrNotFound)
	}
	p := new(qhinv1.Participant)
	if err := proto.Unmarshal(v, p); err != nil {
		return nil, fmt.Errorf("participant %s: %w", id, err)
	}
	return p, nil
}

func putParticipant(t *txn, p *qhinv1.Participant) error {
	b, err := proto.Marshal(p)
	if err != nil {
		return err
	}
	return t.put(bucketParticipants, []byte(p.Id), b)
}

func applyRegisterParticipant(t *txn, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	p := payload.(*qhinv1.Participant)
	if p.Id == "" || p.SpiffeId == "" || p.Endpoint == "" {
		return nil, fmt.Errorf("%w: participant needs id, spiffe id and endpoint", ErrInvalid)
	}
	if t.get(bucketParticipants, []byte(p.Id)) != nil {
		return nil, fmt.Errorf("participant %s: %w", p.Id, ErrAlreadyExists)
	}
	if p.Status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_UNSPECIFIED {
		p.Status = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE
	}
	p.CreatedAt = cmd.Time
	p.UpdatedAt = cmd.Time
	b, err := proto.Marshal(p)
	if err != nil {
		return nil, err
	}
	return p, t.insert(bucketParticipants, []byte(p.Id), b)
}

func applyUpdateParticipant(t *txn, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	u := payload.(*qhinv1.Participant)
	p, err := decodeParticipant(u.Id, t.get(bucketParticipants, []byte(u.Id)))
	if err != nil {
		return nil, err
	}
	if p.Status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED {
		return nil, fmt.Errorf("participant %s is retired: %w", p.Id, ErrConflict)
	}
	if u.Endpoint == "" {
		return nil, fmt.Errorf("%w: participant needs an endpoint", ErrInvalid)
	}
	if narrows(p.InitiatePurposes, u.InitiatePurposes) || narrows(p.RespondPurposes, u.RespondPurposes) {
		t.restrict()
	}
	p.Organization = u.Organization
	p.Endpoint = u.Endpoint
	p.InitiatePurposes = u.InitiatePurposes
	p.RespondPurposes = u.RespondPurposes
	p.HomeCommunityId = u.HomeCommunityId
	p.UpdatedAt = cmd.Time
	return p, putParticipant(t, p)
}

// narrows reports whether a purpose list allows less after a change than
// before: "all" allows every purpose, an empty list none. A list that only
// reshuffles codes (a code for its sub-codes) counts as narrowing: the
// answer errs towards waiting for every broker.
//
// Brokers before purpose lists were default deny read an empty list as
// every purpose; a cluster that still runs one acknowledges some narrowing
// updates sooner than it should, until every broker is upgraded.
func narrows(before, after []string) bool {
	isAll := func(l []string) bool { return len(l) == 1 && l[0] == "all" }
	if isAll(after) {
		return false
	}
	if isAll(before) {
		return true
	}
	for _, b := range before {
		if !slices.Contains(after, b) {
			return true
		}
	}
	return false
}

func applySetParticipantStatus(t *txn, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	s := payload.(*qhinv1.SetParticipantStatus)
	p, err := decodeParticipant(s.ParticipantId, t.get(bucketParticipants, []byte(s.ParticipantId)))
	if err != nil {
		return nil, err
	}
	switch s.Status {
	case qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE,
		qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED,
		qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED:
	default:
		return nil, fmt.Errorf("%w: status %v", ErrInvalid, s.Status)
	}
	if p.Status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED && s.Status != p.Status {
		return nil, fmt.Errorf("participant %s is retired: %w", p.Id, ErrConflict)
	}
	// Taking a member out of active standing withdraws access: every
	// broker still answering must hold it before the change is
	// acknowledged.
	if p.Status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE && s.Status != p.Status {
		t.restrict()
	}
	p.Status = s.Status
	p.StatusReason = s.Reason
	p.UpdatedAt = cmd.Time
	return p, putParticipant(t, p)
}

func applyPutBroker(t *txn, _ *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	b := payload.(*qhinv1.BrokerRecord)
	if b.NodeId == "" {
		return nil, fmt.Errorf("%w: broker needs a node id", ErrInvalid)
	}
	enc, err := proto.Marshal(b)
	if err != nil {
		return nil, err
	}
	return nil, t.put(bucketBrokers, []byte(b.NodeId), enc)
}

func applyRemoveBroker(t *txn, _ *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	r := payload.(*qhinv1.RemoveBroker)
	return nil, t.del(bucketBrokers, []byte(r.NodeId))
}

// applyBatch applies each command of a batch in order in the shared
// transaction; a refused command does not stop the others.
func applyBatch(t *txn, _ *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	batch := payload.(*qhinv1.CommandBatch)
	out := &qhinv1.BatchResult{Results: make([]*qhinv1.CommandResult, len(batch.Commands))}
	for _, c := range batch.Commands {
		if c.Type == qhinv1.CommandType_COMMAND_TYPE_BATCH {
			return nil, fmt.Errorf("%w: batches do not nest", ErrInvalid)
		}
	}
	for i, c := range batch.Commands {
		r, err := t.f.applyCommand(t, c)
		if err != nil {
			return nil, &storageError{err}
		}
		t.items = append(t.items, r)
		value := r.Value
		if batch.CodesOnly {
			value = nil
		}
		cr, err := storedResult(value, r.Err, r.Restricts)
		if err != nil {
			return nil, &storageError{err}
		}
		out.Results[i] = cr
	}
	return out, nil
}

// BatchResults decodes the per-command results of a batch.
func BatchResults(cmds []*qhinv1.Command, br *qhinv1.BatchResult) []*Result {
	out := make([]*Result, len(br.GetResults()))
	for i, cr := range br.GetResults() {
		out[i] = resultFromStored(handlers[cmds[i].Type], cr)
	}
	return out
}

// DirectoryVersion changes whenever the directory may have changed: after
// an applied directory command or a restore. Callers cache what they derive
// from the directory and reload it when the version moves.
func (f *FSM) DirectoryVersion() uint64 { return f.dirVersion.Load() }

// Participant returns one directory entry.
func (f *FSM) Participant(id string) (*qhinv1.Participant, error) {
	var p *qhinv1.Participant
	err := f.view(func(tx *bolt.Tx) error {
		var err error
		p, err = getParticipant(tx, id)
		return err
	})
	return p, err
}

// Participants returns the directory entries with the given status (all when
// unspecified), in id order.
func (f *FSM) Participants(status qhinv1.ParticipantStatus) ([]*qhinv1.Participant, error) {
	var out []*qhinv1.Participant
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketParticipants).ForEach(func(k, v []byte) error {
			p := new(qhinv1.Participant)
			if err := proto.Unmarshal(v, p); err != nil {
				return fmt.Errorf("participant %s: %w", k, err)
			}
			if status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_UNSPECIFIED || p.Status == status {
				out = append(out, p)
			}
			return nil
		})
	})
	return out, err
}

// Brokers returns every broker node record, in node id order.
func (f *FSM) Brokers() ([]*qhinv1.BrokerRecord, error) {
	var out []*qhinv1.BrokerRecord
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBrokers).ForEach(func(k, v []byte) error {
			b := new(qhinv1.BrokerRecord)
			if err := proto.Unmarshal(v, b); err != nil {
				return fmt.Errorf("broker %s: %w", k, err)
			}
			out = append(out, b)
			return nil
		})
	})
	return out, err
}
