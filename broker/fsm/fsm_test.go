package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func openFSM(t *testing.T) *FSM {
	t.Helper()
	f, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// entries turns commands into consecutive Raft log entries from index start.
type applier struct {
	t    *testing.T
	f    *FSM
	next uint64
}

func (a *applier) apply(cmd *qhinv1.Command) *Result {
	a.t.Helper()
	data, err := Encode(cmd)
	if err != nil {
		a.t.Fatal(err)
	}
	a.next++
	r, _ := a.f.Apply(&raft.Log{Index: a.next, Term: 1, Type: raft.LogCommand, Data: data}).(*Result)
	if r == nil {
		a.t.Fatalf("entry %d: no result", a.next)
	}
	return r
}

func mustCommand(t *testing.T, typ qhinv1.CommandType, reqID string, at time.Time, p proto.Message) *qhinv1.Command {
	t.Helper()
	c, err := NewCommand(typ, reqID, at, p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func register(t *testing.T, id, reqID string) *qhinv1.Command {
	return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, reqID, t0, &qhinv1.Participant{
		Id: id, Organization: "Org " + id, SpiffeId: "spiffe://qhin.test/participant/" + id, Endpoint: "127.0.0.1:9000",
	})
}

func setStatus(t *testing.T, id string, s qhinv1.ParticipantStatus) *qhinv1.Command {
	return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_SET_PARTICIPANT_STATUS, "", t0.Add(time.Minute),
		&qhinv1.SetParticipantStatus{ParticipantId: id, Status: s, Reason: "test"})
}

func TestApply_DirectoryCommands(t *testing.T) {
	const (
		active    = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE
		suspended = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED
		retired   = qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED
	)
	tests := []struct {
		name       string
		setup      []func(t *testing.T) *qhinv1.Command
		cmd        func(t *testing.T) *qhinv1.Command
		wantErr    error
		wantStatus qhinv1.ParticipantStatus
	}{
		{
			name:       "register sets active and times",
			cmd:        func(t *testing.T) *qhinv1.Command { return register(t, "p1", "") },
			wantStatus: active,
		},
		{
			name:    "register twice is already exists",
			setup:   []func(t *testing.T) *qhinv1.Command{func(t *testing.T) *qhinv1.Command { return register(t, "p1", "") }},
			cmd:     func(t *testing.T) *qhinv1.Command { return register(t, "p1", "") },
			wantErr: ErrAlreadyExists,
		},
		{
			name: "register without endpoint is invalid",
			cmd: func(t *testing.T) *qhinv1.Command {
				return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, "", t0, &qhinv1.Participant{Id: "p1", SpiffeId: "x"})
			},
			wantErr: ErrInvalid,
		},
		{
			name:       "suspend",
			setup:      []func(t *testing.T) *qhinv1.Command{func(t *testing.T) *qhinv1.Command { return register(t, "p1", "") }},
			cmd:        func(t *testing.T) *qhinv1.Command { return setStatus(t, "p1", suspended) },
			wantStatus: suspended,
		},
		{
			name:    "status of unknown participant is not found",
			cmd:     func(t *testing.T) *qhinv1.Command { return setStatus(t, "nobody", suspended) },
			wantErr: ErrNotFound,
		},
		{
			name: "retired cannot be resumed",
			setup: []func(t *testing.T) *qhinv1.Command{
				func(t *testing.T) *qhinv1.Command { return register(t, "p1", "") },
				func(t *testing.T) *qhinv1.Command { return setStatus(t, "p1", retired) },
			},
			cmd:     func(t *testing.T) *qhinv1.Command { return setStatus(t, "p1", active) },
			wantErr: ErrConflict,
		},
		{
			name:    "unspecified status is invalid",
			setup:   []func(t *testing.T) *qhinv1.Command{func(t *testing.T) *qhinv1.Command { return register(t, "p1", "") }},
			cmd:     func(t *testing.T) *qhinv1.Command { return setStatus(t, "p1", 0) },
			wantErr: ErrInvalid,
		},
		{
			name:  "update keeps status and creation time",
			setup: []func(t *testing.T) *qhinv1.Command{func(t *testing.T) *qhinv1.Command { return register(t, "p1", "") }},
			cmd: func(t *testing.T) *qhinv1.Command {
				return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_UPDATE_PARTICIPANT, "", t0.Add(time.Hour),
					&qhinv1.Participant{Id: "p1", Organization: "Renamed", Endpoint: "127.0.0.1:9999"})
			},
			wantStatus: active,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &applier{t: t, f: openFSM(t)}
			for _, s := range tt.setup {
				if r := a.apply(s(t)); r.Err != nil {
					t.Fatalf("setup: %v", r.Err)
				}
			}
			r := a.apply(tt.cmd(t))
			if tt.wantErr != nil {
				if !errors.Is(r.Err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", r.Err, tt.wantErr)
				}
				return
			}
			if r.Err != nil {
				t.Fatalf("err = %v", r.Err)
			}
			p := r.Value.(*qhinv1.Participant)
			if p.Status != tt.wantStatus {
				t.Errorf("status = %v, want %v", p.Status, tt.wantStatus)
			}
			if !p.CreatedAt.AsTime().Equal(t0) {
				t.Errorf("created_at = %v, want %v", p.CreatedAt.AsTime(), t0)
			}
			stored, err := a.f.Participant("p1")
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(stored, p) {
				t.Errorf("stored %v, result %v", stored, p)
			}
		})
	}
}

