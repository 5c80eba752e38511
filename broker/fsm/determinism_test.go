package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestErrorCode_OrderedTable: an error that matches two sentinels gets the
// same code every time, the first of the table's order.
func TestErrorCode_OrderedTable(t *testing.T) {
	err := fmt.Errorf("%w and %w", ErrConflict, ErrNotFound)
	first := errorCode(err)
	for range 200 {
		if got := errorCode(err); got != first {
			t.Fatalf("errorCode gave %v, then %v", first, got)
		}
	}
}

// TestApply_StoredResultsCarryCodesNotText: the remembered result of a
// refused command holds its code; no error text reaches the replicated state.
func TestApply_StoredResultsCarryCodesNotText(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	a.apply(register(t, "p1", "r1"))
	r := a.apply(register(t, "p1", "r2"))
	if !errors.Is(r.Err, ErrAlreadyExists) {
		t.Fatalf("err = %v, want already exists", r.Err)
	}
	var stored []byte
	a.f.view(func(tx *bolt.Tx) error {
		stored = bytes.Clone(tx.Bucket(bucketRequests).Get([]byte("r2")))
		return nil
	})
	if stored == nil {
		t.Fatal("refused request not remembered")
	}
	for _, text := range []string{"participant", "p1", "already exists", r.Err.Error()} {
		if bytes.Contains(stored, []byte(text)) {
			t.Errorf("stored result %q holds error text %q", stored, text)
		}
	}
	if again := a.apply(register(t, "p1", "r2")); !errors.Is(again.Err, ErrAlreadyExists) {
		t.Errorf("replayed: %v, want already exists", again.Err)
	}
}

// TestApply_CommandTimeIsRequired: a command without a time is refused, and
// in particular does not make every remembered request id look expired.
func TestApply_CommandTimeIsRequired(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	a.apply(register(t, "p1", "r1"))
	untimed := mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, "r2", t0,
		&qhinv1.Participant{Id: "p2", SpiffeId: "s", Endpoint: "e"})
	untimed.Time = nil
	if r := a.apply(untimed); !errors.Is(r.Err, ErrInvalid) {
		t.Errorf("untimed command: %v, want invalid", r.Err)
	}
	a.f.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRequests).Get([]byte("r1")) == nil {
			t.Error("an untimed command pruned request r1")
		}
		return nil
	})
}
