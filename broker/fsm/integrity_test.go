package fsm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// stateWith builds a closed state file holding n participants and returns
// its path and the encoded record of participant p1.
func stateWith(t *testing.T, n int) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fsm.db")
	f, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{t: t, f: f}
	for i := range n {
		a.apply(register(t, "p"+string(rune('a'+i%26))+string(rune('a'+i/26)), ""))
	}
	a.apply(register(t, "p1", ""))
	a.apply(setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED))
	p, err := f.Participant("p1")
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := proto.Marshal(p)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path, rec
}

func TestOpen_DamagedFilesAreErrorsNotCrashes(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, rec []byte)
	}{
		{"byte flipped in a record", func(t *testing.T, path string, rec []byte) {
			data, _ := os.ReadFile(path)
			i := bytes.Index(rec, []byte{0x28, 0x02})
			flipped := bytes.Clone(rec)
			flipped[i+1] = 0x01
			if !bytes.Contains(data, rec) {
				t.Fatal("record not in file")
			}
			os.WriteFile(path, bytes.ReplaceAll(data, rec, flipped), 0o600)
		}},
		{"truncated", func(t *testing.T, path string, _ []byte) {
			os.Truncate(path, 12<<10)
		}},
		{"headers overwritten", func(t *testing.T, path string, _ []byte) {
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			f.WriteAt(bytes.Repeat([]byte{0xAB}, 8192), 0)
			f.Close()
		}},
		{"pages overwritten with garbage", func(t *testing.T, path string, _ []byte) {
			fi, _ := os.Stat(path)
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			garbage := bytes.Repeat([]byte{0x5A, 0x03, 0xFF, 0x00}, 1024)
			for off := int64(8192); off < fi.Size(); off += 4096 {
				f.WriteAt(garbage, off)
			}
			f.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, rec := stateWith(t, 200)
			tt.damage(t, path, rec)
			f, err := Open(path, Options{})
			if err == nil {
				f.Close()
				t.Fatal("opened a damaged state file")
			}
			if !errors.Is(err, ErrDamaged) {
				t.Errorf("err = %v, want ErrDamaged", err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(path)) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestOpen_UndamagedFileVerifies(t *testing.T) {
	path, _ := stateWith(t, 50)
	f, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Verify(); err != nil {
		t.Fatal(err)
	}
}

func TestOpen_OldLayoutGetsDigests(t *testing.T) {
	path, _ := stateWith(t, 20)
	f, _ := Open(path, Options{})
	want := f.Digests()
	f.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		for _, name := range dataTables {
			meta.Delete(digestKey(name))
		}
		return meta.Put(keySchema, u64(1))
	})
	db.Close()
	f, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Digests(); got != want {
		t.Errorf("migrated digests %v, want %v", got.Map(), want.Map())
	}
}

func TestDigests_SameEntriesSameDigestsAndHistory(t *testing.T) {
	a, b := &applier{t: t, f: openFSM(t)}, &applier{t: t, f: openFSM(t)}
	for _, x := range []*applier{a, b} {
		x.apply(register(t, "p1", "r1"))
		x.apply(register(t, "p2", "r2"))
	}
	at2, ok := a.f.DigestsAt(2)
	if !ok {
		t.Fatal("no digests at index 2")
	}
	a.apply(setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED))
	if d := b.f.Digests(); d != at2 {
		t.Errorf("b at 2: %v; a at 2: %v", d.Map(), at2.Map())
	}
	if again, _ := a.f.DigestsAt(2); again != at2 {
		t.Error("history changed")
	}
	if diff := a.f.Digests().Diff(b.f.Digests()); len(diff) != 1 || diff[0] != "participants" {
		t.Errorf("diff = %v, want participants", diff)
	}
}

func TestApply_RestrictingCommands(t *testing.T) {
	update := func(t *testing.T, initiate ...string) *qhinv1.Command {
		return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_UPDATE_PARTICIPANT, "", t0, &qhinv1.Participant{
			Id: "p1", Endpoint: "127.0.0.1:9000", InitiatePurposes: initiate})
	}
	tests := []struct {
		name string
		cmds []func(t *testing.T) *qhinv1.Command
		want bool
	}{
		{"register", nil, false},
		{"suspend", []func(t *testing.T) *qhinv1.Command{func(t *testing.T) *qhinv1.Command {
			return setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED)
		}}, true},
		{"retire", []func(t *testing.T) *qhinv1.Command{func(t *testing.T) *qhinv1.Command {
			return setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED)
		}}, true},
		{"resume", []func(t *testing.T) *qhinv1.Command{
			func(t *testing.T) *qhinv1.Command {
				return setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED)
			},
			func(t *testing.T) *qhinv1.Command {
				return setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE)
			}}, false},
		{"narrow purposes", []func(t *testing.T) *qhinv1.Command{
			func(t *testing.T) *qhinv1.Command { return update(t, "all") },
			func(t *testing.T) *qhinv1.Command { return update(t, "T-TREAT") }}, true},
		{"widen purposes", []func(t *testing.T) *qhinv1.Command{
			func(t *testing.T) *qhinv1.Command { return update(t, "T-TREAT") },
			func(t *testing.T) *qhinv1.Command { return update(t, "all") }}, false},
		{"refused suspension", []func(t *testing.T) *qhinv1.Command{func(t *testing.T) *qhinv1.Command {
			return setStatus(t, "nobody", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED)
		}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &applier{t: t, f: openFSM(t)}
			r := a.apply(register(t, "p1", ""))
			for _, c := range tt.cmds {
				r = a.apply(c(t))
			}
			if r.Restricts != tt.want {
				t.Errorf("restricts = %v, want %v (err %v)", r.Restricts, tt.want, r.Err)
			}
		})
	}
	// A batch restricts when one of its commands does.
	a := &applier{t: t, f: openFSM(t)}
	a.apply(register(t, "p1", ""))
	b, _ := NewBatch("", t0, []*qhinv1.Command{register(t, "p2", ""), setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED)})
	if r := a.apply(b); !r.Restricts {
		t.Error("batch with a suspension does not restrict")
	}
}