func TestApply_UnknownVersionAndTypeAreErrors(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	newer := register(t, "p1", "")
	newer.Version = CommandVersion + 1
	unknown := register(t, "p2", "")
	unknown.Type = qhinv1.CommandType(999)
	for name, cmd := range map[string]*qhinv1.Command{"newer version": newer, "unknown type": unknown} {
		r := a.apply(cmd)
		if !errors.Is(r.Err, ErrUnknownCommand) {
			t.Errorf("%s: err = %v, want ErrUnknownCommand", name, r.Err)
		}
		if !strings.Contains(r.Err.Error(), "upgrade") {
			t.Errorf("%s: error %q does not say what to do", name, r.Err)
		}
	}
	if ps, _ := a.f.Participants(0); len(ps) != 0 {
		t.Errorf("refused commands changed state: %v", ps)
	}
	if got := a.f.AppliedIndex(); got != 2 {
		t.Errorf("applied index = %d, want 2", got)
	}
}

func TestApply_RequestIDAppliesOnce(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	first := a.apply(register(t, "p1", "req-1"))
	if first.Err != nil {
		t.Fatal(first.Err)
	}
	// The same request retried after an unknown outcome gets the first
	// result, not "already exists".
	again := a.apply(register(t, "p1", "req-1"))
	if again.Err != nil {
		t.Fatalf("retry: %v", again.Err)
	}
	if !proto.Equal(first.Value, again.Value) {
		t.Errorf("retry result %v, want %v", again.Value, first.Value)
	}
	// A different request id is a new request.
	if r := a.apply(register(t, "p1", "req-2")); !errors.Is(r.Err, ErrAlreadyExists) {
		t.Errorf("new request: err = %v, want already exists", r.Err)
	}
	// A refused request replays its refusal with the same sentinel.
	if r := a.apply(register(t, "p1", "req-2")); !errors.Is(r.Err, ErrAlreadyExists) {
		t.Errorf("replayed refusal: err = %v, want already exists", r.Err)
	}
}

func TestApply_RequestIDsExpire(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	a.apply(register(t, "p1", "old"))
	later := mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, "new", t0.Add(RequestRetention+time.Hour),
		&qhinv1.Participant{Id: "p2", SpiffeId: "s", Endpoint: "e"})
	a.apply(later)
	err := a.f.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRequests).Get([]byte("old")) != nil {
			t.Error("expired request id is still remembered")
		}
		if tx.Bucket(bucketRequests).Get([]byte("new")) == nil {
			t.Error("fresh request id is forgotten")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestApply_SkipsEntriesAppliedBeforeRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{t: t, f: f}
	a.apply(register(t, "p1", ""))
	a.apply(setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED))
	f.Close()

	f, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.AppliedIndex() != 2 {
		t.Fatalf("applied index after reopen = %d, want 2", f.AppliedIndex())
	}
	// Raft replays entry 1 after a restart; it must not apply again (it
	// would fail with already exists, or worse, undo the suspension).
	data, _ := Encode(register(t, "p1", ""))
	if r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}); r != nil {
		t.Errorf("replayed entry produced %v, want nothing", r)
	}
	p, err := f.Participant("p1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED {
		t.Errorf("status = %v, want suspended", p.Status)
	}
}

