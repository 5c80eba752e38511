package fsm

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// CommandVersion is the newest command envelope version this broker
// understands. A broker refuses to apply commands of a newer version.
//
// Version 2 brought the record locator's commands and the link key command;
// version 3 the consent commands.
const CommandVersion = 3

// Errors a command can end in. Callers branch on them with errors.Is; the
// service edge maps them to gRPC codes.
var (
	ErrNotFound       = errors.New("not found")
	ErrAlreadyExists  = errors.New("already exists")
	ErrInvalid        = errors.New("invalid")
	ErrConflict       = errors.New("conflict")
	ErrUnknownCommand = errors.New("unknown command")
)

// ErrFailed is the answer of a state machine that could not write its state
// file: it applies nothing more until its state is rebuilt (a restart, or a
// snapshot reinstalled from the leader).
var ErrFailed = errors.New("this broker's state machine has failed")

// errorCodes names the sentinels in stored results, so that a replayed
// result carries the same sentinel as the first. The order decides the code
// of an error that matches several sentinels: the first one wins. Codes are
// never reused or renamed.
var errorCodes = []struct {
	code     string
	sentinel error
}{
	{"unknown_command", ErrUnknownCommand},
	{"invalid", ErrInvalid},
	{"not_found", ErrNotFound},
	{"already_exists", ErrAlreadyExists},
	{"conflict", ErrConflict},
}

func errorCode(err error) string {
	for _, c := range errorCodes {
		if errors.Is(err, c.sentinel) {
			return c.code
		}
	}
	return "invalid"
}

func sentinelOf(code string) error {
	for _, c := range errorCodes {
		if c.code == code {
			return c.sentinel
		}
	}
	return ErrInvalid
}

// commandError is a refused command's error rebuilt from its stored code.
type commandError struct {
	sentinel error
	msg      string
}

func (e *commandError) Error() string { return e.msg }
func (e *commandError) Unwrap() error { return e.sentinel }

// minCommandTime is the earliest time a command may carry: older times are
// a proposer's broken clock or a missing time.
var minCommandTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// checkTime refuses a command without a valid, plausible time. Apply uses
// the command's time for timestamps and for forgetting old request ids, so
// a missing time must never reach it.
func checkTime(cmd *qhinv1.Command) error {
	if cmd.GetTime() == nil {
		return fmt.Errorf("%w: command has no time", ErrInvalid)
	}
	if err := cmd.Time.CheckValid(); err != nil {
		return fmt.Errorf("%w: command time: %v", ErrInvalid, err)
	}
	if cmd.Time.AsTime().Before(minCommandTime) {
		return fmt.Errorf("%w: command time is before %s", ErrInvalid, minCommandTime.Format(time.DateOnly))
	}
	return nil
}

// Result is what applying one command yields: a value, or the error that
// refused the command. A refused command changes nothing.
type Result struct {
	Index uint64
	Value proto.Message
	Err   error

	// Restricts reports a command that withdrew access (a suspension, a
	// retirement, fewer purposes).
	Restricts bool
	// Items are the results of a batch's commands, in order, as applied
	// on this node: each with its own value or error, as if applied alone.
	// Nil for a command that is not a batch, and for a batch whose stored
	// result was replayed (BatchResults decodes that one).
	Items []*Result

	directory bool // the command changed the directory
	linkKeys  bool // the command changed the link keys
}

// NewCommand builds a command envelope around a payload message. Its
// version is the one its type came in, so that brokers that know the type
// understand it.
func NewCommand(t qhinv1.CommandType, requestID string, now time.Time, payload proto.Message) (*qhinv1.Command, error) {
	h, ok := handlers[t]
	if !ok {
		return nil, fmt.Errorf("%w: type %v", ErrUnknownCommand, t)
	}
	b, err := proto.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %v: %w", t, err)
	}
	return &qhinv1.Command{
		Version:   h.since,
		Type:      t,
		RequestId: requestID,
		Time:      timestamppb.New(now),
		Payload:   b,
	}, nil
}