func TestApply_NewerCommandVersionIsRefused(t *testing.T) {
	f, err := Open(filepath.Join(t.TempDir(), "fsm.db"), Options{MaxCommandVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := register(t, "p1", "")
	cmd.Version = 2
	if Version(cmd) != 2 {
		t.Errorf("Version = %d", Version(cmd))
	}
	b, _ := NewBatch("", t0, []*qhinv1.Command{register(t, "p2", ""), cmd})
	if Version(b) != 2 {
		t.Errorf("batch Version = %d, want 2", Version(b))
	}
	if r := (&applier{t: t, f: f}).apply(cmd); !errors.Is(r.Err, ErrUnknownCommand) {
		t.Errorf("err = %v, want unknown command", r.Err)
	}
}

func TestReplace_KeepsTheIndexAndClearsFailure(t *testing.T) {
	src := &applier{t: t, f: openFSM(t)}
	for _, id := range []string{"p1", "p2", "p3"} {
		src.apply(register(t, id, ""))
	}
	dst := &applier{t: t, f: openFSM(t)}
	dst.apply(register(t, "p1", ""))
	dst.f.fail(errors.New("test"))
	idx, err := dst.f.Replace(func(w io.Writer) error { _, err := src.f.WriteTo(w); return err })
	if err != nil {
		t.Fatal(err)
	}
	if idx != 3 || dst.f.AppliedIndex() != 3 || dst.f.Failed() != nil {
		t.Fatalf("index %d, applied %d, failed %v", idx, dst.f.AppliedIndex(), dst.f.Failed())
	}
	if dst.f.Digests() != src.f.Digests() {
		t.Error("replaced state differs")
	}
	// Raft delivers entry 3 again: skipped as applied.
	data, _ := Encode(register(t, "p3", ""))
	if r := dst.f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: data}); r != nil {
		t.Errorf("replayed entry gave %v", r)
	}
	// A state behind the local one is refused.
	old := &applier{t: t, f: openFSM(t)}
	old.apply(register(t, "p1", ""))
	if _, err := dst.f.Replace(func(w io.Writer) error { _, err := old.f.WriteTo(w); return err }); err == nil {
		t.Error("replaced with a state behind")
	}
	_ = time.Second
}

// TestRestore_SnapshotFormats: a Raft snapshot carries its index, which the
// restored state takes as applied; a snapshot of the first format (no index)
// and a saved backup restore with index 0.
func TestRestore_SnapshotFormats(t *testing.T) {
	src := &applier{t: t, f: openFSM(t)}
	src.apply(register(t, "p1", ""))
	src.apply(register(t, "p2", ""))
	var raftSnap indexedSink
	raftSnap.index = 42
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(&raftSnap); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	var backup bytes.Buffer
	if _, err := src.f.WriteTo(&backup); err != nil {
		t.Fatal(err)
	}
	// The first format: no index field after the length.
	v2 := backup.Bytes()
	v1 := append(bytes.Clone(v2[:headerLen]), v2[headerLen+8:]...)
	v1[11] = 1
	for name, tt := range map[string]struct {
		data []byte
		want uint64
	}{
		"raft snapshot": {raftSnap.Bytes(), 42},
		"backup":        {v2, 0},
		"format 1":      {v1, 0},
	} {
		dst := openFSM(t)
		if err := dst.Restore(io.NopCloser(bytes.NewReader(tt.data))); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if dst.AppliedIndex() != tt.want {
			t.Errorf("%s: applied %d, want %d", name, dst.AppliedIndex(), tt.want)
		}
		if dst.Digests().Diff(src.f.Digests()) != nil {
			t.Errorf("%s: restored state differs", name)
		}
		if err := dst.MarkApplied(7); err != nil || (tt.want < 7 && dst.AppliedIndex() != 7) {
			t.Errorf("%s: MarkApplied: %v, applied %d", name, err, dst.AppliedIndex())
		}
	}
}

type indexedSink struct {
	sink
	index uint64
}

func (s *indexedSink) Index() uint64 { return s.index }