func TestApply_Batch(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	cmds := []*qhinv1.Command{register(t, "p1", ""), register(t, "p2", ""), register(t, "p1", ""), setStatus(t, "p2", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED)}
	b, err := NewBatch("", t0, cmds)
	if err != nil {
		t.Fatal(err)
	}
	r := a.apply(b)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	results := BatchResults(cmds, r.Value.(*qhinv1.BatchResult))
	if len(results) != 4 {
		t.Fatalf("%d results", len(results))
	}
	for i, wantErr := range []error{nil, nil, ErrAlreadyExists, nil} {
		if (wantErr == nil) != (results[i].Err == nil) || (wantErr != nil && !errors.Is(results[i].Err, wantErr)) {
			t.Errorf("command %d: err = %v, want %v", i, results[i].Err, wantErr)
		}
	}
	if p := results[3].Value.(*qhinv1.Participant); p.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED {
		t.Errorf("batch result status %v", p.Status)
	}
	if ps, _ := a.f.Participants(0); len(ps) != 2 {
		t.Errorf("%d participants, want 2", len(ps))
	}
	// The live results: each command's own, as if applied alone.
	if len(r.Items) != len(cmds) {
		t.Fatalf("%d live results, want %d", len(r.Items), len(cmds))
	}
	for i, it := range r.Items {
		if (i == 2) != (it.Err != nil) {
			t.Errorf("live result %d: err = %v", i, it.Err)
		}
		if want := i == 3; it.Restricts != want {
			t.Errorf("live result %d: restricts = %v, want %v", i, it.Restricts, want)
		}
	}
	alone := a.apply(register(t, "p1", ""))
	if got, want := r.Items[2].Err.Error(), alone.Err.Error(); got != want {
		t.Errorf("refused command in a batch: %q, alone: %q", got, want)
	}
	if p := r.Items[0].Value.(*qhinv1.Participant); p.Id != "p1" || p.Status != qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE {
		t.Errorf("live result 0: %v", p)
	}
}

func TestApplyBatch_ConfigurationEntriesPassThrough(t *testing.T) {
	f := openFSM(t)
	data, _ := Encode(register(t, "p1", ""))
	out := f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogConfiguration},
		{Index: 2, Type: raft.LogCommand, Data: data},
	})
	if out[0] != nil {
		t.Errorf("configuration entry result %v", out[0])
	}
	if r := out[1].(*Result); r.Err != nil || r.Index != 2 {
		t.Errorf("command result %+v", r)
	}
	if f.AppliedIndex() != 2 {
		t.Errorf("applied = %d", f.AppliedIndex())
	}
}

// sink is a raft.SnapshotSink over a buffer.
type sink struct {
	bytes.Buffer
	cancelled bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { s.cancelled = true; return nil }
func (s *sink) Close() error  { return nil }

func snapshotOf(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	return s.Bytes()
}

func TestSnapshotRestore_CopiesEveryTable(t *testing.T) {
	src := &applier{t: t, f: openFSM(t)}
	src.apply(register(t, "p1", "r1"))
	src.apply(register(t, "p2", "r2"))
	src.apply(mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_PUT_BROKER, "", t0, &qhinv1.BrokerRecord{NodeId: "b1", RaftAddr: "a", GrpcAddr: "g"}))
	data := snapshotOf(t, src.f)

	// Writes after the snapshot was taken are not in it.
	src.apply(register(t, "p3", ""))

	dst := openFSM(t)
	(&applier{t: t, f: dst}).apply(register(t, "stale", ""))
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	ps, err := dst.Participants(0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.Id)
	}
	if strings.Join(ids, ",") != "p1,p2" {
		t.Errorf("participants after restore = %v, want p1,p2", ids)
	}
	if bs, _ := dst.Brokers(); len(bs) != 1 || bs[0].GrpcAddr != "g" {
		t.Errorf("brokers after restore = %v", bs)
	}
	if dst.AppliedIndex() != 0 {
		t.Errorf("applied index after restore = %d, want reset to 0", dst.AppliedIndex())
	}
	// The restored state accepts new entries after the snapshot.
	data2, _ := Encode(register(t, "p9", ""))
	if r := dst.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: data2}).(*Result); r.Err != nil {
		t.Fatal(r.Err)
	}
}