// NewBatch wraps commands into one batch command, applied in one
// transaction. The batch's version is the newest of its commands'.
func NewBatch(requestID string, now time.Time, cmds []*qhinv1.Command) (*qhinv1.Command, error) {
	return newBatch(requestID, now, &qhinv1.CommandBatch{Commands: cmds})
}

// NewCodesOnlyBatch is NewBatch whose results carry error codes only, not
// result values: the bulk path.
func NewCodesOnlyBatch(requestID string, now time.Time, cmds []*qhinv1.Command) (*qhinv1.Command, error) {
	return newBatch(requestID, now, &qhinv1.CommandBatch{Commands: cmds, CodesOnly: true})
}

func newBatch(requestID string, now time.Time, batch *qhinv1.CommandBatch) (*qhinv1.Command, error) {
	cmds := batch.Commands
	b, err := NewCommand(qhinv1.CommandType_COMMAND_TYPE_BATCH, requestID, now, batch)
	if err != nil {
		return nil, err
	}
	for _, c := range cmds {
		b.Version = max(b.Version, Version(c))
	}
	return b, nil
}

// Encode serializes a command for the Raft log.
func Encode(cmd *qhinv1.Command) ([]byte, error) {
	return proto.Marshal(cmd)
}

// handler applies one command type inside a transaction. It must check
// everything that can refuse the command before it writes anything, so that
// a refused command leaves no trace in a batch's shared transaction.
type handler struct {
	// newPayload returns an empty payload message to decode into.
	newPayload func() proto.Message
	// newResult returns an empty result message; nil when the command has no
	// result value.
	newResult func() proto.Message
	apply     func(t *txn, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error)
	// directory marks commands that change the participant directory.
	directory bool
	// linkKeys marks commands that change the link keys.
	linkKeys bool
	// since is the command version that introduced the type: a leader
	// proposes it only once every broker understands that version.
	since uint32
}

var handlers = map[qhinv1.CommandType]handler{}

// registerCommand adds a command type to the dispatch table; it panics on a
// duplicate so that a mistake shows at start, not at apply.
func registerCommand(t qhinv1.CommandType, h handler) {
	if _, dup := handlers[t]; dup {
		panic(fmt.Sprintf("fsm: command type %v registered twice", t))
	}
	if h.since == 0 {
		h.since = 1
	}
	handlers[t] = h
}

// ResultType returns an empty message of the result type of a command type,
// for callers that receive a result in encoded form.
func ResultType(t qhinv1.CommandType) proto.Message {
	h, ok := handlers[t]
	if !ok || h.newResult == nil {
		return nil
	}
	return h.newResult()
}

// Version is the command version a command needs every broker to
// understand: its envelope version, at least the version its type came in.
func Version(cmd *qhinv1.Command) uint32 {
	return max(cmd.GetVersion(), handlers[cmd.GetType()].since)
}

// decode checks a command's envelope and decodes its payload.
func decode(cmd *qhinv1.Command, maxVersion uint32) (handler, proto.Message, error) {
	if cmd.Version == 0 || cmd.Version > maxVersion {
		return handler{}, nil, fmt.Errorf("%w: envelope version %d (this broker understands up to %d); upgrade every broker before using newer commands",
			ErrUnknownCommand, cmd.Version, maxVersion)
	}
	h, ok := handlers[cmd.Type]
	if !ok || h.since > maxVersion {
		return handler{}, nil, fmt.Errorf("%w: type %d; upgrade every broker before using newer commands", ErrUnknownCommand, int32(cmd.Type))
	}
	if err := checkTime(cmd); err != nil {
		return handler{}, nil, err
	}
	p := h.newPayload()
	if err := proto.Unmarshal(cmd.Payload, p); err != nil {
		return handler{}, nil, fmt.Errorf("%w: decode %v payload: %v", ErrInvalid, cmd.Type, err)
	}
	return h, p, nil
}
