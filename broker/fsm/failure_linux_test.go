package fsm

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// failingFile opens the state file and lets a test make its writes fail
// for real: it puts a read-only descriptor of the same file in the place of
// bbolt's, so every later write returns EBADF from the kernel.
type failingFile struct {
	t    *testing.T
	file *os.File
}

func (ff *failingFile) open(path string, flag int, mode os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag, mode)
	ff.file = f
	return f, err
}

func (ff *failingFile) breakWrites() {
	ro, err := os.Open(ff.file.Name())
	if err != nil {
		ff.t.Fatal(err)
	}
	defer ro.Close()
	if err := syscall.Dup3(int(ro.Fd()), int(ff.file.Fd()), 0); err != nil {
		ff.t.Fatal(err)
	}
}

func TestApply_FailingWritesStopTheStateMachine(t *testing.T) {
	ff := &failingFile{t: t}
	f, err := Open(filepath.Join(t.TempDir(), "fsm.db"), Options{OpenFile: ff.open})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	failed := make(chan error, 1)
	f.OnFailure(func(err error) { failed <- err })
	a := &applier{t: t, f: f}
	a.apply(register(t, "p1", ""))

	ff.breakWrites()
	r := a.apply(setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED))
	if !errors.Is(r.Err, ErrFailed) {
		t.Fatalf("apply on a failing file: %v, want ErrFailed", r.Err)
	}
	if err := <-failed; !errors.Is(err, ErrFailed) {
		t.Errorf("OnFailure got %v", err)
	}
	if f.AppliedIndex() != 1 {
		t.Errorf("applied index moved to %d", f.AppliedIndex())
	}
	// Later entries are refused without touching the file, and Raft cannot
	// take a snapshot labelled with entries the file does not hold.
	if r := a.apply(register(t, "p2", "")); !errors.Is(r.Err, ErrFailed) {
		t.Errorf("next apply: %v", r.Err)
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrFailed) {
		t.Errorf("snapshot of a failed state machine: %v", err)
	}

	// A whole state from elsewhere (the leader) brings it back.
	src := &applier{t: t, f: openFSM(t)}
	for _, c := range []*qhinv1.Command{register(t, "p1", ""), setStatus(t, "p1", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED), register(t, "p2", "")} {
		src.apply(c)
	}
	if _, err := f.Replace(func(w io.Writer) error { _, err := src.f.WriteTo(w); return err }); err != nil {
		t.Fatal(err)
	}
	if f.Failed() != nil || f.AppliedIndex() != 3 {
		t.Fatalf("after replace: failed %v, applied %d", f.Failed(), f.AppliedIndex())
	}
	a.next = 3
	if r := a.apply(register(t, "p3", "")); r.Err != nil {
		t.Fatalf("apply after replace: %v", r.Err)
	}
}
