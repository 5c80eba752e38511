package fsm

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// CommandVersion is the newest command envelope version this broker
// understands. A broker refuses to apply commands of a newer version.
const CommandVersion = 1

// Errors a command can end in. Callers branch on them with errors.Is; the
// service edge maps them to gRPC codes.
var (
	ErrNotFound       = errors.New("not found")
	ErrAlreadyExists  = errors.New("already exists")
	ErrInvalid        = errors.New("invalid")
	ErrConflict       = errors.New("conflict")
	ErrUnknownCommand = errors.New("unknown command")
)

// errorCodes names the sentinels in stored results, so that a replayed
// result carries the same sentinel as the first.
var errorCodes = map[string]error{
	"not_found":       ErrNotFound,
	"already_exists":  ErrAlreadyExists,
	"invalid":         ErrInvalid,
	"conflict":        ErrConflict,
	"unknown_command": ErrUnknownCommand,
}

func errorCode(err error) string {
	for code, sentinel := range errorCodes {
		if errors.Is(err, sentinel) {
			return code
		}
	}
	return "invalid"
}

// commandError is a refused command's error rebuilt from its stored form.
type commandError struct {
	sentinel error
	msg      string
}

func (e *commandError) Error() string { return e.msg }
func (e *commandError) Unwrap() error { return e.sentinel }

// Result is what applying one command yields: a value, or the error that
// refused the command. A refused command changes nothing.
type Result struct {
	Index uint64
	Value proto.Message
	Err   error

	directory bool // the command changed the directory
}

// NewCommand builds a command envelope around a payload message.
func NewCommand(t qhinv1.CommandType, requestID string, now time.Time, payload proto.Message) (*qhinv1.Command, error) {
	if _, ok := handlers[t]; !ok {
		return nil, fmt.Errorf("%w: type %v", ErrUnknownCommand, t)
	}
	b, err := proto.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode %v: %w", t, err)
	}
	return &qhinv1.Command{
		Version:   CommandVersion,
		Type:      t,
		RequestId: requestID,
		Time:      timestamppb.New(now),
		Payload:   b,
	}, nil
}

// NewBatch wraps commands into one batch command, applied in one
// transaction.
func NewBatch(requestID string, now time.Time, cmds []*qhinv1.Command) (*qhinv1.Command, error) {
	return NewCommand(qhinv1.CommandType_COMMAND_TYPE_BATCH, requestID, now, &qhinv1.CommandBatch{Commands: cmds})
}

// Encode serializes a command for the Raft log.
func Encode(cmd *qhinv1.Command) ([]byte, error) {
	return proto.Marshal(cmd)
}

// handler applies one command type inside tx. It must check everything that
// can refuse the command before it writes anything, so that a refused command
// leaves no trace in a batch's shared transaction.
type handler struct {
	// newPayload returns an empty payload message to decode into.
	newPayload func() proto.Message
	// newResult returns an empty result message; nil when the command has no
	// result value.
	newResult func() proto.Message
	apply     func(tx *bolt.Tx, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error)
	// directory marks commands that change the participant directory.
	directory bool
}

var handlers = map[qhinv1.CommandType]handler{}

// registerCommand adds a command type to the dispatch table; it panics on a
// duplicate so that a mistake shows at start, not at apply.
func registerCommand(t qhinv1.CommandType, h handler) {
	if _, dup := handlers[t]; dup {
		panic(fmt.Sprintf("fsm: command type %v registered twice", t))
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

// decode checks a command's envelope and decodes its payload.
func decode(cmd *qhinv1.Command) (handler, proto.Message, error) {
	if cmd.Version == 0 || cmd.Version > CommandVersion {
		return handler{}, nil, fmt.Errorf("%w: envelope version %d (this broker understands up to %d); upgrade every broker before using newer commands",
			ErrUnknownCommand, cmd.Version, CommandVersion)
	}
	h, ok := handlers[cmd.Type]
	if !ok {
		return handler{}, nil, fmt.Errorf("%w: type %d; upgrade every broker before using newer commands", ErrUnknownCommand, int32(cmd.Type))
	}
	p := h.newPayload()
	if err := proto.Unmarshal(cmd.Payload, p); err != nil {
		return handler{}, nil, fmt.Errorf("%w: decode %v payload: %v", ErrInvalid, cmd.Type, err)
	}
	return h, p, nil
}