func TestRestore_GarbageLeavesStateIntact(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	a.apply(register(t, "p1", ""))
	before, err := a.f.Checksums()
	if err != nil {
		t.Fatal(err)
	}
	other := openFSM(t)
	(&applier{t: t, f: other}).apply(register(t, "x", ""))
	good := snapshotOf(t, other)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0xff
	for name, data := range map[string][]byte{
		"flipped":   flipped,
		"empty":     nil,
		"garbage":   []byte(strings.Repeat("not a bbolt file ", 1000)),
		"truncated": good[:len(good)/3],
	} {
		if err := a.f.Restore(io.NopCloser(bytes.NewReader(data))); err == nil {
			t.Errorf("%s: restore succeeded", name)
		}
		after, err := a.f.Checksums()
		if err != nil {
			t.Fatalf("%s: state unreadable after failed restore: %v", name, err)
		}
		if len(after) != len(before) || after["participants"] != before["participants"] {
			t.Errorf("%s: state changed by failed restore", name)
		}
	}
	// Still writable.
	if r := a.apply(register(t, "p2", "")); r.Err != nil {
		t.Fatal(r.Err)
	}
}

func TestChecksums_DifferWhenStateDiffers(t *testing.T) {
	a, b := &applier{t: t, f: openFSM(t)}, &applier{t: t, f: openFSM(t)}
	a.apply(register(t, "p1", ""))
	b.apply(register(t, "p1", ""))
	ca, _ := a.f.Checksums()
	cb, _ := b.f.Checksums()
	if ca["participants"] != cb["participants"] {
		t.Fatalf("same commands, different checksums: %v %v", ca, cb)
	}
	b.apply(setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED))
	cb, _ = b.f.Checksums()
	if ca["participants"] == cb["participants"] {
		t.Fatal("different state, same checksum")
	}
}

func BenchmarkApplyBatch(b *testing.B) {
	f, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const batch = 64
	var index uint64
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		logs := make([]*raft.Log, batch)
		for j := range logs {
			id := fmt.Sprintf("p%d-%d", i, j)
			c, err := NewCommand(qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, id, t0, &qhinv1.Participant{
				Id: id, SpiffeId: "spiffe://qhin.test/participant/" + id, Endpoint: "127.0.0.1:1",
			})
			if err != nil {
				b.Fatal(err)
			}
			data, _ := Encode(c)
			index++
			logs[j] = &raft.Log{Index: index, Type: raft.LogCommand, Data: data}
		}
		f.ApplyBatch(logs)
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "entries/s")
}

func TestDirectoryVersion_MovesOnDirectoryChangesOnly(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	v0 := a.f.DirectoryVersion()
	a.apply(register(t, "p1", ""))
	v1 := a.f.DirectoryVersion()
	if v1 == v0 {
		t.Error("registration did not move the directory version")
	}
	a.apply(register(t, "p1", "")) // refused: already exists
	a.apply(mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_PUT_BROKER, "", t0, &qhinv1.BrokerRecord{NodeId: "b1"}))
	if v := a.f.DirectoryVersion(); v != v1 {
		t.Errorf("a refused command or a broker record moved the directory version (%d -> %d)", v1, v)
	}
	a.apply(setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED))
	if a.f.DirectoryVersion() == v1 {
		t.Error("a suspension did not move the directory version")
	}
	v2 := a.f.DirectoryVersion()
	if err := a.f.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	if a.f.DirectoryVersion() == v2 {
		t.Error("a restore did not move the directory version")
	}
}
